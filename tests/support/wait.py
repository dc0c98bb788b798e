"""The one deadline-and-poll helper of the suite.

Every test that waits for something to become true (a camera streaming, a restarted actor
answering, a port listening, a file written, a Prometheus scrape) waits through
:func:`wait_for`, so that

* a wait never hangs: it has a deadline, and fails at it with a message that names what it
  waited for, how long, and the last value or error seen;
* a Ray actor that is restarting (``ActorUnavailableError``, ``ActorDiedError`` of the call that
  was running, ``GetTimeoutError``) counts as "not yet", not as a test failure; any other
  exception is a real failure and is raised at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import ray

T = TypeVar("T")

NOT_YET: tuple[type[BaseException], ...] = (
    ray.exceptions.RayActorError,  # ActorUnavailableError (restarting), ActorDiedError (was running)
    ray.exceptions.GetTimeoutError,
)
"""Errors that mean "the thing is not there yet" while a restartable actor comes back."""


class WaitTimeout(AssertionError):
    """A :func:`wait_for` deadline passed; the message says what was awaited and what was last seen."""


def wait_for(
    pred: Callable[[], T],
    timeout_s: float,
    what: str,
    *,
    interval_s: float = 0.5,
    not_yet: tuple[type[BaseException], ...] = NOT_YET,
    detail: Callable[[], object] | None = None,
) -> T:
    """Poll ``pred`` until it returns a truthy value, and return that value.

    Args:
        pred: the check; a truthy return ends the wait.
        timeout_s: the deadline, from now.
        what: what is awaited, in words, for the failure message ("cam-1 streaming").
        interval_s: the pause between checks.
        not_yet: exceptions from ``pred`` that count as "not yet" (default: a restarting actor).
        detail: called once at the deadline; what it returns is added to the failure message
            (the states of the cameras that did not get there, say).

    Raises:
        WaitTimeout: the deadline passed; names ``what``, the time waited and the last value or error.
    """
    t0 = time.monotonic()
    deadline = t0 + timeout_s
    last: object = None
    checks = 0
    while True:
        checks += 1
        try:
            value = pred()
        except not_yet as exc:
            last = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            shown = repr(last)
            if len(shown) > 600:
                shown = shown[:600] + "..."
            message = (
                f"timed out after {time.monotonic() - t0:.1f} s ({checks} checks) waiting for {what}; last: {shown}"
            )
            if detail is not None:
                try:
                    message += f"; detail: {detail()!r}"
                except not_yet as exc:
                    message += f"; detail unavailable: {type(exc).__name__}"
            raise WaitTimeout(message)
        time.sleep(min(interval_s, max(0.0, deadline - time.monotonic())))
