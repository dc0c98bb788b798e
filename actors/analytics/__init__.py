"""Analytics rules: pure functions of detections or frames over time (no Ray, no I/O).

A rule's per-camera state lives in the decoder shard that owns the camera. Every rule
reports through :class:`~actors.analytics.events.EventLifecycle`, so all event types share
one life cycle (open → update → close, cool-down, re-arm, severity) and one record,
:class:`~actors.analytics.events.EventTransition`.
"""
