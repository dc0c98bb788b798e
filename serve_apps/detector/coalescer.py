"""One forward pass at a time, and every list that arrived meanwhile rides in the next one.

A detector replica receives lists of frames from many shard workers at once. Running each list
as its own forward pass leaves the model at batch 1-2 under load, where a CPU forward costs about
1.6x per image what it costs at batch 8 (benchmarks/results/e2e_360p.json: replica CPU per image
against ``raw_detector``). :class:`ForwardCoalescer` keeps one pass running on one worker thread;
lists submitted while it runs wait in arrival order and are merged into the next pass, up to
``max_images``. It never waits for more work: an idle replica starts a lone list at once, so light
load keeps its latency and heavy load gets its batches (continuous batching, as in LLM servers).

Pure asyncio plus one executor thread, no Ray: unit-tested without a cluster.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class PassInfo:
    """What one forward pass carried, as its callers see it."""

    images: int
    """Items in the pass (all callers' together): the forward batch size."""
    calls: int
    """How many submitted lists were merged into it."""
    duration_s: float
    """Wall time of the pass, timed on the worker thread."""


@dataclass(frozen=True, slots=True)
class PassResult(Generic[R]):
    """A caller's share of a pass: its outputs, in its order, and how long it queued."""

    outputs: list[R]
    info: PassInfo
    queued_s: float


@dataclass(slots=True)
class _Job(Generic[T, R]):
    items: Sequence[T]
    future: asyncio.Future[PassResult[R]]
    submitted: float = field(default_factory=time.perf_counter)


class ForwardCoalescer(Generic[T, R]):
    """Serialise calls of ``run`` on ``executor`` and merge the lists that queue behind a running call.

    Args:
        run: Runs one pass over a list of items and returns one output per item, in order. It runs on
            ``executor`` (give it a single-thread executor: passes must not compete for cores).
        max_images: Lists are merged while the merged pass stays within this many items; a single list
            larger than it still goes alone (``run`` chunks it).
        executor: Where ``run`` runs.
        on_pass: Called on the event loop after each successful pass (metrics).
    """

    def __init__(
        self,
        run: Callable[[list[T]], list[R]],
        max_images: int,
        executor: Executor,
        on_pass: Callable[[PassInfo], None] | None = None,
    ) -> None:
        if max_images < 1:
            raise ValueError(f"max_images must be >= 1, got {max_images}")
        self._run = run
        self.max_images = max_images
        self._executor = executor
        self._on_pass = on_pass
        self._pending: deque[_Job[T, R]] = deque()
        self._drainer: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> int:
        """Lists queued behind the running pass."""
        return len(self._pending)

    async def submit(self, items: Sequence[T]) -> PassResult[R]:
        """Run ``items`` in the next pass that has room; returns this caller's outputs.

        Raises:
            Whatever ``run`` raised for the pass this list was in (every caller of that pass gets it).
        """
        loop = asyncio.get_running_loop()
        job: _Job[T, R] = _Job(items, loop.create_future())
        self._pending.append(job)
        if self._drainer is None or self._drainer.done():
            self._drainer = loop.create_task(self._drain())
        return await job.future

    def _take(self) -> list[_Job[T, R]]:
        jobs = [self._pending.popleft()]
        n = len(jobs[0].items)
        while self._pending and n + len(self._pending[0].items) <= self.max_images:
            job = self._pending.popleft()
            jobs.append(job)
            n += len(job.items)
        return jobs

    def _timed_run(self, items: list[T]) -> tuple[list[R], float]:
        t0 = time.perf_counter()
        outputs = self._run(items)
        return outputs, time.perf_counter() - t0

    @staticmethod
    def _fail(jobs: list[_Job[T, R]], exc: BaseException) -> None:
        for j in jobs:
            if not j.future.done():
                j.future.set_exception(exc)

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                jobs = [j for j in self._take() if not j.future.done()]  # a cancelled caller's list is skipped
                if not jobs:
                    continue
                try:
                    await self._pass(loop, jobs)
                except Exception as exc:  # not handled here: handed to every caller of this pass
                    self._fail(jobs, exc)
                except BaseException as exc:  # cancelled or interrupted: nobody may be left waiting
                    self._fail(jobs, RuntimeError(f"forward pass aborted: {exc!r}"))
                    raise
        finally:
            if self._pending:  # only when the loop above was torn down: fail the rest rather than hang them
                self._fail(list(self._pending), RuntimeError("the forward loop stopped"))
                self._pending.clear()

    async def _pass(self, loop: asyncio.AbstractEventLoop, jobs: list[_Job[T, R]]) -> None:
        items = [x for j in jobs for x in j.items]
        t_start = time.perf_counter()
        outputs, duration_s = await loop.run_in_executor(self._executor, self._timed_run, items)
        if len(outputs) != len(items):
            raise RuntimeError(f"forward pass returned {len(outputs)} outputs for {len(items)} inputs")
        info = PassInfo(images=len(items), calls=len(jobs), duration_s=duration_s)
        if self._on_pass is not None:
            try:
                self._on_pass(info)
            except Exception:  # metrics must never cost a caller its detections
                log.exception("on_pass hook failed for a pass of %d images", info.images)
        k = 0
        for j in jobs:
            m = len(j.items)
            if not j.future.done():
                j.future.set_result(PassResult(outputs[k : k + m], info, t_start - j.submitted))
            k += m
