"""Explanations (handler/explanations.py): in process, then through a real TorchServe's explanation
routes, the Python clients and the CLI."""

from __future__ import annotations

import base64
import json
import logging
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
import torch

from harness.bad_inputs import BAD_BODIES
from mnist_digit_client import Explanation, RequestRejected
from tests.client_helpers import KINDS, make_client
from tests.conftest import FIXTURES, ROOT, png_bytes
from tests.preprocess_helpers import primary_view
from tests.test_server import metric, settle_metrics, wait_for_metric

SEVEN = (FIXTURES / "seven.png").read_bytes()
EXPLAIN, PREDICT = {"explain": "True"}, {"explain": "False"}  # what TorchServe's REST frontend adds
INK = 0.2  # view pixels above this are ink (benchmarks/explanations.py)


def handle(handler, context, bodies: list, headers: list[dict]) -> tuple[list[dict], dict]:
    """Answers (parsed) and statuses of one batch, each request with its headers."""
    context.statuses.clear()
    context.request_headers.clear()
    context.request_headers.update(enumerate(headers))
    return [json.loads(a) for a in handler.handle([{"body": b} for b in bodies], context)], dict(context.statuses)


def grids(answer: dict) -> tuple[np.ndarray, np.ndarray]:
    view, attributions = np.asarray(answer["view"]), np.asarray(answer["attributions"])
    assert view.shape == attributions.shape == (28, 28)
    return view, attributions


def check_explains(answer: dict, prediction: dict | None = None) -> None:
    """An explanation: the prediction (the same as `prediction`'s), a view in [0, 1], and
    attributions that are 0 where the view has no ink and mostly lie on its ink."""
    assert set(answer) == {"digit", "confidence", "probabilities", "view", "attributions"}
    if prediction is not None:
        assert {k: answer[k] for k in prediction} == prediction
    view, attributions = grids(answer)
    assert view.min() >= 0 and view.max() <= 1 and (view > INK).sum() > 20
    assert (attributions[view == 0] == 0).all(), "a blank pixel got an attribution (the baseline is blank)"
    magnitude = np.abs(attributions)
    assert magnitude[view > INK].sum() >= 0.8 * magnitude.sum(), "the attributions are not on the ink"
    assert attributions.sum() > 0, "the attributions do not speak for the answered digit"


def v2_body(*images: bytes, **extra) -> dict:
    data = [base64.b64encode(i).decode() for i in images]
    return {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [len(data)], "data": data}], **extra}


def v2_outputs(answer: dict) -> dict[str, np.ndarray]:
    return {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in answer["outputs"]}


# ---------------------------------------------------------------- in process


def test_a_batch_mixing_explanations_predictions_and_errors_answers_each_in_its_kind(handler_and_context, mnist_sample):
    handler, context = handler_and_context
    images, labels = mnist_sample
    pngs = [png_bytes(d) for d in images[:3]]
    bodies = [
        pngs[0],
        pngs[0],
        b"not an image",
        {"instances": [images[1].tolist(), {"b64": base64.b64encode(pngs[2]).decode()}]},
        b"",
    ]
    out, statuses = handle(handler, context, bodies, [EXPLAIN, PREDICT, EXPLAIN, EXPLAIN, EXPLAIN])
    assert statuses == {2: (415, out[2]["error"]), 4: (400, "the request body is empty")}
    check_explains(out[0], out[1])
    assert out[0]["digit"] == labels[0]
    assert [e["digit"] for e in out[3]["explanations"]] == [labels[1], labels[2]] and "predictions" not in out[3]
    for explanation in out[3]["explanations"]:
        check_explains(explanation)
    alone, _ = handle(handler, context, [b"not an image", b""], [PREDICT, PREDICT])
    assert [out[2], out[4]] == alone, "a bad explanation request is answered as a bad prediction request"


def test_the_view_is_the_one_the_service_read(handler_and_context):
    handler, context = handler_and_context
    (answer,), _ = handle(handler, context, [SEVEN], [EXPLAIN])
    view, _ = grids(answer)
    assert np.abs(view - primary_view(SEVEN)).max() <= 5e-5  # rounded to 4 decimals


def test_over_v2_the_explain_route_adds_two_outputs_that_can_be_picked(handler_and_context, mnist_sample):
    handler, context = handler_and_context
    two = [png_bytes(d) for d in mnist_sample[0][:2]]
    bodies = [
        json.dumps(v2_body(*two, id="both")).encode(),
        json.dumps(v2_body(two[0], outputs=[{"name": "attributions"}, {"name": "digit"}])).encode(),
        json.dumps(v2_body(two[0], outputs=[{"name": "attributions"}])).encode(),
    ]
    out, statuses = handle(handler, context, bodies, [EXPLAIN, EXPLAIN, PREDICT])
    tensors = v2_outputs(out[0])
    assert out[0]["id"] == "both" and list(tensors) == ["digit", "confidence", "probabilities", "view", "attributions"]
    assert tensors["view"].shape == tensors["attributions"].shape == (2, 28, 28)
    assert tensors["digit"].tolist() == mnist_sample[1][:2].tolist()
    assert list(v2_outputs(out[1])) == ["digit", "attributions"]  # in the protocol's order
    assert statuses == {2: (400, out[2]["error"])} and "attributions" in out[2]["error"]


