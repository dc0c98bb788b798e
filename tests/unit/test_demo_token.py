"""The local demo's admin token: kept across runs, private, and usable as ``--token <t>`` on a command line."""

from __future__ import annotations

import argparse
import secrets
import stat
from pathlib import Path

import pytest

from serve_apps.api import auth


def _leading_dash(nbytes: int | None = None) -> str:
    return "-" + "x" * 42


def test_generated_token_is_an_argument_not_an_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # token_urlsafe starts with "-" one time in 64; force that draw.
    monkeypatch.setattr(secrets, "token_urlsafe", _leading_dash)
    token = auth.demo_admin_token(tmp_path)
    parser = argparse.ArgumentParser(exit_on_error=False)
    parser.add_argument("--token")
    assert parser.parse_args(["--token", token]).token == token
    assert len(token) >= auth.MIN_TOKEN_CHARS


def test_token_is_kept_across_runs_and_private(tmp_path: Path) -> None:
    first = auth.demo_admin_token(tmp_path)
    assert auth.demo_admin_token(tmp_path) == first
    mode = stat.S_IMODE((tmp_path / auth.TOKEN_FILE).stat().st_mode)
    assert mode == 0o600


def test_a_stored_token_that_reads_as_an_option_is_replaced(tmp_path: Path) -> None:
    (tmp_path / auth.TOKEN_FILE).write_text("-" + "a" * 40 + "\n")
    token = auth.demo_admin_token(tmp_path)
    assert not token.startswith("-")
    assert (tmp_path / auth.TOKEN_FILE).read_text().strip() == token
