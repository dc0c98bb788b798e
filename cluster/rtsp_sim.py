"""Local RTSP cameras for tests and demos: runs ``scripts/rtsp_sim.py`` under Debian's Python.

GStreamer's RTSP server (``gi``) does not import in the pyenv venv, so the simulator runs as a
subprocess of ``/usr/bin/python3``. It replays prepared H.264 files (see
:func:`cluster.footage.prepare_stream`) without re-encoding, each source held once in memory, at
native frame rate and looping forever; ``cameras=N`` mounts ``/cam1`` .. ``/camN`` cycling over the
sources, besides ``/<name>`` for each source.

The password travels to the subprocess in its environment, never in its argv (``ps`` shows argv to
every local user) nor in a log line; :meth:`RtspSimulator.url` is the only place it appears.

Usage::

    with RtspSimulator({"vtest": prepared_mp4}, cameras=20, user="admin", password="pw") as sim:
        urls = sim.camera_urls()
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self
from urllib.parse import quote

log = logging.getLogger(__name__)

SYSTEM_PYTHON = Path("/usr/bin/python3")
SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "rtsp_sim.py"
PACKAGES_FILE = SCRIPT.parent / "debian-packages.txt"
PASSWORD_ENV = "RTSP_SIM_PASSWORD"  # read by scripts/rtsp_sim.py
_WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})


def _debian_packages() -> str:
    try:
        return " ".join(line.strip() for line in PACKAGES_FILE.read_text().splitlines() if line.strip())
    except OSError:
        return "python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-bad"


def system_ready(python: Path = SYSTEM_PYTHON, timeout_s: float = 30.0) -> tuple[bool, str]:
    """Whether ``python`` can run the simulator (gi, GstRtspServer 1.0, the GStreamer elements).

    Returns:
        ``(True, version line)``, or ``(False, what is missing and what to install)``.
    """
    hint = f"install the Debian packages: apt-get install -y {_debian_packages()}"
    if not os.access(python, os.X_OK):
        return False, f"{python} not found or not executable; {hint}"
    try:
        proc = subprocess.run(
            [str(python), str(SCRIPT), "--check"],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False, f"{python} {SCRIPT.name} --check did not finish in {timeout_s} s"
    except OSError as exc:
        return False, f"cannot run {python}: {exc}"
    message = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        return False, f"{message}; {hint}"
    return True, message


class RtspSimulator:
    """One ``scripts/rtsp_sim.py`` process serving cameras from prepared footage.

    Args:
        sources: Mount name -> prepared H.264 file (``.mp4`` from ``prepare_stream``, or raw
            ``.h264``). Each is served at ``/<name>``.
        cameras: Also serve ``/cam1`` .. ``/cam<cameras>``, cycling over ``sources`` in order.
        port: RTSP port; ``None`` lets the simulator bind a free one (no race with other tests).
        bind: Address to listen on.
        user: With ``password``, require RTSP digest (or ``auth_method="basic"``) authentication.
        password: See ``user``.
        auth_method: ``"digest"`` or ``"basic"``.
        log_path: Where the simulator's stderr goes (default: a temporary file, removed by
            :meth:`stop`).
        python: The interpreter that has ``gi`` (Debian's).
    """

    def __init__(
        self,
        sources: dict[str, Path],
        *,
        cameras: int = 0,
        port: int | None = None,
        bind: str = "127.0.0.1",
        user: str | None = None,
        password: str | None = None,
        auth_method: str = "digest",
        log_path: Path | None = None,
        python: Path = SYSTEM_PYTHON,
    ) -> None:
        if not sources:
            raise ValueError("at least one source is needed")
        for name, path in sources.items():
            if not name or "/" in name or "=" in name or not name.isprintable() or " " in name:
                raise ValueError(f"source name must be a plain mount name, got {name!r}")
            if not Path(path).is_file():
                raise FileNotFoundError(f"source {name!r}: {path} is not a file")
        if cameras < 0:
            raise ValueError(f"cameras must be >= 0, got {cameras}")
        if port is not None and not 0 < port <= 65535:
            raise ValueError(f"port must be in 1..65535 or None, got {port}")
        if (user is None) != (password is None) or user == "" or password == "":
            raise ValueError("user and password go together, both non-empty")
        if auth_method not in ("digest", "basic"):
            raise ValueError(f"auth_method must be 'digest' or 'basic', got {auth_method!r}")
        self.sources = {name: Path(path) for name, path in sources.items()}
        self.cameras = cameras
        self.bind = bind
        self.user = user
        self._password = password
        self.auth_method = auth_method
        self.python = python
        self._requested_port = port
        self._log_path = log_path
        self.port: int | None = None
        self.mounts: list[str] = []
        self.source_info: dict[str, dict[str, Any]] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._tmpdir: Path | None = None
        self._own_log = False

    def __repr__(self) -> str:  # no password here
        auth = f", user={self.user!r}" if self.user is not None else ""
        return f"RtspSimulator(sources={sorted(self.sources)}, cameras={self.cameras}, port={self.port}{auth})"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def log_path(self) -> Path | None:
        return self._log_path

    @property
    def host(self) -> str:
        """Address clients connect to (loopback when listening on every address)."""
        return "127.0.0.1" if self.bind in _WILDCARD_HOSTS else self.bind

    def start(self, timeout_s: float = 20.0) -> Self:
        """Spawn the simulator; return once it wrote its ready file and accepts TCP connections.

        Raises:
            RuntimeError: Already running, or it exited or did not become ready in ``timeout_s``
                (the message has the tail of its log).
        """
        if self.running:
            raise RuntimeError(f"{self!r} is already running")
        self._tmpdir = Path(tempfile.mkdtemp(prefix="rtsp-sim-"))
        if self._log_path is None:
            self._log_path = self._tmpdir / "rtsp_sim.log"
            self._own_log = True
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        ready_file = self._tmpdir / "ready.json"
        cmd = [
            str(self.python),
            str(SCRIPT),
            "--bind",
            self.bind,
            "--port",
            str(self._requested_port or 0),
            "--cameras",
            str(self.cameras),
            "--ready-file",
            str(ready_file),
        ]
        for name, path in self.sources.items():
            cmd += ["--source", f"{name}={path}"]
        env = dict(os.environ)
        env.pop(PASSWORD_ENV, None)
        if self.user is not None:
            cmd += ["--user", self.user, "--auth-method", self.auth_method]
            env[PASSWORD_ENV] = self._password or ""
        # PYTHONPATH/PYTHONHOME of the venv would point Debian's python at the wrong site-packages.
        for var in ("PYTHONPATH", "PYTHONHOME"):
            env.pop(var, None)
        self._log_file = self._log_path.open("ab")
        try:
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT, env=env
            )
        except OSError as exc:
            self._cleanup()
            raise RuntimeError(f"cannot run {self.python} {SCRIPT}: {exc}") from exc
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                rc = self._proc.returncode
                tail = self.log_tail()
                self._cleanup()
                raise RuntimeError(f"rtsp simulator exited with code {rc} before it was ready; log tail:\n{tail}")
            if self.port is None and ready_file.is_file():
                info = json.loads(ready_file.read_text())
                self.port = int(info["port"])
                self.mounts = list(info["mounts"])
                self.source_info = dict(info["sources"])
            if self.port is not None and self._accepts_tcp():
                log.info(
                    "rtsp simulator pid %d on %s:%d: %d mounts (%d cameras)",
                    self._proc.pid,
                    self.host,
                    self.port,
                    len(self.mounts),
                    self.cameras,
                )
                return self
            time.sleep(0.05)
        tail = self.log_tail()
        self.stop()
        raise RuntimeError(f"rtsp simulator not ready in {timeout_s} s; log tail:\n{tail}")

    def _accepts_tcp(self) -> bool:
        assert self.port is not None
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM, wait up to ``timeout_s``, then SIGKILL. Safe to call twice."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("rtsp simulator pid %d ignored SIGTERM for %.1f s: killing it", proc.pid, timeout_s)
                proc.kill()
                proc.wait(timeout=timeout_s)
        self._cleanup()

    def _cleanup(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)  # ready file, and the log unless log_path was given
            self._tmpdir = None
        if self._own_log:
            self._log_path = None
            self._own_log = False
        self.port = None

    def log_tail(self, lines: int = 20) -> str:
        if self._log_path is None or not self._log_path.exists():
            return ""
        with contextlib.suppress(OSError):
            return "\n".join(self._log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def url(self, mount: str, with_credentials: bool = True) -> str:
        """``rtsp://[user:password@]host:port/mount`` (credentials percent-encoded)."""
        if self.port is None:
            raise RuntimeError(f"{self!r} is not started")
        mount = mount.lstrip("/")
        userinfo = ""
        if with_credentials and self.user is not None:
            userinfo = f"{quote(self.user, safe='')}:{quote(self._password or '', safe='')}@"
        return f"rtsp://{userinfo}{self.host}:{self.port}/{mount}"

    def camera_urls(self, with_credentials: bool = True) -> list[str]:
        """URLs of ``/cam1`` .. ``/cam<cameras>``."""
        return [self.url(f"cam{i}", with_credentials) for i in range(1, self.cameras + 1)]

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
