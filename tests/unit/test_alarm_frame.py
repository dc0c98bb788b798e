"""Alarm frames: the box drawn where the rule said, the caption readable, the JPEG the frame it was decided on."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from actors.alarm_frame import SEVERITY_BGR, AlarmFrames, caption, draw_alarm, render_alarm_frame
from contracts.events import EventPhase, EventTransition
from tests.conftest import CACHE_DIR


def _transition(box: tuple[float, float, float, float] | None, **kw: object) -> EventTransition:
    fields: dict[str, object] = dict(
        event_id="e1",
        camera_id="cam-1",
        event_type="fire",
        zone=None,
        phase=EventPhase.OPENED,
        severity="critical",
        started_at=100.0,
        ended_at=None,
        value=0.71,
        peak_value=0.71,
        unit="score",
        threshold=0.5,
        ts=100.0,
        detail="flickering flame over 1.20% of the view",
        box=box,
    )
    fields.update(kw)
    return EventTransition(**fields)  # type: ignore[arg-type]


def _vtest_frame() -> np.ndarray:
    path = CACHE_DIR / "footage" / "vtest.avi"
    cap = cv2.VideoCapture(str(path))
    ok, frame = cap.read()
    cap.release()
    if not ok:
        pytest.fail(f"no frame from {path}: run `make footage`")
    return frame


def test_box_is_drawn_on_its_edges_in_the_severity_colour_and_nowhere_inside() -> None:
    grey = np.full((480, 640, 3), 128, np.uint8)
    out = draw_alarm(grey, _transition((200.0, 220.0, 400.0, 420.0)))
    red = np.array(SEVERITY_BGR["critical"])
    assert (out[320, 200] == red).all() and (out[220, 300] == red).all() and (out[420, 300] == red).all()
    assert (out[320, 400] == red).all()
    assert (out[320, 300] == 128).all(), "the inside of the box is the frame, untouched"
    assert (out[300, 100] == 128).all(), "outside the box and below the caption band: untouched"
    assert (grey == 128).all(), "the caller's frame is not drawn on"


def test_caption_band_is_darkened_and_written_on() -> None:
    grey = np.full((480, 640, 3), 200, np.uint8)
    out = draw_alarm(grey, _transition(None))
    band = out[:30]
    assert band.min() < 100, "the band under the caption is darker than the frame"
    assert (band > 150).any(), "white or coloured text is written on it"
    assert (out[200:] == 200).all(), "no box: nothing drawn below the band"


def test_box_beyond_the_frame_is_clamped_and_grey_frames_are_drawn_in_colour() -> None:
    grey = np.full((100, 160), 90, np.uint8)
    out = draw_alarm(grey, _transition((-50.0, 40.0, 500.0, 300.0), severity="caution"))
    assert out.shape == (100, 160, 3)
    yellow = np.array(SEVERITY_BGR["caution"])
    assert (out[70, 0] == yellow).all() and (out[70, 159] == yellow).all() and (out[99, 80] == yellow).all()


def test_caption_says_what_how_much_and_the_cue_in_ascii() -> None:
    head, cue = caption(
        _transition(
            None,
            event_type="crowd",
            zone="plaza",
            value=4.5,
            unit="people/m2",
            threshold=4.0,
            severity="severe",
            detail="4.5 people/m² over 20 m² of plaza",
        )
    )
    assert head == "CROWD [plaza] 4.5 people/m2  severe  (threshold 4)"
    assert cue == "4.5 people/m? over 20 m? of plaza"
    _, long_cue = caption(_transition(None, detail="x" * 500))
    assert len(long_cue) == 90 and long_cue.endswith("...")


def test_rendered_jpeg_is_the_real_frame_with_its_record() -> None:
    frame = _vtest_frame()
    t = _transition((300.0, 150.0, 380.0, 330.0), event_type="intrusion", unit="people", value=1.0)
    af = render_alarm_frame(frame, t, captured_ts=123.5, quality=85)
    decoded = cv2.imdecode(np.frombuffer(af.jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == frame.shape == (576, 768, 3)
    assert (af.width, af.height) == (768, 576)
    assert (af.event_id, af.camera_id, af.event_type, af.captured_ts) == ("e1", "cam-1", "intrusion", 123.5)
    assert af.box == (300.0, 150.0, 380.0, 330.0) and af.cue == t.detail and af.score == 1.0
    assert len(af.sha256) == 64
    # Below the caption band, away from the box, the JPEG is the camera's frame (within JPEG error).
    diff = np.abs(decoded[200:, :250].astype(int) - frame[200:, :250].astype(int))
    assert diff.mean() < 3.0
    # On the box's left edge it is the severity colour, not the scene.
    edge = decoded[200:300, 299:302].reshape(-1, 3).mean(axis=0)
    assert edge[2] > 180 and edge[0] < 80 and edge[1] < 80


def test_render_refuses_a_frame_that_is_not_8_bit() -> None:
    with pytest.raises(ValueError, match="event e1: expected an 8-bit frame, got float32"):
        render_alarm_frame(np.zeros((10, 10, 3), np.float32), _transition(None), captured_ts=1.0)


def test_alarm_frames_keeps_the_latest_only() -> None:
    frame = np.zeros((32, 32, 3), np.uint8)
    kept = AlarmFrames(max_kept=2)
    for i in range(3):
        kept.add(render_alarm_frame(frame, _transition(None, event_id=f"e{i}"), captured_ts=float(i)))
    assert len(kept) == 2
    assert kept.get("e0") is None
    assert kept.get("e1") is not None and kept.get("e2") is not None
    with pytest.raises(ValueError, match="max_kept=0"):
        AlarmFrames(max_kept=0)
