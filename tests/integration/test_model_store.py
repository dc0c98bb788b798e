"""Model registry against a real SeaweedFS (``weed mini``): push, list, resolve, verified fetch.

The two shipped detector graphs are pushed as ``yolox_nano@1`` and ``person_lwpd@1``; tampering is
done with a plain minio client writing straight into the bucket.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from minio import Minio

from serve_apps.detector.coco import COCO_CLASSES, PERSON_CLASSES
from storage.clip_store import SHA256_META
from storage.embedded_s3 import EmbeddedS3
from storage.model_store import (
    ModelIntegrityError,
    ModelManifest,
    ModelNotFoundError,
    ModelRegistryError,
    ModelStore,
    parse_ref,
)

logger = logging.getLogger(__name__)

YOLOX_SHA256 = "695e750a5d5754bb5a8d5325643b59282191a7e7a564e435a415fd3c578eab14"
PERSON_SHA256 = "4bf5f704cd3bd900645a4303e0934ede13d9fb2135058b38005f4c2886c68576"
SOURCE = "github.com/Kazuhito00/Image-Processing-Node-Editor@46979d5b"
T0 = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedS3]:
    server = EmbeddedS3(tmp_path_factory.mktemp("s3-models"), start_timeout_s=60)
    server.start()
    logger.info("weed mini answered S3 after %.2f s", server.start_duration_s)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def raw(s3_server: EmbeddedS3) -> Minio:
    """A plain client that writes into the bucket behind the registry's back."""
    return Minio(s3_server.endpoint, access_key=s3_server.access_key, secret_key=s3_server.secret_key, secure=False)


def _store(s3_server: EmbeddedS3, cache_dir: Path) -> ModelStore:
    return ModelStore(s3_server.access("models"), cache_dir=cache_dir)


