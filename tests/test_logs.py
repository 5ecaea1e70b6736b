"""Where the logs go and what a refused request leaves in them, against real servers: `make serve`'s
rotating files (log4j2.xml) and the image's stdout, as text or JSON lines (log4j2-console.xml, which
ops/model_layout.py writes as the image's and KServe's log4j2.xml)."""

from __future__ import annotations

import pytest

from harness.local_server import LocalTorchServe
from harness.log_check import access_lines, find_refusal, records, refuse, unparsed_json
from ops.paths import ROOT
from ops.polling import NotYet, wait_until
from tests.conftest import FIXTURES

pytestmark = pytest.mark.integration

CONSOLE_CONFIG = f"-Dlog4j.configurationFile={ROOT / 'log4j2-console.xml'}"


def wait_for_refusal(read_text, request_id: str, client_id: str, status: int = 415):
    """The handler's line for that request once the frontend has copied it out of the worker."""

    def logged():
        record = find_refusal(read_text(), request_id, client_id, status)
        if record is None:
            raise NotYet(f"no line with request_id={request_id}")
        return record

    return wait_until(logged, 15, 0.2, f"the model log's line for {request_id}")


def test_make_serve_keeps_files_and_the_model_log_has_the_refused_request(server):
    request_id, client_id = refuse(server.predictions, server.headers())
    logs = server.root / "logs"
    record = wait_for_refusal(lambda: (logs / "model_log.log").read_text(), request_id, client_id)
    assert "reason=not_an_image" in record.message and not record.json
    # the access log file's lines are "<time> - <message>": its 415, without a request ID
    access = lambda: '"POST /predictions/mnist HTTP/1.1" 415 ' in (logs / "access_log.log").read_text()  # noqa: E731
    assert wait_until(access, 10, 0.2, "the access log's 415")
    assert not (server.root / "torchserve.out").read_text().count("MODEL_LOG")  # files only, as before


@pytest.fixture(scope="module", params=["text", "json"])
def console_server(request, model_store):
    """The repository's config with the image's logging, LOG_FORMAT as the parameter."""
    ts = LocalTorchServe(model_store, overrides={"vmargs": CONSOLE_CONFIG}, environ={"LOG_FORMAT": request.param})
    ts.start()
    yield ts, request.param
    ts.stop()


def test_the_images_logs_go_to_stdout(console_server):
    server, log_format = console_server
    stdout = lambda: (server.root / "torchserve.out").read_text()  # noqa: E731 (the frontend's stdout)
    good = server.predict((FIXTURES / "seven.png").read_bytes())
    assert good.status_code == 200
    request_id, client_id = refuse(server.predictions, server.headers())
    record = wait_for_refusal(stdout, request_id, client_id)
    assert record.json == (log_format == "json") and record.level == "INFO"
    assert wait_until(lambda: access_lines(stdout(), "/predictions/mnist", 415), 10, 0.2, "the access log's 415")
    assert access_lines(stdout(), "/predictions/mnist", 200)
    # one model log line per refused request, none for the 200
    assert sum(" request: " in r.message for r in records(stdout()) if r.logger == "MODEL_LOG") == 1
    assert not list((server.root / "logs").glob("*.log")), "no log files beside stdout"
    if log_format == "json":
        assert not unparsed_json(stdout())
        startup = [r for r in records(stdout()) if r.logger == "org.pytorch.serve.ModelServer"]
        assert startup and all(r.json for r in startup)  # multi-line messages stay one record
