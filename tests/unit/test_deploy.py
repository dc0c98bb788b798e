"""The RayService app builders: profile → Serve applications, with clear errors (no Ray started)."""

from __future__ import annotations

from pathlib import Path

import pytest
from ray import serve

from cluster.deploy import DeployError, detector_app, detector_for, external_s3
from configs.loader import load_config

PROFILE = Path(__file__).resolve().parents[2] / "configs" / "profiles" / "gwangju.yaml"
ENV = {"CCTV_S3_ACCESS_KEY": "ak", "CCTV_S3_SECRET_KEY": "sk"}


def test_detector_builder_binds_the_profiles_detector() -> None:
    cfg = load_config(PROFILE, env={})
    for det in cfg.all_detectors():
        app = detector_app({"config_path": str(PROFILE), "detector": det.name or det.model_name}, env=ENV)
        assert isinstance(app, serve.Application)
    assert {d.app_name for d in cfg.all_detectors()} == {"detector-yolox_nano", "detector-yolox_nano_800"}
    with pytest.raises(DeployError, match=r"no detector 'yolov99'.*yolox_nano"):
        detector_app({"config_path": str(PROFILE), "detector": "yolov99"}, env=ENV)
    with pytest.raises(DeployError, match="'detector'"):
        detector_app({"config_path": str(PROFILE)}, env=ENV)
    with pytest.raises(DeployError, match="config_path"):
        detector_app({"detector": "yolox_nano"}, env=ENV)


def test_s3_keys_come_from_the_environment_and_are_required() -> None:
    cfg = load_config(PROFILE, env={})
    s3 = external_s3(cfg, ENV)
    assert (s3.access_key, s3.secret_key) == ("ak", "sk") and "sk" not in repr(s3)
    with pytest.raises(DeployError, match="CCTV_S3_SECRET_KEY"):
        external_s3(cfg, {"CCTV_S3_ACCESS_KEY": "ak"})
    local = cfg.model_copy(update={"storage": cfg.storage.model_copy(update={"endpoint": None})})
    with pytest.raises(DeployError, match="external S3"):
        external_s3(local, ENV)
    assert detector_for(cfg, cfg.detector.model_name) is cfg.detector
    assert detector_for(cfg, "yolox_nano_800").run_input_size == 800
