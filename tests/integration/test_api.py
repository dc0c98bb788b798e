"""The control-centre API through real HTTP on a running Serve app, per role.

One local Runtime (Ray, Serve, SeaweedFS, the detector) with two looped vtest cameras, one with a
crowd zone the footage fills so that events open and close. Tokens for viewer, operator and admin
come from ``CCTV_API_TOKENS`` as in production. Covered: only /healthz answers without a token;
who may do what; one JSON error shape with reasons, never a trace; event queries with filters
and pages; acknowledgement; the Server-Sent Events stream; snapshots; alarm frames (from the shard's
memory, then from beside the clip in the bucket once the shard keeps only newer ones: it keeps one
here); emergency export to a presigned URL; clip views; the access log.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from cluster.footage import prepare_stream
from cluster.runtime import Runtime
from configs.schema import AppConfig, CameraConfig, ClusterConfig, DetectorConfig, RecorderConfig, ZoneConfig
from serve_apps.metrics_export import free_port
from storage.clip_store import StorageError
from storage.records import ClipSidecar, clip_object_key
from tests.support.api import bearer, client, role_tokens, tokens_spec
from tests.support.wait import wait_for

pytestmark = pytest.mark.timeout(900)

NS = "cctv-api-test"
PASSWORD = "pw-Zq81xx"


class Api:
    """The running API: its URL and one client per role (and one without a token)."""

    def __init__(self, rt: Runtime, url: str, tokens: dict[str, str]) -> None:
        self.rt = rt
        self.url = url
        self.tokens = tokens
        self.anon = client(url, None)
        self.viewer = client(url, tokens["viewer"])
        self.operator = client(url, tokens["operator"])
        self.admin = client(url, tokens["admin"])

    def close(self) -> None:
        for c in (self.anon, self.viewer, self.operator, self.admin):
            c.close()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, vtest_path: Path, models_dir: Path) -> Iterator[Api]:
    from tests.conftest import CACHE_DIR

    stream = prepare_stream(vtest_path, CACHE_DIR / "streams", gop_s=1.0)
    state = tmp_path_factory.mktemp("api")
    zone = ZoneConfig(
        name="plaza",
        polygon=[(0, 0), (768, 0), (768, 576), (0, 576)],
        crowd_threshold_people=5,
        min_duration_s=1.0,
        cooldown_s=2.0,
    )
    cams = [
        CameraConfig(
            id="cam-crowd",
            url=str(stream),
            loop=True,
            decode_mode="keyframe",
            district="seo-gu",
            purpose="crowd",
            analytics_fps=1.0,
            zones=[zone],
        ),
        CameraConfig(id="cam-plain", url=str(stream), loop=True, decode_mode="keyframe", district="buk-gu"),
    ]
    port = free_port()
    cfg = AppConfig(
        state_dir=state,
        cluster=ClusterConfig(namespace=NS, num_shards=1, shard_num_cpus=0.5, local_num_cpus=4, serve_http_port=port),
        detector=DetectorConfig(models_dir=models_dir, max_batch_size=4, num_cpus_per_replica=0.5),
        recorder=RecorderConfig(pre_roll_s=2.0, post_roll_s=2.0, alarm_frames_kept=1),
        cameras=cams,
    )
    tokens = role_tokens()
    old = os.environ.get(cfg.api.tokens_env)
    os.environ[cfg.api.tokens_env] = tokens_spec(tokens)
    rt = Runtime(cfg, include_dashboard=False, ray_init_kwargs={"object_store_memory": 256 * 1024**2})
    try:
        with rt:
            a = Api(rt, f"http://127.0.0.1:{port}", tokens)
            try:
                yield a
            finally:
                a.close()
    finally:
        if old is None:
            os.environ.pop(cfg.api.tokens_env, None)
        else:
            os.environ[cfg.api.tokens_env] = old


def _is_error(r: httpx.Response, status: int) -> dict:
    """The one error shape: status, error code, detail in words; never a trace."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body = r.json()
    assert body["status"] == status and body["error"] and body["detail"], body
    assert "Traceback" not in r.text and 'File "' not in r.text
    return body


def _an_event(api: Api) -> dict:
    page = wait_for(
        lambda: api.viewer.get("/events", params={"camera_id": "cam-crowd"}).json()["items"],
        150,
        "an event of cam-crowd in GET /events",
        interval_s=2.0,
    )
    return page[0]


