"""The CLI reads what the engine recorded: JSON for scripts, exit codes for mistakes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from papercrane.backend.api import RunRequest
from papercrane.backend.cli import main
from papercrane.backend.config import Config
from papercrane.backend.engine import LocalEngine
from papercrane.backend.errors import TaskFailed
from papercrane.backend.model import TaskConfig, TaskSpec


@pytest.fixture
def home(tmp_path: Path) -> Path:
    engine = LocalEngine(Config(home=tmp_path))
    cfg = TaskConfig(executor="inline", cache=True)
    spec = TaskSpec(name="hello", code="print('hi')\ny = 1", inputs=(), outputs=("y",))
    engine.run_task(RunRequest(spec=spec, config=cfg, inputs={}, values={}))
    engine.run_task(RunRequest(spec=spec, config=cfg, inputs={}, values={}))
    bad = TaskSpec(name="bad", code="y = 1 / 0", inputs=(), outputs=("y",))
    with pytest.raises(TaskFailed):
        engine.run_task(RunRequest(spec=bad, config=cfg, inputs={}, values={}))
    engine.close()
    return tmp_path


def cli(home: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--home", str(home), *args])
    return result.exit_code, result.output


def test_executions_list_json(home: Path) -> None:
    code, out = cli(home, "executions", "list", "--json")
    assert code == 0
    rows = json.loads(out)
    assert [(r["name"], r["status"]) for r in rows] == [
        ("bad", "failed"),
        ("hello", "cached"),
        ("hello", "succeeded"),
    ]


def test_executions_show_json_with_events(home: Path) -> None:
    rows = json.loads(cli(home, "executions", "list", "--json")[1])
    failed = rows[0]["id"]
    code, out = cli(home, "executions", "show", failed, "--events", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["nodes"]["bad"]["error"]["type"] == "ZeroDivisionError"
    assert data["events"][-1]["kind"] == "execution_failed"


def test_logs_and_cache(home: Path) -> None:
    rows = json.loads(cli(home, "executions", "list", "--json")[1])
    first = rows[-1]["id"]
    assert cli(home, "logs", first, "hello") == (0, "hi\n")
    code, out = cli(home, "logs", first, "nope")
    assert code == 2 and "no node 'nope'" in out and "hello" in out
    entries = json.loads(cli(home, "cache", "list", "--json")[1])
    assert [e["task_name"] for e in entries] == ["hello"]
    assert json.loads(cli(home, "cache", "clear", "--task", "hello", "--json")[1]) == {"cleared": 1}


def test_unknown_execution_is_a_clean_error(home: Path) -> None:
    code, out = cli(home, "executions", "show", "doesnotexist")
    assert code != 0
    assert "no execution 'doesnotexist'" in out


@pytest.mark.parametrize(
    ("status", "counts", "shown"),
    [
        ("succeeded", (4, 4, 0, 1), "map of 4: 4 done (1 cached)"),
        ("failed", (40, 3, 1, 0), "map of 40: 3 done, 1 failed, 36 not run"),
        ("running", (10, 2, 0, 0), "map of 10: 2 done, 8 to go"),
    ],
)
def test_a_maps_elements_are_counted_by_outcome(
    status: str, counts: tuple[int, int, int, int], shown: str
) -> None:
    from papercrane.backend.cli import _map_progress

    total, done, failed, cached = counts
    node = {
        "status": status,
        "elements": total,
        "elements_done": done,
        "elements_failed": failed,
        "elements_cached": cached,
    }
    assert _map_progress(node) == shown
