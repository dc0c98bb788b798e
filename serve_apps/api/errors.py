"""Errors the control plane raises that the control API answers as 404 / 409.

They live here, beside the API, so that the API never imports the control plane (``cluster/``);
the camera controller raises them and Ray delivers them to the API as the same classes.
"""


class UnknownCameraError(KeyError):
    """A camera id the inventory does not hold (HTTP 404)."""


class DuplicateCameraError(ValueError):
    """Adding a camera whose id is already in the inventory (HTTP 409)."""


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
