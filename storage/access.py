"""How a process reaches the object store: endpoint, bucket and keys, passed to actors and replicas."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class S3Access:
    """Endpoint and credentials (never logged: ``repr`` leaves the keys out)."""

    endpoint: str
    access_key: str
    secret_key: str
    bucket: str
    secure: bool = False
    region: str | None = None

    def __repr__(self) -> str:
        return f"S3Access(endpoint={self.endpoint!r}, bucket={self.bucket!r})"
