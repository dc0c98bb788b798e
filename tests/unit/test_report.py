"""README performance figures are generated from the result files, never typed in."""

from __future__ import annotations

from pathlib import Path

from benchmarks.report import END, START, block

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_performance_block_matches_the_results() -> None:
    text = README.read_text()
    assert START in text and END in text
    current = START + text.split(START, 1)[1].split(END, 1)[0] + END
    assert current == block(), "README is stale: run .venv/bin/python -m benchmarks.report"
