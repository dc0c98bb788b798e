"""``cctv cameras ...``: live camera changes through the control API of a running cluster.

The CLI talks HTTP to the Serve control API (as control-centre software does), so it works
from any machine that reaches the API, with no Ray client. Camera files are validated here
first (file:line errors, nothing sent when one camera is wrong).

It behaves as the API asks its clients to: every change carries an ``Idempotency-Key``, and a
503 with ``Retry-After`` (the controller is restarting) is sent again, with the same key, after
the time it says, for up to ``--retry-s``; so a change is made once even when an answer is lost.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from configs.loader import ConfigError, load_cameras

DEFAULT_API = "http://127.0.0.1:8000"
TOKEN_ENV = "CCTV_API_TOKEN"
TOKEN_FILE = "api-token"  # as serve_apps.api.auth.TOKEN_FILE (not imported: the CLI stays light)


def _fail(resp: httpx.Response, what: str) -> int:
    if resp.status_code == 401:
        print(f"{what}: HTTP 401: give a token (--token, ${TOKEN_ENV} or <state-dir>/{TOKEN_FILE})", file=sys.stderr)
        return 1
    try:
        detail: Any = resp.json().get("detail", resp.text)
    except ValueError:
        detail = resp.text
    print(f"{what}: HTTP {resp.status_code}: {detail}", file=sys.stderr)
    return 1


def api_token(args: argparse.Namespace, env: dict[str, str] | None = None) -> str | None:
    """The bearer token: ``--token``, else ``$CCTV_API_TOKEN``, else the local demo's ``<state-dir>/api-token``."""
    env = dict(os.environ) if env is None else env
    if args.token:
        return args.token
    if env.get(TOKEN_ENV):
        return env[TOKEN_ENV]
    try:
        return (Path(args.state_dir) / TOKEN_FILE).read_text().strip() or None
    except OSError:
        return None


def send(
    client: httpx.Client,
    method: str,
    url: str,
    *,
    retry_s: float,
    json_body: Any = None,
    change: bool = False,
    sleep: Any = time.sleep,
) -> httpx.Response:
    """One request; a 503 with ``Retry-After`` is sent again (same ``Idempotency-Key``) while time is left.

    Args:
        client: the API client.
        method: HTTP method.
        url: path under the API.
        retry_s: how long to keep retrying 503s.
        json_body: the JSON body, if any.
        change: send an ``Idempotency-Key`` (every request that changes something).
        sleep: the pause (tests record it).
    """
    headers = {"Idempotency-Key": f"cli-{uuid.uuid4().hex}"} if change else {}
    deadline = time.monotonic() + retry_s
    while True:
        r = client.request(method, url, json=json_body, headers=headers)
        after = r.headers.get("retry-after")
        if r.status_code != 503 or after is None or not after.isdigit():
            return r
        left = deadline - time.monotonic()
        if left <= 0:
            return r
        print(f"{method} {url}: HTTP 503, retrying in {after} s", file=sys.stderr)
        sleep(min(float(after), left))


def cmd_cameras(args: argparse.Namespace) -> int:
    api = args.api.rstrip("/")
    token = api_token(args)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with httpx.Client(base_url=api, timeout=args.timeout_s, headers=headers) as client:
            return _dispatch(args, client)
    except httpx.TransportError as exc:
        print(f"control API at {api} unreachable: {exc}", file=sys.stderr)
        return 3


def _dispatch(args: argparse.Namespace, client: httpx.Client) -> int:
    cmd = args.cameras_command
    if cmd == "list":
        r = send(client, "GET", "/cameras", retry_s=args.retry_s)
        if r.status_code != 200:
            return _fail(r, "list")
        rows = r.json()
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            for s in rows:
                print(f"{s['camera_id']:<28} {s['district']:<14} {s['shard']:<18} {s['state']:<12} {s['reason']}")
        return 0
    if cmd in ("add", "update"):
        try:
            cameras = load_cameras(args.file)
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return 2
        rc = 0
        for cam in cameras:
            body = cam.model_dump(mode="json")
            method, url = ("POST", "/cameras") if cmd == "add" else ("PUT", f"/cameras/{cam.id}")
            r = send(client, method, url, json_body=body, change=True, retry_s=args.retry_s)
            if r.status_code not in (200, 201):
                rc = _fail(r, f"{cmd} {cam.id}")
                continue
            print(f"{cmd}: {cam.id} on {r.json().get('shard')}")
        return rc
    if cmd == "remove":
        rc = 0
        for cid in args.ids:
            r = send(client, "DELETE", f"/cameras/{cid}", change=True, retry_s=args.retry_s)
            if r.status_code != 204:
                rc = _fail(r, f"remove {cid}")
            else:
                print(f"removed: {cid}")
        return rc
    if cmd == "transfer":
        body = {"district": args.district}
        r = send(client, "POST", f"/cameras/{args.id}/transfer", json_body=body, change=True, retry_s=args.retry_s)
        if r.status_code != 200:
            return _fail(r, f"transfer {args.id}")
        print(f"transferred: {args.id} -> {r.json()['camera']['district']}")
        return 0
    raise AssertionError(f"unknown cameras command {cmd!r}")


def add_parser(sub: argparse._SubParsersAction) -> None:
    cp = sub.add_parser("cameras", help="live camera changes through the control API")
    cp.add_argument("--api", default=DEFAULT_API, help=f"control API base URL (default {DEFAULT_API})")
    cp.add_argument("--timeout-s", type=float, default=60.0, help="one HTTP request's timeout")
    cp.add_argument("--retry-s", type=float, default=120.0, help="how long to retry a 503 + Retry-After (default 120)")
    cp.add_argument(
        "--token",
        default=None,
        help=f"bearer token (admin to change cameras); default ${TOKEN_ENV}, else <state-dir>/{TOKEN_FILE}",
    )
    cp.add_argument("--state-dir", default="state", help="where `cctv run` keeps the demo's token (default state)")
    csub = cp.add_subparsers(dest="cameras_command", required=True)
    lst = csub.add_parser("list", help="cameras with state, shard and reason")
    lst.add_argument("--json", action="store_true")
    for name, text in (("add", "add the cameras of a YAML/CSV file"), ("update", "replace cameras' configuration")):
        c = csub.add_parser(name, help=text)
        c.add_argument("file", type=Path, help="YAML list or CSV inventory (as cameras_file in a config)")
    rm = csub.add_parser("remove", help="stop and forget cameras")
    rm.add_argument("ids", nargs="+")
    tr = csub.add_parser("transfer", help="move a camera to another district")
    tr.add_argument("id")
    tr.add_argument("--district", required=True)
    cp.set_defaults(func=cmd_cameras)
