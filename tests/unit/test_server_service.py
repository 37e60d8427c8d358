"""The server's live log buffers: positions survive trimming, ended runs are let go."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from papercrane.backend.server import service as service_module
from papercrane.backend.server.service import Service
from papercrane.backend.server.settings import ServerSettings


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    svc = Service(ServerSettings(home=tmp_path))
    yield svc
    svc.close()


def test_a_follower_position_survives_trimming(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_module, "_MAX_LOG_ENTRIES", 10)
    for i in range(8):
        service.add_log("e1", "stdout", f"line {i}\n")
    lines, pos = service.logs_since("e1", 0)
    assert [t for _, t in lines] == [f"line {i}\n" for i in range(8)] and pos == 8
    for i in range(8, 25):
        service.add_log("e1", "stdout", f"line {i}\n")
    # The follower at 8 gets what is still buffered after its position, never a line twice.
    lines, pos = service.logs_since("e1", 8)
    assert [t for _, t in lines] == [f"line {i}\n" for i in range(15, 25)] and pos == 25
    service.add_log("e1", "stderr", "last\n")
    assert service.logs_since("e1", pos) == ([("stderr", "last\n")], 26)


def test_ended_executions_buffers_are_dropped_beyond_the_limit(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_module, "_KEEP_ENDED", 2)
    for name in ("a", "b", "c"):
        service.add_log(name, "stdout", f"{name}\n")
        service._forget_later(name)  # what the end of a run calls
    assert service.logs_since("a", 0) == ([], 0)  # the oldest ended one is gone
    assert service.logs_since("b", 0) == ([("stdout", "b\n")], 1)
    assert service.logs_since("c", 0) == ([("stdout", "c\n")], 1)
