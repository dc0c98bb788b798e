"""Model registry: detector weights kept as versioned artifacts in a ``models`` bucket of the S3 store.

Object layout (one prefix per model version; ``name`` and ``version`` are single path segments)::

    <bucket>/<name>/<version>/<file_name>       the model bytes, SHA-256 in x-amz-meta-sha256
    <bucket>/<name>/<version>/manifest.json     a ModelManifest as JSON, written last

e.g. ``models/yolox_nano/1/yolox_nano.onnx`` and ``models/yolox_nano/1/manifest.json``. The manifest
is written after the model object, so its presence means the version is complete; a push that
died half-way leaves only a model object, which the next push of that ref overwrites.

A ref is ``name@version`` or ``name@latest`` (the version with the newest ``created_at``). A
version is immutable: pushing different bytes under an existing ref is refused, pushing the same
bytes again is a no-op. The check and the write are two calls, not one atomic S3 operation: two
pushers racing on the same new ref can both pass the check (the registry has one writer, the CLI).

:meth:`ModelStore.fetch` downloads into ``<cache_dir>/<name>/<version>/<file_name>`` through a
``.part`` file renamed into place, and checks the SHA-256 against the manifest before the rename.
A cached file whose hash matches is reused without any download.

S3 access reuses :class:`~storage.clip_store.ClipStore` as the bucket handle (its client with
short timeouts and few retries, error translation, bucket creation, listing). S3 and network
failures surface as :class:`~storage.clip_store.StorageError` /
:class:`~storage.clip_store.StorageUnavailableError` (RuntimeError: retry later); registry
problems as :class:`ModelRegistryError` (ValueError: retrying cannot fix them).
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import io
import logging
import os
import re
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from storage.access import S3Access
from storage.clip_store import SHA256_META, ClipStore, StorageError, sha256_file

logger = logging.getLogger(__name__)

MODEL_NAME_PATTERN = r"^[a-z0-9_-]{1,64}$"
MODEL_VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
"""Starts with a letter or digit, so a version is never ``.`` or ``..`` (it is a path segment)."""
MODEL_FILE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
LATEST = "latest"
"""Reserved version word: ``name@latest`` resolves to the newest version; never stored."""
MANIFEST_FILE_NAME = "manifest.json"

ModelFormat = Literal["onnx", "torchscript"]
_FORMAT_BY_SUFFIX: dict[str, ModelFormat] = {
    ".onnx": "onnx",
    ".pt": "torchscript",
    ".pth": "torchscript",
    ".torchscript": "torchscript",
}
_NAME_RE = re.compile(MODEL_NAME_PATTERN)
_VERSION_RE = re.compile(MODEL_VERSION_PATTERN)
_DOWNLOAD_CHUNK_BYTES = 1024 * 1024


class ModelRegistryError(ValueError):
    """A registry request cannot succeed as asked: malformed ref, conflicting push, bad manifest."""


class ModelNotFoundError(ModelRegistryError):
    """No such model or version in the registry."""


class ModelIntegrityError(ModelRegistryError):
    """Bytes do not match the SHA-256 their manifest pins (tampered or corrupted object)."""


class ModelManifest(BaseModel):
    """Everything known about one model version; stored as ``<name>/<version>/manifest.json``.

    ``classes`` is carried by the manifest itself (the storage layer knows nothing of detectors):
    the pusher builds it, e.g. the 80 COCO names for YOLOX-Nano.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=MODEL_NAME_PATTERN)
    version: str = Field(pattern=MODEL_VERSION_PATTERN)
    format: ModelFormat
    file_name: str = Field(pattern=MODEL_FILE_NAME_PATTERN)
    input_size: int = Field(gt=0)
    classes: list[str] = Field(min_length=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: int = Field(gt=0)
    licence: str = Field(min_length=1)
    source: str | None = None
    created_at: AwareDatetime
    schema_version: int = Field(default=1, ge=1)

    @field_validator("version")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value == LATEST:
            raise ValueError(f"version {LATEST!r} is reserved (name@{LATEST} means the newest version)")
        return value

    @field_validator("file_name")
    @classmethod
    def _not_the_manifest(cls, value: str) -> str:
        if value == MANIFEST_FILE_NAME:
            raise ValueError(f"file_name {value!r} would collide with the version's manifest")
        return value

    @field_validator("classes")
    @classmethod
    def _distinct_non_empty(cls, value: list[str]) -> list[str]:
        for index, label in enumerate(value):
            if not label.strip():
                raise ValueError(f"class name #{index} is empty")
        seen: set[str] = set()
        for label in value:
            if label in seen:
                raise ValueError(f"class name {label!r} appears more than once")
            seen.add(label)
        return value

    @property
    def ref(self) -> str:
        """``name@version``."""
        return f"{self.name}@{self.version}"

    @property
    def object_key(self) -> str:
        """Key of the model bytes in the bucket."""
        return f"{self.name}/{self.version}/{self.file_name}"

    @property
    def manifest_key(self) -> str:
        return manifest_key(self.name, self.version)

    def to_json_bytes(self) -> bytes:
        return self.model_dump_json(indent=2).encode()

    @classmethod
    def from_json_bytes(cls, data: bytes) -> ModelManifest:
        return cls.model_validate_json(data)


def manifest_key(name: str, version: str) -> str:
    """Key of the manifest of ``name@version``."""
    return f"{name}/{version}/{MANIFEST_FILE_NAME}"


def parse_ref(ref: str) -> tuple[str, str]:
    """Split ``name@version`` (or ``name@latest``) into ``(name, version)``.

    Raises:
        ModelRegistryError: not a string, not exactly one ``@``, or a name/version outside its pattern.
    """
    if not isinstance(ref, str):
        raise ModelRegistryError(f"model ref must be a string 'name@version', got {type(ref).__name__} {ref!r}")
    if ref.count("@") != 1:
        raise ModelRegistryError(f"model ref {ref!r} must be 'name@version' or 'name@{LATEST}' (exactly one '@')")
    name, version = ref.split("@")
    if not _NAME_RE.fullmatch(name):
        raise ModelRegistryError(f"model ref {ref!r}: name {name!r} does not match {MODEL_NAME_PATTERN}")
    if not _VERSION_RE.fullmatch(version):
        raise ModelRegistryError(f"model ref {ref!r}: version {version!r} does not match {MODEL_VERSION_PATTERN}")
    return name, version


def _format_for(file: Path, declared: ModelFormat | None) -> ModelFormat:
    if declared is not None:
        return declared
    inferred = _FORMAT_BY_SUFFIX.get(file.suffix.lower())
    if inferred is None:
        raise ModelRegistryError(
            f"cannot infer the model format of {file} from suffix {file.suffix!r} "
            f"(known: {sorted(_FORMAT_BY_SUFFIX)}); pass format="
        )
    return inferred


class _HashingReader:
    """File reader for ``put_object`` that hashes exactly the bytes the SDK uploads."""

    def __init__(self, fh: BinaryIO) -> None:
        self._fh = fh
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._fh.read(size)
        self.digest.update(data)
        return data


class ModelStore:
    """Versioned model artifacts in one bucket of an S3 endpoint, with a local verified cache.

    Args:
        s3: endpoint, keys and the registry's bucket (keys stay inside the minio client; never logged).
        cache_dir: where :meth:`fetch` keeps downloaded models (created on demand).
        connect_timeout_s, read_timeout_s, retries: as for :class:`~storage.clip_store.ClipStore`.
    """

    def __init__(
        self,
        s3: S3Access,
        *,
        cache_dir: Path,
        connect_timeout_s: float = 3.0,
        read_timeout_s: float = 15.0,
        retries: int = 2,
    ) -> None:
        self._s3 = ClipStore.for_access(
            s3, connect_timeout_s=connect_timeout_s, read_timeout_s=read_timeout_s, retries=retries
        )
        self.cache_dir = Path(cache_dir)

    @property
    def endpoint(self) -> str:
        return self._s3.endpoint

    @property
    def bucket(self) -> str:
        return self._s3.bucket

    def __repr__(self) -> str:
        return f"ModelStore(endpoint={self.endpoint!r}, bucket={self.bucket!r}, cache_dir={str(self.cache_dir)!r})"

    def ensure_bucket(self) -> None:
        """Create the bucket unless it exists."""
        self._s3.ensure_bucket()

    def healthy(self) -> bool:
        """True when the bucket answers within ~3 s; never raises."""
        return self._s3.healthy()

    # ------------------------------------------------------------------------------------------ writing

    def push(
        self,
        file: Path,
        *,
        name: str,
        version: str,
        input_size: int,
        classes: Sequence[str],
        licence: str,
        source: str | None = None,
        format: ModelFormat | None = None,
        file_name: str | None = None,
        created_at: datetime | None = None,
    ) -> ModelManifest:
        """Upload ``file`` as ``name@version``, then its manifest; returns the stored manifest.

        Args:
            file: the local model file.
            name, version: the ref to create (``version`` may not be ``latest``).
            input_size: square input side the model expects, in pixels.
            classes: class names in the order of the model's class scores.
            licence: licence of the weights (e.g. ``Apache-2.0``).
            source: where the weights come from (URL, commit...).
            format: ``onnx`` or ``torchscript``; inferred from the suffix when None.
            file_name: object name under the version prefix; ``file.name`` when None.
            created_at: timestamp of the version (aware); now (UTC) when None.

        Returns:
            The new manifest, or the stored one when the same bytes are already there (no-op).

        Raises:
            FileNotFoundError: ``file`` is missing.
            ModelRegistryError: invalid fields, or ``name@version`` exists with a different SHA-256.
            ModelIntegrityError: ``file`` changed while it was being uploaded (no manifest written).
            StorageError: the store refused or could not be reached.
        """
        file = Path(file)
        if not file.is_file():
            raise FileNotFoundError(f"model file {file} does not exist or is not a regular file")
        digest = sha256_file(file)
        size_bytes = file.stat().st_size
        try:
            manifest = ModelManifest(
                name=name,
                version=version,
                format=_format_for(file, format),
                file_name=file_name or file.name,
                input_size=input_size,
                classes=list(classes),
                sha256=digest,
                size_bytes=size_bytes,
                licence=licence,
                source=source,
                created_at=created_at or datetime.now(UTC),
            )
        except ValidationError as exc:
            raise ModelRegistryError(f"cannot push {file} as {name}@{version}: {exc}") from exc

        existing = self._read_manifest(name, version)
        if existing is not None:
            if existing.sha256 != digest:
                raise ModelRegistryError(
                    f"model {existing.ref} already exists in bucket {self.bucket!r} with sha256 {existing.sha256}; "
                    f"refusing to overwrite it with {file} (sha256 {digest}): push a new version"
                )
            if existing.model_dump(exclude={"created_at"}) != manifest.model_dump(exclude={"created_at"}):
                logger.warning(
                    "model %s already stored with the same bytes but other metadata; keeping the stored manifest",
                    existing.ref,
                )
            logger.info("model %s already stored with sha256 %s: push is a no-op", existing.ref, digest)
            return existing

        with file.open("rb") as fh, self._s3.translate_errors("PUT", manifest.object_key):
            reader = _HashingReader(fh)
            self._s3.client.put_object(
                self.bucket,
                manifest.object_key,
                reader,
                size_bytes,
                content_type="application/octet-stream",
                metadata={SHA256_META: digest},
            )
        uploaded = reader.digest.hexdigest()
        if uploaded != digest:
            raise ModelIntegrityError(
                f"model file {file} changed during the push of {manifest.ref}: hashed {digest} before upload, "
                f"uploaded bytes hash to {uploaded}; manifest not written"
            )
        body = manifest.to_json_bytes()
        with self._s3.translate_errors("PUT", manifest.manifest_key):
            self._s3.client.put_object(
                self.bucket,
                manifest.manifest_key,
                io.BytesIO(body),
                len(body),
                content_type="application/json",
                metadata={SHA256_META: hashlib.sha256(body).hexdigest()},
            )
        logger.info(
            "pushed model %s (%d bytes, sha256 %s) to %s/%s",
            manifest.ref,
            size_bytes,
            digest,
            self.bucket,
            manifest.object_key,
        )
        return manifest

    # ------------------------------------------------------------------------------------------ reading

    def _read_manifest(self, name: str, version: str) -> ModelManifest | None:
        """The manifest stored for ``name@version``, or None when there is none."""
        key = manifest_key(name, version)
        try:
            data = self._s3.get_bytes(key)
        except StorageError as exc:
            if exc.code == "NoSuchKey":
                return None
            raise
        try:
            manifest = ModelManifest.from_json_bytes(data)
        except ValidationError as exc:
            raise ModelRegistryError(f"manifest {self.bucket}/{key} is not a valid model manifest: {exc}") from exc
        if (manifest.name, manifest.version) != (name, version):
            raise ModelRegistryError(
                f"manifest {self.bucket}/{key} describes {manifest.ref}, not {name}@{version}: registry is inconsistent"
            )
        return manifest

    def list(self, name: str | None = None) -> builtins.list[ModelManifest]:
        """Every complete model version (or those of ``name``), sorted by name then ``created_at``.

        Raises:
            ModelRegistryError: ``name`` is malformed, or a stored manifest is invalid.
        """
        if name is not None and not _NAME_RE.fullmatch(name):
            raise ModelRegistryError(f"model name {name!r} does not match {MODEL_NAME_PATTERN}")
        prefix = f"{name}/" if name is not None else ""
        manifests: builtins.list[ModelManifest] = []
        for key in self._s3.list_keys(prefix):
            parts = key.split("/")
            if len(parts) != 3 or parts[2] != MANIFEST_FILE_NAME:
                continue
            manifest = self._read_manifest(parts[0], parts[1])
            if manifest is not None:  # deleted between list and get
                manifests.append(manifest)
        return sorted(manifests, key=lambda m: (m.name, m.created_at, m.version))

    def get_manifest(self, ref: str) -> ModelManifest:
        """The manifest of ``name@version``, or of the newest version for ``name@latest``.

        Raises:
            ModelRegistryError: malformed ref or invalid stored manifest.
            ModelNotFoundError: no such model or version.
        """
        name, version = parse_ref(ref)
        if version == LATEST:
            versions = self.list(name)
            if not versions:
                raise ModelNotFoundError(
                    f"model ref {ref!r}: no versions of model {name!r} in bucket {self.bucket!r} at {self.endpoint}"
                )
            return versions[-1]
        manifest = self._read_manifest(name, version)
        if manifest is None:
            raise ModelNotFoundError(
                f"model ref {ref!r} not found: no {manifest_key(name, version)} in bucket {self.bucket!r} "
                f"at {self.endpoint}"
            )
        return manifest

    def cache_path(self, manifest: ModelManifest) -> Path:
        """Where :meth:`fetch` keeps the file of ``manifest``."""
        return self.cache_dir / manifest.name / manifest.version / manifest.file_name

    def fetch(self, ref: str) -> tuple[ModelManifest, Path]:
        """Resolve ``ref`` and return its manifest and a local, SHA-256-verified copy of the model.

        A cached copy whose hash matches is returned without downloading; one that does not match
        is replaced. The download goes to a ``.part`` file beside the target and is renamed into
        place only after its hash matched.

        Raises:
            ModelRegistryError: malformed ref or invalid stored manifest.
            ModelNotFoundError: no such ref, or its model object is missing.
            ModelIntegrityError: the stored bytes do not match the manifest (nothing is left in the cache).
            StorageError: the store refused or could not be reached.
            OSError: the cache directory is not writable.
        """
        manifest = self.get_manifest(ref)
        dest = self.cache_path(manifest)
        if dest.is_file():
            cached = sha256_file(dest)
            if cached == manifest.sha256:
                logger.debug("model %s served from cache %s", manifest.ref, dest)
                return manifest, dest
            logger.warning(
                "cached model %s at %s has sha256 %s, manifest says %s: downloading again",
                manifest.ref,
                dest,
                cached,
                manifest.sha256,
            )
            dest.unlink()
        self._download(manifest, dest)
        return manifest, dest

    def _download(self, manifest: ModelManifest, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, part_name = tempfile.mkstemp(prefix=f"{dest.name}.", suffix=".part", dir=dest.parent)
        part = Path(part_name)
        try:
            digest = hashlib.sha256()
            size = 0
            with os.fdopen(fd, "wb") as out:
                try:
                    with self._s3.translate_errors("GET", manifest.object_key):
                        response = self._s3.client.get_object(self.bucket, manifest.object_key)
                        try:
                            for chunk in response.stream(_DOWNLOAD_CHUNK_BYTES):
                                digest.update(chunk)
                                size += len(chunk)
                                out.write(chunk)
                        finally:
                            response.close()
                            response.release_conn()
                except StorageError as exc:
                    if exc.code == "NoSuchKey":
                        raise ModelNotFoundError(
                            f"model {manifest.ref}: manifest exists but object {self.bucket}/{manifest.object_key} "
                            f"is missing (interrupted push or deleted object)"
                        ) from exc
                    raise
                out.flush()
                os.fsync(out.fileno())
            actual = digest.hexdigest()
            if actual != manifest.sha256:
                raise ModelIntegrityError(
                    f"model {manifest.ref}: object {self.bucket}/{manifest.object_key} has sha256 {actual} "
                    f"({size} bytes), manifest expects {manifest.sha256} ({manifest.size_bytes} bytes); "
                    f"download discarded"
                )
            os.replace(part, dest)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
            raise
        logger.info("fetched model %s (%d bytes) into %s", manifest.ref, size, dest)
