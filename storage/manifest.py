"""Day manifests: a hash chain over the day's clips, and the pure logic that checks one.

A manifest lists every complete clip of one UTC day (clip key, byte size, SHA-256 of the MP4 and
of its JSON sidecar) sorted by key, and chains them::

    seed   = sha256("cctv-manifest/1\\n" + day + "\\n" + (previous day's manifest sha256 or ""))
    link_i = sha256(link_{i-1} + "\\n" + key_i + "\\n" + size_i + "\\n" + sha256_i + "\\n" + sidecar_sha256_i)
    root   = link_n (seed when the day has no clip)

Each entry keeps its link, so a reader sees where a chain breaks; the seed carries the previous
day's manifest hash, so days form one chain. Nothing here talks to S3: :mod:`storage.evidence`
gathers what the store holds and hands it to :func:`compare`.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, computed_field

MANIFEST_SCHEMA = "cctv-manifest/1"
MANIFEST_PREFIX = "manifests/"
_SHA_PATTERN = r"^[0-9a-f]{64}$"


def sha256_hex(data: bytes) -> str:
    """Lowercase hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def manifest_key(day: date) -> str:
    """Object key of a day's manifest (in the evidence bucket): ``manifests/YYYY/MM/DD.json``."""
    return f"{MANIFEST_PREFIX}{day:%Y/%m/%d}.json"


class ObservedClip(BaseModel):
    """What the store holds for one clip key right now (hashes of the bytes actually read)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = Field(min_length=1)
    size_bytes: int = Field(ge=0)
    sha256: str = Field(pattern=_SHA_PATTERN)
    sidecar_sha256: str | None = Field(default=None, pattern=_SHA_PATTERN)
    """None when the sidecar object is missing."""
    sidecar_claims_sha256: str | None = Field(default=None, pattern=_SHA_PATTERN)
    """The ``sha256`` the sidecar records for the MP4 (None when missing or unreadable)."""


class ManifestEntry(BaseModel):
    """One clip in a manifest."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = Field(min_length=1)
    size_bytes: int = Field(ge=0)
    sha256: str = Field(pattern=_SHA_PATTERN)
    sidecar_sha256: str = Field(pattern=_SHA_PATTERN)
    link: str = Field(pattern=_SHA_PATTERN, description="Chain hash up to and including this entry.")


class DayManifest(BaseModel):
    """The manifest object's JSON body."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_id: Literal["cctv-manifest/1"] = MANIFEST_SCHEMA
    day: date
    created_at: AwareDatetime
    prev_manifest_sha256: str | None = Field(default=None, pattern=_SHA_PATTERN)
    """SHA-256 of the previous day's manifest object when this one was written (None: there was none)."""
    entries: tuple[ManifestEntry, ...]
    root: str = Field(pattern=_SHA_PATTERN)

    def to_json_bytes(self) -> bytes:
        return self.model_dump_json(indent=1).encode("utf-8")

    @classmethod
    def from_json_bytes(cls, data: bytes) -> DayManifest:
        """Parse a manifest body; raises ``pydantic.ValidationError`` naming the bad field."""
        return cls.model_validate_json(data)

    def by_key(self) -> dict[str, ManifestEntry]:
        return {e.key: e for e in self.entries}


def chain_seed(day: date, prev_manifest_sha256: str | None) -> str:
    """The link before the day's first entry (binds the chain to its day and to the day before)."""
    return sha256_hex(f"{MANIFEST_SCHEMA}\n{day.isoformat()}\n{prev_manifest_sha256 or ''}".encode())


def next_link(prev_link: str, key: str, size_bytes: int, sha256: str, sidecar_sha256: str) -> str:
    """The chain hash after one entry."""
    return sha256_hex(f"{prev_link}\n{key}\n{size_bytes}\n{sha256}\n{sidecar_sha256}".encode())


