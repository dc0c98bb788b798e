"""``cctv evidence``: day manifests, tamper checks and evidence marking from the command line.

* ``cctv evidence manifest YYYY-MM-DD``: write (or extend) the day's manifest.
* ``cctv evidence verify YYYY-MM-DD``: check the day's clips against it. Exit 0: intact;
  1: tampering found (each finding printed with what and where); 2: bad input or nothing to
  check against (bad date, bad config, keys unset, no manifest, store unreachable).
* ``cctv evidence mark CLIP_KEY --case N``: lock a clip and its sidecar as evidence.
* ``cctv evidence lifecycle``: install the expiry rule of ordinary clips.
* ``cctv evidence access-log --since DAY [--until T] [--actor A] [--clip KEY]``: query the access log.

The store is ``storage.endpoint`` with keys from the variables the config names; with no
endpoint, the embedded SeaweedFS of ``state_dir/s3`` is started for the command (run it while
``cctv run`` is stopped, or point ``CCTV_S3_ENDPOINT`` and the key variables at the running store).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from configs.loader import ConfigError, load_config
from configs.schema import AppConfig

if TYPE_CHECKING:
    from storage.evidence import EvidenceStore

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"

EXIT_OK = 0
EXIT_TAMPERED = 1
EXIT_BAD_INPUT = 2


class _Usage(Exception):
    """Bad input: printed and exit code 2."""


def _parse_day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise _Usage(f"date {text!r} is not YYYY-MM-DD") from None


@contextmanager
def _evidence_store(config: Path) -> Iterator[EvidenceStore]:
    """The configured store's :class:`~storage.evidence.EvidenceStore` (embedded one started if needed)."""
    from storage.access import S3Access, S3AccessError
    from storage.embedded_s3 import EmbeddedS3, EmbeddedS3Error
    from storage.evidence import EvidenceStore

    try:
        cfg: AppConfig = load_config(config)
    except ConfigError as exc:
        raise _Usage(str(exc)) from None
    st = cfg.storage
    stop: Callable[[], None] = lambda: None  # noqa: E731
    if st.endpoint is not None:
        try:
            s3 = S3Access.from_config(st)
        except S3AccessError as exc:
            raise _Usage(str(exc)) from None
    else:
        try:
            embedded = EmbeddedS3(cfg.state_dir / "s3").start()
        except EmbeddedS3Error as exc:
            raise _Usage(f"cannot start the embedded S3 store of {cfg.state_dir / 's3'}: {exc}") from None
        s3 = embedded.access(st.bucket)
        stop = embedded.stop
    try:
        yield EvidenceStore(s3, st)
    finally:
        stop()


