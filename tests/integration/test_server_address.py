"""A wrong PAPERCRANE_URL says so: a path after the server's address, or an address where
another web server answers, is "no papercrane API at URL; check PAPERCRANE_URL", not
FastAPI's bare "Not Found" nor the other server's whole HTML page."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ..server_fixture import ServerProcess

CLI = [sys.executable, "-m", "papercrane.backend.cli"]
PAGE = (
    "<!DOCTYPE html><html><head><title>404 Not Found</title><style>body{margin:0}</style>"
    "</head><body><h1>Not Found</h1>" + "<p>The requested URL was not found here.</p>" * 50
)


class _OtherServer(BaseHTTPRequestHandler):
    """A web server that is not papercrane: an HTML page for every path."""

    def do_GET(self) -> None:
        body = PAGE.encode()
        self.send_response(404)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def other_server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _OtherServer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def cli(url: str, token: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PAPERCRANE_URL": url,
        "PAPERCRANE_TOKEN": token,
        "PAPERCRANE_PROJECT": "team",
        "PAPERCRANE_HOME": str(tmp_path / "client-home"),
    }
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=60)


def test_a_path_after_the_servers_address_is_no_papercrane_api(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "srv").start()
    try:
        token = server.token("team")
        r = cli(f"{server.url}/papercrane", token, tmp_path, "executions", "list")
        assert r.returncode != 0
        assert f"no papercrane API at {server.url}/papercrane" in r.stderr, r.stderr
        assert "check PAPERCRANE_URL" in r.stderr
        # An unknown object on the right address is still that object's own 404.
        r = cli(server.url, token, tmp_path, "executions", "show", "0123456789abcdef" * 2)
        assert r.returncode != 0 and "no execution" in r.stderr, r.stderr
        assert "no papercrane API" not in r.stderr
    finally:
        server.stop()


def test_another_web_server_is_named_in_a_line_not_its_page(
    other_server: str, tmp_path: Path
) -> None:
    r = cli(other_server, "pc_whatever", tmp_path, "executions", "list")
    assert r.returncode != 0
    assert f"no papercrane API at {other_server}" in r.stderr, r.stderr
    assert "404 Not Found" in r.stderr  # (the page's title)
    assert "<" not in r.stderr and "requested URL" not in r.stderr
    assert len(r.stderr) < 600, r.stderr
