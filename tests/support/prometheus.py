"""A real Prometheus server (Debian's package) for integration tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx

from serve_apps.metrics_export import free_port
from tests.support.wait import wait_for


class PrometheusServer:
    """Runs ``prometheus`` scraping the targets of a file_sd JSON file every second."""

    def __init__(self, workdir: Path, file_sd: Path, *, scrape_interval_s: int = 1) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus not installed: `make test` installs Debian's package")
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "prometheus.yml"
        self.config.write_text(
            "global:\n"
            f"  scrape_interval: {scrape_interval_s}s\n"
            f"  evaluation_interval: {scrape_interval_s}s\n"
            "scrape_configs:\n"
            "  - job_name: cctv\n"
            "    file_sd_configs:\n"
            f"      - files: ['{file_sd}']\n"
            "        refresh_interval: 1s\n"
        )
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 20.0) -> None:
        log = (self.workdir / "prometheus.log").open("wb")
        self._proc = subprocess.Popen(
            [
                self.binary,
                f"--config.file={self.config}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )

        def ready() -> bool:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"prometheus exited ({self._proc.returncode}); log tail:\n{self.log_tail()}")
            return httpx.get(f"{self.url}/-/ready", timeout=1.0).status_code == 200

        wait_for(
            ready,
            timeout_s,
            f"prometheus ready on {self.url}",
            interval_s=0.2,
            not_yet=(httpx.HTTPError,),
            detail=self.log_tail,
        )

    def log_tail(self, lines: int = 10) -> str:
        path = self.workdir / "prometheus.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def query(self, expr: str) -> list[dict[str, object]]:
        r = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=5.0)
        r.raise_for_status()
        return r.json()["data"]["result"]

    def targets(self) -> list[dict[str, object]]:
        r = httpx.get(f"{self.url}/api/v1/targets", timeout=5.0)
        r.raise_for_status()
        return r.json()["data"]["activeTargets"]

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(5)
        self._proc = None