def _run(args: argparse.Namespace, body: Callable[[EvidenceStore], int]) -> int:
    from pydantic import ValidationError

    from storage.clip_store import ClipIntegrityError, StorageError, StorageUnavailableError
    from storage.evidence import EvidenceError

    try:
        with _evidence_store(args.config) as store:
            return body(store)
    except _Usage as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except StorageUnavailableError as exc:
        print(f"error: store unreachable, nothing checked: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ClipIntegrityError as exc:
        print(f"TAMPERED: {exc}", file=sys.stderr)
        return EXIT_TAMPERED
    except (StorageError, EvidenceError, ValidationError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


def cmd_verify(args: argparse.Namespace) -> int:
    try:
        day = _parse_day(args.date)
    except _Usage as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT

    def body(store: EvidenceStore) -> int:
        report = store.verify_day(day)
        if args.json:
            print(json.dumps(report.model_dump(mode="json"), indent=2))
        if not report.manifest_found:
            print(
                f"error: no manifest for {day} at {store.locked.bucket}/{report.manifest_key} "
                f"(write one with: cctv evidence manifest {day})",
                file=sys.stderr,
            )
            return EXIT_BAD_INPUT
        summary = (
            f"{day}: {report.clips_checked} clips checked, {report.evidence_checked} evidence copies, "
            f"{len(report.expired)} expired by lifecycle"
        )
        if report.ok:
            print(f"OK {summary}; manifest chain intact")
            return EXIT_OK
        print(f"TAMPERED {summary}")
        for line in report.problems():
            print(f"  {line}")
        return EXIT_TAMPERED

    return _run(args, body)


def cmd_manifest(args: argparse.Namespace) -> int:
    try:
        day = _parse_day(args.date)
    except _Usage as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT

    def body(store: EvidenceStore) -> int:
        key = store.write_day_manifest(day)
        manifest = store.read_manifest(day)
        n = len(manifest.entries) if manifest is not None else 0
        root = manifest.root if manifest is not None else "-"
        print(f"{store.locked.bucket}/{key}: {n} clips, root {root}")
        return EXIT_OK

    return _run(args, body)


def cmd_mark(args: argparse.Namespace) -> int:
    def body(store: EvidenceStore) -> int:
        store.mark_evidence(args.clip_key, case_number=args.case, retain_days=args.retain_days)
        print(f"{args.clip_key}: evidence for case {args.case} in {store.locked.bucket}")
        return EXIT_OK

    return _run(args, body)


def cmd_lifecycle(args: argparse.Namespace) -> int:
    def body(store: EvidenceStore) -> int:
        store.apply_lifecycle()
        days = store.cfg.clip_retention_days
        print(f"ordinary clips expire after {days} days" if days else "ordinary clips never expire")
        return EXIT_OK

    return _run(args, body)


def _parse_time(text: str) -> float:
    """Epoch seconds from ``YYYY-MM-DD`` or an ISO datetime (UTC when it has no zone)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise _Usage(f"time {text!r} is not YYYY-MM-DD or an ISO datetime") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def cmd_access_log(args: argparse.Namespace) -> int:
    from storage.access_log import AccessLog

    try:
        since = _parse_time(args.since)
        until = _parse_time(args.until) if args.until else datetime.now(UTC).timestamp()
    except _Usage as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT

    def body(store: EvidenceStore) -> int:
        log = AccessLog(store.access, bucket=store.locked.bucket)
        entries = log.query(since, until, actor=args.actor, clip_key=args.clip, limit=args.limit)
        for e in entries:
            print(e.model_dump_json())
        print(f"{len(entries)} entries", file=sys.stderr)
        return EXIT_OK

    return _run(args, body)


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``cctv evidence ...`` to the top-level subcommands."""
    ep = sub.add_parser("evidence", help="evidence: day manifests, tamper checks, locking")
    esub = ep.add_subparsers(dest="evidence_command", required=True)
    verify = esub.add_parser("verify", help="check a day's clips against its manifest (exit 0 ok, 1 tampered, 2 error)")
    verify.add_argument("date", help="UTC day, YYYY-MM-DD")
    verify.add_argument("--json", action="store_true", help="also print the full report as JSON")
    verify.set_defaults(func=cmd_verify)
    manifest = esub.add_parser("manifest", help="write or extend a day's manifest (hash chain of its clips)")
    manifest.add_argument("date", help="UTC day, YYYY-MM-DD")
    manifest.set_defaults(func=cmd_manifest)
    mark = esub.add_parser("mark", help="lock a clip and its sidecar as evidence (retention + legal hold)")
    mark.add_argument("clip_key", help="clips/YYYY/MM/DD/<camera>/<event>.mp4")
    mark.add_argument("--case", required=True, help="case number")
    mark.add_argument("--retain-days", type=int, default=None, help="default: storage.evidence_retention_days")
    mark.set_defaults(func=cmd_mark)
    lifecycle = esub.add_parser("lifecycle", help="install the expiry rule of ordinary clips (clip_retention_days)")
    lifecycle.set_defaults(func=cmd_lifecycle)
    log = esub.add_parser("access-log", help="who viewed or exported which clip, when and why (JSON lines)")
    log.add_argument("--since", required=True, help="YYYY-MM-DD or ISO datetime (UTC if no zone)")
    log.add_argument("--until", default=None, help="default: now")
    log.add_argument("--actor", default=None)
    log.add_argument("--clip", default=None, help="clip key")
    log.add_argument("--limit", type=int, default=100)
    log.set_defaults(func=cmd_access_log)
    for p in (verify, manifest, mark, lifecycle, log):
        p.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
