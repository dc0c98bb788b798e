"""The model registry seen from the control plane: seeding it and the ``cctv models`` commands."""

from __future__ import annotations

import logging
from pathlib import Path

from serve_apps.detector.onnx_runner import OnnxDetector, model_path
from storage.model_store import ModelManifest, ModelNotFoundError, ModelStore

log = logging.getLogger(__name__)


def licence_of(model_file: Path) -> str:
    """SPDX id of the LICENSE file beside a model, when it is one we recognise."""
    lic = model_file.parent / "LICENSE"
    if lic.is_file() and "Apache License" in lic.read_text(errors="replace")[:2000]:
        return "Apache-2.0"
    return "unknown (no recognised LICENSE beside the model)"


def push_model(
    store: ModelStore, file: Path, *, name: str, version: str, licence: str | None = None, source: str | None = None
) -> ModelManifest:
    """Validate an ONNX file by loading it (input size, classes) and push it as ``name@version``."""
    runner = OnnxDetector(file)  # refuses files that are not ONNX or do not batch correctly
    return store.push(
        file,
        name=name,
        version=version,
        input_size=runner.input_size,
        classes=list(runner.class_names),
        licence=licence or licence_of(file),
        source=source or str(file),
    )


def seed_registry(store: ModelStore, models_dir: Path, refs: list[tuple[str, str]]) -> list[ModelManifest]:
    """Push ``models_dir/<name>/<name>.onnx`` as ``name@version`` for each ref the registry lacks."""
    pushed = []
    for name, version in refs:
        try:
            store.get_manifest(f"{name}@{version}")
            continue
        except ModelNotFoundError:
            pass
        manifest = push_model(store, model_path(models_dir, name), name=name, version=version)
        log.info("model registry seeded with %s (sha256 %s) from %s", manifest.ref, manifest.sha256[:12], models_dir)
        pushed.append(manifest)
    return pushed
