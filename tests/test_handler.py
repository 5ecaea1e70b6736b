"""DigitHandler in-process with a fake TorchServe context: load, batch, per-request errors, metrics."""

from __future__ import annotations

import base64
import json
import logging

import numpy as np
import pytest
import torch

from synthetic.families import generate
from tests.conftest import png_bytes


def answers(handler, context, requests):
    return [json.loads(a) for a in handler.handle(requests, context)]


def test_initialize_loads_on_cpu_without_gpu(handler_and_context):
    handler, _ = handler_and_context
    assert handler.initialized and handler.device == torch.device("cpu")
    assert torch.get_num_threads() == 1


def test_batch_of_real_digits(handler_and_context, mnist_sample):
    handler, context = handler_and_context
    images, labels = mnist_sample
    out = answers(handler, context, [{"body": png_bytes(p)} for p in images])
    digits = [a["digit"] for a in out]
    assert np.mean(np.array(digits) == labels) >= 0.98
    for answer in out:
        assert set(answer) == {"digit", "confidence", "probabilities"}
        assert len(answer["probabilities"]) == 10 and abs(sum(answer["probabilities"]) - 1) < 1e-3
        assert answer["confidence"] == max(answer["probabilities"])
    assert context.statuses == {} and set(context.content_types.values()) == {"application/json"}


def test_answers_round_as_python_does():
    """The batch's probabilities are rounded together with numpy; each answer must be what Python's
    round(p, 6) and the first maximum give, exact halves (ties, to even) and equal maxima included."""
    from handler.answers import predictions_of

    torch.manual_seed(0)
    probabilities = torch.softmax(torch.randn(2000, 10) * 4, dim=1)
    ties = torch.tensor([(k + 0.5) / 1e6 for k in range(0, 10**6, 99_991)][:10], dtype=torch.float32)
    probabilities = torch.cat([probabilities, ties[None], torch.full((1, 10), 0.1)])
    for answer, row in zip(predictions_of(probabilities), probabilities.tolist()):
        digit = row.index(max(row))
        assert answer == {
            "digit": digit,
            "confidence": round(row[digit], 6),
            "probabilities": [round(p, 6) for p in row],
        }
        assert json.dumps(answer) == json.dumps(
            {"digit": digit, "confidence": round(row[digit], 6), "probabilities": [round(p, 6) for p in row]}
        )


def test_one_forward_pass_per_batch(handler_and_context, mnist_sample, monkeypatch):
    """One pass for the whole batch, and at most one more: the test-time augmentation at its unsure answers."""
    from handler.inference import TTA_BELOW

    handler, context = handler_and_context
    calls = []
    pooled = handler.model.pooled  # what every forward pass runs, whether it keeps the features or not
    monkeypatch.setattr(handler.model, "pooled", lambda x: calls.append(x.shape) or pooled(x))
    monkeypatch.setattr(handler, "calibration", None)  # TTA is decided on the network's own probabilities
    out = answers(handler, context, [{"body": png_bytes(p)} for p in mnist_sample[0][:8]])
    unsure = sum(a["confidence"] < TTA_BELOW for a in out)  # (after the test-time augmentation)
    assert calls[0] == (8, 1, 28, 28) and len(calls) <= 2
    if len(calls) == 2:
        assert calls[1][0] % 2 == 0 and 2 <= calls[1][0] <= 16  # each unsure image turned either way
    else:
        assert unsure == 0


def test_the_batch_is_preprocessed_and_read_on_the_workers_device(handler_and_context, mnist_sample, monkeypatch):
    """The handler gives its device to the preprocessing (CUDA on a GPU worker: the same path with
    the CPU as the device here): the network's input is made there, not moved there."""
    from handler.preprocess import batch as batch_module

    handler, context = handler_and_context
    seen = []
    decode = batch_module.decode_batch
    monkeypatch.setattr(
        "handler.mnist_handler.decode_batch",
        lambda data, device, **kw: seen.append(device) or decode(data, device, **kw),
    )
    pooled = handler.model.pooled
    monkeypatch.setattr(handler.model, "pooled", lambda x: seen.append(x.device) or pooled(x))
    photo = generate("paper_photo", mnist_sample[0][:1], seed=3, labels=mnist_sample[1][:1])[0]
    answers(handler, context, [{"body": png_bytes(mnist_sample[0][0])}, {"body": photo}])
    assert seen[0] == handler.device and all(d == handler.device for d in seen[1:])


