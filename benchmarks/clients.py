"""Step 5 of `make bench`: the Python client's requests/s at concurrency 32, threaded against asyncio.

Both clients send the same MNIST PNGs to the same server, `--client-rounds` times each, in turns
(the machine's speed drifts over minutes); every answer must be a Prediction. The client runs in
this process, on the same cores as the server, so a client that costs less CPU per request leaves
more to the server: its CPU per request is reported beside its requests/s.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

from benchmarks.bench_report import markdown_table
from benchmarks.in_process import listed_bodies
from harness.local_server import LocalTorchServe
from mnist_digit_client import AsyncDigitClient, DigitClient, Prediction

CONCURRENCY = 32


def client_rounds(server: LocalTorchServe, listing: Path, rounds: int, requests: int) -> dict:
    """Per client kind its rounds' requests/s and client CPU us per request, their medians, and the
    asyncio/threaded ratio of the medians."""
    bodies = listed_bodies(listing)
    jobs = [bodies[i % len(bodies)] for i in range(requests)]
    key_file = server.root / "key_file.json"
    runs: dict[str, list[dict]] = {"threaded": [], "asyncio": []}
    for _ in range(rounds):
        runs["threaded"].append(_timed(lambda: _threaded(server.inference, key_file, jobs)))
        runs["asyncio"].append(_timed(lambda: asyncio.run(_asyncio(server.inference, key_file, jobs))))
        print("clients", {k: v[-1] for k, v in runs.items()}, flush=True)
    result: dict = {"concurrency": CONCURRENCY, "requests_per_round": requests, "rounds": runs}
    for kind, measured in runs.items():
        result[f"{kind}_rps"] = statistics.median(r["rps"] for r in measured)
    result["asyncio_over_threaded"] = round(result["asyncio_rps"] / result["threaded_rps"], 3)
    return result


def _threaded(url: str, key_file: Path, jobs: list[bytes]) -> list:
    with DigitClient(url, token_file=key_file) as client:
        return client.predict_many(jobs, concurrency=CONCURRENCY)


async def _asyncio(url: str, key_file: Path, jobs: list[bytes]) -> list:
    async with AsyncDigitClient(url, token_file=key_file) as client:
        return await client.predict_many(jobs, concurrency=CONCURRENCY)


def _timed(run) -> dict:
    wall, cpu = time.perf_counter(), time.process_time()
    results = run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    failed = [r for r in results if not isinstance(r, Prediction)]
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(results)} client requests failed, e.g. {failed[0]!r}")
    return {"rps": round(len(results) / wall, 1), "client_cpu_us_per_request": round(cpu / len(results) * 1e6)}


def clients_markdown(result: dict) -> list[str]:
    rows = [
        [
            kind,
            " / ".join(f"{r['rps']:,.0f}" for r in result["rounds"][kind]),
            f"{result[f'{kind}_rps']:,.0f}",
            " / ".join(str(r["client_cpu_us_per_request"]) for r in result["rounds"][kind]),
        ]
        for kind in ("threaded", "asyncio")
    ]
    return [
        "## The Python client (concurrency 32, MNIST PNGs)",
        "",
        f"`mnist_digit_client` against the service, started afresh and warmed like the servers above; "
        f"{result['requests_per_round']} requests per round, the two clients in turns, on the same cores "
        "as the server.",
        "",
        *markdown_table(["client", "requests/s per round", "median", "client CPU us per request"], rows),
        "",
    ]
