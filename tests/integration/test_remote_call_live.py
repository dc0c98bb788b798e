"""The shared caller against a real restarting actor on a real local Ray.

The actor sleeps in its constructor, so a call made right after it is killed meets it while
Ray restarts it (``ActorUnavailableError``) or the call that was running dies with it.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator

import pytest
import ray

from cluster.ray_session import shutdown_ray
from serve_apps.remote_call import ActorCaller, CallPolicy, ControlPlaneUnavailableError, gather
from tests.support.wait import wait_for

pytestmark = pytest.mark.timeout(300)

NS = "cctv-remote-call-test"
RESTART_S = 2.0


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class Restartable:
    def __init__(self, start_delay_s: float) -> None:
        time.sleep(start_delay_s)
        self.calls = 0

    def pid(self) -> int:
        return os.getpid()

    def count(self) -> int:
        self.calls += 1
        return self.calls

    def fail(self) -> None:
        self.calls += 1
        raise KeyError("cam-9")

    def die(self) -> None:
        os._exit(1)  # the process dies; Ray restarts it

    def slow(self, seconds: float) -> float:
        self.calls += 1
        time.sleep(seconds)
        return seconds


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, namespace=NS, log_to_driver=False)
    yield
    shutdown_ray()


def _crash(actor: ray.actor.ActorHandle) -> None:
    """Kill the actor's process and return once it is dead (ray.kill is asynchronous)."""
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(actor.die.remote(), timeout=60)


def _kill_for_good(actor: ray.actor.ActorHandle, name: str) -> None:
    """ray.kill, and wait until the actor is really dead (the kill is asynchronous)."""
    ray.kill(actor, no_restart=True)

    def dead() -> bool:
        try:
            ray.get(actor.pid.remote(), timeout=10)
        except ray.exceptions.RayActorError:
            return True
        return False

    wait_for(dead, 30, f"actor {name!r} dead after ray.kill", not_yet=())


def _start(name: str, delay_s: float = RESTART_S) -> ray.actor.ActorHandle:
    actor = Restartable.options(name=name, namespace=NS).remote(delay_s)
    ray.get(actor.pid.remote(), timeout=60)
    return actor


def test_a_call_rides_out_a_restart_and_reaches_the_new_process() -> None:
    actor = _start("restarting")
    pauses: list[float] = []
    caller = ActorCaller("restarting", NS, sleep=lambda s: (pauses.append(s), time.sleep(s)))
    first = caller.call("pid", lambda a: a.pid.remote())
    _crash(actor)  # Ray restarts it; its constructor takes RESTART_S
    second = caller.call("pid", lambda a: a.pid.remote(), CallPolicy(deadline_s=60))
    assert second != first
    assert pauses, "the call never met the restart: the test did not exercise a retry"
    assert all(p <= 2.0 for p in pauses)  # capped backoff


def test_the_async_call_rides_out_a_restart_too() -> None:
    actor = _start("restarting-async")
    caller = ActorCaller("restarting-async", NS)
    first = asyncio.run(caller.call_async("pid", lambda a: a.pid.remote()))
    _crash(actor)
    second = asyncio.run(caller.call_async("pid", lambda a: a.pid.remote(), CallPolicy(deadline_s=60)))
    assert second != first


def test_an_actor_gone_for_good_is_unavailable_at_the_deadline_with_a_message() -> None:
    actor = _start("gone", delay_s=0)
    _kill_for_good(actor, "gone")
    caller = ActorCaller("gone", NS, actor)
    t0 = time.monotonic()
    with pytest.raises(ControlPlaneUnavailableError) as info:
        caller.call("pid", lambda a: a.pid.remote(), CallPolicy(deadline_s=3.0))
    waited = time.monotonic() - t0
    assert 2.5 <= waited < 30, waited
    assert info.value.target == "gone" and info.value.method == "pid" and info.value.attempts >= 2
    assert "gone.pid did not answer" in str(info.value)
    with pytest.raises(ControlPlaneUnavailableError):  # a name nobody holds: looked up until the deadline
        ActorCaller("never-was", NS).call("pid", lambda a: a.pid.remote(), CallPolicy(deadline_s=1.0))


def test_the_actors_own_error_passes_through_once_and_a_non_idempotent_call_is_never_resent() -> None:
    actor = _start("answers", delay_s=0)
    caller = ActorCaller("answers", NS, actor)
    with pytest.raises(KeyError, match="cam-9"):
        caller.call("fail", lambda a: a.fail.remote())
    assert ray.get(actor.count.remote()) == 2  # fail ran once, then this count
    once = CallPolicy(deadline_s=5.0, attempt_timeout_s=0.5, idempotent=False)
    with pytest.raises(ray.exceptions.GetTimeoutError):
        caller.call("slow", lambda a: a.slow.remote(2.0), once)
    time.sleep(2.5)
    assert ray.get(actor.count.remote()) == 4  # slow ran once: not sent again after its timeout


def test_gather_answers_none_for_a_dead_target_and_keeps_one_deadline() -> None:
    live = _start("gather-live", delay_s=0)
    dead = _start("gather-dead", delay_s=0)
    slow = _start("gather-slow", delay_s=0)
    _kill_for_good(dead, "gather-dead")
    t0 = time.monotonic()
    out = gather({"live": live.pid.remote(), "dead": dead.pid.remote(), "slow": slow.slow.remote(30.0)}, 2.0)
    assert time.monotonic() - t0 < 10
    assert isinstance(out["live"], int) and out["dead"] is None and out["slow"] is None


def test_gather_answers_none_for_a_target_that_cannot_be_placed() -> None:
    """A shard pinned to a node that is gone raises ActorUnschedulableError (not a RayActorError)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    live = _start("gather-placed", delay_s=0)
    gone_node = "ab" * 28  # a node id nobody has: what a removed worker's id is to the scheduler
    stranded = Restartable.options(
        name="gather-stranded",
        namespace=NS,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=gone_node, soft=False),
    ).remote(0)
    with pytest.raises(ray.exceptions.ActorUnschedulableError):  # what the controller met in the multi-node test
        ray.get(stranded.pid.remote(), timeout=60)
    out = gather({"live": live.pid.remote(), "stranded": stranded.pid.remote()}, 10.0)
    assert isinstance(out["live"], int) and out["stranded"] is None