def build_manifest(
    day: date,
    clips: list[ObservedClip],
    *,
    prev_manifest_sha256: str | None,
    created_at: datetime | None = None,
    keep: DayManifest | None = None,
) -> DayManifest:
    """A manifest of ``clips`` (sorted by key), chained from the seed of ``day``.

    Args:
        day: the UTC day.
        clips: complete clips (with a sidecar) of that day, as read from the store.
        prev_manifest_sha256: hash of the previous day's manifest object, if any.
        created_at: timestamp to record (now when None).
        keep: an earlier manifest of the same day: its entries are carried over unchanged (even
            if the clip is now missing or different), so a rewrite adds late clips but can never
            hide a change. Its ``prev_manifest_sha256`` is kept too.

    Raises:
        ValueError: a clip has no sidecar hash, ``keep`` is of another day, or a key repeats.
    """
    if keep is not None and keep.day != day:
        raise ValueError(f"manifest to keep is for {keep.day}, not {day}")
    rows: dict[str, tuple[int, str, str]] = {}
    for clip in clips:
        if clip.sidecar_sha256 is None:
            raise ValueError(f"clip {clip.key} has no sidecar: it cannot be listed")
        if clip.key in rows:
            raise ValueError(f"clip key {clip.key} is listed twice")
        rows[clip.key] = (clip.size_bytes, clip.sha256, clip.sidecar_sha256)
    if keep is not None:
        prev_manifest_sha256 = keep.prev_manifest_sha256
        for e in keep.entries:
            rows[e.key] = (e.size_bytes, e.sha256, e.sidecar_sha256)
    link = chain_seed(day, prev_manifest_sha256)
    entries: list[ManifestEntry] = []
    for key in sorted(rows):
        size, sha, side = rows[key]
        link = next_link(link, key, size, sha, side)
        entries.append(ManifestEntry(key=key, size_bytes=size, sha256=sha, sidecar_sha256=side, link=link))
    return DayManifest(
        day=day,
        created_at=created_at or datetime.now(UTC),
        prev_manifest_sha256=prev_manifest_sha256,
        entries=tuple(entries),
        root=link,
    )


def chain_breaks(manifest: DayManifest) -> list[str]:
    """Where the manifest's own chain does not recompute (empty when it does).

    Catches an edited manifest body: entries reordered, a hash changed, an entry dropped.
    """
    problems: list[str] = []
    keys = [e.key for e in manifest.entries]
    if keys != sorted(keys) or len(set(keys)) != len(keys):
        problems.append("manifest entries are not sorted by key without repeats")
    link = chain_seed(manifest.day, manifest.prev_manifest_sha256)
    for e in manifest.entries:
        link = next_link(link, e.key, e.size_bytes, e.sha256, e.sidecar_sha256)
        if link != e.link:
            problems.append(f"chain breaks at {e.key}: link {e.link[:16]}.. recomputes as {link[:16]}..")
            link = e.link  # report each break once, not every entry after it
    if link != manifest.root:
        problems.append(f"manifest root {manifest.root[:16]}.. recomputes as {link[:16]}..")
    return problems


class ModifiedClip(BaseModel):
    """A clip (or its sidecar) whose stored bytes differ from what the manifest recorded."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str
    part: Literal["clip", "sidecar", "evidence copy", "evidence sidecar"]
    expected_sha256: str
    actual_sha256: str | None
    where: str = Field(description="bucket/key that was read")


class VerifyReport(BaseModel):
    """Result of checking one day against its manifest."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    day: date
    manifest_key: str
    manifest_found: bool
    clips_checked: int = 0
    missing: tuple[str, ...] = ()
    """Listed in the manifest, gone from the store (and not explained by lifecycle expiry)."""
    expired: tuple[str, ...] = ()
    """Listed, gone, but older than ``clip_retention_days``: lifecycle expiry, not tampering."""
    modified: tuple[ModifiedClip, ...] = ()
    unlisted: tuple[str, ...] = ()
    """In the store for that day but not in the manifest (added after it, or never listed)."""
    sidecar_mismatch: tuple[str, ...] = ()
    """The MP4's hash differs from the one its sidecar records."""
    manifest_chain_ok: bool = False
    chain_problems: tuple[str, ...] = ()
    evidence_checked: int = 0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ok(self) -> bool:
        """No tampering found: chain intact, nothing missing, modified, unlisted or inconsistent."""
        return (
            self.manifest_found
            and self.manifest_chain_ok
            and not (self.missing or self.modified or self.unlisted or self.sidecar_mismatch)
        )

    def problems(self) -> list[str]:
        """One human line per finding (what and where)."""
        lines: list[str] = []
        if not self.manifest_found:
            lines.append(f"no manifest at {self.manifest_key}")
        lines += [f"chain: {p}" for p in self.chain_problems]
        lines += [f"missing: {k}" for k in self.missing]
        lines += [
            f"modified {m.part}: {m.where} sha256 {m.actual_sha256 or '<unreadable>'} (manifest: {m.expected_sha256})"
            for m in self.modified
        ]
        lines += [f"unlisted (not in the manifest): {k}" for k in self.unlisted]
        lines += [f"clip hash differs from its sidecar's sha256: {k}" for k in self.sidecar_mismatch]
        return lines