def test_bad_requests_get_their_own_4xx_and_the_rest_succeed(handler_and_context, mnist_sample):
    handler, context = handler_and_context
    images, labels = mnist_sample
    requests = [
        {"body": png_bytes(images[0])},
        {"body": b""},
        {"body": b"\x89PNG\r\n\x1a\n truncated"},
        {"body": {"data": "%%%"}},
        {"body": generate("paper_photo", images[1:2], seed=3)[0]},
        {"body": {"instances": [images[2].tolist(), images[3].tolist()]}},
        {"body": {"instances": [[1, 2]]}},
        {"body": png_bytes(images[4])},
    ]
    out = answers(handler, context, requests)
    assert sorted(context.statuses) == [1, 2, 3, 6]
    for idx in (1, 2, 3, 6):
        code, message = context.statuses[idx]
        assert 400 <= code < 500 and out[idx] == {"code": code, "error": message}
    assert out[0]["digit"] == labels[0] and out[7]["digit"] == labels[4]
    assert out[4]["digit"] == labels[1]
    assert [p["digit"] for p in out[5]["predictions"]] == list(labels[2:4])


def test_what_is_not_one_digit_is_refused_with_its_reason_and_the_digits_beside_it_do_not_move(
    handler_and_context, mnist_sample
):
    from harness.inprocess import load_handler
    from harness.samples import not_one_digit_samples

    handler, context = handler_and_context
    images, _ = mnist_sample
    samples = list(not_one_digit_samples().values())
    b64 = [base64.b64encode(data).decode() for data, _ in samples]
    requests = [{"body": png_bytes(images[i])} for i in range(4)] + [{"body": data} for data, _ in samples]
    requests += [{"body": {"instances": [{"b64": b64[0]}]}}]  # KServe v1
    v2 = {"id": "x", "inputs": [{"name": "i", "datatype": "BYTES", "shape": [1], "data": [b64[2]]}]}
    requests += [{"body": v2}, {"body": v2}]  # the Open Inference Protocol over REST, then over gRPC
    context.request_headers[8] = {"explain": "False"}  # what TorchServe's REST frontend adds
    out = answers(handler, context, requests)
    assert sorted(context.statuses) == [4, 5, 6, 7, 8, 9]
    reasons = [reason for _, reason in samples]
    for idx, reason in zip((4, 5, 6, 7), reasons + reasons[:1]):
        assert context.statuses[idx][0] == 422 and out[idx] == {
            "code": 422,
            "reason": reason,
            "error": out[idx]["error"],
        }
    assert out[8] == {"error": out[8]["error"], "reason": reasons[2]}
    grpc = {o["name"]: o["data"] for o in out[9]["outputs"]}
    assert grpc == {"code": [422], "error": [out[8]["error"]], "reason": [reasons[2]]}
    plain, plain_context = load_handler(open_set=False, metrics_flush_seconds=0)
    without = answers(plain, plain_context, requests)
    assert out[:4] == without[:4]  # the same digits and probabilities, to the last digit
    assert all("digit" in a for a in without[4:7]) and sorted(plain_context.statuses) == []


def test_a_batch_of_only_bad_requests(handler_and_context):
    handler, context = handler_and_context
    out = answers(handler, context, [{"body": b""}, {"body": b"nope nope"}])
    assert [context.statuses[i][0] for i in (0, 1)] == [400, 415]
    assert out[1]["code"] == 415


def metric_lines(caplog) -> str:
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    return "\n".join(m for m in (r.getMessage() for r in caplog.records) if m.startswith("[METRICS]"))


