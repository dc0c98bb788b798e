"""Calling the control API from tests: bearer tokens per role, clients that send them."""

from __future__ import annotations

import secrets

import httpx

ROLES = ("viewer", "operator", "admin")


def role_tokens() -> dict[str, str]:
    """A fresh random token per role."""
    return {role: f"{role}-{secrets.token_urlsafe(24)}" for role in ROLES}


def tokens_spec(tokens: dict[str, str]) -> str:
    """The value of ``CCTV_API_TOKENS`` for ``tokens`` (each token named after its role)."""
    return ",".join(f"{tok}:{role}:test-{role}" for role, tok in tokens.items())


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def client(base_url: str, token: str | None, timeout: float = 60.0) -> httpx.Client:
    """An HTTP client for the API that sends ``token``."""
    return httpx.Client(base_url=base_url, headers=bearer(token), timeout=timeout)


def admin_client(runtime: object, timeout: float = 60.0) -> httpx.Client:
    """A client with the admin token of a started :class:`cluster.runtime.Runtime`."""
    ep = runtime.endpoints  # type: ignore[attr-defined]
    assert ep is not None and ep.api_token, "runtime not started, or no admin token known"
    return client(ep.serve_url, ep.api_token, timeout)