@pytest.fixture(scope="module")
def registry(s3_server: EmbeddedS3, tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> ModelStore:
    """The ``models`` bucket with yolox_nano@1 and person_lwpd@1 pushed."""
    store = _store(s3_server, tmp_path_factory.mktemp("model-cache"))
    store.ensure_bucket()
    store.ensure_bucket()  # idempotent
    store.push(
        models_dir / "yolox_nano" / "yolox_nano.onnx",
        name="yolox_nano",
        version="1",
        input_size=416,
        classes=COCO_CLASSES,
        licence="Apache-2.0",
        source=SOURCE,
        created_at=T0,
    )
    store.push(
        models_dir / "person_lwpd" / "person_lwpd.onnx",
        name="person_lwpd",
        version="1",
        input_size=192,
        classes=PERSON_CLASSES,
        licence="Apache-2.0",
        source=SOURCE,
        created_at=T0,
    )
    return store


def _files_under(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file()) if directory.exists() else []


def _push_random(store: ModelStore, tmp_path: Path, name: str, version: str, size: int = 50_000) -> ModelManifest:
    path = tmp_path / f"{name}-{version}.onnx"
    path.write_bytes(os.urandom(size))
    return store.push(path, name=name, version=version, input_size=64, classes=["thing"], licence="MIT")


# ---------------------------------------------------------------------------------------------- push


def test_push_stores_model_and_manifest_under_name_version(registry: ModelStore, raw: Minio, models_dir: Path) -> None:
    keys = sorted(o.object_name for o in raw.list_objects("models", "yolox_nano/", recursive=True))
    assert keys == ["yolox_nano/1/manifest.json", "yolox_nano/1/yolox_nano.onnx"]

    manifest = registry.get_manifest("yolox_nano@1")
    assert manifest.ref == "yolox_nano@1"
    assert manifest.sha256 == YOLOX_SHA256
    assert manifest.size_bytes == (models_dir / "yolox_nano" / "yolox_nano.onnx").stat().st_size
    assert manifest.format == "onnx"
    assert manifest.file_name == "yolox_nano.onnx"
    assert manifest.input_size == 416
    assert manifest.classes == list(COCO_CLASSES) and len(manifest.classes) == 80
    assert manifest.licence == "Apache-2.0" and manifest.source == SOURCE
    assert manifest.created_at == T0 and manifest.schema_version == 1

    stat = raw.stat_object("models", "yolox_nano/1/yolox_nano.onnx")
    assert (stat.metadata or {}).get(SHA256_META) == YOLOX_SHA256
    stored = raw.get_object("models", "yolox_nano/1/manifest.json")
    try:
        assert ModelManifest.model_validate_json(stored.read()) == manifest
    finally:
        stored.close()
        stored.release_conn()


def test_pushing_the_same_bytes_again_is_a_no_op(registry: ModelStore, models_dir: Path) -> None:
    before = registry.get_manifest("person_lwpd@1")
    again = registry.push(
        models_dir / "person_lwpd" / "person_lwpd.onnx",
        name="person_lwpd",
        version="1",
        input_size=192,
        classes=PERSON_CLASSES,
        licence="Apache-2.0",
        source=SOURCE,
    )
    assert again == before  # the stored manifest, created_at included
    assert [m.ref for m in registry.list("person_lwpd")][:1] == ["person_lwpd@1"]


def test_pushing_different_bytes_under_an_existing_ref_is_refused(registry: ModelStore, tmp_path: Path) -> None:
    impostor = tmp_path / "yolox_nano.onnx"
    impostor.write_bytes(os.urandom(10_000))
    impostor_sha = hashlib.sha256(impostor.read_bytes()).hexdigest()
    with pytest.raises(ModelRegistryError, match="yolox_nano@1") as info:
        registry.push(
            impostor,
            name="yolox_nano",
            version="1",
            input_size=416,
            classes=COCO_CLASSES,
            licence="Apache-2.0",
        )
    assert YOLOX_SHA256 in str(info.value) and impostor_sha in str(info.value)
    assert registry.get_manifest("yolox_nano@1").sha256 == YOLOX_SHA256


def test_push_rejects_bad_fields_with_the_offending_value(registry: ModelStore, tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(b"not really a model")

    def push(file: Path = path, name: str = "m", version: str = "1", classes: tuple[str, ...] = ("a",)) -> None:
        registry.push(file, name=name, version=version, input_size=64, classes=classes, licence="MIT")

    with pytest.raises(ModelRegistryError, match="latest"):
        push(version="latest")
    with pytest.raises(ModelRegistryError, match="Bad-Name"):
        push(name="Bad-Name")
    with pytest.raises(ModelRegistryError, match=r"'\.\.'"):
        push(version="..")
    with pytest.raises(ModelRegistryError, match="'dup'"):
        push(classes=("dup", "dup"))
    weird = tmp_path / "m.bin"
    weird.write_bytes(b"x")
    with pytest.raises(ModelRegistryError, match=r"'\.bin'"):
        push(file=weird)
    with pytest.raises(FileNotFoundError, match=r"absent\.onnx"):
        push(file=tmp_path / "absent.onnx")
    assert registry.list("m") == []


def test_manifest_requires_an_aware_timestamp_and_known_fields() -> None:
    fields = {
        "name": "m",
        "version": "1",
        "format": "onnx",
        "file_name": "m.onnx",
        "input_size": 32,
        "classes": ["a"],
        "sha256": "0" * 64,
        "size_bytes": 1,
        "licence": "MIT",
        "created_at": T0,
    }
    assert ModelManifest(**fields).ref == "m@1"
    with pytest.raises(ValueError, match="timezone"):
        ModelManifest(**{**fields, "created_at": T0.replace(tzinfo=None)})
    with pytest.raises(ValueError, match="extra"):
        ModelManifest(**fields, colour="red")


# ---------------------------------------------------------------------------------------------- list / resolve


def test_list_is_sorted_by_name_then_creation(registry: ModelStore) -> None:
    refs = [m.ref for m in registry.list()]
    assert refs.index("person_lwpd@1") < refs.index("yolox_nano@1")
    assert [m.ref for m in registry.list("yolox_nano")] == ["yolox_nano@1"]
    assert registry.list("no_such_model") == []
    assert registry.list("yolox") == []  # a prefix of a name is not a name
    with pytest.raises(ModelRegistryError, match="'Yolox'"):
        registry.list("Yolox")


def test_latest_follows_the_newest_version(registry: ModelStore, models_dir: Path) -> None:
    assert registry.get_manifest("person_lwpd@latest").ref == "person_lwpd@1"
    v2 = registry.push(
        models_dir / "person_lwpd" / "person_lwpd.onnx",
        name="person_lwpd",
        version="2",
        input_size=320,
        classes=PERSON_CLASSES,
        licence="Apache-2.0",
        source=SOURCE,
        created_at=T0 + timedelta(days=1),
    )
    assert registry.get_manifest("person_lwpd@latest") == v2
    assert registry.get_manifest("person_lwpd@1").input_size == 192
    assert [m.version for m in registry.list("person_lwpd")] == ["1", "2"]
    assert registry.get_manifest("yolox_nano@latest").ref == "yolox_nano@1"


@pytest.mark.parametrize("ref", ["no_such_model@1", "yolox_nano@99", "no_such_model@latest"])
def test_unknown_ref_is_not_found(registry: ModelStore, ref: str) -> None:
    with pytest.raises(ModelNotFoundError, match=ref):
        registry.get_manifest(ref)
    with pytest.raises(ModelNotFoundError, match=ref):
        registry.fetch(ref)


@pytest.mark.parametrize(
    "ref",
    ["yolox_nano", "yolox_nano@1@2", "@1", "yolox_nano@", "YOLOX@1", "yolox_nano@..", "yolox_nano@1/../2", ""],
)
def test_malformed_ref_is_a_clear_error(registry: ModelStore, ref: str) -> None:
    with pytest.raises(ModelRegistryError, match="model ref") as info:
        parse_ref(ref)
    assert repr(ref) in str(info.value)
    with pytest.raises(ModelRegistryError, match="model ref"):
        registry.fetch(ref)
    assert not isinstance(info.value, ModelNotFoundError)


def test_parse_ref_splits_name_and_version() -> None:
    assert parse_ref("yolox_nano@1") == ("yolox_nano", "1")
    assert parse_ref("person-det@2024.05.rc1") == ("person-det", "2024.05.rc1")
    assert parse_ref("yolox_nano@latest") == ("yolox_nano", "latest")


# ---------------------------------------------------------------------------------------------- fetch


def test_fetch_verifies_downloads_once_and_repairs_the_cache(
    registry: ModelStore, s3_server: EmbeddedS3, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    store = _store(s3_server, cache)
    manifest, path = store.fetch("yolox_nano@1")
    assert path == cache / "yolox_nano" / "1" / "yolox_nano.onnx"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == YOLOX_SHA256 == manifest.sha256
    assert _files_under(cache) == [path]  # no .part left behind

    first = path.stat()
    again, same_path = store.fetch("yolox_nano@latest")
    assert again == manifest and same_path == path
    second = path.stat()
    assert (second.st_ino, second.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)  # not downloaded again

    path.write_bytes(b"bit rot")  # a damaged cache entry is replaced, not trusted
    _, repaired = store.fetch("yolox_nano@1")
    assert hashlib.sha256(repaired.read_bytes()).hexdigest() == YOLOX_SHA256
    assert _files_under(cache) == [path]


def test_fetched_model_loads_in_the_detector(registry: ModelStore) -> None:
    from serve_apps.detector.onnx_runner import OnnxDetector

    manifest, path = registry.fetch("person_lwpd@1")
    detector = OnnxDetector(path, expected_sha256=manifest.sha256, class_names=manifest.classes, verify_batching=False)
    assert detector.input_size == manifest.input_size


def test_tampered_object_is_refused_and_leaves_nothing_in_the_cache(
    registry: ModelStore, s3_server: EmbeddedS3, raw: Minio, tmp_path: Path
) -> None:
    manifest = _push_random(registry, tmp_path, "tamper_demo", "1")
    evil = os.urandom(manifest.size_bytes)
    evil_sha = hashlib.sha256(evil).hexdigest()
    raw.put_object("models", manifest.object_key, io.BytesIO(evil), len(evil))  # behind the registry's back

    cache = tmp_path / "cache"
    store = _store(s3_server, cache)
    with pytest.raises(ModelIntegrityError, match="tamper_demo@1") as info:
        store.fetch("tamper_demo@1")
    assert manifest.sha256 in str(info.value) and evil_sha in str(info.value)
    assert _files_under(cache) == []


def test_manifest_without_its_object_is_not_found(registry: ModelStore, raw: Minio, tmp_path: Path) -> None:
    manifest = _push_random(registry, tmp_path, "orphan_demo", "1")
    raw.remove_object("models", manifest.object_key)
    with pytest.raises(ModelNotFoundError, match=r"orphan_demo/1/orphan_demo-1\.onnx"):
        registry.fetch("orphan_demo@1")
    assert _files_under(registry.cache_dir / "orphan_demo") == []
