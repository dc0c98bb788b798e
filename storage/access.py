"""How a process reaches the object store: endpoint, bucket and keys, passed to actors and replicas.

:meth:`S3Access.from_config` is the one place that reads the S3 keys from the environment variables
the ``storage`` section names, with one error for a missing key; every store (clips, evidence, models,
access log, control state) is then built from an :class:`S3Access` (``ClipStore.for_access``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass

from configs.schema import StorageConfig


class S3AccessError(ValueError):
    """The config cannot reach an S3 store: no endpoint, or a key variable unset (named, never its value)."""


def missing_key_message(var: str, field: str, endpoint: str) -> str:
    """The one wording of "a key variable is unset", shared by every entry point."""
    return f"environment variable {var} (storage.{field}) is unset or empty; it holds an S3 key for {endpoint}"


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

    @classmethod
    def from_config(
        cls,
        cfg: StorageConfig,
        env: Mapping[str, str] = os.environ,
        *,
        endpoint: str | None = None,
    ) -> S3Access:
        """Access to the configured endpoint, keys from the environment variables the config names.

        Args:
            cfg: the ``storage`` section.
            env: where to read the key variables.
            endpoint: overrides ``cfg.endpoint``.

        Raises:
            S3AccessError: no endpoint, or a key variable unset or empty.
        """
        ep = endpoint or cfg.endpoint
        if not ep:
            raise S3AccessError(
                "storage.endpoint is not set: name an S3/MinIO endpoint (host:port) or leave it unset "
                "where the embedded S3 store is started"
            )
        keys: list[str] = []
        for field, var in (("access_key_env", cfg.access_key_env), ("secret_key_env", cfg.secret_key_env)):
            value = env.get(var)
            if not value:
                raise S3AccessError(missing_key_message(var, field, ep))
            keys.append(value)
        return cls(ep, keys[0], keys[1], cfg.bucket, secure=cfg.secure, region=cfg.region)

    def with_bucket(self, bucket: str) -> S3Access:
        """The same endpoint and keys, another bucket (models, evidence)."""
        return dataclasses.replace(self, bucket=bucket)
