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


def test_every_entry_point_names_a_missing_s3_key_the_same_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Deploy, ``cctv models`` and ``cctv evidence`` read the keys through one function, one message."""
    from cluster.cli import main
    from storage.access import missing_key_message

    config = tmp_path / "cctv.yaml"
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\n"
        "storage:\n  endpoint: 127.0.0.1:9\n  access_key_env: T_AK\n  secret_key_env: T_SK\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("T_AK", "the-access-key")
    monkeypatch.delenv("T_SK", raising=False)
    expected = missing_key_message("T_SK", "secret_key_env", "127.0.0.1:9")
    with pytest.raises(DeployError) as info:
        external_s3(load_config(config), {"T_AK": "the-access-key"})
    assert str(info.value) == expected
    for argv in (["models", "list", "--config", str(config)], ["evidence", "lifecycle", "--config", str(config)]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert expected in err, (argv, err)
        assert "the-access-key" not in err