def test_a_clients_explain_header_in_another_case_changes_nothing(handler_and_context):
    """TorchServe passes a client's `Explain: True` beside its own `explain: False`: its own wins."""
    handler, context = handler_and_context
    out, _ = handle(handler, context, [SEVEN, SEVEN], [{"Explain": "True", **PREDICT}, {**EXPLAIN, "EXPLAIN": "False"}])
    assert "view" not in out[0] and "view" in out[1]


@pytest.mark.parametrize("part", ["__init__", "attributions"])  # captum cannot load; the computation fails
def test_a_failed_explanation_is_a_500_and_its_batchs_predictions_stand(handler_and_context, monkeypatch, caplog, part):
    from handler.explanations import Explainer

    def broken(self, *args):
        raise RuntimeError("injected fault")

    handler, context = handler_and_context
    monkeypatch.setattr(Explainer, part, broken)
    with caplog.at_level(logging.INFO):
        out, statuses = handle(handler, context, [SEVEN, SEVEN, b""], [EXPLAIN, PREDICT, EXPLAIN])
    assert statuses == {0: (500, "internal error"), 2: (400, "the request body is empty")}
    assert out[0] == {"code": 500, "error": "internal error"} and out[1]["digit"] == 7
    assert "injected fault" in caplog.text and "[METRICS]InternalErrors.Count:1|#ModelName:mnist|" in caplog.text


def test_explanations_are_counted(handler_and_context, mnist_sample, caplog):
    handler, context = handler_and_context
    bodies = [SEVEN, {"instances": mnist_sample[0][:2].tolist()}, SEVEN]
    with caplog.at_level(logging.INFO):
        handle(handler, context, bodies, [EXPLAIN, EXPLAIN, PREDICT])
    assert "[METRICS]Explanations.Count:3|#ModelName:mnist|" in caplog.text
    assert "[METRICS]DigitBatchSize_sum.Count:4|#ModelName:mnist|" in caplog.text


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_gpu_worker_explains_as_a_cpu_worker_does(handler_and_context, tmp_path, mnist_sample):
    from harness.inprocess import load_handler

    bodies = [png_bytes(d) for d in mnist_sample[0][:16]]
    on_cpu, _ = handle(*handler_and_context, bodies, [EXPLAIN] * len(bodies))
    on_gpu, statuses = handle(*load_handler(gpu_id=0, model_dir=tmp_path), bodies, [EXPLAIN] * len(bodies))
    assert statuses == {}
    for cpu, gpu in zip(on_cpu, on_gpu):
        check_explains(gpu)
        assert gpu["digit"] == cpu["digit"] and np.abs(np.subtract(gpu["view"], cpu["view"])).max() <= 2e-3
        scale = np.abs(cpu["attributions"]).max()
        assert np.abs(np.subtract(gpu["attributions"], cpu["attributions"])).max() <= 0.05 * scale


def test_predictions_never_import_captum():
    """The explanation module's import is the worker's; captum's (and matplotlib's) only on a first
    explanation request."""
    script = (
        "import sys, json\n"
        "from harness.inprocess import load_handler\n"
        "handler, context = load_handler(metrics_flush_seconds=0)\n"
        "context.request_headers[0] = {'explain': 'False'}\n"
        f"handler.handle([{{'body': open({str(FIXTURES / 'seven.png')!r}, 'rb').read()}}], context)\n"
        "before = 'captum' in sys.modules\n"
        "context.request_headers[0] = {'explain': 'True'}\n"
        f"handler.handle([{{'body': open({str(FIXTURES / 'seven.png')!r}, 'rb').read()}}], context)\n"
        "print(json.dumps([before, 'captum' in sys.modules]))\n"
    )
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.splitlines()[-1]) == [False, True]


# ---------------------------------------------------------------- a real TorchServe


def post(server, path: str, **kwargs) -> requests.Response:
    return requests.post(server.inference + path, headers=server.headers(), timeout=60, **kwargs)


@pytest.mark.integration
def test_explanations_route_answers_what_the_network_read_and_why(server):
    prediction = server.predict(SEVEN, "image/png").json()
    answer = post(server, "/explanations/mnist", data=SEVEN)
    assert answer.status_code == 200 and answer.headers["X-Model-Version"]
    check_explains(answer.json(), prediction)
    view, _ = grids(answer.json())
    assert np.abs(view - primary_view(SEVEN)).max() <= 5e-5


@pytest.mark.integration
def test_kserve_v1_explain_answers_explanations_not_predictions(server, mnist_sample):
    images, labels = mnist_sample
    body = {"instances": [images[4].tolist(), {"b64": base64.b64encode(SEVEN).decode()}]}
    predicted = post(server, "/v1/models/mnist:predict", json=body).json()["predictions"]
    answer = post(server, "/v1/models/mnist:explain", json=body)
    assert answer.status_code == 200 and list(answer.json()) == ["explanations"]
    for explanation, prediction in zip(answer.json()["explanations"], predicted, strict=True):
        check_explains(explanation, prediction)


