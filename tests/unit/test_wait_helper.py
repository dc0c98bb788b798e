"""The suite's one deadline-and-poll helper: it returns, retries "not yet", and fails with a name."""

from __future__ import annotations

import pytest
import ray

from tests.support.wait import WaitTimeout, wait_for


def test_returns_the_first_truthy_value() -> None:
    answers = iter([None, [], {"cam-1": "streaming"}])
    assert wait_for(lambda: next(answers), 5, "cam-1 streaming", interval_s=0.01) == {"cam-1": "streaming"}


def test_a_restarting_actor_counts_as_not_yet() -> None:
    calls = {"n": 0}

    def pred() -> str:
        calls["n"] += 1
        if calls["n"] < 3:
            raise ray.exceptions.ActorUnavailableError("The actor is restarting.", None)
        return "back"

    assert wait_for(pred, 5, "controller back", interval_s=0.01) == "back"
    assert calls["n"] == 3


def test_any_other_error_fails_at_once() -> None:
    calls = {"n": 0}

    def pred() -> bool:
        calls["n"] += 1
        raise KeyError("cam-9")

    with pytest.raises(KeyError, match="cam-9"):
        wait_for(pred, 5, "cam-9 streaming", interval_s=0.01)
    assert calls["n"] == 1


def test_the_deadline_names_what_was_awaited_the_last_value_and_the_detail() -> None:
    with pytest.raises(WaitTimeout) as info:
        wait_for(lambda: 0, 0.2, "cam-7 down", interval_s=0.05, detail=lambda: {"cam-7": "connecting"})
    message = str(info.value)
    assert "waiting for cam-7 down" in message
    assert "last: 0" in message
    assert "'cam-7': 'connecting'" in message
    assert isinstance(info.value, AssertionError)  # pytest shows it as a failed assertion, not an error


def test_the_last_not_yet_error_is_in_the_message() -> None:
    def pred() -> bool:
        raise ray.exceptions.GetTimeoutError("get timed out after 1 s")

    with pytest.raises(WaitTimeout, match="GetTimeoutError: get timed out"):
        wait_for(pred, 0.1, "a scrape", interval_s=0.02)
