"""Which Ray errors the shared caller retries, and how the API and the CLI answer an unavailable controller.

Pure logic: Ray's exception classes are built directly (no ``ray.init``); the calls themselves
against a restarting actor are in tests/integration/test_remote_call_live.py.
"""

from __future__ import annotations

import pickle

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from ray.exceptions import ActorDiedError, ActorUnavailableError, GetTimeoutError, RayTaskError

from cluster.cameras_cli import send
from contracts.errors import UnknownCameraError
from serve_apps.api.error_shape import install_error_handlers
from serve_apps.remote_call import (
    ActorNotFoundError,
    CallPolicy,
    ControlPlaneUnavailableError,
    retryable,
)

RESTARTING = ActorUnavailableError("IOError: The actor is restarting.", None)
DIED = ActorDiedError()
TIMEOUT = GetTimeoutError("no answer")
NOT_FOUND = ActorNotFoundError("no actor named 'cctv-controller'")


def _task_error(cause: Exception) -> Exception:
    """What Ray raises in the caller when the actor's own method raised ``cause``."""
    return RayTaskError("camera", "Traceback ...", cause).as_instanceof_cause()


IDEMPOTENT = CallPolicy(deadline_s=5)
ONCE = CallPolicy(deadline_s=5, idempotent=False)
TRACKED = CallPolicy(deadline_s=5, retry_died=False)
MAY_BE_ABSENT = CallPolicy(deadline_s=5, retry_not_found=False)


@pytest.mark.parametrize(
    ("exc", "policy", "expected"),
    [
        (RESTARTING, IDEMPOTENT, True),
        (DIED, IDEMPOTENT, True),
        (TIMEOUT, IDEMPOTENT, True),
        (NOT_FOUND, IDEMPOTENT, True),
        # Not idempotent: Ray says such a call "may or may not have been executed": never twice.
        (RESTARTING, ONCE, False),
        (DIED, ONCE, False),
        (TIMEOUT, ONCE, False),
        (NOT_FOUND, ONCE, True),  # nothing was sent
        # The controller tracks shard liveness itself: a died shard is answered at once.
        (DIED, TRACKED, False),
        (RESTARTING, TRACKED, True),
        (NOT_FOUND, MAY_BE_ABSENT, False),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else None,
)
def test_retryable_follows_what_ray_says_and_the_policy(exc: Exception, policy: CallPolicy, expected: bool) -> None:
    assert retryable(exc, policy) is expected


def test_an_error_the_actor_raised_is_its_answer_never_retried() -> None:
    unknown = _task_error(UnknownCameraError("cam-9"))
    assert isinstance(unknown, UnknownCameraError)  # the route's `except UnknownCameraError` still sees it
    assert not retryable(unknown, IDEMPOTENT)
    # Even when the actor's own code raised a Ray error (a nested call that timed out or died).
    assert not retryable(_task_error(GetTimeoutError("shard slow")), IDEMPOTENT)
    assert not retryable(_task_error(TimeoutError("shard did not answer")), IDEMPOTENT)


def test_policy_refuses_nonsense_deadlines() -> None:
    with pytest.raises(ValueError, match="deadline_s"):
        CallPolicy(deadline_s=0)
    with pytest.raises(ValueError, match="attempt_timeout_s"):
        CallPolicy(deadline_s=1, attempt_timeout_s=-1)


def test_unavailable_error_names_the_call_and_survives_pickling() -> None:
    err = ControlPlaneUnavailableError("cctv-controller", "add_cameras", 44.6, 12, 2.4, "ActorUnavailableError")
    text = str(err)
    assert "cctv-controller.add_cameras" in text and "44.6 s" in text and "ActorUnavailableError" in text
    assert err.retry_after_header == "3"  # whole seconds, rounded up
    back = pickle.loads(pickle.dumps(err))  # it crosses Ray between actors
    assert (back.target, back.method, back.attempts, back.cause) == ("cctv-controller", "add_cameras", 12, err.cause)
    assert ControlPlaneUnavailableError("a", "b", 0.1, 1, 0.2, "x").retry_after_header == "1"


def _app(exc: Exception) -> TestClient:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    def boom() -> None:
        raise exc

    return TestClient(app, raise_server_exceptions=False)


@pytest.mark.parametrize(
    "exc",
    [
        ControlPlaneUnavailableError("cctv-controller", "status", 20.0, 9, 2.0, "ActorUnavailableError"),
        RESTARTING,
        _task_error(TIMEOUT),
    ],
    ids=["unavailable", "raw-ray-error", "task-error"],
)
def test_api_answers_an_unavailable_control_plane_503_with_retry_after_in_the_error_shape(exc: Exception) -> None:
    r = _app(exc).get("/boom")
    assert r.status_code == 503
    assert r.headers["retry-after"].isdigit() and int(r.headers["retry-after"]) >= 1
    body = r.json()
    assert body["status"] == 503 and body["error"] == "service_unavailable" and "Traceback" not in r.text
    assert body["detail"]


def _recording_client(answers: list[httpx.Response], seen: list[httpx.Request]) -> httpx.Client:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers.pop(0)

    return httpx.Client(transport=httpx.MockTransport(handler), base_url="http://api")


def test_cli_sends_a_change_again_with_the_same_key_after_503_retry_after() -> None:
    seen: list[httpx.Request] = []
    busy = httpx.Response(503, headers={"Retry-After": "2"}, json={"detail": "restarting"})
    client = _recording_client([busy, busy, httpx.Response(201, json={"shard": "shard-000"})], seen)
    pauses: list[float] = []
    r = send(client, "POST", "/cameras", json_body={"id": "c"}, change=True, retry_s=60, sleep=pauses.append)
    assert r.status_code == 201 and pauses == [2.0, 2.0]
    keys = {req.headers["idempotency-key"] for req in seen}
    assert len(seen) == 3 and len(keys) == 1  # one change, one key, however often it is sent


def test_cli_gives_up_at_its_deadline_and_never_retries_other_errors() -> None:
    seen: list[httpx.Request] = []
    busy = httpx.Response(503, headers={"Retry-After": "1"}, json={"detail": "restarting"})
    r = send(_recording_client([busy], seen), "GET", "/cameras", retry_s=0, sleep=lambda _: None)
    assert r.status_code == 503 and len(seen) == 1 and "idempotency-key" not in seen[0].headers
    for status in (409, 500):  # a refusal is an answer; a 500 is a bug to report, not to hide by retrying
        seen.clear()
        answer = httpx.Response(status, json={"detail": "x"})
        r = send(_recording_client([answer], seen), "DELETE", "/cameras/c", change=True, retry_s=60)
        assert r.status_code == status and len(seen) == 1
    seen.clear()
    no_hint = httpx.Response(503, json={"detail": "no object store"})  # 503 without Retry-After: not a restart
    assert send(_recording_client([no_hint], seen), "GET", "/cameras", retry_s=60).status_code == 503
    assert len(seen) == 1
