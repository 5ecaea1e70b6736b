"""Finding one request in the service's log stream, text or JSON lines (log4j2-console.xml), or in
`make serve`'s files (log4j2.xml): tests/test_logs.py and `make image-test` use it.

    refuse(inference_url, headers) -> (TorchServe's request ID, the client's ID): one request answered 415
    find_refusal(log_text, request_id, client_id, 415) -> the handler's line for it, or None
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass

import requests

BAD_BODY = b"\x00\x01 definitely not an image \xff" * 4
# log4j2's text pattern: "%d [%-5p] %t %c - %m"
_TEXT = re.compile(r"^(?P<time>\S+) \[(?P<level>\w+)\s*\] (?P<thread>\S+) (?P<logger>\S+) - (?P<message>.*)$")


@dataclass(frozen=True)
class Record:
    logger: str
    level: str
    message: str
    json: bool  # read from a JSON line


def records(text: str) -> list[Record]:
    """The log lines of `text` in either form; other lines (a traceback's continuation in text
    form, the launcher's and the JVM's own few lines at start) are left out."""
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and {"logger", "level", "message"} <= set(entry):
                out.append(Record(entry["logger"], entry["level"], entry["message"], True))
            continue
        match = _TEXT.match(line)
        if match:
            out.append(Record(match["logger"], match["level"], match["message"], False))
    return out


def unparsed_json(text: str) -> list[str]:
    """Lines that start like a JSON object but are not one: broken escaping."""
    bad = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                json.loads(line)
            except ValueError:
                bad.append(line)
    return bad


def refuse(predictions_url: str, headers: dict[str, str], timeout: float = 30) -> tuple[str, str]:
    """POST a body that is no image with an X-Client-Request-ID of its own; asserts the 415 and
    returns (TorchServe's request ID from the answer's X-Request-ID, the client's ID)."""
    client_id = f"log-check-{uuid.uuid4().hex[:12]}"
    response = requests.post(
        predictions_url,
        data=BAD_BODY,
        timeout=timeout,
        headers={**headers, "Content-Type": "application/octet-stream", "X-Client-Request-ID": client_id},
    )
    assert response.status_code == 415, f"{response.status_code} {response.text[:200]}"
    return response.headers["X-Request-ID"], client_id


def find_refusal(text: str, request_id: str, client_id: str, status: int) -> Record | None:
    """The model log's line for that request, with its status and both IDs."""
    wanted = (f"status={status} ", f"request_id={request_id} ", f"client_request_id={client_id} ")
    for record in records(text):
        if record.logger == "MODEL_LOG" and all(part in record.message for part in wanted):
            return record
    return None


def access_lines(text: str, path: str, status: int) -> list[Record]:
    """Access log lines for POSTs to `path` answered `status` (they carry no request ID)."""
    needle = f'"POST {path} HTTP/1.1" {status} '
    return [r for r in records(text) if r.logger == "ACCESS_LOG" and needle in r.message]