def test_only_healthz_answers_without_a_token(api: Api) -> None:
    assert api.anon.get("/healthz").json() == {"status": "ok"}
    for method, path in [
        ("GET", "/cameras"),
        ("GET", "/cameras/cam-plain/snapshot"),
        ("GET", "/events"),
        ("GET", "/events/stream"),
        ("GET", "/metrics/targets"),
        ("GET", "/access-log"),
        ("POST", "/exports"),
        ("GET", "/no-such-route"),
    ]:
        r = api.anon.request(method, path, content=b"{not json")
        assert _is_error(r, 401)["error"] == "unauthorized"
        assert r.headers["www-authenticate"] == "Bearer"
    _is_error(client(api.url, "viewer-" + "x" * 30).get("/cameras"), 401)
    # The OpenAPI document (no data in it) is public, with the bearer scheme declared.
    spec = api.anon.get("/openapi.json").json()
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
    assert api.anon.get("/docs").status_code == 200


def test_roles(api: Api) -> None:
    new = {"id": "cam-role", "url": "/nonexistent.mp4", "district": "dong-gu"}
    for who in (api.viewer, api.operator):
        assert _is_error(who.post("/cameras", json=new), 403)["detail"].startswith("this needs the admin role")
        _is_error(who.put("/cameras/cam-plain", json={"id": "cam-plain", "url": "/x.mp4"}), 403)
        _is_error(who.delete("/cameras/cam-plain"), 403)
        _is_error(who.post("/cameras/cam-plain/transfer", json={"district": "x"}), 403)
        _is_error(who.get("/access-log"), 403)
    # Viewers read, but cannot acknowledge or export.
    assert api.viewer.get("/cameras").status_code == 200
    assert api.viewer.get("/metrics/targets").status_code == 200
    _is_error(api.viewer.post("/events/e1/ack", json={"operator": "op-1"}), 403)
    window = {"camera_id": "cam-plain", "start_ts": time.time() - 2, "end_ts": time.time() + 1}
    export = {**window, "requester": "112", "case_number": "C-1", "reason": "test"}
    _is_error(api.viewer.post("/exports", json=export), 403)
    _is_error(api.viewer.get("/exports/some-id"), 403)
    # Operators pass the role check (and get the route's own answer).
    _is_error(api.operator.post("/events/no-such-event/ack", json={"operator": "op-1"}), 404)
    # Admins manage cameras.
    r = api.admin.post("/cameras", json=new)
    assert r.status_code == 201, r.text
    assert api.admin.delete("/cameras/cam-role").status_code == 204


def test_bad_input_gets_4xx_with_the_reason_and_no_secret(api: Api) -> None:
    bad = {"id": "cam-x", "url": f"rtsp://user:{PASSWORD}@10.0.0.1/s", "colour": 1, "analytics_fps": -1}
    body = _is_error(api.admin.post("/cameras", json=bad), 422)
    locs = {f["loc"] for f in body["fields"]}
    assert {"body.colour", "body.analytics_fps"} <= locs, locs
    assert PASSWORD not in json.dumps(body)
    _is_error(api.admin.post("/cameras", content=b"{nope", headers={"content-type": "application/json"}), 422)
    # Valid by the schema but unusable by the shard (no homography): refused here, nothing changes.
    flat = {"image_points": [[0, 0]] * 4, "ground_points_m": [[0, 0]] * 4}
    degenerate = {"id": "cam-plain", "url": "/x.mp4", "district": "buk-gu", "calibration": flat}
    assert "homography" in _is_error(api.admin.put("/cameras/cam-plain", json=degenerate), 422)["detail"]
    # Valid by the schema, refused by the rules the shard would build (the controller checks before it changes
    # anything): a 5 px gauge, as a new camera and as an update.
    short = {"name": "wall", "bottom": [10, 20], "top": [10, 15]}
    stub = {"id": "cam-short", "url": "/x.mp4", "district": "buk-gu", "water_gauges": [short]}
    detail = _is_error(api.admin.post("/cameras", json=stub), 422)["detail"]
    assert detail == "camera 'cam-short': analytics not usable: gauge 'wall' is 5.0 px long; at least 10 px are needed"
    _is_error(api.viewer.get("/cameras/cam-short/config"), 404)
    before = api.viewer.get("/cameras/cam-plain/config").json()
    update = {**stub, "id": "cam-plain"}
    assert "at least 10 px" in _is_error(api.admin.put("/cameras/cam-plain", json=update), 422)["detail"]
    assert api.viewer.get("/cameras/cam-plain/config").json() == before
    assert "since_ts" in _is_error(api.viewer.get("/events", params={"since_ts": 10, "until_ts": 5}), 400)["detail"]
    assert "events_page_max" in _is_error(api.viewer.get("/events", params={"limit": 9999}), 400)["detail"]
    _is_error(api.viewer.get("/events", params={"severity": "apocalyptic"}), 422)
    _is_error(api.viewer.get("/cameras/nope"), 404)
    _is_error(api.viewer.get("/cameras/nope/snapshot"), 404)
    _is_error(api.viewer.get("/clips/url", params={"key": "etc/passwd", "reason": "x"}), 422)
    _is_error(api.viewer.get("/clips/url", params={"key": "clips/2020/01/01/cam-x/nothing.mp4", "reason": "x"}), 404)
    now = time.time()
    too_long = {"camera_id": "cam-plain", "start_ts": now - 7200, "end_ts": now, "requester": "119"}
    body = _is_error(api.operator.post("/exports", json={**too_long, "case_number": "C-2", "reason": "r"}), 400)
    assert "exceeds the maximum" in body["detail"]
    reversed_window = {**too_long, "start_ts": now, "end_ts": now - 5, "case_number": "C-2", "reason": "r"}
    assert (
        "end_ts must be after start_ts" in _is_error(api.operator.post("/exports", json=reversed_window), 422)["detail"]
    )
    _is_error(
        api.operator.post("/exports", json={**too_long, "requester": "911", "case_number": "C", "reason": "r"}), 422
    )


