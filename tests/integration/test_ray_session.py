"""shutdown_ray stops Serve's per-process router loop, and a second Ray session in the same process works.

Real local Ray and Serve: a driver-side deployment handle starts Serve's router thread; after
``shutdown_ray()`` (with Serve still running, as :meth:`cluster.runtime.Runtime.stop` leaves it) no
thread of this process runs it, and the next session's handle gets a fresh loop (the pattern of the
test suite itself, which starts and stops Ray many times in one process).
"""

from __future__ import annotations

import threading

import ray
from ray import serve

from cluster.ray_session import shutdown_ray
from tests.support.wait import wait_for


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0})
class Echo:
    def __call__(self, value: int) -> int:
        return value + 1


def router_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.is_alive() and "_run_router_event_loop" in t.name]


def _session_calls_a_handle(value: int) -> int:
    ray.init(num_cpus=1, include_dashboard=False, namespace="cctv-ray-session-test", log_to_driver=False)
    handle = serve.run(Echo.bind(), name="echo", route_prefix=None)
    return handle.remote(value).result(timeout_s=60)


def test_shutdown_ray_stops_the_router_loop_and_a_new_session_gets_a_fresh_one() -> None:
    from ray.serve._private.router import SingletonThreadRouter

    assert not ray.is_initialized(), "another test left Ray connected"
    try:
        assert _session_calls_a_handle(1) == 2
        assert router_threads(), "a driver-side handle call should have started Serve's router thread"
        first_loop = SingletonThreadRouter._asyncio_loop
        assert first_loop is not None and first_loop.is_running()
        shutdown_ray()  # with Serve still up, as Runtime.stop() ends its own Serve
        assert not ray.is_initialized()
        assert SingletonThreadRouter._asyncio_loop is None
        wait_for(lambda: not router_threads(), timeout_s=10, what="Serve's router thread to end after shutdown_ray")
        assert not first_loop.is_running()

        assert _session_calls_a_handle(41) == 42
        second_loop = SingletonThreadRouter._asyncio_loop
        assert second_loop is not None and second_loop is not first_loop and second_loop.is_running()
    finally:
        if ray.is_initialized():
            shutdown_ray()
    wait_for(lambda: not router_threads(), timeout_s=10, what="the second session's router thread to end")
