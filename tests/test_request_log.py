"""In-process: the model version on every answer, and the model log's one line per refused request
(handler/request_log.py)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import re

import numpy as np

from handler.request_log import CLIENT_ID_MAX, one_line_records, refusal_line
from ops.paths import ROOT
from ops.version import release_version
from tests.conftest import FIXTURES, png_bytes

SEVEN = (FIXTURES / "seven.png").read_bytes()
HANDLER_LOGGER = "handler.mnist_handler"


def handle(handler_and_context, bodies: list, headers: list[dict] | None = None, request_ids=None) -> list[dict]:
    handler, context = handler_and_context
    for i in range(len(bodies)):
        context.request_headers[i] = (headers or [{}] * len(bodies))[i]
    context.request_ids = dict(enumerate(request_ids or []))
    return [json.loads(a) for a in handler.handle([{"body": b} for b in bodies], context)]


def request_lines(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == HANDLER_LOGGER and " request: " in r.getMessage()]


def test_the_model_version_is_the_release_and_a_digest_of_the_weights_and_calibration(model_version):
    served = (ROOT / "model" / "mnist_cnn.pt").read_bytes() + (ROOT / "model" / "calibration.json").read_bytes()
    assert model_version == f"{release_version()}+{hashlib.sha256(served).hexdigest()[:12]}"
    assert re.fullmatch(r"\d+\.\d+\.\d+\+[0-9a-f]{12}", model_version)


def test_another_calibration_is_another_version(tmp_path, model_version):
    from handler.request_log import served_version

    other = tmp_path / "calibration.json"
    other.write_text((ROOT / "model" / "calibration.json").read_text().replace("{", "{ ", 1))
    assert served_version(release_version(), ROOT / "model" / "mnist_cnn.pt", other) != model_version


def test_every_answer_carries_the_model_version(handler_and_context, model_version, mnist_sample):
    _, context = handler_and_context
    seven = base64.b64encode(SEVEN).decode()
    v2 = {"id": "a", "inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": [seven]}]}
    bodies = [SEVEN, b"not an image", {"instances": [mnist_sample[0][0].tolist()]}, v2, b""]
    answers = handle(handler_and_context, bodies)
    assert answers[0]["digit"] == 7 and answers[3]["model_version"] == model_version
    assert set(answers[0]) == {"digit", "confidence", "probabilities"}  # the bodies are as they were
    assert sorted(code for code, _ in context.statuses.values()) == [400, 415]
    assert [context.response_headers[i]["X-Model-Version"] for i in range(5)] == [model_version] * 5


def test_the_describe_answer_carries_it_too(handler_and_context, model_version):
    _, context = handler_and_context
    (metadata,) = handle(handler_and_context, [b""], [{"describe": "True"}])
    assert metadata["versions"] == [model_version] and context.response_headers[0]["X-Model-Version"] == model_version


def test_each_refused_request_logs_one_line_with_its_ids(handler_and_context, caplog):
    bodies = [SEVEN, b"\x00 not an image", b"", png_bytes(np.zeros((28, 28), np.uint8))]
    headers = [{"x-client-request-id": "good-1"}, {"x-client-request-id": "bad-1"}, {}, {"x-client-request-id": "a b"}]
    with caplog.at_level(logging.INFO):
        handle(handler_and_context, bodies, headers, request_ids=["ts-0", "ts-1", "ts-2", "ts-3"])
    lines = [r.getMessage() for r in request_lines(caplog)]
    assert lines == [
        "refused request: status=415 reason=not_an_image request_id=ts-1 client_request_id=bad-1 "
        'error="the body is not an image Pillow can read (PNG, JPEG, ...)"',
        "refused request: status=400 reason=empty request_id=ts-2 client_request_id=- "
        'error="the request body is empty"',
        'refused request: status=422 reason=blank request_id=ts-3 client_request_id="a b" '
        'error="no digit found: the image is blank or has no contrast"',
    ]
    assert all(r.levelno == logging.INFO for r in request_lines(caplog))


def test_a_batch_answered_200_logs_nothing(handler_and_context, mnist_sample, caplog):
    with caplog.at_level(logging.DEBUG):
        handle(handler_and_context, [png_bytes(d) for d in mnist_sample[0][:8]], request_ids=list("abcdefgh"))
    assert not [r for r in caplog.records if r.name == HANDLER_LOGGER]


def test_refusal_line_quotes_what_needs_it_and_bounds_the_callers_id():
    line = refusal_line(500, "internal", "internal error", None, 'x"y\n' + "z" * 500)
    assert line.startswith("failed request: status=500 reason=internal request_id=- client_request_id=")
    client = line.split("client_request_id=", 1)[1].rsplit(" error=", 1)[0]
    assert json.loads(client) == ('x"y\n' + "z" * 500)[:CLIENT_ID_MAX] and "\n" not in line


def test_with_json_logs_a_traceback_stays_one_line():
    """The frontend makes a record of each line a worker writes: with LOG_FORMAT=json a record,
    traceback included, is one line; otherwise the worker's output is left as it is."""
    logger, out = logging.getLogger("test_request_log.one_line"), io.StringIO()
    logger.propagate, stream = False, logging.StreamHandler(out)
    logger.setLevel(logging.INFO)
    stream.setFormatter(logging.Formatter("%(message)s"))  # TorchServe's worker format
    logger.addHandler(stream)
    try:
        assert not one_line_records({"LOG_FORMAT": "text"}, logger) and not one_line_records({}, logger)
        assert one_line_records({"LOG_FORMAT": "JSON"}, logger) and one_line_records({"LOG_FORMAT": "json"}, logger)
        try:
            raise FloatingPointError("injected")
        except FloatingPointError:
            logger.exception("preprocessing failed")
        logger.info("plain")
    finally:
        logger.removeHandler(stream)
    first, second = out.getvalue().splitlines()
    assert first.startswith("preprocessing failed\\nTraceback (most recent call last):\\n")
    assert first.endswith("FloatingPointError: injected") and second == "plain"
