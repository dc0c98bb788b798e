"""The control API (first slice): health, camera status, recent events, scrape targets.

The API reaches the control plane through the named controller actor, never by
importing it: the actor's name is given when the app is built.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import ray
from fastapi import FastAPI, HTTPException, Query
from ray import serve

from serve_apps.metrics_export import TARGETS_ACTOR, file_sd

API_APP = "api"
API_DEPLOYMENT = "ControlApi"

api = FastAPI(
    title="cctv-cluster control API",
    version="0.1.0",
    description="Camera status, events and metrics discovery for the control centre.",
)


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
