"""A real ``papercrane server`` process for tests, on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, home: Path, db_url: str = "", extra: list[str] | None = None) -> None:
        self.home = home
        self.db_url = db_url
        self.extra = extra or []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log = home / "server.log"
        home.mkdir(parents=True, exist_ok=True)
        self.admin = self.token("*", "admin")

    def cli(self, *args: str) -> str:
        env = {**os.environ, "PAPERCRANE_HOME": str(self.home)}
        cmd = [sys.executable, "-m", "papercrane.backend.cli", *args]
        return subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout

    def token(self, project: str, role: str = "write") -> str:
        db = ["--db", self.db_url] if self.db_url else []
        return self.cli("token", "create", "--project", project, "--role", role, *db).strip()

    def start(self) -> ServerProcess:
        env = {**os.environ, "PAPERCRANE_HOME": str(self.home)}
        db = ["--db", self.db_url] if self.db_url else []
        cmd = [
            sys.executable,
            "-m",
            "papercrane.backend.cli",
            "server",
            "--port",
            str(self.port),
            *db,
            *self.extra,
        ]
        self._log_file = open(self.log, "ab")  # noqa: SIM115 - lives as long as the server
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log_file, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-3000:]}")
            try:
                r = httpx.get(
                    f"{self.url}/api/v1/whoami",
                    headers={"Authorization": f"Bearer {self.admin}"},
                    timeout=1,
                )
                if r.status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not start")

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, as when a machine dies."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
            self._log_file.close()
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self._log_file.close()
            self.proc = None


def wait_for(predicate, timeout: float = 60) -> None:
    """Poll ``predicate`` every 0.1 s until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.1)
