"""Config loading: precise file:line:field errors, all of them at once, nothing half-applied."""

from __future__ import annotations

import pickle
import textwrap
from pathlib import Path

import pytest

from configs.loader import ConfigError, ConfigIssue, load_cameras, load_config
from configs.redact import redact_url
from configs.schema import AppConfig

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "configs" / "demo.yaml"

GOOD = """\
state_dir: run-state
cluster:
  num_shards: 3
detector:
  models_dir: models
cameras:
  - id: cam-001
    url: rtsp://10.0.0.1/stream1
    district: harbour
    purpose: crowd
    analytics_fps: 2
    zones:
      - name: gate
        polygon: [[0, 0], [100, 0], [100, 80]]
        crowd_threshold_people: 4
  - id: cam-002
    url: clips/plaza.mp4
    loop: true
    decode_mode: keyframe
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def marked_line(path: Path, marker: str = "# <-") -> int:
    """1-based line of the only line of ``path`` carrying ``marker``."""
    lines = [n for n, text in enumerate(path.read_text().splitlines(), 1) if marker in text]
    assert len(lines) == 1, f"{marker!r} on lines {lines}"
    return lines[0]


def only_issue(exc: pytest.ExceptionInfo[ConfigError]) -> ConfigIssue:
    assert len(exc.value.issues) == 1, str(exc.value)
    return exc.value.issues[0]


def test_good_config_loads(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "app.yaml", GOOD), env={})
    assert isinstance(cfg, AppConfig)
    assert cfg.cluster.num_shards == 3
    assert [c.id for c in cfg.cameras] == ["cam-001", "cam-002"]
    assert cfg.cameras[0].zones[0].polygon == [(0, 0), (100, 0), (100, 80)]
    assert cfg.cameras[1].decode_mode == "keyframe" and cfg.cameras[1].loop is True
    # Relative paths written in the file resolve against the file's directory.
    assert cfg.state_dir == tmp_path / "run-state"
    assert cfg.detector.models_dir == tmp_path / "models"
    assert cfg.cameras[1].url == str(tmp_path / "clips" / "plaza.mp4")
    assert cfg.cameras[0].url == "rtsp://10.0.0.1/stream1"


def test_demo_config_loads() -> None:
    cfg = load_config(DEMO, env={})
    assert cfg.cameras == []
    assert cfg.cluster.ray_address is None and cfg.storage.endpoint is None
    assert cfg.cluster.num_shards == 2
    assert cfg.detector.model_name == "yolox_nano"
    assert cfg.detector.models_dir.resolve() == (ROOT.parent / "shared" / "models").resolve()
    assert cfg.recorder.pre_roll_s == 4 and cfg.recorder.post_roll_s == 4
    assert cfg.state_dir.is_absolute()


def test_relative_models_dir_resolves_against_config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg_path = write(tmp_path, "deploy/conf/app.yaml", "detector:\n  models_dir: ../../weights\n")
    monkeypatch.chdir(tmp_path / "deploy")  # the working directory must not matter
    cfg = load_config(cfg_path, env={})
    assert cfg.detector.models_dir == tmp_path / "weights"
    # Defaults (not written in the file) resolve against the working directory instead.
    assert cfg.state_dir == tmp_path / "deploy" / "state"


BAD_ROWS = {
    "negative analytics_fps": (
        """\
        cameras:
          - id: a
            url: rtsp://h/1
          - id: b
            url: rtsp://h/2
            analytics_fps: -1   # <-
        """,
        "cameras[1].analytics_fps",
        "Input should be greater than 0 (got -1)",
    ),
    "typo analytic_fps": (
        """\
        cameras:
          - id: a
            url: rtsp://h/1
            analytic_fps: 2   # <-
        """,
        "cameras[0].analytic_fps",
        "unknown field 'analytic_fps' (did you mean 'analytics_fps'?)",
    ),
    "bad decode_mode": (
        """\
        cameras:
          - id: a
            url: rtsp://h/1
            decode_mode: fast   # <-
        """,
        "cameras[0].decode_mode",
        "Input should be 'keyframe', 'sampled' or 'all' (got 'fast')",
    ),
    "polygon with 2 points": (
        """\
        cameras:
          - id: a
            url: rtsp://h/1
            zones:
              - name: gate
                crowd_threshold_people: 3
                polygon: [[0, 0], [10, 0]]   # <-
        """,
        "cameras[0].zones[0].polygon",
        "List should have at least 3 items after validation, not 2",
    ),
    "duplicate camera id": (
        """\
        cameras:
          - id: a
            url: rtsp://h/1
          - id: b
            url: rtsp://h/2
          - id: a   # <-
            url: rtsp://h/3
        """,
        "cameras[2].id",
        "duplicate camera id 'a' (first defined at {file}:2)",
    ),
    "bad URL scheme": (
        """\
        cameras:
          - id: a
            url: ftp://h/1   # <-
        """,
        "cameras[0].url",
        "unsupported URL scheme 'ftp'",
    ),
    "missing url": (
        """\
        cameras:
          - id: a
            url: rtsp://h/1
          - id: b   # <-
            district: north
        """,
        "cameras[1].url",
        "Field required",
    ),
    "bad section value": (
        """\
        cluster:
          num_shards: 2
          backpressure_policy: drop_all   # <-
        """,
        "cluster.backpressure_policy",
        "Input should be 'drop_newest' or 'drop_oldest'",
    ),
}


@pytest.mark.parametrize("case", BAD_ROWS, ids=list(BAD_ROWS))
def test_bad_row_names_file_line_and_field(tmp_path: Path, case: str) -> None:
    text, location, message = BAD_ROWS[case]
    path = write(tmp_path, "app.yaml", text)
    with pytest.raises(ConfigError) as exc:
        load_config(path, env={})
    issue = only_issue(exc)
    assert issue.file == str(path)
    assert issue.line == marked_line(path)
    assert issue.location == location
    assert message.format(file=path) in issue.message
    assert str(exc.value).startswith(f"{path}:{issue.line}: {location}: ")


def test_error_line_format(tmp_path: Path) -> None:
    path = write(tmp_path, "app.yaml", BAD_ROWS["negative analytics_fps"][0])
    with pytest.raises(ConfigError) as exc:
        load_config(path, env={})
    assert str(exc.value) == f"{path}:6: cameras[1].analytics_fps: Input should be greater than 0 (got -1)"


def test_all_bad_rows_reported_in_one_error(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "app.yaml",
        """\
        recorder:
          pre_roll_s: -3          # <-1
        cameras:
          - id: a
            url: rtsp://h/1
            analytics_fps: 0      # <-2
          - id: b
            url: rtsp://h/2
          - id: c
            url: gopher://h/3     # <-3
            decode_mode: every    # <-4
          - id: b                 # <-5
            url: rtsp://h/4
        """,
    )
    with pytest.raises(ConfigError) as exc:
        load_config(path, env={})
    got = [(i.line, i.location) for i in exc.value.issues]
    assert got == [
        (marked_line(path, "# <-1"), "recorder.pre_roll_s"),
        (marked_line(path, "# <-2"), "cameras[0].analytics_fps"),
        (marked_line(path, "# <-3"), "cameras[2].url"),
        (marked_line(path, "# <-4"), "cameras[2].decode_mode"),
        (marked_line(path, "# <-5"), "cameras[3].id"),
    ]
    assert len(str(exc.value).splitlines()) == 5


def test_yaml_syntax_error_has_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "app.yaml",
        """\
        cluster:
          num_shards: 2
        cameras:
          - id: a
            url: rtsp://h/1
           district: north   # <-
        """,
    )
    with pytest.raises(ConfigError) as exc:
        load_config(path, env={})
    issue = only_issue(exc)
    assert (issue.file, issue.line) == (str(path), marked_line(path))
    assert "YAML syntax error" in issue.message


def test_duplicate_yaml_key_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "app.yaml", "cluster:\n  num_shards: 2\n  num_shards: 3\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path, env={})
    assert (only_issue(exc).line, only_issue(exc).location) == (3, "cluster.num_shards")
    assert "first at line 2" in only_issue(exc).message


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(write(tmp_path, "app.yaml", "- a\n- b\n"), env={})


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read file"):
        load_config(tmp_path / "nope.yaml", env={})


CSV = """\
id,url,district,purpose,analytics_fps,decode_mode,loop
cam-1,rtsp://h/1,north,crowd,1,sampled,false
# a comment line