def test_cameras_and_snapshot(api: Api) -> None:
    assert wait_for(
        lambda: (
            {s["camera_id"]: s["state"] for s in api.viewer.get("/cameras").json()}
            == {"cam-crowd": "streaming", "cam-plain": "streaming"}
        ),
        90,
        "cam-crowd and cam-plain streaming in GET /cameras",
        interval_s=1.0,
    )
    one = api.viewer.get("/cameras/cam-plain").json()
    assert one["district"] == "buk-gu" and one["reason"] is not None
    r = wait_for(
        lambda: (x := api.viewer.get("/cameras/cam-plain/snapshot")).status_code == 200 and x,
        60,
        "a snapshot of cam-plain",
        interval_s=1.0,
    )
    assert r.headers["content-type"] == "image/jpeg" and r.content[:2] == b"\xff\xd8"


def test_event_query_filters_pages_and_ack(api: Api) -> None:
    event = _an_event(api)
    assert event["camera_id"] == "cam-crowd" and event["district"] == "seo-gu" and event["event_type"] == "crowd"
    assert event["acknowledged"] is None
    v = api.viewer
    assert v.get("/events", params={"district": "buk-gu"}).json()["items"] == []
    assert v.get("/events", params={"event_type": "fire"}).json()["items"] == []
    assert event["event_id"] in {
        e["event_id"] for e in v.get("/events", params={"severity": event["severity"]}).json()["items"]
    }
    old = v.get("/events", params={"since_ts": 1, "until_ts": 2}).json()
    assert old["items"] == [] and old["total"] == 0 and old["next_offset"] is None
    first = v.get("/events", params={"limit": 1}).json()
    assert len(first["items"]) == 1 and first["limit"] == 1
    if first["total"] > 1:
        assert first["next_offset"] == 1
        second = v.get("/events", params={"limit": 1, "offset": 1}).json()
        assert second["items"][0]["event_id"] != first["items"][0]["event_id"]

    r = api.operator.post(f"/events/{event['event_id']}/ack", json={"operator": "op-7", "note": "units sent"})
    assert r.status_code == 200, r.text
    assert r.json()["operator"] == "op-7" and r.json()["by"] == "test-operator"
    # The same acknowledgement again (a client retrying after a lost answer): the first record, not a 409.
    retried = api.operator.post(f"/events/{event['event_id']}/ack", json={"operator": "op-7", "note": "units sent"})
    assert retried.status_code == 200 and retried.json() == r.json(), retried.text
    again = _is_error(api.admin.post(f"/events/{event['event_id']}/ack", json={"operator": "op-8"}), 409)
    assert "op-7" in again["detail"]
    acked = v.get("/events", params={"acknowledged": True}).json()["items"]
    assert any(e["event_id"] == event["event_id"] and e["acknowledged"]["note"] == "units sent" for e in acked)


def _jpeg(r: httpx.Response) -> np.ndarray:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/jpeg"
    image = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a JPEG"
    return image


