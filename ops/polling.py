"""The one polling loop of the service's tools, harness and tests: ask, sleep, ask again, until a
deadline.

    wait_until(lambda: server_answers(), timeout=60, interval=0.5, what="the server to answer")

The predicate's first truthy result is returned. It may raise NotYet("why") to say why it is not
there yet: that reason, or the last exception of a type listed in `errors`, ends up in the
TimeoutError. Any other exception ends the wait at once (a server that exited, a container that
stopped).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class NotYet(Exception):
    """Raised by a predicate to say what it saw instead of what it waits for."""


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    interval: float = 0.5,
    what: str = "a condition",
    errors: tuple[type[BaseException], ...] = (),
) -> T:
    """`predicate()`'s first truthy result, asked every `interval` seconds (the first time at once);
    TimeoutError naming `what` and the last reason seen once `timeout` seconds have passed."""
    deadline, last = time.monotonic() + timeout, None
    while True:
        try:
            result = predicate()
            if result:
                return result
        except NotYet as reason:
            last = str(reason)
        except errors as error:
            last = repr(error)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"waited {timeout:g} s for {what}" + (f"; last: {last}" if last else ""))
        time.sleep(min(interval, remaining))
