"""The control-centre API: cameras, snapshots, events (query, acknowledge, live stream), emergency
clip exports, clip views and the access log, behind bearer tokens with roles.

The API reaches the control plane through the named controller actor, never by importing its
code path: the actor's name is given when the app is built. Camera changes (add, update, remove,
transfer) are applied live by the controller: only the cameras concerned restart. Camera URLs
are answered with their passwords redacted.

Roles (``serve_apps.api.auth``): viewer reads (cameras, snapshots, events, the stream, clip
views, metrics targets); operator also acknowledges events, requests emergency exports and marks
evidence; admin also manages cameras and reads the access log. Only ``/healthz`` (and the
OpenAPI document and its ``/docs`` page, which hold no data) answer without a token. Every
error is one JSON shape (``serve_apps.api.error_shape``).
"""

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

import ray
from fastapi import Depends, FastAPI, Header, HTTPException, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from configs.analytics import Severity
from configs.redact import redact_url
from configs.schema import CAMERA_ID_PATTERN, ApiConfig, CameraConfig, StorageConfig
from contracts.cameras import CameraStatus
from contracts.errors import (
    CameraAnalyticsError,
    DuplicateCameraError,
    EventAlreadyAcknowledgedError,
    RequestIdReusedError,
    UnknownCameraError,
    UnknownEventError,
    reason_of,
)
from contracts.events import Acknowledgement, EventView
from contracts.exports import ExportRequest, ExportTicket
from serve_apps.api import auth
from serve_apps.api.auth import Admin, Caller, Operator, TokenTable, Viewer
from serve_apps.api.error_shape import ERROR_RESPONSES, GuardMiddleware, install_error_handlers
from serve_apps.api.events import (
    AckRequest,
    EventPage,
    fold,
    matches,
    page,
    select,
    sse_frame,
    transition_dict,
)
from serve_apps.metrics_export import TARGETS_ACTOR, file_sd
from serve_apps.remote_call import ActorCaller, ActorNotFoundError, CallPolicy, ControlPlaneUnavailableError, Invoke
from storage.access import S3Access
from storage.access_log import AccessEntry, AccessLog
from storage.clip_store import ClipIntegrityError, ClipStore, StorageError
from storage.evidence import EvidenceError, EvidenceStore
from storage.records import EVENT_ID_PATTERN

log = logging.getLogger(__name__)