cam-2,"rtsp://h/2",,,,,
cam-3,rtsp://h/3,"multi
line district",traffic,2,,
cam-4,rtsp://h/4,south,general,-5,keyframe,true
cam-5,rtsp://h/5,south,general,1,sampled,perhaps
"""


def test_csv_inventory_loads(tmp_path: Path) -> None:
    good = "\n".join(line for line in CSV.splitlines() if "cam-4" not in line and "cam-5" not in line)
    cams = load_cameras(write(tmp_path, "cams.csv", good + "\n"))
    assert [c.id for c in cams] == ["cam-1", "cam-2", "cam-3"]
    assert cams[1].district == "unassigned" and cams[1].analytics_fps == 1.0  # empty cells: defaults
    assert cams[2].district == "multi\nline district"


def test_csv_bad_rows_report_csv_line_numbers(tmp_path: Path) -> None:
    path = write(tmp_path, "cams.csv", CSV)
    with pytest.raises(ConfigError) as exc:
        load_cameras(path)
    got = [(i.file, i.line, i.location) for i in exc.value.issues]
    # cam-3 spans lines 6-7, so cam-4 is on line 8 and cam-5 on line 9.
    assert got == [
        (str(path), 8, "cameras[3].analytics_fps"),
        (str(path), 9, "cameras[4].loop"),
    ]
    assert f"{path}:8: cameras[3].analytics_fps: Input should be greater than 0 (got '-5')" in str(exc.value)


def test_csv_header_and_shape_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "cams.csv", "id,url,zones,analytic_fps\ncam-1,rtsp://h/1,,\n")
    with pytest.raises(ConfigError) as exc:
        load_cameras(path)
    messages = [(i.line, i.location, i.message) for i in exc.value.issues]
    assert [m[:2] for m in messages] == [(1, "zones"), (1, "analytic_fps")]
    assert "YAML inventory" in messages[0][2]
    assert "did you mean 'analytics_fps'?" in messages[1][2]

    path = write(tmp_path, "short.csv", "id,url,district\ncam-1,rtsp://h/1\ncam-2,rtsp://h/2,x\ncam-3\n")
    with pytest.raises(ConfigError) as exc:
        load_cameras(path)
    assert [(i.line, i.location) for i in exc.value.issues] == [(2, "cameras[0]"), (4, "cameras[2]")]


def test_csv_duplicate_ids_name_both_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "cams.csv", "id,url\ncam-1,rtsp://h/1\ncam-2,rtsp://h/2\ncam-1,rtsp://h/3\n")
    with pytest.raises(ConfigError) as exc:
        load_cameras(path)
    issue = only_issue(exc)
    assert (issue.line, issue.location) == (4, "cameras[2].id")
    assert f"first defined at {path}:2" in issue.message


def test_yaml_inventory_both_shapes(tmp_path: Path) -> None:
    listed = write(tmp_path, "list.yaml", "- id: a\n  url: rtsp://h/1\n- id: b\n  url: rtsp://h/2\n")
    assert [c.id for c in load_cameras(listed)] == ["a", "b"]
    mapped = write(
        tmp_path,
        "map.yaml",
        """\
        cameras:
          - id: a
            url: rtsp://h/1
            zones:
              - {name: z, polygon: [[0, 0], [1, 0], [1, 1]]}
        """,
    )
    assert load_cameras(mapped)[0].zones[0].name == "z"
    bad = write(tmp_path, "bad.yaml", "cameras:\n  - id: a\n    url: rtsp://h/1\n    loop: 7\ncams: []\n")
    with pytest.raises(ConfigError) as exc:
        load_cameras(bad)
    assert [(i.line, i.location) for i in exc.value.issues] == [(4, "cameras[0].loop"), (5, "cams")]


def test_cameras_file_merges_and_errors_name_that_file(tmp_path: Path) -> None:
    inventory = write(tmp_path, "inv/cams.csv", "id,url,analytics_fps\ncam-1,rtsp://h/1,\ncam-2,rtsp://h/2,\n")
    cfg_path = write(
        tmp_path,
        "app.yaml",
        "cameras_file: inv/cams.csv\ncameras:\n  - id: local\n    url: rtsp://h/0\n",
    )
    cfg = load_config(cfg_path, env={})
    assert [c.id for c in cfg.cameras] == ["local", "cam-1", "cam-2"]

    inventory.write_text("id,url,analytics_fps\ncam-1,rtsp://h/1,\nlocal,rtsp://h/2,0\n")
    with pytest.raises(ConfigError) as exc:
        load_config(cfg_path, env={})
    shown = str(tmp_path / "inv" / "cams.csv")
    got = [(i.file, i.line, i.location) for i in exc.value.issues]
    assert sorted(got) == [(shown, 3, "cameras[1].analytics_fps"), (shown, 3, "cameras[1].id")]
    assert f"duplicate camera id 'local' (first defined at {cfg_path}:3)" in str(exc.value)


def test_missing_cameras_file(tmp_path: Path) -> None:
    cfg_path = write(tmp_path, "app.yaml", "cluster: {num_shards: 1}\ncameras_file: nope.csv\n")
    with pytest.raises(ConfigError) as exc:
        load_config(cfg_path, env={})
    assert (only_issue(exc).line, only_issue(exc).location) == (2, "cameras_file")


def test_password_never_in_error_text(tmp_path: Path) -> None:
    secret = "s3cr3t-Pa55"
    path = write(
        tmp_path,
        "app.yaml",
        f"""\
        cameras:
          - id: a
            url: ftp://admin:{secret}@10.0.0.9/stream
          - id: b
            url: rtsp://admin:{secret}@10.0.0.9/stream
            zones:
              - {{name: z, polygon: [[0, 0], [1, 0], [1, 1]]}}
              - {{name: z, polygon: [[0, 0], [1, 0], [1, 1]]}}
          - id: c
            url: rtsp://admin:{secret}@10.0.0.9/x
            analytics_fps: 1000
            purpose: "rtsp://admin:{secret} @ host"
        """,
    )
    with pytest.raises(ConfigError) as exc:
        load_config(path, env={})
    text = str(exc.value)
    assert len(exc.value.issues) == 4
    assert secret not in text and secret not in repr(exc.value.issues)
    assert "ftp://admin:***@10.0.0.9/stream" in text

    # A long value is cut short in the message: the cut must not split the URL before its '@'.
    long_secret = "Z" * 120
    path = write(tmp_path, "long.yaml", f"cameras:\n  - id: a\n    url: gopher://admin:{long_secret}@h/s\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path, env={})
    assert "ZZZZ" not in str(exc.value) and "gopher://admin:***@h/s" in str(exc.value)

    csv_path = write(tmp_path, "cams.csv", f"id,url\ncam 1,rtsp://u:{secret}@h/1\n")
    with pytest.raises(ConfigError) as exc:
        load_cameras(csv_path)
    assert secret not in str(exc.value)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("rtsp://user:pass@host:554/s", "rtsp://user:***@host:554/s"),
        ("rtsp://user:p@ss/w#rd@host/s", "rtsp://user:***@host/s"),
        ("rtsp://user@host/s", "rtsp://user@host/s"),
        ("rtsp://host:554/s", "rtsp://host:554/s"),
        ("/data/clip.mp4", "/data/clip.mp4"),
        ("http://:tok@host", "http://:***@host"),
        ("rtsp://u:pa ss@h/x", "rtsp://u:***@h/x"),
        (
            "error opening rtsp://u:pw1@h/1 (then http://v:pw2@h/2): refused",
            "error opening rtsp://u:***@h/1 (then http://v:***@h/2): refused",
        ),
        ("rtsp://u:pw1@h/1: 401 Unauthorized", "rtsp://u:***@h/1: 401 Unauthorized"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_nothing_half_applied(tmp_path: Path) -> None:
    # A valid inventory and valid cameras, one bad setting elsewhere: no config at all comes back.
    write(tmp_path, "cams.csv", "id,url\ncam-1,rtsp://h/1\n")
    path = write(tmp_path, "app.yaml", "cameras_file: cams.csv\nmetrics:\n  bind_host: [1, 2]\n")
    result: AppConfig | None = None
    with pytest.raises(ConfigError) as exc:
        result = load_config(path, env={})
    assert result is None
    assert (only_issue(exc).line, only_issue(exc).location) == (3, "metrics.bind_host")


def test_env_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, "app.yaml", "cluster:\n  ray_address: null\nstorage:\n  bucket: from-file\n")
    env = {"CCTV_RAY_ADDRESS": "ray://head:10001", "CCTV_S3_ENDPOINT": "minio:9000", "CCTV_S3_BUCKET": "city"}
    cfg = load_config(path, env=env)
    assert cfg.cluster.ray_address == "ray://head:10001"
    assert cfg.storage.endpoint == "minio:9000" and cfg.storage.bucket == "city"
    # Unset or empty variables change nothing.
    cfg = load_config(path, env={"CCTV_S3_BUCKET": ""})
    assert cfg.cluster.ray_address is None and cfg.storage.bucket == "from-file"
    # Explicit overrides win over the environment.
    cfg = load_config(path, env=env, overrides={"storage.bucket": "cli-bucket", "cluster.num_shards": 5})
    assert (cfg.storage.bucket, cfg.cluster.num_shards) == ("cli-bucket", 5)


def test_env_override_default_is_os_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CCTV_S3_BUCKET", "from-env")
    assert load_config(write(tmp_path, "app.yaml", "{}\n")).storage.bucket == "from-env"


def test_bad_override_names_its_source(tmp_path: Path) -> None:
    path = write(tmp_path, "app.yaml", "storage:\n  bucket: ok-bucket\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path, env={"CCTV_S3_BUCKET": "Bad_Bucket"}, overrides={"cluster.num_shard": 2})
    assert [(i.file, i.line, i.location) for i in exc.value.issues] == [
        ("$CCTV_S3_BUCKET", None, "storage.bucket"),
        ("<overrides>", None, "cluster.num_shard"),
    ]
    assert str(exc.value).splitlines()[0].startswith("$CCTV_S3_BUCKET: storage.bucket: String should match")


def test_config_error_pickles() -> None:
    err = ConfigError([ConfigIssue("a.yaml", 3, "cluster.num_shards", "bad")])
    copy = pickle.loads(pickle.dumps(err))
    assert copy.issues == err.issues and str(copy) == "a.yaml:3: cluster.num_shards: bad"
    assert isinstance(copy, ValueError)


def test_purpose_detectors_resolve_paths_and_route_by_purpose(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "app.yaml",
        "detector:\n  models_dir: m\npurpose_detectors:\n  crowd:\n    model_name: person_lwpd\n"
        "    input_size: 192\n    models_dir: ../other\n",
    )
    cfg = load_config(path, env={})
    crowd = cfg.detector_for("crowd")
    assert crowd.model_name == "person_lwpd" and crowd.models_dir == (tmp_path.parent / "other")
    assert cfg.detector_for("traffic").model_name == "yolox_nano"
    assert [d.app_name for d in cfg.all_detectors()] == ["detector-yolox_nano", "detector-person_lwpd"]


def test_two_configs_for_one_detector_are_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "app.yaml",
        "purpose_detectors:\n  crowd:\n    model_name: yolox_nano\n    max_batch_size: 2\n",
    )
    with pytest.raises(ConfigError, match="two different configurations for detector app 'detector-yolox_nano'"):
        load_config(path, env={})
    # Named apart, one model runs twice (here at two sizes): two Serve apps, two routes.
    path = write(
        tmp_path,
        "two.yaml",
        "purpose_detectors:\n  crowd:\n    model_name: yolox_nano\n    name: yolox_nano_800\n    run_input_size: 800\n",
    )
    cfg = load_config(path, env={})
    assert [d.app_name for d in cfg.all_detectors()] == ["detector-yolox_nano", "detector-yolox_nano_800"]
    assert cfg.purpose_detectors["crowd"].serve_input_size == 800 and cfg.detector.serve_input_size == 416
    bad = write(tmp_path, "bad.yaml", "detector:\n  run_input_size: 801\n")
    with pytest.raises(ConfigError, match="run_input_size"):
        load_config(bad, env={})


def test_degenerate_ground_calibration_is_refused_at_load(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "cal.yaml",
        "cameras:\n  - id: c1\n    url: x.mp4\n    calibration:\n"
        "      image_points: [[0, 0], [0, 0], [0, 0], [0, 0]]\n"
        "      ground_points_m: [[0, 0], [10, 0], [10, 10], [0, 10]]\n",
    )
    with pytest.raises(ConfigError, match=r"cal.yaml:5.*image_points.*one line"):
        load_config(path, env={})
