"""ForwardCoalescer: one pass at a time, lists that queue behind it merged into the next (no Ray)."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from serve_apps.detector.coalescer import ForwardCoalescer, PassInfo


class GatedRun:
    """A forward pass that records its inputs and, for the first pass, waits until released."""

    def __init__(self) -> None:
        self.passes: list[list[int]] = []
        self.first_started = threading.Event()
        self.release = threading.Event()

    def __call__(self, items: list[int]) -> list[int]:
        self.passes.append(list(items))
        if len(self.passes) == 1:
            self.first_started.set()
            assert self.release.wait(5.0)
        return [x * 10 for x in items]


async def _until(event: threading.Event) -> None:
    for _ in range(500):
        if event.is_set():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the first pass never started")


def test_lists_queued_behind_a_running_pass_share_the_next_pass() -> None:
    run = GatedRun()
    seen: list[PassInfo] = []

    async def main() -> list:
        with ThreadPoolExecutor(max_workers=1) as pool:
            co = ForwardCoalescer(run, max_images=16, executor=pool, on_pass=seen.append)
            first = asyncio.ensure_future(co.submit([1]))
            await _until(run.first_started)
            rest = [asyncio.ensure_future(co.submit(items)) for items in ([2, 3], [4], [5, 6, 7])]
            await asyncio.sleep(0.05)
            assert co.waiting == 3
            run.release.set()
            return [await first, *[await r for r in rest]]

    results = asyncio.run(main())
    assert run.passes == [[1], [2, 3, 4, 5, 6, 7]]  # one lone pass, then everything that queued behind it
    assert [r.outputs for r in results] == [[10], [20, 30], [40], [50, 60, 70]]
    assert [r.info.images for r in results] == [1, 6, 6, 6]
    assert [r.info.calls for r in results] == [1, 3, 3, 3]
    assert [(p.images, p.calls) for p in seen] == [(1, 1), (6, 3)]
    assert results[1].queued_s > 0.0


def test_a_merged_pass_stays_within_max_images() -> None:
    run = GatedRun()

    async def main() -> None:
        with ThreadPoolExecutor(max_workers=1) as pool:
            co = ForwardCoalescer(run, max_images=4, executor=pool)
            first = asyncio.ensure_future(co.submit([0]))
            await _until(run.first_started)
            rest = [asyncio.ensure_future(co.submit(items)) for items in ([1, 2], [3, 4], [5], [6, 7, 8, 9, 10])]
            await asyncio.sleep(0.05)
            run.release.set()
            await asyncio.gather(first, *rest)

    asyncio.run(main())
    # [1,2]+[3,4] fill 4; [5] cannot join the 5-item list; a list over the limit still goes alone.
    assert run.passes == [[0], [1, 2, 3, 4], [5], [6, 7, 8, 9, 10]]


def test_an_idle_coalescer_starts_a_lone_list_at_once() -> None:
    calls: list[list[int]] = []

    async def main() -> float:
        with ThreadPoolExecutor(max_workers=1) as pool:
            co = ForwardCoalescer(lambda xs: calls.append(xs) or xs, max_images=32, executor=pool)
            r = await co.submit([7])
            return r.queued_s

    queued_s = asyncio.run(main())
    assert calls == [[7]]
    assert queued_s < 0.5  # it did not wait for a batch to fill


def test_a_failing_pass_fails_its_callers_only() -> None:
    passes: list[list[int]] = []

    def run(items: list[int]) -> list[int]:
        passes.append(items)
        if 13 in items:
            raise ValueError("unlucky frame")
        return items

    async def main() -> tuple:
        with ThreadPoolExecutor(max_workers=1) as pool:
            co = ForwardCoalescer(run, max_images=2, executor=pool)
            return tuple(
                await asyncio.gather(co.submit([13]), co.submit([1, 2]), co.submit([3]), return_exceptions=True)
            )

    bad, good, also_good = asyncio.run(main())
    assert isinstance(bad, ValueError) and "unlucky" in str(bad)
    assert good.outputs == [1, 2] and also_good.outputs == [3]


def test_a_wrong_number_of_outputs_is_an_error_not_a_misattribution() -> None:
    async def main() -> None:
        with ThreadPoolExecutor(max_workers=1) as pool:
            co = ForwardCoalescer(lambda xs: xs[:-1], max_images=8, executor=pool)
            await co.submit([1, 2, 3])

    with pytest.raises(RuntimeError, match="2 outputs for 3 inputs"):
        asyncio.run(main())


def test_a_cancelled_caller_does_not_disturb_the_others() -> None:
    run = GatedRun()

    async def main() -> list[int]:
        with ThreadPoolExecutor(max_workers=1) as pool:
            co = ForwardCoalescer(run, max_images=8, executor=pool)
            first = asyncio.ensure_future(co.submit([1]))
            await _until(run.first_started)
            gone = asyncio.ensure_future(co.submit([2]))
            kept = asyncio.ensure_future(co.submit([3]))
            await asyncio.sleep(0.02)
            gone.cancel()
            run.release.set()
            await first
            return (await kept).outputs

    assert asyncio.run(main()) == [30]
    assert run.passes == [[1], [3]]


def test_max_images_must_be_positive() -> None:
    with ThreadPoolExecutor(max_workers=1) as pool, pytest.raises(ValueError, match="max_images must be >= 1, got 0"):
        ForwardCoalescer(lambda xs: xs, max_images=0, executor=pool)


def test_a_failing_metrics_hook_does_not_cost_callers_their_results() -> None:
    def hook(_info: PassInfo) -> None:
        raise ValueError("prometheus is unhappy")

    async def main() -> list[list[int]]:
        with ThreadPoolExecutor(max_workers=1) as pool:
            co = ForwardCoalescer(lambda xs: [x + 1 for x in xs], max_images=4, executor=pool, on_pass=hook)
            return [(await co.submit([1, 2])).outputs, (await co.submit([3])).outputs]

    assert asyncio.run(main()) == [[2, 3], [4]]


def test_a_pass_that_raises_a_base_exception_fails_its_callers_and_the_queued_ones() -> None:
    run = GatedRun()

    class Abort(BaseException):
        pass

    def aborting(items: list[int]) -> list[int]:
        run(items)
        raise Abort

    async def main() -> tuple:
        with ThreadPoolExecutor(max_workers=1) as pool:
            co = ForwardCoalescer(aborting, max_images=1, executor=pool)
            first = asyncio.ensure_future(co.submit([1]))
            await _until(run.first_started)
            queued = asyncio.ensure_future(co.submit([2]))
            await asyncio.sleep(0.02)
            run.release.set()
            return tuple(await asyncio.gather(first, queued, return_exceptions=True))

    first, queued = asyncio.run(main())
    assert isinstance(first, RuntimeError) and "aborted" in str(first)
    assert isinstance(queued, RuntimeError) and "stopped" in str(queued)