API_APP = "api"
API_DEPLOYMENT = "ControlApi"
PUBLIC_PATHS = frozenset({"/healthz", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"})
STREAM_POLL_S = 0.5
STREAM_HEARTBEAT_S = 15.0
CLIP_KEY_PATTERN = r"^(clips|exports)/[A-Za-z0-9_./-]{1,400}\.mp4$"
MAX_TS = 4_102_444_800.0  # 2100-01-01: query bounds stay inside what datetime can represent
# Controller calls ride out a controller restart (seconds) and answer 503 + Retry-After before a
# client's usual 60 s timeout. Writes carry a request id, so their retries are idempotent too.
CONTROLLER_READ = CallPolicy(deadline_s=20.0, attempt_timeout_s=10.0)
CONTROLLER_WRITE = CallPolicy(deadline_s=45.0)
TARGETS_READ = CallPolicy(deadline_s=10.0, attempt_timeout_s=5.0, retry_not_found=False)
IDEMPOTENCY_KEY_PATTERN = r"^[A-Za-z0-9_.:-]{1,100}$"

api = FastAPI(
    title="cctv-cluster control API",
    version="0.2.0",
    description=(
        "Cameras, snapshots, events, emergency exports and the clip access log for the control centre. "
        "Every route but /healthz needs `Authorization: Bearer <token>`; roles viewer < operator < admin."
    ),
    responses=ERROR_RESPONSES,
)
install_error_handlers(api)
api.add_middleware(GuardMiddleware, public=PUBLIC_PATHS, check=auth.check_header)

CameraId = Annotated[str, Path(pattern=CAMERA_ID_PATTERN, max_length=64)]
EventId = Annotated[str, Path(pattern=EVENT_ID_PATTERN, max_length=128)]
ExportId = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$", max_length=128)]
Text = Annotated[str, Field(min_length=1, max_length=2000, pattern=r"^[^\x00-\x08\x0b-\x1f\x7f]+$")]


class TransferRequest(BaseModel):
    """Body of ``POST /cameras/{id}/transfer``."""

    model_config = ConfigDict(extra="forbid")

    district: str = Field(min_length=1, max_length=64)


class CameraPlacement(BaseModel):
    """A camera's configuration as the API shows it (URL password redacted) and the shard that runs it."""

    model_config = ConfigDict(extra="forbid")

    camera: CameraConfig
    shard: str | None = Field(description="The shard the camera runs on; None while it is being placed.")


class CameraTransferred(BaseModel):
    """Answer of ``POST /cameras/{id}/transfer``: the camera's configuration with its new district."""

    model_config = ConfigDict(extra="forbid")

    camera: CameraConfig


class EvidenceMarked(BaseModel):
    """Answer of ``POST /clips/evidence``."""

    model_config = ConfigDict(extra="forbid")

    clip_key: str
    case_number: str
    marked: bool


class ClipUrl(BaseModel):
    """A presigned GET URL for one clip (the view is in the access log)."""

    model_config = ConfigDict(extra="forbid")

    clip_key: str
    url: str
    expires_s: int


class EvidenceRequest(BaseModel):
    """Body of ``POST /clips/evidence``: keep a clip as evidence for a case."""

    model_config = ConfigDict(extra="forbid")

    clip_key: str = Field(pattern=CLIP_KEY_PATTERN, max_length=420)
    case_number: str = Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")
    reason: Text
    retain_days: int | None = Field(default=None, ge=1, le=36500)


def _public(cam: CameraConfig) -> CameraConfig:
    """A camera's configuration as the API shows it (URL password redacted)."""
    return cam.model_copy(update={"url": redact_url(cam.url)})


def request_id(
    idempotency_key: Annotated[
        str | None,
        Header(
            pattern=IDEMPOTENCY_KEY_PATTERN,
            description=(
                "Names this change: sent again (after a 503 or a lost answer) it returns the first answer and "
                "changes nothing. Without it each request is its own change (still retried safely inside the API)."
            ),
        ),
    ] = None,
) -> str:
    """The controller's request id of a change: the client's ``Idempotency-Key``, or a fresh one."""
    return f"key:{idempotency_key}" if idempotency_key else f"req:{uuid.uuid4().hex}"


RequestId = Annotated[str, Depends(request_id)]


def _scoped(caller: Caller, rid: str) -> str:
    """A request id per caller: two clients that pick the same key do not share an answer."""
    return f"{caller.name}/{rid}"


# The routes mostly await the controller or the store: many requests in flight per replica. With
# Serve's default (5), 32 concurrent clients made the proxy back off and throughput collapse (~10/s).
@serve.deployment(name=API_DEPLOYMENT, num_replicas=1, max_ongoing_requests=64, ray_actor_options={"num_cpus": 0.1})
@serve.ingress(api)
class ControlApi:
    """FastAPI routes served by Ray Serve."""

    def __init__(
        self,
        controller_name: str,
        namespace: str,
        tokens: TokenTable,
        api_cfg: ApiConfig | None = None,
        s3: S3Access | None = None,
        storage_cfg: StorageConfig | None = None,
    ) -> None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._controller_name = controller_name
        self._namespace = namespace
        self._cfg = api_cfg or ApiConfig()
        self._controller = ActorCaller(controller_name, namespace)
        self._targets = ActorCaller(TARGETS_ACTOR, namespace)
        auth.install(tokens)
        if tokens.open_access:
            log.warning("control API without tokens (api.auth_required is false): every caller is an admin")
        self._s3 = s3
        self._storage_cfg = storage_cfg or StorageConfig()
        self._store: ClipStore | None = None
        self._access_log: AccessLog | None = None
        self._evidence: EvidenceStore | None = None
        if s3 is not None:
            self._store = ClipStore.for_access(s3)
            self._access_log = AccessLog.from_config(s3, self._storage_cfg)
            self._evidence = EvidenceStore(s3, self._storage_cfg)

    # -- plumbing ---------------------------------------------------------------------------

    async def _read(self, method: str, invoke: Invoke) -> Any:
        """A controller query, retried through a controller restart (then 503 + Retry-After)."""
        return await self._controller.call_async(method, invoke, CONTROLLER_READ)

    async def _write(self, method: str, invoke: Invoke) -> Any:
        """A controller change; ``invoke`` passes the request id, so a retry is the same change.

        Raises:
            HTTPException: 422 when the client's Idempotency-Key already named another change.
        """
        try:
            return await self._controller.call_async(method, invoke, CONTROLLER_WRITE)
        except RequestIdReusedError as exc:
            raise HTTPException(status_code=422, detail=f"Idempotency-Key reused: {reason_of(exc)}") from None

    def _need_store(self) -> ClipStore:
        if self._store is None:
            raise HTTPException(status_code=503, detail="the API was started without object-store access")
        return self._store

    def _log(self) -> AccessLog:
        if self._access_log is None:
            raise HTTPException(status_code=503, detail="the API was started without object-store access")
        return self._access_log

    async def _record(self, caller: Caller, action: str, clip_key: str | None, *, reason: str, **extra: Any) -> None:
        """Append one entry to the access log; the request fails (503) if it cannot be recorded."""
        log_ = self._log()
        entry = AccessEntry(
            actor=caller.name, role=caller.role.label, action=action, clip_key=clip_key, reason=reason, **extra
        )
        try:
            await asyncio.to_thread(log_.append, entry)
        except StorageError as exc:
            raise HTTPException(status_code=503, detail=f"the access log could not be written ({exc})") from None

    async def _presign(self, key: str) -> str:
        store = self._need_store()
        return await asyncio.to_thread(store.presigned_get, key, self._cfg.export_url_expiry_s)

    # -- health -----------------------------------------------------------------------------

    @api.get("/healthz", responses={})
    def healthz(self) -> dict[str, str]:
        """Liveness; the only route that answers without a token."""
        return {"status": "ok"}

    # -- cameras ----------------------------------------------------------------------------

    @api.get("/cameras")
    async def cameras(self, _: Viewer) -> list[CameraStatus]:
        """Every camera with its state, shard and the reason for its state."""
        return await self._read("status", lambda c: c.status.remote())

    @api.get("/cameras/{camera_id}")
    async def camera(self, camera_id: CameraId, _: Viewer) -> CameraStatus:
        """One camera's state, shard and the reason for its state."""
        for s in await self._read("status", lambda c: c.status.remote()):
            if s.camera_id == camera_id:
                return s
        raise HTTPException(status_code=404, detail=f"no camera with id {camera_id!r}")

    @api.get("/cameras/{camera_id}/config")
    async def camera_config(self, camera_id: CameraId, _: Viewer) -> CameraPlacement:
        """The camera's configuration (URL password redacted) and the shard that runs it."""
        try:
            cam = await self._read("camera", lambda c: c.camera.remote(camera_id))
        except UnknownCameraError:
            raise HTTPException(status_code=404, detail=f"no camera with id {camera_id!r}") from None
        shard = (await self._read("assignment", lambda c: c.assignment.remote())).get(camera_id)
        return CameraPlacement(camera=_public(cam), shard=shard)

    @api.get(
        "/cameras/{camera_id}/snapshot",
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}, "description": "The latest decoded frame as JPEG."}},
    )
    async def snapshot(self, camera_id: CameraId, _: Viewer) -> Response:
        """The camera's latest frame (JPEG)."""
        try:
            jpeg = await self._read("snapshot", lambda c: c.snapshot.remote(camera_id))
        except UnknownCameraError:
            raise HTTPException(status_code=404, detail=f"no camera with id {camera_id!r}") from None
        if not jpeg:
            raise HTTPException(status_code=404, detail=f"camera {camera_id!r} has no frame yet")
        return Response(content=jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    @api.post("/cameras", status_code=201)
    async def add_camera(self, camera: CameraConfig, caller: Admin, rid: RequestId) -> CameraPlacement:
        """Add a camera; it starts streaming on the shard the controller picks. 409 if the id exists."""
        req = _scoped(caller, rid)
        try:
            placed = await self._write(
                "add_cameras", lambda c: c.add_cameras.remote([camera], strict=True, request_id=req)
            )
        except DuplicateCameraError:
            raise HTTPException(status_code=409, detail=f"camera {camera.id!r} already exists") from None
        except CameraAnalyticsError as exc:
            raise HTTPException(status_code=422, detail=reason_of(exc)) from None
        return CameraPlacement(camera=_public(camera), shard=placed.get(camera.id))

    @api.put("/cameras/{camera_id}")
    async def update_camera(
        self, camera_id: CameraId, camera: CameraConfig, caller: Admin, rid: RequestId
    ) -> CameraPlacement:
        """Replace a camera's configuration; only that camera restarts."""
        if camera.id != camera_id:
            raise HTTPException(status_code=400, detail=f"body id {camera.id!r} differs from the path's {camera_id!r}")
        try:
            req = _scoped(caller, rid)
            shard = await self._write("update_camera", lambda c: c.update_camera.remote(camera, request_id=req))
        except UnknownCameraError:
            raise HTTPException(status_code=404, detail=f"no camera with id {camera_id!r}") from None
        except CameraAnalyticsError as exc:
            raise HTTPException(status_code=422, detail=reason_of(exc)) from None
        return CameraPlacement(camera=_public(camera), shard=shard)

    @api.delete("/cameras/{camera_id}", status_code=204, response_class=Response)
    async def remove_camera(self, camera_id: CameraId, caller: Admin, rid: RequestId) -> Response:
        """Stop and forget a camera (its open events are closed, its clips finished)."""
        req = _scoped(caller, rid)
        if not await self._write("remove_cameras", lambda c: c.remove_cameras.remote([camera_id], request_id=req)):
            raise HTTPException(status_code=404, detail=f"no camera with id {camera_id!r}")
        return Response(status_code=204)

    @api.post("/cameras/{camera_id}/transfer")
    async def transfer_camera(
        self, camera_id: CameraId, body: TransferRequest, caller: Admin, rid: RequestId
    ) -> CameraTransferred:
        """Move a camera to another district (it keeps its shard; its labels change)."""
        req = _scoped(caller, rid)
        try:
            cam = await self._write(
                "transfer_camera", lambda c: c.transfer_camera.remote(camera_id, body.district, request_id=req)
            )
        except UnknownCameraError:
            raise HTTPException(status_code=404, detail=f"no camera with id {camera_id!r}") from None
        return CameraTransferred(camera=_public(cam))

    # -- events -----------------------------------------------------------------------------

    @api.get("/events")
    async def events(
        self,
        _: Viewer,
        since_ts: Annotated[float | None, Query(ge=0, le=MAX_TS, description="Window start (UNIX s).")] = None,
        until_ts: Annotated[
            float | None, Query(ge=0, le=MAX_TS, description="Window end (UNIX s); default now.")
        ] = None,
        since_s: Annotated[float, Query(gt=0, le=7 * 86400, description="Without since_ts: the last N s.")] = 3600.0,
        camera_id: Annotated[str | None, Query(max_length=64)] = None,
        district: Annotated[str | None, Query(max_length=64)] = None,
        event_type: Annotated[str | None, Query(max_length=64)] = None,
        severity: Annotated[list[Severity] | None, Query(description="Any of these (repeat the parameter).")] = None,
        acknowledged: bool | None = None,
        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
        limit: Annotated[int, Query(ge=1, le=10_000, description="At most api.events_page_max.")] = 100,
    ) -> EventPage:
        """Events overlapping a time window, filtered, newest first, one page at a time."""
        now = time.time()
        until = now if until_ts is None else until_ts
        since = now - since_s if since_ts is None else since_ts
        if since > until:
            raise HTTPException(status_code=400, detail="since_ts is after until_ts")
        if limit > self._cfg.events_page_max:
            cap = self._cfg.events_page_max
            raise HTTPException(status_code=400, detail=f"limit is above api.events_page_max={cap}")
        view: EventView = await self._read("event_view", lambda c: c.event_view.remote(0.0))
        chosen = select(
            fold(view),
            since_ts=since,
            until_ts=until,
            camera_id=camera_id,
            district=district,
            event_type=event_type,
            severities=severity,
            acknowledged=acknowledged,
        )
        return page(chosen, offset, limit)

    @api.post("/events/{event_id}/ack")
    async def acknowledge(self, event_id: EventId, body: AckRequest, caller: Operator) -> Acknowledgement:
        """Record that an operator saw the event (once; 409 if already acknowledged)."""
        try:
            ack: Acknowledgement = await self._write(
                "acknowledge_event",
                lambda c: c.acknowledge_event.remote(event_id, body.operator, body.note, caller.name),
            )
        except UnknownEventError:
            raise HTTPException(status_code=404, detail=f"no event with id {event_id!r}") from None
        except EventAlreadyAcknowledgedError as exc:
            raise HTTPException(status_code=409, detail=reason_of(exc)) from None
        except StorageError as exc:
            raise HTTPException(status_code=503, detail=f"the acknowledgement could not be stored ({exc})") from None
        return ack

    @api.get(
        "/events/{event_id}/frame",
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}, "description": "The frame the alarm opened on, region boxed."}},
    )
    async def alarm_frame(self, event_id: EventId, _: Viewer) -> Response:
        """The frame an event opened on (JPEG): its region boxed, the type, value, severity and cue written on it."""
        try:
            jpeg = await self._read("alarm_frame", lambda c: c.alarm_frame.remote(event_id))
        except UnknownEventError:
            raise HTTPException(status_code=404, detail=f"no event with id {event_id!r}") from None
        except StorageError as exc:
            raise HTTPException(status_code=503, detail=f"the object store did not answer ({exc})") from None
        if not jpeg:
            raise HTTPException(status_code=404, detail=f"event {event_id!r} has no alarm frame (or not yet)")
        return Response(content=jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    @api.get(
        "/events/stream",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events."}},
    )
    async def event_stream(
        self,
        request: Request,
        _: Viewer,
        camera_id: Annotated[str | None, Query(max_length=64)] = None,
        district: Annotated[str | None, Query(max_length=64)] = None,
        event_type: Annotated[str | None, Query(max_length=64)] = None,
        severity: Annotated[list[Severity] | None, Query()] = None,
        since_ts: Annotated[float | None, Query(ge=0, description="Replay what was received since (UNIX s).")] = None,
        max_s: Annotated[float | None, Query(gt=0, le=86400, description="End the stream after this long.")] = None,
    ) -> StreamingResponse:
        """Live event transitions as Server-Sent Events (``event: transition``, JSON ``data``).

        Each frame's ``id`` is the transition's receive time: a client that reconnects with
        ``Last-Event-ID`` gets what it missed. A comment line is sent every 15 s when idle.
        """
        start = since_ts
        last_id = request.headers.get("last-event-id")
        if start is None and last_id:
            try:
                start = float(last_id)
            except ValueError:
                raise HTTPException(status_code=400, detail="Last-Event-ID is not a receive time") from None
        start = time.time() if start is None else start
        gen = self._stream(request, start, max_s, camera_id, district, event_type, severity)
        return StreamingResponse(gen, media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    async def _stream(
        self,
        request: Request,
        cursor: float,
        max_s: float | None,
        camera_id: str | None,
        district: str | None,
        event_type: str | None,
        severity: list[str] | None,
    ) -> AsyncIterator[bytes]:
        t0 = time.monotonic()
        seen: set[tuple[Any, ...]] = set()  # transitions already sent at the cursor's receive time
        quiet_since = time.monotonic()
        yield b"retry: 2000\n\n"
        while max_s is None or time.monotonic() - t0 < max_s:
            if await request.is_disconnected():
                return
            try:
                view: EventView = await self._read("event_view", lambda c, at=cursor: c.event_view.remote(at))
            except (HTTPException, ray.exceptions.RayError, ControlPlaneUnavailableError) as exc:  # in-band: started
                why = exc.detail if isinstance(exc, HTTPException) else f"control plane: {type(exc).__name__}"
                yield sse_frame({"status": 503, "detail": why}, event="error")
                return
            districts = view.districts
            for n in view.notices:
                t = transition_dict(n)
                key = (t["event_id"], t["phase"], t["ts"], t["received_ts"])
                if key in seen or t["received_ts"] < cursor:
                    continue
                if t["received_ts"] > cursor:
                    cursor, seen = t["received_ts"], set()
                seen.add(key)
                wanted = matches(
                    t, districts, camera_id=camera_id, district=district, event_type=event_type, severities=severity
                )
                if wanted:
                    t["district"] = districts.get(t["camera_id"])
                    yield sse_frame(t, event="transition", frame_id=repr(t["received_ts"]))
                    quiet_since = time.monotonic()
            if time.monotonic() - quiet_since > STREAM_HEARTBEAT_S:
                yield b": keepalive\n\n"
                quiet_since = time.monotonic()
            await asyncio.sleep(STREAM_POLL_S)

    # -- clips: emergency exports, views, evidence, access log ------------------------------

    @api.post("/exports", status_code=202)
    async def request_export(self, body: ExportRequest, caller: Operator, rid: RequestId) -> ExportTicket:
        """An emergency export (112/119): the clip of a camera's window, as a presigned URL when done.

        The request is written to the access log (who, case number, reason) before it starts.
        """
        try:
            body.check_max(self._cfg.max_export_s)
        except ValueError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from None
        self._log()
        try:
            req = _scoped(caller, rid)
            ticket: ExportTicket = await self._write(
                "export_clip", lambda c: c.export_clip.remote(body, request_id=req)
            )
        except UnknownCameraError:
            raise HTTPException(status_code=404, detail=f"no camera with id {body.camera_id!r}") from None
        except ValueError as exc:
            raise HTTPException(status_code=400, detail=reason_of(exc)) from None
        except TimeoutError as exc:
            raise HTTPException(status_code=503, detail=reason_of(exc)) from None
        await self._record(
            caller,
            "export",
            ticket.clip_key,
            reason=body.reason,
            case_number=body.case_number,
            requester=body.requester,
            detail={
                "export_id": ticket.export_id,
                "camera_id": body.camera_id,
                "start_ts": f"{body.start_ts:.3f}",
                "end_ts": f"{body.end_ts:.3f}",
            },
        )
        return ticket

    @api.get("/exports/{export_id}")
    async def export_status(self, export_id: ExportId, caller: Operator) -> ExportTicket:
        """An export's state; once ``done`` it carries a presigned URL (each hand-out is a logged view)."""
        try:
            ticket: ExportTicket = await self._read("export_status", lambda c: c.export_status.remote(export_id))
        except KeyError:
            raise HTTPException(status_code=404, detail=f"no export with id {export_id!r}") from None
        if ticket.state == "done" and ticket.clip_key:
            await self._record(
                caller, "view", ticket.clip_key, reason=f"export {export_id} ({ticket.requested_by})",
                detail={"export_id": export_id},
            )  # fmt: skip
            if ticket.url is None:
                ticket = ticket.model_copy(update={"url": await self._presign(ticket.clip_key)})
        return ticket

    @api.get("/clips/url")
    async def clip_url(
        self,
        caller: Viewer,
        key: Annotated[str, Query(pattern=CLIP_KEY_PATTERN, max_length=420, description="The clip's object key.")],
        reason: Annotated[str, Query(min_length=1, max_length=500, pattern=r"^[^\x00-\x1f\x7f]+$")],
    ) -> ClipUrl:
        """A presigned URL to view one clip; the view (who, which clip, why) goes to the access log."""
        if ".." in key:
            raise HTTPException(status_code=400, detail="clip key must not contain '..'")
        store = self._need_store()
        try:
            await asyncio.to_thread(store.stat_clip, key)
        except StorageError as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject"):
                raise HTTPException(status_code=404, detail=f"no clip {key!r}") from None
            raise HTTPException(status_code=503, detail=f"the object store did not answer ({exc})") from None
        await self._record(caller, "view", key, reason=reason)
        return ClipUrl(clip_key=key, url=await self._presign(key), expires_s=self._cfg.export_url_expiry_s)

    @api.post("/clips/evidence")
    async def mark_evidence(self, body: EvidenceRequest, caller: Operator) -> EvidenceMarked:
        """Keep a clip as evidence for a case (retention hold); logged in the access log."""
        evidence = self._evidence
        if evidence is None:
            raise HTTPException(status_code=503, detail="the API was started without object-store access")
        self._log()
        try:
            await asyncio.to_thread(
                evidence.mark_evidence, body.clip_key, case_number=body.case_number, retain_days=body.retain_days
            )
        except EvidenceError as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from None
        except ClipIntegrityError as exc:
            raise HTTPException(status_code=409, detail=f"the clip fails its integrity check: {exc}") from None
        except ValueError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from None
        except StorageError as exc:
            raise HTTPException(status_code=503, detail=f"the object store did not answer ({exc})") from None
        await self._record(caller, "mark_evidence", body.clip_key, reason=body.reason, case_number=body.case_number)
        return EvidenceMarked(clip_key=body.clip_key, case_number=body.case_number, marked=True)

    @api.get("/access-log")
    async def access_log(
        self,
        caller: Admin,
        since_ts: Annotated[float | None, Query(ge=0, le=MAX_TS, description="Default: a day before until_ts.")] = None,
        until_ts: Annotated[float | None, Query(ge=0, le=MAX_TS, description="Default: now.")] = None,
        actor: Annotated[str | None, Query(max_length=128)] = None,
        clip_key: Annotated[str | None, Query(max_length=1024)] = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    ) -> list[AccessEntry]:
        """Who exported, viewed or marked which clip, when and why (append-only, object-locked, oldest
        first; at most 366 days per query). The query itself is logged too."""
        log_ = self._log()
        until = time.time() + 1 if until_ts is None else until_ts
        since = until - 86400 if since_ts is None else since_ts
        try:
            entries = await asyncio.to_thread(log_.query, since, until, actor=actor, clip_key=clip_key, limit=limit)
        except ValueError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from None
        except StorageError as exc:
            raise HTTPException(status_code=503, detail=f"the access log could not be read ({exc})") from None
        filters = {
            "since_ts": f"{since:.3f}",
            "until_ts": f"{until:.3f}",
            "actor": actor or "",
            "clip_key": clip_key or "",
        }
        await self._record(caller, "query_access_log", None, reason="access log query", detail=filters)
        return entries

    # -- monitoring -------------------------------------------------------------------------

    @api.get("/metrics/targets")
    async def metrics_targets(self, _: Viewer) -> list[dict[str, object]]:
        """Prometheus http_sd document listing every process's metrics endpoint (viewer token)."""
        try:
            targets = await self._targets.call_async("targets", lambda r: r.targets.remote(), TARGETS_READ)
        except ActorNotFoundError:
            return []  # no process registered an endpoint yet
        return file_sd(targets)


def build_api_app(
    controller_name: str,
    namespace: str,
    *,
    tokens: TokenTable,
    api_cfg: ApiConfig | None = None,
    s3: S3Access | None = None,
    storage_cfg: StorageConfig | None = None,
) -> serve.Application:
    """The API application. ``tokens`` holds digests only (see :mod:`serve_apps.api.auth`)."""
    return ControlApi.bind(controller_name, namespace, tokens, api_cfg, s3, storage_cfg)
