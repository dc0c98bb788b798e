"""The one way to call a control-plane actor: a deadline, and retries of what Ray says is retryable.

The camera controller and the decoder shards are restartable actors. While Ray restarts one,
a call to it fails with ``ActorUnavailableError`` ("the actor is restarting"); a call that was
running when the process died fails with ``ActorDiedError``; a call that outlives its wait
fails with ``GetTimeoutError``. None of these says the request was wrong, so a caller that gave
up on the first one would hand its user a 500 for a restart that lasts a few seconds.

:class:`ActorCaller` makes every call with one overall deadline and retries, with capped
exponential backoff and full jitter:

* ``ActorUnavailableError`` — when the call is idempotent (Ray says the call "may or may not
  have been executed", so a call that is not idempotent is never sent twice);
* ``ActorDiedError`` and a name that does not resolve yet — the handle is looked up again by
  name (a restarted or re-created actor), when the call is idempotent;
* ``GetTimeoutError`` — only when the call is idempotent.

Errors raised by the actor's own code (``UnknownCameraError``...) pass through untouched.
When the deadline passes, :class:`ControlPlaneUnavailableError` names the actor, the method,
how long was waited and the last cause; the control API answers it as 503 with
``Retry-After``. Writes are made idempotent by the callee (the controller keeps applied
request ids with its state), so a retried write leaves one change.

The module knows nothing of the controller or the shards, so every layer can use it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import ray
from ray.exceptions import (
    ActorUnavailableError,
    ActorUnschedulableError,
    GetTimeoutError,
    NodeDiedError,
    RayActorError,
    RayTaskError,
)

TARGET_GONE: tuple[type[BaseException], ...] = (RayActorError, ActorUnschedulableError, NodeDiedError)
"""A target that is restarting, died, or cannot be placed any more (its node is gone: an actor pinned
to a removed node raises ``ActorUnschedulableError``, which is not a ``RayActorError``)."""

log = logging.getLogger(__name__)

T = TypeVar("T")
Invoke = Callable[[Any], Any]
"""``lambda actor: actor.method.remote(...)``: the call, given a handle (an ObjectRef back)."""


@dataclass(frozen=True, slots=True)
class CallPolicy:
    """How long one logical call may take, and whether it may run twice.

    Attributes:
        deadline_s: the whole call, every attempt and pause included.
        idempotent: running it twice leaves the same result as once (reads; writes that carry a
            request id the callee deduplicates). Only such calls are retried after a timeout or
            an error that does not say whether the call ran.
        attempt_timeout_s: one attempt's wait at most (None: what is left of the deadline).
        backoff_initial_s: the first pause; doubles per retry up to ``backoff_max_s``.
        backoff_max_s: the longest pause.
        retry_after_s: what a caller that gets :class:`ControlPlaneUnavailableError` is told
            to wait before it tries again (the API's ``Retry-After``).
        retry_died: retry after ``ActorDiedError`` (a restartable actor comes back; a caller that
            tracks liveness itself, as the controller does for shards, answers at once instead).
        retry_not_found: retry while no actor has the name (it is being re-created); False
            raises :class:`ActorNotFoundError` at once (for an actor that may rightly be absent).
    """

    deadline_s: float
    idempotent: bool = True
    attempt_timeout_s: float | None = None
    backoff_initial_s: float = 0.1
    backoff_max_s: float = 2.0
    retry_after_s: float = 2.0
    retry_died: bool = True
    retry_not_found: bool = True

    def __post_init__(self) -> None:
        if self.deadline_s <= 0:
            raise ValueError(f"deadline_s must be > 0, got {self.deadline_s}")
        if self.attempt_timeout_s is not None and self.attempt_timeout_s <= 0:
            raise ValueError(f"attempt_timeout_s must be > 0, got {self.attempt_timeout_s}")


READ = CallPolicy(deadline_s=30.0, attempt_timeout_s=15.0)
"""Queries of the controller (status, inventory, events)."""
WRITE = CallPolicy(deadline_s=90.0)
"""Camera changes: they may wait for shards to start or stop streams (the controller's own shard
calls allow 60 s); idempotent because each carries a request id."""


class ControlPlaneUnavailableError(RuntimeError):
    """The actor did not answer within the deadline (restarting, lost, or too slow); try again later.

    Attributes:
        target: the actor's name.
        method: what was called.
        waited_s: how long the call tried.
        attempts: how many attempts were made.
        retry_after_s: how long a caller should wait before trying again.
        cause: the last Ray error's class name.
    """

    def __init__(
        self, target: str, method: str, waited_s: float, attempts: int, retry_after_s: float, cause: str
    ) -> None:
        self.target = target
        self.method = method
        self.waited_s = waited_s
        self.attempts = attempts
        self.retry_after_s = retry_after_s
        self.cause = cause
        super().__init__(
            f"{target}.{method} did not answer in {waited_s:.1f} s ({attempts} attempts; last: {cause}); "
            f"retry in {retry_after_s:.0f} s"
        )

    @property
    def retry_after_header(self) -> str:
        """Whole seconds, at least 1 (RFC 9110 ``Retry-After``)."""
        return str(max(1, math.ceil(self.retry_after_s)))

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across Ray with its fields
        return (
            type(self),
            (self.target, self.method, self.waited_s, self.attempts, self.retry_after_s, self.cause),
        )


class ActorNotFoundError(LookupError):
    """No actor of that name is alive (yet): it may be being re-created."""


def retryable(exc: BaseException, policy: CallPolicy) -> bool:
    """Whether a failed attempt may be tried again under ``policy``.

    ``RayTaskError`` (the actor's own code raised, whatever it raised) is never retryable: it is
    the answer.
    """
    if isinstance(exc, RayTaskError):
        return False
    if isinstance(exc, ActorNotFoundError):
        return policy.retry_not_found  # nothing was sent
    if not policy.idempotent:
        return False
    if not policy.retry_died and isinstance(exc, RayActorError) and not isinstance(exc, ActorUnavailableError):
        return False
    return isinstance(exc, RayActorError | GetTimeoutError | ActorNotFoundError)


class ActorCaller:
    """Calls one named actor with :class:`CallPolicy` deadlines and retries.

    Args:
        name: the actor's name (looked up again after it died or could not be found).
        namespace: its Ray namespace.
        handle: a handle to start with (else looked up on first use).
        sleep: the pause function (tests pass a recorder); ``time.sleep`` by default.
    """

    def __init__(
        self,
        name: str,
        namespace: str | None,
        handle: Any | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.name = name
        self.namespace = namespace
        self._handle = handle
        self._sleep = sleep

    def handle(self) -> Any:
        """The actor's handle, looked up by name if none is held.

        Raises:
            ActorNotFoundError: no actor of that name is alive (Ray's ``ValueError``).
        """
        if self._handle is None:
            try:
                self._handle = ray.get_actor(self.name, namespace=self.namespace)
            except ValueError as exc:
                raise ActorNotFoundError(f"no actor named {self.name!r} in namespace {self.namespace!r}") from exc
        return self._handle

    def _forget_after(self, exc: BaseException) -> None:
        if isinstance(exc, RayActorError) and not isinstance(exc, ActorUnavailableError):
            self._handle = None  # died: a restarted or re-created actor is found by name again

    def _pause_s(self, attempt: int, policy: CallPolicy, left_s: float) -> float:
        cap = min(policy.backoff_max_s, policy.backoff_initial_s * (2 ** (attempt - 1)))
        return max(0.0, min(left_s, random.uniform(cap / 2, cap)))

    def _give_up(self, method: str, policy: CallPolicy, t0: float, attempts: int, exc: BaseException) -> Exception:
        waited = time.monotonic() - t0
        log.warning("%s.%s unavailable after %.1f s, %d attempts: %s", self.name, method, waited, attempts, exc)
        err = ControlPlaneUnavailableError(
            self.name, method, waited, attempts, policy.retry_after_s, type(exc).__name__
        )
        err.__cause__ = exc
        return err

    def call(self, method: str, invoke: Invoke, policy: CallPolicy = READ) -> Any:
        """``invoke(handle)``'s result, retried per ``policy``.

        Args:
            method: the method's name, for messages only (``invoke`` makes the call).
            invoke: ``lambda a: a.method.remote(...)``.
            policy: deadline and idempotence.

        Raises:
            ControlPlaneUnavailableError: no answer within the deadline.
            Exception: whatever the actor's method raised.
        """
        t0 = time.monotonic()
        deadline = t0 + policy.deadline_s
        attempt = 0
        while True:
            attempt += 1
            left = deadline - time.monotonic()
            try:
                ref = invoke(self.handle())
                wait = left if policy.attempt_timeout_s is None else min(left, policy.attempt_timeout_s)
                return ray.get(ref, timeout=max(0.01, wait))
            except (RayActorError, GetTimeoutError, ActorNotFoundError) as exc:
                if not retryable(exc, policy):
                    raise
                self._forget_after(exc)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self._give_up(method, policy, t0, attempt, exc) from exc
                log.info("%s.%s attempt %d: %s; retrying", self.name, method, attempt, type(exc).__name__)
                self._sleep(self._pause_s(attempt, policy, left))

    async def call_async(self, method: str, invoke: Invoke, policy: CallPolicy = READ) -> Any:
        """As :meth:`call`, awaiting the answer (for asyncio callers such as the API replica)."""
        t0 = time.monotonic()
        deadline = t0 + policy.deadline_s
        attempt = 0
        while True:
            attempt += 1
            left = deadline - time.monotonic()
            try:
                ref = invoke(self.handle())
                wait = left if policy.attempt_timeout_s is None else min(left, policy.attempt_timeout_s)
                fut = asyncio.wrap_future(ref.future())
                done, _ = await asyncio.wait({fut}, timeout=max(0.01, wait))
                if not done:  # not wait_for: a TimeoutError the actor raised is its answer, not ours
                    fut.cancel()
                    raise GetTimeoutError(f"{self.name}.{method} gave no answer in {wait:.1f} s")
                return fut.result()
            except (RayActorError, GetTimeoutError, ActorNotFoundError) as exc:
                if not retryable(exc, policy):
                    raise
                self._forget_after(exc)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self._give_up(method, policy, t0, attempt, exc) from exc
                log.info("%s.%s attempt %d: %s; retrying", self.name, method, attempt, type(exc).__name__)
                await asyncio.sleep(self._pause_s(attempt, policy, left))


def gather(asks: dict[Any, Any], timeout_s: float) -> dict[Any, Any]:
    """Many calls at once under one deadline: key -> answer, None where no answer came.

    ``asks`` maps a key to an ObjectRef already sent. A target that is restarting, died or did
    not answer in ``timeout_s`` gives None (the caller decides what silence means); an error the
    target's own code raised is re-raised. One shared deadline: a hung target costs
    ``timeout_s`` once, not once per target.
    """
    if not asks:
        return {}
    by_ref = {ref: key for key, ref in asks.items()}
    ready, _ = ray.wait(list(by_ref), num_returns=len(by_ref), timeout=timeout_s)
    out: dict[Any, Any] = dict.fromkeys(asks)
    for ref in ready:
        try:
            out[by_ref[ref]] = ray.get(ref)
        except RayTaskError:
            raise
        except TARGET_GONE:  # restarting, died, or its node is gone
            continue
    return out
