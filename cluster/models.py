"""The model registry seen from the control plane: seeding it and the ``cctv models`` commands."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from configs.schema import AppConfig
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
    store: ModelStore,
    file: Path,
    *,
    name: str,
    version: str,
    licence: str | None = None,
    source: str | None = None,
    classes: Sequence[str] | None = None,
) -> ModelManifest:
    """Validate an ONNX file by loading it (input size, classes) and push it as ``name@version``.

    ``classes`` names the model's classes in the order of its class scores (e.g. ``["fire", "smoke"]``); it is
    required unless the model has 80 (COCO) or 1 (``person``) classes, and must match the model's class count.
    """
    # Refuses files that are not ONNX, do not batch correctly, or whose class count differs from ``classes``.
    runner = OnnxDetector(file, class_names=classes)
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


def fire_smoke_model_problems(cfg: AppConfig, get_manifest: Callable[[str], ModelManifest]) -> list[str]:
    """Cameras whose learned fire/smoke source is served by a registry model without the labels it needs.

    What the configuration alone cannot tell (:func:`configs.schema.fire_smoke_detector_problem` refuses models
    known to be COCO/person at load): a registry model's class names are in its manifest. ``learned`` needs, for
    each of fire and smoke that is enabled, one of its labels among the model's classes; ``fused`` needs one
    label of an enabled kind (the classic cues cover the other). Call it once the registry is seeded.
    """
    problems: list[str] = []
    for cam in cfg.cameras:
        fs = cam.fire_smoke
        if fs is None or fs.source == "classic" or fs.learned is None:
            continue
        det = cfg.detector_for(cam.purpose)
        if det.model_version is None:
            continue  # refused when the configuration was loaded
        ref = f"{det.model_name}@{det.model_version}"
        classes = set(get_manifest(ref).classes)
        enabled: dict[str, list[str]] = {}
        if fs.fire:
            enabled["fire"] = fs.learned.fire_labels
        if fs.smoke:
            enabled["smoke"] = fs.learned.smoke_labels
        missing = {kind: labels for kind, labels in enabled.items() if not classes & set(labels)}
        # learned: every enabled kind needs a label; fused: one will do (the classic cues cover the other).
        refused = bool(missing) if fs.source == "learned" else bool(enabled) and missing == enabled
        if refused:
            shown = sorted(classes)
            listing = ", ".join(shown[:12]) + (f", ... ({len(shown)} in all)" if len(shown) > 12 else "")
            need = "; ".join(f"{kind}_labels {labels}" for kind, labels in missing.items())
            problems.append(
                f"camera {cam.id!r}: fire_smoke.source {fs.source!r} but {ref} (purpose {cam.purpose!r}) has none "
                f"of {need} among its classes [{listing}]: route purpose_detectors.{cam.purpose} to a fire/smoke "
                "model or set fire_smoke.learned labels to its class names"
            )
    return problems