def compare(
    manifest: DayManifest,
    observed: dict[str, ObservedClip],
    *,
    expired_ok: bool = False,
    extra_chain_problems: list[str] | None = None,
) -> VerifyReport:
    """Check what the store holds for a day against its manifest (pure).

    Args:
        manifest: the day's latest manifest.
        observed: every MP4 of the day found in the clip bucket, by key.
        expired_ok: the day is older than the lifecycle expiry, so a missing clip is "expired".
        extra_chain_problems: problems found outside the body (manifest history, link to the
            previous day), reported with the chain.
    """
    listed = manifest.by_key()
    missing: list[str] = []
    expired: list[str] = []
    modified: list[ModifiedClip] = []
    for key, entry in listed.items():
        got = observed.get(key)
        if got is None:
            (expired if expired_ok else missing).append(key)
            continue
        if got.sha256 != entry.sha256 or got.size_bytes != entry.size_bytes:
            modified.append(
                ModifiedClip(key=key, part="clip", expected_sha256=entry.sha256, actual_sha256=got.sha256, where=key)
            )
        if got.sidecar_sha256 != entry.sidecar_sha256:
            modified.append(
                ModifiedClip(
                    key=key,
                    part="sidecar",
                    expected_sha256=entry.sidecar_sha256,
                    actual_sha256=got.sidecar_sha256,
                    where=key,
                )
            )
    unlisted = sorted(k for k in observed if k not in listed)
    mismatch = sorted(
        k for k, o in observed.items() if o.sidecar_claims_sha256 is not None and o.sidecar_claims_sha256 != o.sha256
    )
    chain = chain_breaks(manifest) + list(extra_chain_problems or [])
    return VerifyReport(
        day=manifest.day,
        manifest_key=manifest_key(manifest.day),
        manifest_found=True,
        clips_checked=sum(1 for k in listed if k in observed),
        missing=tuple(sorted(missing)),
        expired=tuple(sorted(expired)),
        modified=tuple(modified),
        unlisted=tuple(unlisted),
        sidecar_mismatch=tuple(mismatch),
        manifest_chain_ok=not chain,
        chain_problems=tuple(chain),
    )


def history_problems(older: DayManifest, newer: DayManifest) -> list[str]:
    """An older version of a day's manifest must survive unchanged inside the newer one."""
    problems: list[str] = []
    if older.prev_manifest_sha256 != newer.prev_manifest_sha256:
        problems.append(
            f"manifest of {newer.day} changed its link to the previous day "
            f"({older.prev_manifest_sha256} -> {newer.prev_manifest_sha256})"
        )
    now = newer.by_key()
    for e in older.entries:
        n = now.get(e.key)
        if n is None:
            problems.append(f"{e.key} was listed by an earlier manifest version and is no longer listed")
        elif (n.sha256, n.sidecar_sha256, n.size_bytes) != (e.sha256, e.sidecar_sha256, e.size_bytes):
            problems.append(f"{e.key} has other hashes than in an earlier manifest version")
    return problems
