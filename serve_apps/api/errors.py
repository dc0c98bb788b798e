"""Errors the control plane raises that the control API answers as 404 / 409.

They live here, beside the API, so that the API never imports the control plane (``cluster/``);
the camera controller raises them and Ray delivers them to the API as the same classes.
"""


class UnknownCameraError(KeyError):
    """A camera id the inventory does not hold (HTTP 404)."""


class DuplicateCameraError(ValueError):
    """Adding a camera whose id is already in the inventory (HTTP 409)."""
