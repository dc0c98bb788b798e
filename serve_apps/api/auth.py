"""Bearer tokens with roles for the control API.

Tokens come from one environment variable (``ApiConfig.tokens_env``) as
``token:role[:name]`` pairs separated by commas; roles are ``viewer`` < ``operator`` < ``admin``
and each role may do what the roles below it may. The optional name is who the access log
records (default: the role and the first 8 hex digits of the token's SHA-256).

The API process never holds the tokens themselves: the builder reads the variable and passes a
:class:`TokenTable` of SHA-256 digests to the Serve deployment (Serve keeps deployment arguments
in its controller, so a plain token there would be readable by anyone with cluster access).
A presented token is hashed and looked up; the comparison is of digests, in constant time.
"""

import enum
import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

TOKEN_FILE = "api-token"
"""File in the state dir holding the demo's generated admin token (mode 0600)."""

MIN_TOKEN_CHARS = 16


class Role(enum.IntEnum):
    """What a caller may do; a higher role includes the lower ones."""

    VIEWER = 1  # read cameras, events, snapshots, view clips, metrics targets
    OPERATOR = 2  # + acknowledge events, emergency exports, mark evidence
    ADMIN = 3  # + add/update/remove/transfer cameras, read the access log

    @property
    def label(self) -> str:
        return self.name.lower()


class TokenSpecError(ValueError):
    """The tokens variable is malformed (the message never contains a token)."""


@dataclass(frozen=True, slots=True)
class Caller:
    """Who made a request: their role and the name the access log records."""

    role: Role
    name: str


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class TokenTable:
    """SHA-256 digest of each token → the caller it stands for. ``open_access``: no tokens needed."""

    callers: Mapping[str, Caller] = field(default_factory=dict)
    open_access: bool = False

    def __repr__(self) -> str:  # digests only, but keep logs short
        return f"TokenTable({len(self.callers)} tokens, open_access={self.open_access})"

    def lookup(self, token: str) -> Caller | None:
        digest = token_digest(token)
        found: Caller | None = None
        for known, caller in self.callers.items():  # every entry compared: no early exit on a match
            if hmac.compare_digest(known, digest):
                found = caller
        return found


def parse_tokens(spec: str) -> TokenTable:
    """A :class:`TokenTable` from ``token:role[:name],...``.

    Raises:
        TokenSpecError: an entry without a role, an unknown role, a short token or a duplicate
            (the message gives the entry's position, never the token).
    """
    callers: dict[str, Caller] = {}
    for pos, entry in enumerate((e.strip() for e in spec.split(",")), start=1):
        if not entry:
            continue
        parts = entry.split(":")
        if len(parts) not in (2, 3):
            raise TokenSpecError(f"entry {pos}: expected token:role or token:role:name")
        token, role_name = parts[0], parts[1].strip().lower()
        try:
            role = Role[role_name.upper()]
        except KeyError:
            raise TokenSpecError(f"entry {pos}: unknown role {role_name!r} (viewer, operator, admin)") from None
        if len(token) < MIN_TOKEN_CHARS:
            raise TokenSpecError(f"entry {pos}: token shorter than {MIN_TOKEN_CHARS} characters")
        digest = token_digest(token)
        if digest in callers:
            raise TokenSpecError(f"entry {pos}: duplicate token")
        name = parts[2].strip() if len(parts) == 3 and parts[2].strip() else f"{role.label}-{digest[:8]}"
        callers[digest] = Caller(role, name)
    return TokenTable(callers)


def tokens_from_env(var: str, env: Mapping[str, str] = os.environ) -> TokenTable | None:
    """The table from the variable ``var``; None when it is unset or empty."""
    spec = env.get(var, "").strip()
    return parse_tokens(spec) if spec else None


def new_token() -> str:
    """A random bearer token that never starts with ``-``.

    ``secrets.token_urlsafe`` starts with ``-`` one time in 64; ``cctv cameras --token <t>`` (argparse)
    would then read the token as an option and refuse it, so the generated token carries a prefix.
    """
    return f"cctv-{secrets.token_urlsafe(32)}"


