"""The control API: health, cameras (status and live changes), recent events, scrape targets.

The API reaches the control plane through the named controller actor, never by
importing its code path: the actor's name is given when the app is built. Camera
changes (add, update, remove, transfer) are applied live by the controller: only the
cameras concerned restart. Camera URLs are answered with their passwords redacted.
"""

import time
from dataclasses import asdict
from typing import Any

import ray
from fastapi import FastAPI, HTTPException, Query, Response
from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from configs.loader import redact_url
from configs.schema import CameraConfig
from serve_apps.api.errors import DuplicateCameraError, UnknownCameraError
from serve_apps.metrics_export import TARGETS_ACTOR, file_sd

API_APP = "api"
API_DEPLOYMENT = "ControlApi"

api = FastAPI(
    title="cctv-cluster control API",
    version="0.1.0",
    description="Camera status, events and metrics discovery for the control centre.",
)


class TransferRequest(BaseModel):
    """Body of ``POST /cameras/{id}/transfer``."""

    model_config = ConfigDict(extra="forbid")

    district: str = Field(min_length=1, max_length=64)


def _public(cam: CameraConfig) -> dict[str, Any]:
    """A camera's configuration as the API shows it (URL password redacted)."""
    return {**cam.model_dump(mode="json"), "url": redact_url(cam.url)}


@serve.deployment(name=API_DEPLOYMENT, num_replicas=1, ray_actor_options={"num_cpus": 0.1})
@serve.ingress(api)
class ControlApi:
    """FastAPI routes served by Ray Serve."""

    def __init__(self, controller_name: str, namespace: str) -> None:
        self._controller_name = controller_name
        self._namespace = namespace

    def _controller(self) -> ray.actor.ActorHandle:
        try:
            return ray.get_actor(self._controller_name, namespace=self._namespace)
        except ValueError as exc:
            raise HTTPException(status_code=503, detail="camera controller is not running") from exc

    @api.get("/healthz")
    def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/cameras")
    async def cameras(self) -> list[dict[str, Any]]:
        statuses = await self._controller().status.remote()
        return [asdict(s) for s in statuses]

    @api.get("/cameras/{camera_id}")
    async def camera(self, camera_id: str) -> dict[str, Any]:
        for s in await self._controller().status.remote():
            if s.camera_id == camera_id:
                return asdict(s)
        raise HTTPException(status_code=404, detail=f"no camera with id {camera_id!r}")

    @api.get("/cameras/{camera_id}/config")
    async def camera_config(self, camera_id: str) -> dict[str, Any]:
        """The camera's configuration (URL password redacted) and the shard that runs it."""
        ctl = self._controller()
        try:
            cam = await ctl.camera.remote(camera_id)
        except UnknownCameraError:
            raise HTTPException(status_code=404, detail=f"no camera with id {camera_id!r}") from None
        shard = (await ctl.assignment.remote()).get(camera_id)
        return {"camera": _public(cam), "shard": shard}

    @api.post("/cameras", status_code=201)
    async def add_camera(self, camera: CameraConfig) -> dict[str, Any]:
        """Add a camera; it starts streaming on the shard the controller picks. 409 if the id exists."""
        try:
            placed = await self._controller().add_cameras.remote([camera], strict=True)
        except DuplicateCameraError:
            raise HTTPException(status_code=409, detail=f"camera {camera.id!r} already exists") from None
        return {"camera": _public(camera), "shard": placed.get(camera.id)}

    @api.put("/cameras/{camera_id}")
    async def update_camera(self, camera_id: str, camera: CameraConfig) -> dict[str, Any]:
        """Replace a camera's configuration; only that camera restarts."""
        if camera.id != camera_id:
            raise HTTPException(status_code=400, detail=f"body id {camera.id!r} differs from the path's {camera_id!r}")
        try:
            shard = await self._controller().update_camera.remote(camera)
        except UnknownCameraError:
            raise HTTPException(status_code=404, detail=f"no camera with id {camera_id!r}") from None
        return {"camera": _public(camera), "shard": shard}

    @api.delete("/cameras/{camera_id}", status_code=204)
    async def remove_camera(self, camera_id: str) -> Response:
        """Stop and forget a camera (its open events are closed, its clips finished)."""
        removed = await self._controller().remove_cameras.remote([camera_id])
        if not removed:
            raise HTTPException(status_code=404, detail=f"no camera with id {camera_id!r}")
        return Response(status_code=204)

    @api.post("/cameras/{camera_id}/transfer")
    async def transfer_camera(self, camera_id: str, body: TransferRequest) -> dict[str, Any]:
        """Move a camera to another district (it keeps its shard; its labels change)."""
        try:
            cam = await self._controller().transfer_camera.remote(camera_id, body.district)
        except UnknownCameraError:
            raise HTTPException(status_code=404, detail=f"no camera with id {camera_id!r}") from None
        return {"camera": _public(cam)}

    @api.get("/events")
    async def events(self, since_s: float = Query(default=3600.0, gt=0, le=7 * 86400)) -> list[dict[str, Any]]:
        notices = await self._controller().events.remote(time.time() - since_s)
        return [{**asdict(n.transition), "received_ts": n.received_ts} for n in notices]

    @api.get("/metrics/targets")
    async def metrics_targets(self) -> list[dict[str, object]]:
        """Prometheus http_sd document listing every process's metrics endpoint."""
        try:
            registry = ray.get_actor(TARGETS_ACTOR, namespace=self._namespace)
        except ValueError:
            return []
        return file_sd(await registry.targets.remote())


def build_api_app(controller_name: str, namespace: str) -> serve.Application:
    return ControlApi.bind(controller_name, namespace)
