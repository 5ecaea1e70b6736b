-- wrk script for `make bench`: POSTs the bodies listed in a file, round robin, with a bearer
-- token, checks that every answer is a 200 with a digit (a Lua pattern that finds it in the
-- answer's form: the service's own, or an Open Inference Protocol one), and prints one JSON line
-- at the end.
--   wrk -s benchmarks/bench.lua URL -- <list file> <token> <content type> <digit pattern>
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  bodies = {}
  for path in io.lines(args[1]) do
    local f = assert(io.open(path, "rb"))
    bodies[#bodies + 1] = f:read("*a")
    f:close()
  end
  wrk.method = "POST"
  wrk.headers["Authorization"] = "Bearer " .. args[2]
  wrk.headers["Content-Type"] = args[3]
  digit = args[4]
  counter = math.random(#bodies)
  answered, bad = 0, 0
end

function request()
  counter = counter % #bodies + 1
  return wrk.format(nil, nil, nil, bodies[counter])
end

function response(status, headers, body)
  if status == 200 and body:find(digit) then
    answered = answered + 1
  else
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local answered_all, bad_all = 0, 0
  for _, t in ipairs(threads) do
    answered_all = answered_all + t:get("answered")
    bad_all = bad_all + t:get("bad")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "answered": %d, "bad": %d, ' ..
    '"socket_errors": %d, "timeouts": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, answered_all, bad_all, e.connect + e.read + e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean))
end