def test_handler_metrics_and_metrics_yaml_agree():
    """TorchServe exports only declared metrics: METRICS and handler/metrics.yaml must name the same
    metrics with the same type, unit and dimensions (the yaml also holds TorchServe's defaults)."""
    import os

    import ts
    import yaml

    from handler.metric_buffer import METRICS
    from ops.paths import ROOT

    def declared(path) -> dict:
        entries = yaml.safe_load(open(path).read())["model_metrics"]
        return {m["name"]: (kind, m["unit"], list(m["dimensions"])) for kind, ms in entries.items() for m in ms}

    ours = declared(ROOT / "handler" / "metrics.yaml")
    torchserve_defaults = declared(os.path.join(os.path.dirname(ts.__file__), "configs", "metrics.yaml"))
    in_code = {
        name: (kind.value, unit, ["ModelName"] + ([extra] if extra else []))
        for name, (kind, unit, extra) in METRICS.items()
    }
    assert {name: ours[name] for name in in_code if name in ours} == in_code
    assert {name for name in ours if name not in torchserve_defaults} | {"HandlerTime", "PredictionTime"} == set(
        in_code
    )


def test_metrics_are_emitted_with_declared_dimensions(handler_and_context, mnist_sample, caplog):
    handler, context = handler_and_context  # metrics_flush_seconds=0: flushed after each batch
    images, labels = mnist_sample
    with caplog.at_level(logging.INFO):
        answers(handler, context, [{"body": png_bytes(images[0])}, {"body": b""}])
    metrics = metric_lines(caplog)
    assert f"[METRICS]DigitPredictions.Count:1|#ModelName:mnist,Digit:{labels[0]}|" in metrics
    assert "[METRICS]RejectedInputs.Count:1|#ModelName:mnist,Reason:empty|" in metrics
    assert "[METRICS]InternalErrors.Count:0|#ModelName:mnist|" in metrics  # every series from the start
    assert "[METRICS]DigitBatchSize_bucket.Count:1|#ModelName:mnist,le:1.0|" in metrics
    assert "[METRICS]DigitBatchSize_bucket.Count:1|#ModelName:mnist,le:+Inf|" in metrics
    assert "[METRICS]DigitBatchSize_count.Count:1|#ModelName:mnist|" in metrics
    assert "[METRICS]DigitBatchSize_sum.Count:1|#ModelName:mnist|" in metrics
    assert "[METRICS]PreprocessTime_sum.Milliseconds:" in metrics
    assert "[METRICS]BatchTime_count.Count:1|#ModelName:mnist|" in metrics
    assert "[METRICS]HandlerTime.Milliseconds:" in metrics and "Level:Model" in metrics


def test_torchserves_per_batch_line_is_dropped_and_nothing_else(handler_and_context, caplog):
    with caplog.at_level(logging.INFO):
        logging.info("Backend received inference at: %d", 1764000000)  # as ts/protocol/otf_message_handler.py
        logging.info("Torch worker started.")
        logging.warning("Backend received inference at: %s", "a warning of someone else's")
    assert [r.getMessage() for r in caplog.records] == [
        "Torch worker started.",
        "Backend received inference at: a warning of someone else's",
    ]


def test_counters_are_summed_between_flushes(handler_and_context, mnist_sample, caplog, monkeypatch):
    """What the worker's flush thread emits once a second: one line per counter and dimensions, one
    per gauge, one per histogram bucket."""
    handler, context = handler_and_context
    images, labels = mnist_sample
    monkeypatch.setattr(handler, "flush_seconds", 60)  # no flush at the end of each batch
    with caplog.at_level(logging.INFO):
        answers(handler, context, [{"body": png_bytes(images[0])}, {"body": b""}])
        answers(handler, context, [{"body": png_bytes(images[0])}])
        assert metric_lines(caplog) == ""
        handler.flush_metrics()
    metrics = metric_lines(caplog)
    assert metrics.count("[METRICS]DigitPredictions.") == 10  # every digit's series is created at 0
    assert f"[METRICS]DigitPredictions.Count:2|#ModelName:mnist,Digit:{labels[0]}|" in metrics
    assert metrics.count("[METRICS]DigitBatchSize_count.") == 1  # a histogram: its buckets, sum and count
    assert "[METRICS]DigitBatchSize_count.Count:2|#ModelName:mnist|" in metrics
    assert "[METRICS]DigitBatchSize_bucket.Count:2|#ModelName:mnist,le:1.0|" in metrics
    assert metrics.count("[METRICS]HandlerTime.") == 1  # a gauge: its latest value