@pytest.mark.integration
def test_v2_explain_route_answers_in_the_protocols_form(server):
    answer = post(server, "/v2/models/mnist/explain", json=v2_body(SEVEN, id="e1"))
    assert answer.status_code == 200 and answer.json()["id"] == "e1"
    tensors = v2_outputs(answer.json())
    assert tensors["digit"].tolist() == [7] and tensors["attributions"].shape == (1, 28, 28)
    check_explains({name: tensors[name][0].tolist() for name in tensors})
    refused = post(server, "/v2/models/mnist/infer", json=v2_body(SEVEN, outputs=[{"name": "view"}]))
    assert refused.status_code == 400 and "view" in refused.json()["error"]


@pytest.mark.integration
@pytest.mark.parametrize("bad", BAD_BODIES, ids=[f"{b.reason}-{i}" for i, b in enumerate(BAD_BODIES)])
def test_bad_input_is_refused_as_a_prediction_is(server, bad):
    answers = [
        requests.post(
            server.inference + route,
            data=bad.body,
            headers={**server.headers(), "Content-Type": bad.content_type},
            timeout=60,
        )
        for route in ("/predictions/mnist", "/explanations/mnist")
    ]
    assert [a.status_code for a in answers] == [bad.status] * 2
    assert answers[0].json() == answers[1].json()


@pytest.mark.integration
def test_good_and_bad_explanations_and_predictions_batched_together(server, mnist_sample):
    images, labels = mnist_sample
    pids = sorted(server.worker_pids())
    settle_metrics()
    batches_before, explained_before = metric(server, "DigitBatchSize_count"), metric(server, "Explanations")
    predicted_before = metric(server, "DigitPredictions")
    jobs = []  # (route, body, expected status, expected digit)
    for i in range(24):
        jobs.append(("/explanations/mnist", png_bytes(images[i]), 200, labels[i]))
        jobs.append(("/explanations/mnist", BAD_BODIES[i % 3].body, BAD_BODIES[i % 3].status, None))
        jobs.append(("/predictions/mnist", png_bytes(images[i]), 200, labels[i]))
    with ThreadPoolExecutor(36) as pool:
        responses = list(pool.map(lambda job: server.predict(job[1], path=job[0]), jobs))
    for (route, _, status, digit), response in zip(jobs, responses):
        assert response.status_code == status, (route, response.text)
        if status == 200:
            answer = response.json()
            assert answer["digit"] == digit and ("view" in answer) == (route == "/explanations/mnist")
    # The handler's metrics still leave the workers: explanations counted, and as predictions too.
    assert wait_for_metric(server, "Explanations", explained_before + 24) - explained_before == 24
    assert metric(server, "DigitPredictions") - predicted_before == 48
    assert metric(server, "DigitBatchSize_count") - batches_before < 48, "every request was read alone"
    assert sorted(server.worker_pids()) == pids, "a worker restarted"


@pytest.mark.integration
def test_a_clients_explain_header_cannot_turn_a_prediction_into_an_explanation(server):
    for spelling in ("explain", "Explain", "EXPLAIN"):
        answer = requests.post(
            server.predictions, data=SEVEN, headers={**server.headers(), spelling: "True"}, timeout=60
        )
        assert answer.status_code == 200 and "view" not in answer.json(), spelling


# ---------------------------------------------------------------- the client and the CLI


@pytest.mark.integration
@pytest.mark.parametrize("route", ["torchserve", "v1", "v2"])
@pytest.mark.parametrize("kind", KINDS)
def test_the_clients_explain_over_each_route(server, kind, route, model_version):
    with make_client(kind, server.inference, token_file=server.root / "key_file.json", route=route) as client:
        explanation, prediction = client.explain(SEVEN), client.predict(SEVEN)
        with pytest.raises(RequestRejected) as refused:
            client.explain(b"not an image")
    assert isinstance(explanation, Explanation) and explanation.prediction == prediction
    assert explanation.model_version == model_version and refused.value.status == 415
    check_explains(
        {
            "digit": explanation.digit,
            "confidence": explanation.confidence,
            "probabilities": list(explanation.probabilities),
            "view": explanation.view,
            "attributions": explanation.attributions,
        }
    )


@pytest.mark.integration
def test_the_cli_explains_each_file_and_fails_when_one_failed(server, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    run = subprocess.run(
        [sys.executable, "-m", "mnist_digit_client", "explain", str(FIXTURES / "seven.png"), str(notes)]
        + ["--url", server.inference, "--token-file", str(server.root / "key_file.json")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1, run.stderr
    seven, refused = (json.loads(line) for line in run.stdout.splitlines())
    assert seven["file"].endswith("seven.png") and seven["digit"] == 7
    assert np.asarray(seven["view"]).shape == np.asarray(seven["attributions"]).shape == (28, 28)
    assert refused == {"file": str(notes), "code": 415, "error": refused["error"]} and refused["error"]
