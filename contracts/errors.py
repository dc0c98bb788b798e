"""Errors the control plane raises that the control API answers as 404 / 409 / 422.

They live here, beside the API, so that the API never imports the control plane (``cluster/``);
the camera controller raises them and Ray delivers them to the API as the same classes.
"""


class UnknownCameraError(KeyError):
    """A camera id the inventory does not hold (HTTP 404)."""


class DuplicateCameraError(ValueError):
    """Adding a camera whose id is already in the inventory (HTTP 409)."""


class CameraAnalyticsError(ValueError):
    """A camera valid by the schema whose analytics its shard would refuse (HTTP 422), e.g. a zone calibration
    whose points define no homography; the message names the camera and why. Nothing was changed."""


class UnknownEventError(KeyError):
    """An event id no shard holds (HTTP 404)."""


class EventAlreadyAcknowledgedError(ValueError):
    """Acknowledging an event twice (HTTP 409); the message names who acknowledged it first."""


class UnknownExportError(KeyError):
    """An export id neither the controller nor the bucket knows (HTTP 404)."""


class ExportWindowError(ValueError):
    """An export window that cannot be recorded (nothing buffered or to come for it; HTTP 400)."""


class RequestIdReusedError(ValueError):
    """A request id (``Idempotency-Key``) sent again with another kind of change (HTTP 422)."""


def reason_of(exc: BaseException) -> str:
    """The message a control-plane error was raised with.

    Ray delivers an actor's exception as a subclass of both its class and ``RayTaskError``, whose ``str`` is the
    remote traceback; the original is its ``cause``.
    """
    cause = getattr(exc, "cause", None)
    original = cause if isinstance(cause, BaseException) else exc
    return str(original.args[0]) if original.args else type(original).__name__
