"""The fire/smoke evaluation's split file: valid, and no footage shared between tuning and validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from benchmarks.accuracy.eval_fire import SPLIT_FILE, load_split, sample_times


def test_the_split_file_loads_and_has_both_splits_with_positives_and_negatives() -> None:
    split = load_split()
    for name in ("tuning", "validation"):
        clips = [c for c in split.clips if c.split == name]
        assert any(c.fire for c in clips) and any(c.smoke for c in clips), name
        assert any(not (c.fire or c.smoke) for c in clips), name
    assert len({c.id for c in split.clips}) == len(split.clips)


def test_no_stretch_of_footage_is_in_both_splits() -> None:
    split = load_split()
    by_file: dict[str, list] = {}
    for c in split.clips:
        by_file.setdefault(c.path, []).append(c)
    for path, clips in by_file.items():
        tuning = [c for c in clips if c.split == "tuning"]
        validation = [c for c in clips if c.split == "validation"]
        for a in tuning:
            for b in validation:
                assert a.segment is not None and b.segment is not None, f"{path}: whole clip in both splits"
                assert a.segment[1] <= b.segment[0] or b.segment[1] <= a.segment[0], f"{path}: segments overlap"


def test_near_duplicates_stay_in_one_split() -> None:
    split = {c.id: c.split for c in load_split().clips}
    assert split["megamind"] == split["megamind_bugy"]  # the same film scene, re-encoded


def test_a_positive_without_an_ignition_time_is_refused(tmp_path: Path) -> None:
    data = json.loads(SPLIT_FILE.read_text())
    clip = next(c for c in data["clips"] if c["fire"])
    clip["ignition_s"] = {}
    bad = tmp_path / "split.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=f"clip '{clip['id']}' is positive for \\['fire'\\]"):
        load_split(bad)


def test_an_unknown_key_is_refused(tmp_path: Path) -> None:
    data = json.loads(SPLIT_FILE.read_text())
    data["clips"][0]["splt"] = "validation"
    bad = tmp_path / "split.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(ValidationError, match="splt"):
        load_split(bad)


def test_sample_times_are_one_forward_pass_from_the_phase() -> None:
    assert sample_times(0.0, 3.0, 1.0, 0.0) == [0.0, 1.0, 2.0]  # half-open: adjacent segments share no sample
    assert sample_times(0.0, 3.0, 1.0, 0.5) == [0.5, 1.5, 2.5]
    assert sample_times(13.0, 15.5, 2.0, 0.25) == [13.25, 13.75, 14.25, 14.75, 15.25]
    assert sample_times(5.0, 5.0, 1.0, 0.5) == []