def demo_admin_token(state_dir: Path) -> str:
    """The local demo's admin token: read from ``state_dir/api-token`` or generated there (mode 0600)."""
    path = state_dir / TOKEN_FILE
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        token = ""
    if len(token) < MIN_TOKEN_CHARS or token.startswith("-"):
        token = new_token()
        state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
    os.chmod(path, 0o600)
    return token


@dataclass(frozen=True, slots=True)
class ApiAccess:
    """What the starter of the API knows: the digest table, and one admin token for its own use."""

    table: TokenTable
    admin_token: str | None = field(default=None, repr=False)
    token_file: Path | None = None  # set when the admin token was generated for a local demo


def resolve_access(
    tokens_env: str, auth_required: bool, env: Mapping[str, str] = os.environ, *, demo_state_dir: Path | None = None
) -> ApiAccess:
    """The API's tokens: from the variable ``tokens_env``; else, for a local demo (``demo_state_dir``),
    a generated admin token kept in ``demo_state_dir/api-token``; else open access when
    ``auth_required`` is false.

    Raises:
        TokenSpecError: the variable is malformed, or it is unset where no demo token may be made.
    """
    table = tokens_from_env(tokens_env, env)
    if table is not None:
        admin = None
        for entry in env[tokens_env].split(","):  # the starter's own calls (tests, CLI) use the first admin token
            parts = entry.strip().split(":")
            if len(parts) >= 2 and parts[1].strip().lower() == "admin":
                admin = parts[0]
                break
        return ApiAccess(table, admin)
    if not auth_required:
        return ApiAccess(TokenTable(open_access=True))
    if demo_state_dir is None:
        raise TokenSpecError(f"environment variable {tokens_env} (api.tokens_env) is unset or empty")
    token = demo_admin_token(demo_state_dir)
    return ApiAccess(
        TokenTable({token_digest(token): Caller(Role.ADMIN, "demo-admin")}), token, demo_state_dir / TOKEN_FILE
    )


# -- FastAPI dependencies -------------------------------------------------------------------

_bearer = HTTPBearer(auto_error=False, description="A token from the variable ApiConfig.tokens_env names.")


class _Installed:
    """The token table of this API replica (set by the deployment's constructor)."""

    table: TokenTable | None = None


def install(table: TokenTable) -> None:
    _Installed.table = table


def check_header(authorization: str) -> str | None:
    """None when the ``Authorization`` header holds a known token (or access is open), else why not."""
    table = _Installed.table
    if table is None or table.open_access:
        return None  # no table yet: the route's dependency answers 503
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return "a bearer token is required"
    if table.lookup(token.strip()) is None:
        return "unknown bearer token"
    return None


def authenticate(creds: HTTPAuthorizationCredentials | None, need: Role) -> Caller:
    """The caller behind ``creds`` if their role is at least ``need``.

    Raises:
        HTTPException: 401 without a valid token, 403 when the role is too low, 503 before the
            replica has its token table.
    """
    table = _Installed.table
    if table is None:
        raise HTTPException(status_code=503, detail="the API is starting (no token table yet)")
    if table.open_access:
        return Caller(Role.ADMIN, "open-access")
    unauthorized = {"WWW-Authenticate": "Bearer"}
    if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
        raise HTTPException(status_code=401, detail="a bearer token is required", headers=unauthorized)
    caller = table.lookup(creds.credentials)
    if caller is None:
        raise HTTPException(status_code=401, detail="unknown bearer token", headers=unauthorized)
    if caller.role < need:
        raise HTTPException(
            status_code=403, detail=f"this needs the {need.label} role (the token is {caller.role.label})"
        )
    return caller


def require(need: Role) -> Any:
    """A dependency that answers 401/403 before the request body is even validated."""

    def dependency(creds: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)]) -> Caller:
        return authenticate(creds, need)

    dependency.__name__ = f"require_{need.label}"
    return Depends(dependency)


Viewer = Annotated[Caller, require(Role.VIEWER)]
Operator = Annotated[Caller, require(Role.OPERATOR)]
Admin = Annotated[Caller, require(Role.ADMIN)]
