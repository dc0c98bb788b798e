"""How a shard reaches the detector replicas: a Serve handle that prefers replicas on its own node.

A letterboxed 416x416 frame is 519 KB; at 1 analytics fps per camera a 16-core decode node sends tens of MB/s
to the detector. With a replica on the same node the frame goes through that node's object store and never
crosses the network. Serve's router can do this (``LocalityMixin``: try the replicas on the caller's node once,
then all replicas, also when every local one is at ``max_ongoing_requests``), but only proxies turn it on by
default; a handle made inside an actor has to be initialised with it before its first call. Ray 2.60 exposes
that only as ``DeploymentHandle._init(_prefer_local_routing=...)``: this module is the one place that uses it.
"""

from __future__ import annotations

from typing import Literal

from ray import serve
from ray.exceptions import RayError
from ray.serve.exceptions import RayServeException
from ray.serve.handle import DeploymentHandle

DetectorRouting = Literal["same_node_first", "any_node"]

DETECTOR_DEPLOYMENT = "Detector"
"""The detector app's one deployment. Here, not in ``deployment.py``, so that a shard (which only calls it) does
not import the replica's code: onnx, onnxruntime and starlette cost ~1 s of every shard and controller start."""

DETECTOR_CALL_FAILED: tuple[type[BaseException], ...] = (RayError, RayServeException, RuntimeError)
"""What a detector call through a handle raises when it did not get an answer, besides ``TimeoutError``: the
replica died or its task failed (``RayError``), Serve refused it (``BackPressureError`` when the deployment's
queue is full, ``DeploymentUnavailableError``: these are ``RayServeException``, *not* ``RayError``), or the handle
could not be used (``RuntimeError``). A caller that catches less loses its calling thread on the first refusal."""


def detector_handle(deployment: str, app_name: str, routing: DetectorRouting) -> DeploymentHandle:
    """A handle to ``deployment`` of ``app_name``, initialised for ``routing``.

    Raises:
        ValueError: ``routing`` is not one of :data:`DetectorRouting` (config validation refuses it earlier).
    """
    if routing not in ("same_node_first", "any_node"):
        raise ValueError(f"detector_routing must be same_node_first or any_node, got {routing!r}")
    handle = serve.get_deployment_handle(deployment, app_name=app_name)
    handle._init(_prefer_local_routing=routing == "same_node_first")
    return handle
