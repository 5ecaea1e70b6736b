"""What each answer says about the model that gave it, and the model log's line per refused request.

- `X-Model-Version` on every answer: the archive's version (the release, VERSION) and the first 12
  hex digits of the SHA-256 of the weights file followed by the calibration file
  (model/calibration.json) and the open-set head's file (model/open_set.pt), as
  `1.1.0+3f2a9c1b7d4e` (semver build metadata): new weights, a new calibration or a new head change
  the answers, and the version. The v2 answers' `model_version` is the same string. Computed once,
  when a worker starts.
- One line per request answered 4xx or 5xx by the handler, in the model log (a worker's stdout,
  which the frontend copies there): status, reason, TorchServe's request ID (its answer's
  `X-Request-ID`), the caller's `X-Client-Request-ID` and the error, as logfmt. Requests answered
  200 are not logged: the access log has a line for each.
- With LOG_FORMAT=json (the image's switch, which workers inherit), each record a worker logs,
  traceback included, is written on one line with its newlines as `\\n`: the frontend makes a log
  record of each line a worker writes, and a traceback should stay one JSON record.
- TorchServe's per-batch INFO line is dropped from it (not_per_batch_chatter).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path

MODEL_VERSION_HEADER = "X-Model-Version"
REQUEST_ID_HEADER = "X-Client-Request-ID"  # echoed on each answer (DigitHandler._echo_request_id)
DIGEST_HEX = 12
CLIENT_ID_MAX = 128  # characters of a caller's ID kept in the log line
_BARE = re.compile(r"[A-Za-z0-9._:/+-]+")  # logfmt values written without quotes


def served_version(archive_version: str, weights: Path, *more: Path) -> str:
    """`<archive version>+<first 12 hex digits of sha256(weights file, then each of `more`)>`: the
    digit network's weights, its calibration (handler/calibration.py) and the open-set head's
    (handler/open_set.py)."""
    digest = hashlib.sha256()
    for path in (weights, *more):
        digest.update(Path(path).read_bytes())
    return f"{archive_version}+{digest.hexdigest()[:DIGEST_HEX]}"


def not_per_batch_chatter(record: logging.LogRecord) -> bool:
    """Drops the line TorchServe's worker logs at INFO before every batch ("Backend received
    inference at: <epoch>", ts/protocol/otf_message_handler.py): the frontend reads each line of a
    worker's output and copies it to model_log.log, and under load these were the most frequent
    lines there, timing nothing that the access log and the metrics do not."""
    return record.msg != "Backend received inference at: %d"


def refusal_line(status: int, reason: str, message: str, request_id: str | None, client_id: str | None) -> str:
    """`refused request: status=415 reason=not_an_image request_id=<uuid> client_request_id=<id> error="..."`
    (`failed request:` for a 5xx); `-` for an ID that is missing."""
    kind = "failed" if status >= 500 else "refused"
    client = client_id[:CLIENT_ID_MAX] if client_id is not None else None
    fields = (
        ("status", str(status)),
        ("reason", reason),
        ("request_id", request_id),
        ("client_request_id", client),
        ("error", message),
    )
    return f"{kind} request: " + " ".join(f"{key}={_value(value)}" for key, value in fields)


def _value(value: str | None) -> str:
    if value is None or value == "":
        return "-"
    return value if _BARE.fullmatch(value) else json.dumps(value)


class OneLine(logging.Formatter):
    """Another formatter's output with its line breaks written as the two characters `\\n`."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        text = self.inner.format(record)
        return text.replace("\r", "").replace("\n", "\\n") if "\n" in text else text


def one_line_records(environ=os.environ, logger: logging.Logger | None = None) -> bool:
    """With LOG_FORMAT=json, every handler of `logger` (the root logger: where TorchServe's worker
    writes to its stdout) writes each record on one line. Whether it did."""
    if environ.get("LOG_FORMAT", "").lower() != "json":
        return False
    for handler in (logger or logging.getLogger()).handlers:
        if not isinstance(handler.formatter, OneLine):
            handler.setFormatter(OneLine(handler.formatter or logging.Formatter()))
    return True