def test_alarm_frame_is_the_boxed_opening_frame_and_is_kept_beside_the_clip(api: Api) -> None:
    store = api.rt.store
    assert store is not None
    newest = _an_event(api)
    image = _jpeg(
        wait_for(
            lambda: (r := api.viewer.get(f"/events/{newest['event_id']}/frame")).is_success and r,
            60,
            "the newest event's alarm frame",
        )
    )
    assert image.shape == (576, 768, 3)
    x1, y1, x2, y2 = newest["box"]  # the people counted in the zone: inside the frame, not the whole of it
    assert 0 <= x1 < x2 <= 768 and 0 <= y1 < y2 <= 576 and (x2 - x1) * (y2 - y1) < 768 * 576
    assert _is_error(api.viewer.get("/events/evt-no-such-event/frame"), 404)["detail"].startswith("no event")
    _is_error(api.anon.get(f"/events/{newest['event_id']}/frame"), 401)

    # A closed event whose clip is stored, once a newer event has opened: the shard (keeping one) has forgotten
    # its frame, which now comes from the bucket, as recorded in the clip's sidecar.
    def stored_and_superseded() -> tuple[dict, ClipSidecar] | None:
        events = api.viewer.get("/events", params={"camera_id": "cam-crowd", "limit": 100}).json()["items"]
        for older in events[1:]:
            if older["phase"] != "closed":
                continue
            day = datetime.fromtimestamp(older["started_at"], tz=UTC).date()
            try:
                return older, store.get_sidecar(clip_object_key("cam-crowd", older["event_id"], day))
            except StorageError:  # not uploaded yet
                continue
        return None

    older, sidecar = wait_for(
        stored_and_superseded, 240, "a closed, stored cam-crowd event older than the newest", interval_s=3.0
    )
    record = sidecar.alarm_frame
    assert record is not None and (record.width, record.height) == (768, 576)
    assert record.box == tuple(older["box"]) and record.cue
    served = api.viewer.get(f"/events/{older['event_id']}/frame")
    _jpeg(served)
    assert served.content == store.get_bytes(record.object_key)
    assert hashlib.sha256(served.content).hexdigest() == record.sha256


def test_event_stream_is_server_sent_events(api: Api) -> None:
    _an_event(api)
    params = {"since_ts": time.time() - 3600, "max_s": 5, "camera_id": "cam-crowd"}
    frames: list[dict] = []
    with httpx.stream(
        "GET", f"{api.url}/events/stream", params=params, headers=bearer(api.tokens["viewer"]), timeout=30
    ) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        block: dict[str, str] = {}
        for line in r.iter_lines():
            if not line:
                if block.get("event") == "transition":
                    frames.append({"id": block["id"], **json.loads(block["data"])})
                block = {}
            elif not line.startswith(":") and ":" in line:
                k, _, v = line.partition(":")
                block[k] = v.strip()
    assert frames, "no transition replayed on the stream"
    assert all(f["camera_id"] == "cam-crowd" and f["district"] == "seo-gu" for f in frames)
    assert frames[0]["phase"] == "opened" or frames[0]["phase"] in ("updated", "closed")
    assert [float(f["id"]) for f in frames] == sorted(float(f["id"]) for f in frames)


def test_emergency_export_presigned_url_and_access_log(api: Api) -> None:
    t0 = time.time()
    body = {
        "camera_id": "cam-plain",
        "start_ts": t0 - 2,
        "end_ts": t0 + 2,
        "requester": "112",
        "case_number": "GJ-2026-0042",
        "reason": "assault reported near the plaza",
    }
    r = api.operator.post("/exports", json=body)
    assert r.status_code == 202, r.text
    ticket = r.json()
    assert ticket["state"] in ("pending", "recording", "uploading", "done")

    def done() -> dict | None:
        t = api.operator.get(f"/exports/{ticket['export_id']}").json()
        assert t["state"] != "failed", t
        return t if t["state"] == "done" else None

    final = wait_for(done, 90, f"export {ticket['export_id']} done", interval_s=1.0)
    assert final and final["url"] and final["clip_key"], final
    mp4 = httpx.get(final["url"], timeout=30)
    assert mp4.status_code == 200 and b"ftyp" in mp4.content[:64]

    # A viewer may view a clip (logged with their reason).
    view = api.viewer.get("/clips/url", params={"key": final["clip_key"], "reason": "review for case GJ-2026-0042"})
    assert view.status_code == 200, view.text
    assert httpx.get(view.json()["url"], timeout=30).status_code == 200

    # Operators keep it as evidence for the case; viewers may not.
    mark = {"clip_key": final["clip_key"], "case_number": "GJ-2026-0042", "reason": "evidence for the case"}
    _is_error(api.viewer.post("/clips/evidence", json=mark), 403)
    r = api.operator.post("/clips/evidence", json=mark)
    assert r.status_code == 200 and r.json()["marked"], r.text

    log = api.admin.get("/access-log", params={"since_ts": t0 - 1}).json()
    actions = [(e["actor"], e["action"]) for e in log]
    assert ("test-operator", "export") in actions and ("test-viewer", "view") in actions, log
    assert ("test-operator", "mark_evidence") in actions, log
    export_entry = next(e for e in log if e["action"] == "export")
    assert export_entry["case_number"] == "GJ-2026-0042" and export_entry["requester"] == "112"
    assert api.admin.get("/access-log", params={"actor": "test-viewer", "since_ts": t0 - 1}).json()
    assert all(
        e["actor"] == "test-viewer" for e in api.admin.get("/access-log", params={"actor": "test-viewer"}).json()
    )
