"""Ending this process's Ray session without leaving Serve's handle machinery running against it.

A driver that calls a Serve deployment handle gets Serve's router: one event loop in a daemon thread,
shared by every handle of the process and kept for the life of the process (Ray 2.60
``SingletonThreadRouter``), with a long-poll client on the Serve controller and an event-loop monitor
that records Ray metrics every few seconds. ``ray.shutdown()`` frees the core worker but leaves that
thread running: its next metric record or controller poll calls into freed C++ state. A process that
shuts Ray down and starts it again (the test suite, a benchmark with several phases) or simply exits
while the thread is mid-call can crash with a segfault (ray-project/ray#31145 is the same pattern with
a user thread). :func:`shutdown_ray` stops that loop first and forgets it, so a later session builds
a fresh one, then shuts Ray down.
"""

from __future__ import annotations

import asyncio
import logging
import time

import ray

log = logging.getLogger(__name__)

LOOP_STOP_TIMEOUT_S = 5.0


def stop_serve_router_loop(timeout_s: float = LOOP_STOP_TIMEOUT_S) -> bool:
    """Stop Serve's per-process router loop (if one was started) and forget it; True if one was stopped.

    Touches Serve internals by name; if a Ray release renames them this logs once and does nothing,
    which is the behaviour of plain ``ray.shutdown()``.
    """
    try:
        from ray.serve._private import router as serve_router
    except ImportError:  # pragma: no cover - ray[serve] is a hard dependency
        return False
    singleton = getattr(serve_router, "SingletonThreadRouter", None)
    lock = getattr(singleton, "_asyncio_loop_creation_lock", None)
    if singleton is None or lock is None or not hasattr(singleton, "_asyncio_loop"):
        log.warning("Serve's router loop is not where Ray 2.60 keeps it; leaving it to ray.shutdown()")
        return False
    with lock:
        loop = singleton._asyncio_loop
        if loop is None:
            return False
        monitor = getattr(singleton, "_event_loop_monitor", None)
        if monitor is not None and hasattr(monitor, "stop"):
            loop.call_soon_threadsafe(monitor.stop)
        loop.call_soon_threadsafe(loop.stop)
        deadline = time.monotonic() + timeout_s
        while loop.is_running() and time.monotonic() < deadline:
            time.sleep(0.01)
        if loop.is_running():
            log.warning("Serve's router loop did not stop within %.1f s; shutting Ray down anyway", timeout_s)
        else:
            _cancel_pending(loop, timeout_s)
        singleton._asyncio_loop = None
        singleton._event_loop_monitor = None
    # The long-poll clients are cached per (controller handle, loop): both are gone now.
    shared = getattr(serve_router, "SharedRouterLongPollClient", None)
    get_or_create = getattr(shared, "__dict__", {}).get("get_or_create")
    cache_clear = getattr(getattr(get_or_create, "__func__", None), "cache_clear", None)
    if cache_clear is not None:
        cache_clear()
    return True


def _cancel_pending(loop: asyncio.AbstractEventLoop, timeout_s: float) -> None:
    """Cancel the stopped loop's tasks (long polls, the monitor) and let them unwind while Ray is still up."""
    pending = asyncio.all_tasks(loop)
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.wait(pending, timeout=timeout_s))
    loop.close()


def shutdown_ray() -> None:
    """``ray.shutdown()``, after stopping Serve's router loop so nothing in this process calls the freed worker."""
    if stop_serve_router_loop():
        log.debug("stopped Serve's router loop before ray.shutdown()")
    ray.shutdown()