def test_torchserves_prediction_time_leaves_with_the_flush_as_its_latest_value(
    handler_and_context, caplog, monkeypatch
):
    handler, context = handler_and_context
    monkeypatch.setattr(handler, "flush_seconds", 60)
    with caplog.at_level(logging.INFO):
        context.metrics.add_time("PredictionTime", 3.5)  # what ts/service.py does after each batch
        context.metrics.add_time("PredictionTime", 4.25)
        context.metrics.add_time("SomeoneElsesTime", 1.5)  # anything else: TorchServe's own road, at once
        before_flush = metric_lines(caplog)
        handler.flush_metrics()
    assert "PredictionTime" not in before_flush and "[METRICS]SomeoneElsesTime.Milliseconds:1.5|" in before_flush
    flushed = metric_lines(caplog)[len(before_flush) :]
    assert flushed.count("[METRICS]PredictionTime.") == 1
    assert "[METRICS]PredictionTime.Milliseconds:4.25|#ModelName:mnist,Level:Model|" in flushed


def test_torchserves_prediction_time_is_left_alone_when_switched_off(mnist_sample, caplog):
    """route_prediction_time: false leaves TorchServe's own add_time, which 0.12.0 cannot export."""
    from harness.inprocess import load_handler

    handler, context = load_handler(route_prediction_time=False, metrics_flush_seconds=0)
    assert "add_time" not in vars(context.metrics)
    with caplog.at_level(logging.INFO):
        context.metrics.add_time("PredictionTime", 3.5)
    assert "Failed to update metric with name:PredictionTime" in caplog.text


def test_base64_and_data_url_requests(handler_and_context, mnist_sample):
    handler, context = handler_and_context
    images, labels = mnist_sample
    b64 = base64.b64encode(png_bytes(images[5])).decode()
    out = answers(handler, context, [{"body": b64.encode()}, {"body": {"data": "data:image/png;base64," + b64}}])
    assert [a["digit"] for a in out] == [labels[5]] * 2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_the_assigned_gpu(tmp_path, mnist_sample):
    from harness.inprocess import load_handler

    handler, context = load_handler(gpu_id=0, model_dir=tmp_path)
    assert handler.device == torch.device("cuda:0")
    assert next(handler.model.parameters()).is_cuda
    out = answers(handler, context, [{"body": png_bytes(p)} for p in mnist_sample[0][:16]])
    assert np.mean(np.array([a["digit"] for a in out]) == mnist_sample[1][:16]) >= 0.9


def test_a_fault_of_ours_answers_500_for_that_request_only(handler_and_context, mnist_sample, monkeypatch, caplog):
    """A bug in our own numeric code (injected here for 30x30 images) is a 500 with a logged
    traceback and a metric, never a 4xx that blames the client; the rest of the batch is answered."""
    from handler.preprocess import mnistify

    handler, context = handler_and_context
    images, labels = mnist_sample
    stack = mnistify._views_of_stack

    def faulty(x, *options):
        if x.shape[1:] == (30, 30):
            raise FloatingPointError("injected fault")
        return stack(x, *options)

    monkeypatch.setattr(mnistify, "_views_of_stack", faulty)
    victim = png_bytes(np.pad(images[1], 1))  # 30x30: a readable digit that hits the fault
    requests = [
        {"body": png_bytes(images[0])},
        {"body": victim},
        {"body": b""},
        {"body": {"instances": [images[2].tolist()]}},
    ]
    with caplog.at_level(logging.INFO):
        out = answers(handler, context, requests)
    assert context.statuses == {1: (500, "internal error"), 2: (400, "the request body is empty")}
    assert out[1] == {"code": 500, "error": "internal error"}
    assert out[0]["digit"] == labels[0] and out[3]["predictions"][0]["digit"] == labels[2]
    tracebacks = [r for r in caplog.records if r.levelno == logging.ERROR and r.exc_info]
    assert tracebacks and "injected fault" in caplog.text
    assert "failed request: status=500 reason=internal request_id=- client_request_id=- " in caplog.text
    metrics = "\n".join(r.getMessage() for r in caplog.records)
    assert "[METRICS]InternalErrors.Count:1|#ModelName:mnist|" in metrics
    assert "[METRICS]RejectedInputs.Count:1|#ModelName:mnist,Reason:empty|" in metrics
