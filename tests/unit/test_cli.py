"""The CLI reads what the engine recorded: JSON for scripts, exit codes for mistakes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from papercrane.backend.api import RunRequest
from papercrane.backend.cli import main
from papercrane.backend.config import Config
from papercrane.backend.engine import LocalEngine
from papercrane.backend.errors import TaskFailed
from papercrane.backend.model import TaskConfig, TaskSpec
from papercrane.backend.workflow import WorkflowSpec


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
    # (wide: rich wraps table cells at the console width)
    result = CliRunner().invoke(main, ["--home", str(home), *args], env={"COLUMNS": "200"})
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
    assert cli(home, "logs", first) == (0, "hi\n")  # (a single task's: its one node)
    code, out = cli(home, "executions", "logs", first, "hello", "--json")
    assert (code, json.loads(out)) == (
        0,
        {"execution_id": first, "node": "hello", "attempt": 1, "stream": "stdout", "text": "hi\n"},
    )
    # A missing node is a missing object, as a missing execution is: exit 1 both.
    code, out = cli(home, "logs", first, "nope")
    assert code == 1 and "no node 'nope'" in out and "hello" in out and "Usage" not in out
    code, out = cli(home, "logs", "ffffffff", "hello")
    assert code == 1 and "no execution 'ffffffff'" in out
    entries = json.loads(cli(home, "cache", "list", "--json")[1])
    assert [e["task_name"] for e in entries] == ["hello"]
    assert json.loads(cli(home, "cache", "clear", "--task", "hello", "--json")[1]) == {
        "cleared": 1,
        "project": "default",
        "domain": "development",
    }


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
    from papercrane.backend.cli_executions import _map_progress

    total, done, failed, cached = counts
    node = {
        "status": status,
        "elements": total,
        "elements_done": done,
        "elements_failed": failed,
        "elements_cached": cached,
    }
    assert _map_progress(node) == shown


def test_a_big_maps_table_lists_only_the_elements_that_did_not_succeed(tmp_path: Path) -> None:
    """A 10,000-element map once printed 10,000 rows (and took seconds to draw): the
    table counts its elements on the map's line and lists those that failed, up to a
    limit; ``--elements`` lists every one, and ``--json`` always has them all."""
    from papercrane.backend.cli_executions import _ELEMENT_ROWS
    from papercrane.backend.workflow import MapSpec

    engine = LocalEngine(Config(home=tmp_path))
    items = list(range(90))  # every third element fails: 30 failures, 60 successes
    spec = TaskSpec(name="inv", code="out = 1 // (item % 3)", inputs=("item",), outputs=("out",))
    request = RunRequest(
        spec=spec,
        config=TaskConfig(executor="inline"),
        inputs={"items": engine.put_value(items, "input 'items'")},
        values={"items": items},
        map=MapSpec("items", "item", min_success_ratio=0.5),
    )
    execution_id = engine.run_task(request).execution.id
    engine.close()

    code, table = cli(tmp_path, "executions", "show", execution_id)
    assert code == 0
    assert "map of 90: 60 done, 30 failed" in table
    rows = [line for line in table.splitlines() if "│ inv[" in line]
    assert len(rows) == _ELEMENT_ROWS < 30
    assert all("failed" in row for row in rows)
    assert rows[0].startswith("│ inv[0] ")
    assert f"inv: {90 - _ELEMENT_ROWS} of 90 elements not listed (--elements)" in table
    code, every = cli(tmp_path, "executions", "show", execution_id, "--elements")
    assert len([line for line in every.splitlines() if "│ inv[" in line]) == 90
    assert "not listed" not in every
    shown = json.loads(cli(tmp_path, "executions", "show", execution_id, "--json")[1])
    assert len([n for n in shown["nodes"] if n.startswith("inv[")]) == 90
    code, out = cli(tmp_path, "logs", execution_id, "inv[200]")
    assert code == 1 and "nodes: inv, inv[0..89]" in out  # not 91 names
    # The map's list is collected from its elements: it names no attempt (not "attempt 0").
    code, tree = cli(tmp_path, "lineage", shown["nodes"]["inv"]["outputs"]["out"])
    assert f"<- inv @ {spec.version()[:12]}  (execution {execution_id})" in tree
    code, logged = cli(tmp_path, "executions", "show", execution_id, "--events")
    lines = logged.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:3] == ["seq", "time", "kind"])
    events = [line.split() for line in lines[header + 1 :]]
    assert len(events) == len(shown_events(tmp_path, execution_id))
    assert events[0][0] == "1" and events[0][3] == "execution_created"
    assert ["attempt_failed", "inv[0]", "1"] in [e[3:] for e in events]
    assert events[-1][3:] == ["execution_succeeded"]


def shown_events(home: Path, execution_id: str) -> list[dict]:
    out = cli(home, "executions", "show", execution_id, "--events", "--json")[1]
    return json.loads(out)["events"]


def test_cache_list_shows_the_newest_up_to_a_limit(tmp_path: Path) -> None:
    engine = LocalEngine(Config(home=tmp_path))
    spec = TaskSpec(name="inc", code="y = x + 1", inputs=("x",), outputs=("y",))
    for x in range(4):
        ref = engine.put_value(x, "input 'x'")
        engine.run_task(
            RunRequest(
                spec=spec,
                config=TaskConfig(executor="inline", cache=True),
                inputs={"x": ref},
                values={"x": x},
            )
        )
    engine.close()
    newest = json.loads(cli(tmp_path, "cache", "list", "--json")[1])
    assert len(newest) == 4
    two = json.loads(cli(tmp_path, "cache", "list", "--limit", "2", "--json")[1])
    assert two == newest[:2]
    assert len(json.loads(cli(tmp_path, "cache", "list", "--limit", "0", "--json")[1])) == 4
    code, table = cli(tmp_path, "cache", "list", "--limit", "3")
    assert code == 0 and table.count("│ inc ") == 3
    assert "the newest 3; there are more (--limit N, or 0 for all)" in table
    assert "there are more" not in cli(tmp_path, "cache", "list", "--limit", "4")[1]


def test_max_parallel_below_one_is_refused(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, out = cli(home, "recover", "whatever", "--max-parallel", "0")
    assert code == 2 and "'--max-parallel': 0 is not in the range x>=1" in out
    for args, least in (
        (("executions", "list", "--limit", "-2"), 0),  # (SQLite took it as no limit at all)
        (("logs", "x", "y", "--attempt", "0"), 1),  # (it read the last attempt instead)
        (("server", "--max-running", "0"), 1),  # (it was ignored)
    ):
        code, out = cli(home, *args)
        assert code == 2 and f"is not in the range x>={least}" in out, args
    from papercrane.backend.errors import ConfigError
    from papercrane.config import Papercrane

    for bad in ("abc", "0", "-3"):
        monkeypatch.setenv("PAPERCRANE_MAX_PARALLEL", bad)
        with pytest.raises(ConfigError, match=f"PAPERCRANE_MAX_PARALLEL='{bad}': give how many"):
            _ = Papercrane().max_parallel
    monkeypatch.setenv("PAPERCRANE_MAX_PARALLEL", " 3 ")
    assert Papercrane().max_parallel == 3


@pytest.mark.parametrize(
    ("file", "name"),
    [
        ("quickstart.ipynb", "quickstart"),
        ("My Analysis (v2).ipynb", "My_Analysis_v2"),
        ("Ünï code.ipynb", "Uni_code"),
        ("2024-report.ipynb", "_2024-report"),
        ("日本語.ipynb", "notebook"),
    ],
)
def test_a_notebooks_workflow_name_is_one_a_server_takes(file: str, name: str) -> None:
    import re

    from papercrane.backend.config import NAME_PATTERN, workflow_name

    assert workflow_name(Path("/some/where") / file) == name
    assert re.match(NAME_PATTERN, name)


def test_a_token_for_a_project_no_server_takes_is_refused(tmp_path: Path) -> None:
    code, out = cli(tmp_path, "token", "create", "--project", "bad name", "--role", "read")
    assert code != 0
    assert "project 'bad name' is not usable" in out and "it comes from --project" in out
    code, out = cli(tmp_path, "token", "list", "--json")
    assert code == 0 and json.loads(out) == []  # nothing was stored
    code, out = cli(tmp_path, "token", "create", "--project", "pricing", "--role", "read")
    assert code == 0 and out.startswith("pc_")


LONG_NAME = "estimate_the_quarterly_demand_per_region_with_the_seasonal_model"


def _with_long_name(home: Path) -> None:
    engine = LocalEngine(Config(home=home))
    spec = TaskSpec(name=LONG_NAME, code="z = 2", inputs=(), outputs=("z",))
    cfg = TaskConfig(executor="inline", cache=True)
    engine.run_task(RunRequest(spec=spec, config=cfg, inputs={}, values={}))
    engine.close()


def test_tables_piped_into_a_file_are_never_cut(home: Path) -> None:
    """Not a terminal and no COLUMNS: rich would lay tables out in 80 columns."""
    _with_long_name(home)
    runner = CliRunner()
    ids = [r["id"] for r in json.loads(cli(home, "executions", "list", "--json")[1])]
    out = runner.invoke(main, ["--home", str(home), "executions", "list"], env={"COLUMNS": None})
    assert out.exit_code == 0
    assert LONG_NAME in out.output
    assert all(i in out.output for i in ids)
    cached = runner.invoke(main, ["--home", str(home), "cache", "list"], env={"COLUMNS": None})
    makers = {r["execution_id"] for r in json.loads(cli(home, "cache", "list", "--json")[1])}
    assert makers and all(m in cached.output for m in makers)


def _in_terminal(home: Path, *args: str, columns: int = 80) -> str:
    """What a terminal 80 columns wide shows (rich's TTY_COMPATIBLE: a terminal without
    one), its bold headers' escapes removed."""
    terminal = {"TTY_COMPATIBLE": "1", "NO_COLOR": "1", "COLUMNS": str(columns)}
    out = CliRunner().invoke(main, ["--home", str(home), *args], env=terminal).output
    return re.sub(r"\x1b\[[0-9;]*m", "", out)


def test_tables_in_a_narrow_terminal_keep_ids_whole(home: Path) -> None:
    _with_long_name(home)
    out = _in_terminal(home, "executions", "list")
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 80
    ids = [r["id"] for r in json.loads(cli(home, "executions", "list", "--json")[1])]
    assert all(i in out for i in ids)
    # The one project and domain is said once, under the table, not in a column.
    assert "project/domain" not in out
    assert lines[-1].strip() == "in default/development"
    # A long name folds onto more lines instead of being cut with an ellipsis.
    assert "…" not in out
    assert LONG_NAME[:10] in out and LONG_NAME[-8:] in out

    out = _in_terminal(home, "cache", "list")
    assert max(len(line) for line in out.splitlines()) <= 80
    makers = {r["execution_id"] for r in json.loads(cli(home, "cache", "list", "--json")[1])}
    assert all(m in out for m in makers)


def test_empty_listings_say_so(home: Path, tmp_path: Path) -> None:
    assert cli(home, "executions", "list", "--project", "nope") == (
        0,
        "no executions with --project nope\n",
    )
    # A --task that matches nothing (a typo?) names the tasks that have entries.
    assert cli(home, "cache", "list", "--task", "nope") == (
        0,
        "no cache entries with --task nope (tasks with cache entries: hello)\n",
    )
    assert cli(home, "cache", "clear", "--task", "helo") == (
        0,
        "cleared 0 cache entries of task 'helo' in project default in domain development "
        "(tasks with cache entries there: hello)\n",
    )
    code, out = cli(home, "cache", "clear", "--task", "helo", "--project", "other", "--json")
    assert json.loads(out) == {"cleared": 0, "project": "other", "domain": "development"}
    empty = tmp_path / "empty-home"
    LocalEngine(Config(home=empty)).close()
    assert cli(empty, "executions", "list") == (0, "no executions yet\n")


def test_a_home_where_nothing_ran_is_named_not_made(tmp_path: Path) -> None:
    """A mistyped --home or PAPERCRANE_HOME was made, empty, by a command that only
    reads, which then said "no executions yet", as if the history were gone. A listing
    (or clearing the cache) still finds nothing, exit 0, [] for scripts; a command that
    names a record is refused naming the home."""
    typo = tmp_path / "papercarne"
    said = (
        f"nothing has run with the papercrane home {typo} (from --home): it has no "
        f"database yet ({typo / 'papercrane.db'}); check the folder, or run a notebook or "
        "task first"
    )
    for args in (
        ("executions", "show", "abcd"),
        ("logs", "abcd", "x"),
        ("lineage", "abcdef"),
        ("recover", "abcd"),
    ):
        assert cli(typo, *args) == (1, f"Error: {said}\n"), args
    assert cli(typo, "executions", "list") == (0, f"no executions: {said}\n")
    assert cli(typo, "cache", "list") == (0, f"no cache entries: {said}\n")
    assert cli(typo, "cache", "clear") == (
        0,
        f"cleared 0 cache entries in project default in domain development: {said}\n",
    )
    assert cli(typo, "executions", "list", "--json") == (0, "[]\n")
    assert cli(typo, "cache", "list", "--json") == (0, "[]\n")
    assert not typo.exists()
    result = CliRunner().invoke(main, ["lineage", "abcdef"], env={"PAPERCRANE_HOME": str(typo)})
    assert result.exit_code == 1 and f"{typo} (from PAPERCRANE_HOME)" in result.output


def test_logs_of_a_cache_hit_are_those_of_the_attempt_that_made_its_outputs(home: Path) -> None:
    rows = json.loads(cli(home, "executions", "list", "--json")[1])
    first = next(r["id"] for r in rows if r["status"] == "succeeded")
    hit = next(r["id"] for r in rows if r["status"] == "cached")
    result = CliRunner().invoke(main, ["--home", str(home), "logs", hit, "hello"])
    assert result.exit_code == 0
    assert result.stdout == "hi\n"
    assert f"hello was cached in {hit}: these are the logs of execution {first}" in result.stderr
    data = json.loads(cli(home, "logs", hit, "hello", "--json")[1])
    assert (data["execution_id"], data["node"], data["attempt"], data["text"]) == (
        first,
        "hello",
        1,
        "hi\n",
    )
    assert data["via"] == {"execution_id": hit, "node": "hello", "status": "cached"}


def test_users_text_in_brackets_is_printed_as_it_is_not_read_as_markup(tmp_path: Path) -> None:
    """An error message, a value's preview or a task name with ``[/data]`` or ``[bold]``
    in it: rich read it as its markup, and ``executions show`` and ``lineage`` ended in
    a MarkupError traceback (or dropped the brackets)."""
    engine = LocalEngine(Config(home=tmp_path))
    cfg = TaskConfig(executor="inline")
    paths = TaskSpec(name="paths", code="p = ['[/data]', '[bold]x']", inputs=(), outputs=("p",))
    made = engine.run_task(RunRequest(spec=paths, config=cfg, inputs={}, values={}))
    code = "raise FileNotFoundError('no file at [/data/in.csv] ([bold]see[/bold] docs)')"
    bad = TaskSpec(name="bad", code=code, inputs=(), outputs=("y",))
    with pytest.raises(TaskFailed):
        engine.run_task(RunRequest(spec=bad, config=cfg, inputs={}, values={}))
    engine.close()
    rows = json.loads(cli(tmp_path, "executions", "list", "--json")[1])
    failed = next(r["id"] for r in rows if r["status"] == "failed")
    code, out = cli(tmp_path, "executions", "show", failed)
    assert code == 0, out
    message = "no file at [/data/in.csv] ([bold]see[/bold] docs)"
    assert f"FileNotFoundError: {message}" in out
    code, out = cli(tmp_path, "lineage", made.outputs["p"].id)
    assert code == 0, out
    assert "p = ['[/data]', '[bold]x']" in out
    code, out = cli(tmp_path, "cache", "clear", "--task", "[/x]")
    assert (code, out) == (
        0,
        "cleared 0 cache entries of task '[/x]' in project default in domain development "
        "(no task has cache entries there)\n",
    )


def test_an_attempt_the_node_never_made_is_refused_saying_which_it_made(home: Path) -> None:
    """``--attempt`` past the last names the attempts there are (it said only "no
    attempt N"), and on a cache hit it is one of the attempts that made its outputs
    (it was refused: the hit itself ran none)."""
    rows = json.loads(cli(home, "executions", "list", "--json")[1])
    first = next(r["id"] for r in rows if r["status"] == "succeeded")
    hit = next(r["id"] for r in rows if r["status"] == "cached")
    code, out = cli(home, "logs", first, "hello", "--attempt", "3")
    assert code == 1
    assert out == (
        f"Error: 'hello' made attempt 1 in execution {first}, not 3 "
        "(leave --attempt out for the last)\n"
    )
    result = CliRunner().invoke(main, ["--home", str(home), "logs", hit, "hello", "--attempt", "1"])
    assert (result.exit_code, result.stdout) == (0, "hi\n")
    assert f"these are the logs of execution {first}, node hello, attempt 1" in result.stderr
    code, out = cli(home, "logs", hit, "hello", "--attempt", "2")
    assert code == 1 and f"'hello' made attempt 1 in execution {first}, not 2" in out


def test_logs_of_a_node_that_failed_before_its_first_attempt_say_why(tmp_path: Path) -> None:
    """It made no attempt and reuses no one's outputs: the answer was that "the one
    that made its outputs is not recorded", as for a cache hit whose source is gone."""
    from papercrane.backend.engine import WorkflowRequest
    from papercrane.backend.errors import WorkflowFailed
    from papercrane.backend.workflow import CellTask, MapSpec, assemble

    engine = LocalEngine(Config(home=tmp_path))
    spec = TaskSpec(name="m", code="out = item", inputs=("item",), outputs=("out",))
    cells = [
        CellTask(task=spec, config=TaskConfig(executor="inline"), map=MapSpec("items", "item"))
    ]
    request = WorkflowRequest(
        spec=assemble("wf", cells), params={"items": engine.put_value(5, "items")}
    )
    with pytest.raises(WorkflowFailed) as failed:
        engine.run_workflow(request)
    engine.close()
    code, out = cli(tmp_path, "logs", failed.value.execution_id, "m")
    assert code == 1
    assert out.startswith(
        f"Error: 'm' made no attempt in {failed.value.execution_id} (failed), so it has no "
        "logs; it failed before its first attempt: TypeError: --map items: 'items' is an int"
    ), out
    assert "made its outputs" not in out


def test_lineage_says_where_a_chain_ends_and_where_a_step_was_shown(tmp_path: Path) -> None:
    """Two outputs of one task read by one: the second's producer is listed without its
    inputs (shown under the first), which read as a task with none; a value no task made
    was "? = 1", with nothing under it. Both say what they are, as %lineage does."""
    from papercrane.backend.engine import WorkflowRequest
    from papercrane.backend.workflow import CellTask, assemble

    engine = LocalEngine(Config(home=tmp_path))
    cfg = TaskConfig(executor="inline")
    load = TaskSpec(name="load", code="a = n + 1\nb = n + 2", inputs=("n",), outputs=("a", "b"))
    join = TaskSpec(name="join", code="c = a * b", inputs=("a", "b"), outputs=("c",))
    spec = assemble("wf", [CellTask(task=load, config=cfg), CellTask(task=join, config=cfg)])
    n = engine.put_value(1, "n")
    result = engine.run_workflow(WorkflowRequest(spec=spec, params={"n": n}, param_values={"n": 1}))
    engine.close()
    code, out = cli(tmp_path, "lineage", result.nodes["join"].outputs["c"].id)
    assert code == 0, out
    lines = out.splitlines()
    steps = [line for line in lines if "<- load @ " in line]
    assert len(steps) == 2 and not steps[0].endswith("see above") and steps[1].endswith("see above")
    assert sum("<- notebook value or workflow parameter" in line for line in lines) == 1
    code, out = cli(tmp_path, "lineage", n.id)
    assert code == 0
    assert out.splitlines()[1:] == [
        f"└── 1  (int, {n.id[:12]})",
        "    └── <- notebook value or workflow parameter",
    ]


def _waiting_for(flag: Path, first: str, second: str) -> WorkflowSpec:
    """A two-node workflow whose second node fails until ``flag`` exists."""
    from papercrane.backend.workflow import CellTask, assemble

    cfg = TaskConfig(executor="inline")
    a = TaskSpec(name=first, code="print('made x')\nx = 1", inputs=(), outputs=("x",))
    b = TaskSpec(
        name=second,
        code=f"import os\nassert os.path.exists({str(flag)!r}), 'not yet'\ny = x + 1",
        inputs=("x",),
        outputs=("y",),
    )
    return assemble("wf", [CellTask(task=a, config=cfg), CellTask(task=b, config=cfg)])


def test_logs_of_a_recovered_node_are_those_of_the_execution_it_came_from(
    tmp_path: Path,
) -> None:
    from papercrane.backend.engine import WorkflowRequest
    from papercrane.backend.errors import WorkflowFailed

    flag = tmp_path / "fixed"
    engine = LocalEngine(Config(home=tmp_path))
    spec = _waiting_for(flag, "a", "b")
    with pytest.raises(WorkflowFailed) as failed:
        engine.run_workflow(WorkflowRequest(spec=spec, params={}, param_values={}))
    flag.write_text("ok")
    again = engine.recover(failed.value.execution_id).execution.id
    engine.close()
    code, out = cli(tmp_path, "logs", again)  # two nodes: which one is asked
    assert code == 2 and f"has 2 nodes: give one, e.g. papercrane logs {again} a" in out, out
    data = json.loads(cli(tmp_path, "logs", again, "a", "--json")[1])
    assert (data["execution_id"], data["node"], data["text"]) == (
        failed.value.execution_id,
        "a",
        "made x\n",
    )
    assert data["via"]["status"] == "recovered"


def test_recover_of_an_execution_that_did_not_fail_says_what_it_was(home: Path) -> None:
    rows = json.loads(cli(home, "executions", "list", "--json")[1])
    for status, said in (("succeeded", "succeeded"), ("cached", "was a cache hit")):
        done = next(r["id"] for r in rows if r["status"] == status)
        code, out = cli(home, "recover", done)
        assert code != 0
        assert f"execution {done} {said}; there is nothing to recover" in out


def test_executions_list_by_name(home: Path) -> None:
    rows = json.loads(cli(home, "executions", "list", "--name", "hello", "--json")[1])
    assert [(r["name"], r["status"]) for r in rows] == [("hello", "cached"), ("hello", "succeeded")]
    assert cli(home, "executions", "list", "--name", "nope", "--status", "failed") == (
        0,
        "no executions with --status failed --name nope (recent executions' names: bad, hello)\n",
    )


@pytest.mark.parametrize(
    ("args", "env", "said"),
    [
        (["db", "upgrade", "--url", "bogus://x"], {}, "URL 'bogus://x' from PAPERCRANE_DB"),
        (["executions", "list"], {"PAPERCRANE_DB": "bogus://x"}, "database URL 'bogus://x'"),
        (["executions", "list"], {"PAPERCRANE_DB": "no-url"}, "database URL 'no-url'"),
        (["executions", "list"], {"PAPERCRANE_STORAGE": "bogus://x"}, "storage URL 'bogus://x'"),
        (["cache", "list"], {"PAPERCRANE_DB": "sqlite:///{notes}"}, "database file {notes}"),
        (["db", "upgrade", "--url", "sqlite:///{notes}"], {}, "database file {notes}"),
    ],
)
def test_an_unusable_database_or_storage_setting_is_one_line(
    tmp_path: Path, args: list[str], env: dict[str, str], said: str
) -> None:
    notes = tmp_path / "notes.db"
    notes.write_text("not a database\n")
    args = [a.format(notes=notes) for a in args]
    env = {k: v.format(notes=notes) for k, v in env.items()}
    result = CliRunner().invoke(main, ["--home", str(tmp_path / "home"), *args], env=env)
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert said.format(notes=notes) in lines[0]
    setting = "PAPERCRANE_STORAGE" if "STORAGE" in str(env) else "PAPERCRANE_DB"
    assert setting in lines[0] and "PAPERCRANE_HOME" in lines[0]


@pytest.mark.parametrize(
    ("option", "said"),
    [("--db", "database URL 'bogus://x'"), ("--storage", "storage URL 'bogus://x")],
)
def test_a_server_with_an_unusable_setting_says_so_before_it_serves(
    tmp_path: Path, option: str, said: str
) -> None:
    pytest.importorskip("uvicorn")
    args = ["--home", str(tmp_path / "home"), "server", "--port", "1", option, "bogus://x"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and said in lines[0]


def _cached_in(home: Path, project: str, domain: str = "development") -> None:
    engine = LocalEngine(Config(home=home))
    spec = TaskSpec(name="prepare", code="y = 1", inputs=(), outputs=("y",))
    cfg = TaskConfig(executor="inline", cache=True)
    engine.run_task(
        RunRequest(spec=spec, config=cfg, inputs={}, values={}, project=project, domain=domain)
    )
    engine.close()


def test_cache_list_and_clear_take_a_project_and_domain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for project, domain in (("pricing", "development"), ("ranking", "development")):
        _cached_in(tmp_path, project, domain)
    _cached_in(tmp_path, "pricing", "staging")
    monkeypatch.delenv("PAPERCRANE_PROJECT", raising=False)
    monkeypatch.delenv("PAPERCRANE_DOMAIN", raising=False)

    def scopes(*args: str) -> list[tuple[str, str]]:
        code, out = cli(tmp_path, "cache", "list", "--task", "prepare", *args, "--json")
        assert code == 0, out
        return sorted((r["project"], r["domain"]) for r in json.loads(out))

    assert scopes() == [
        ("pricing", "development"),
        ("pricing", "staging"),
        ("ranking", "development"),
    ]
    assert scopes("--project", "pricing") == [("pricing", "development"), ("pricing", "staging")]
    assert scopes("--project", "pricing", "--domain", "staging") == [("pricing", "staging")]
    # Rows of several projects say which is which; one project is said once, below.
    out = cli(tmp_path, "cache", "list", "--task", "prepare")[1]
    assert "project/domain" in out and "ranking/development" in out
    out = cli(tmp_path, "cache", "list", "--project", "ranking")[1]
    assert "project/domain" not in out and out.rstrip().endswith("in ranking/development")

    # Clearing is scoped: to --project/--domain, else $PAPERCRANE_PROJECT/DOMAIN.
    code, out = cli(tmp_path, "cache", "clear", "--task", "prepare", "--project", "pricing")
    assert (code, out) == (
        0,
        "cleared 1 cache entry of task 'prepare' in project pricing in domain development\n",
    )
    assert scopes() == [("pricing", "staging"), ("ranking", "development")]
    result = CliRunner().invoke(
        main,
        ["--home", str(tmp_path), "cache", "clear", "--json"],
        env={"PAPERCRANE_PROJECT": "ranking"},
    )
    assert json.loads(result.output) == {
        "cleared": 1,
        "project": "ranking",
        "domain": "development",
    }
    assert scopes() == [("pricing", "staging")]
    # '*' (as for an operator's token) stands for every project or domain.
    code, out = cli(tmp_path, "cache", "clear", "--project", "*", "--domain", "*")
    assert (code, out) == (0, "cleared 1 cache entry in every project in every domain\n")
    assert scopes() == []
    code, out = cli(tmp_path, "cache", "clear", "--project", "no way")
    assert code == 1
    assert "project 'no way' is not usable" in out and "--project" in out


def test_an_execution_is_found_by_the_start_of_its_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from papercrane.backend.engine import WorkflowRequest
    from papercrane.backend.errors import WorkflowFailed

    # Ids are random: these are chosen so that two share their first five characters.
    ids = iter(["645a1000aaaa0001", "9ea5c000bbbb0002", "9ea5d000cccc0003"])
    monkeypatch.setattr(LocalEngine, "new_execution_id", staticmethod(lambda: next(ids)))
    flag = tmp_path / "fixed"
    engine = LocalEngine(Config(home=tmp_path))
    spec = _waiting_for(flag, "make", "check")
    with pytest.raises(WorkflowFailed):
        engine.run_workflow(WorkflowRequest(spec=spec, params={}, param_values={}))
    hello = TaskSpec(name="hello", code="print('hi')", inputs=(), outputs=())
    for _ in range(2):
        engine.run_task(
            RunRequest(spec=hello, config=TaskConfig(executor="inline"), inputs={}, values={})
        )
    engine.close()

    code, out = cli(tmp_path, "executions", "show", "645a", "--json")
    assert code == 0 and json.loads(out)["id"] == "645a1000aaaa0001"
    assert cli(tmp_path, "logs", "645A", "make") == (0, "made x\n")
    assert cli(tmp_path, "executions", "logs", "9ea5c", "hello")[1] == "hi\n"
    # Too short to look for, or the start of no id: the error says what to give.
    for given in ("645", "ffff"):
        code, out = cli(tmp_path, "executions", "show", given)
        assert code == 1
        assert f"no execution '{given}'; give its id or at least 4 of its first" in out
    # The start of several: they are listed.
    code, out = cli(tmp_path, "logs", "9ea5", "hello")
    assert code == 1
    assert "'9ea5' is the start of several executions' ids" in out
    assert "9ea5c000bbbb0002" in out and "9ea5d000cccc0003" in out
    # recover takes one too, and reports the id it recovered whole.
    flag.write_text("ok")
    ids = iter(["77770000dddd0004"])
    code, out = cli(tmp_path, "recover", "645a1", "--json")
    assert code == 0, out
    data = json.loads(out)
    assert (data["recovered_from"], data["status"]) == ("645a1000aaaa0001", "succeeded")


def test_a_recovery_that_fails_prints_its_execution_and_traceback(tmp_path: Path) -> None:
    from papercrane.backend.engine import WorkflowRequest
    from papercrane.backend.errors import WorkflowFailed
    from papercrane.backend.workflow import CellTask, assemble

    engine = LocalEngine(Config(home=tmp_path))
    cfg = TaskConfig(executor="inline")
    a = TaskSpec(name="first", code="x = 1", inputs=(), outputs=("x",))
    b = TaskSpec(
        name="second", code="raise ValueError(f'boom at {x - 1}')", inputs=("x",), outputs=("y",)
    )
    c = TaskSpec(name="third", code="z = y", inputs=("y",), outputs=("z",))
    tasks = [CellTask(task=t, config=cfg) for t in (a, b, c)]
    with pytest.raises(WorkflowFailed) as failed:
        engine.run_workflow(WorkflowRequest(spec=assemble("wf", tasks), params={}, param_values={}))
    engine.close()
    origin = failed.value.execution_id

    # For scripts: the new execution's id, status and failure on stdout, and exit 1.
    result = CliRunner().invoke(main, ["--home", str(tmp_path), "recover", origin, "--json"])
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["status"] == "failed" and data["recovered_from"] == origin
    assert data["id"] != origin and len(data["id"]) == 16
    assert data["nodes"] == {"first": "recovered", "second": "failed", "third": "skipped"}
    error = data["failed"]["second"]["error"]
    assert (error["type"], error["message"]) == ("ValueError", "boom at 0")
    assert data["failed"]["second"]["attempts"] == 1
    assert "raise ValueError" in error["traceback"]
    # For people: the failing task, its attempt and the user's traceback, as `run` says.
    result = CliRunner().invoke(main, ["--home", str(tmp_path), "recover", data["id"]])
    assert result.exit_code == 1
    again = json.loads(cli(tmp_path, "executions", "list", "--json")[1])[0]["id"]
    assert f"execution {again}: failed" in result.stderr
    assert f"task 'second' failed in execution {again}, attempt 1" in result.stderr
    assert "raise ValueError(f'boom at {x - 1}')" in result.stderr
    assert "ValueError: boom at 0" in result.stderr
    assert f"recover with: papercrane recover {again}" in result.stderr
    assert "papercrane/backend" not in result.stderr  # the user's frames only


def test_executions_show_prints_the_tracebacks_of_failed_tasks(home: Path) -> None:
    rows = json.loads(cli(home, "executions", "list", "--json")[1])
    failed, ok = rows[0]["id"], rows[-1]["id"]
    code, out = cli(home, "executions", "show", failed)
    assert code == 0
    table, _, below = out.partition(f"task 'bad' failed in execution {failed}, attempt 1")
    assert "ZeroDivisionError: division by zero" in table  # (its line in the table)
    assert "Traceback (most recent call last)" in below
    assert 'File "<task bad>"' in below
    assert below.rstrip().endswith("ZeroDivisionError: division by zero")
    assert "Traceback" not in cli(home, "executions", "show", ok)[1]
    # The help shows options as people type them, not reStructuredText.
    assert "``" not in cli(home, "executions", "show", "--help")[1]
    result = CliRunner().invoke(main, ["--home", str(home), "logs", failed, "bad", "--stderr"])
    assert result.exit_code == 0 and result.stdout == ""
    assert "it failed with ZeroDivisionError: division by zero" in result.stderr
    assert f"Its traceback: papercrane executions show {failed}" in result.stderr


def test_tables_in_a_60_column_terminal_stay_readable(home: Path) -> None:
    """ids and times whole, names folded but no narrower than 14 characters: the least
    needed columns are left out first, and the caption says so."""
    _with_long_name(home)
    ids = [r["id"] for r in json.loads(cli(home, "executions", "list", "--json")[1])]
    out = _in_terminal(home, "executions", "list", columns=60)
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 60
    header = lines[1]
    assert "name" in header and "status" in header and "…" not in out
    assert all(i in out for i in ids)
    assert LONG_NAME[:14] in out and "succeeded" in out
    assert "duration left out for the width: see --json" in out

    out = _in_terminal(home, "cache", "list", columns=60)
    assert max(len(line) for line in out.splitlines()) <= 60
    assert LONG_NAME[:14] in out and "hello" in out and "…" not in out
    makers = {r["execution_id"] for r in json.loads(cli(home, "cache", "list", "--json")[1])}
    assert all(m in out for m in makers)

    made = next(
        i
        for i, r in zip(ids, json.loads(cli(home, "executions", "list", "--json")[1]))
        if r["name"] == LONG_NAME
    )
    out = _in_terminal(home, "executions", "show", made, columns=60)
    assert max(len(line) for line in out.splitlines()) <= 60
    assert LONG_NAME[:14] in out and "succeeded" in out and "…" not in out


def test_an_empty_column_gives_its_width_to_a_folded_one(home: Path) -> None:
    """A failed task has no outputs: in 80 columns its empty outputs column stayed while
    the error beside it folded. Left out, it is not named in the caption (nothing was
    lost)."""
    failed = json.loads(cli(home, "executions", "list", "--json")[1])[0]["id"]
    out = _in_terminal(home, "executions", "show", failed, columns=80)
    table = out.partition("task 'bad' failed")[0]
    header = next(line for line in table.splitlines() if "node" in line and "status" in line)
    assert "outputs" not in header and "error" in header, out
    row = next(line for line in table.splitlines() if line.startswith("│ bad "))
    assert "ZeroDivisionError: division by zero" in row  # (whole, on its line)
    assert "left out" not in table
    # With room, it is shown as before.
    wide = _in_terminal(home, "executions", "show", failed, columns=200)
    assert "outputs" in wide


def test_executions_list_takes_a_notebook_file_as_its_workflow_name(home: Path) -> None:
    """``--name report.ipynb`` (or a path to it) is the notebook's workflow, named as
    `run` names it; it found nothing. A name that matches nothing (a task of a workflow,
    which is no execution's name) says which names there are."""
    hello = [r["id"] for r in json.loads(cli(home, "executions", "list", "--json")[1])[1:]]
    for given in ("hello.ipynb", "some/folder/hello.ipynb"):
        code, out = cli(home, "executions", "list", "--name", given, "--json")
        assert code == 0 and [r["id"] for r in json.loads(out)] == hello, given
    assert cli(home, "executions", "list", "--name", "nope") == (
        0,
        "no executions with --name nope (recent executions' names: bad, hello)\n",
    )


def test_logs_gone_from_storage_are_not_shown_as_empty(home: Path) -> None:
    """A log recorded as stored but missing (deleted, or PAPERCRANE_STORAGE naming
    another storage) printed nothing and exited 0, as for an attempt that printed
    nothing. A stream the attempt did not write to is still empty, not an error."""
    rows = json.loads(cli(home, "executions", "list", "--json")[1])
    first = next(r["id"] for r in rows if r["status"] == "succeeded")
    (home / "store" / "runs" / first / "hello" / "1" / "stdout.log").unlink()
    code, out = cli(home, "logs", first, "hello")
    assert code == 1
    assert f"the stdout of node 'hello', attempt 1, in {first} was stored, but the storage" in out
    assert "PAPERCRANE_STORAGE" in out
    assert cli(home, "logs", first, "hello", "--stderr") == (0, "")


def test_logs_of_a_skipped_node_say_it_was_skipped_and_why(tmp_path: Path) -> None:
    from papercrane.backend.engine import WorkflowRequest
    from papercrane.backend.errors import WorkflowFailed
    from papercrane.backend.workflow import CellTask, assemble

    engine = LocalEngine(Config(home=tmp_path))
    cfg = TaskConfig(executor="inline")
    a = TaskSpec(name="second", code="raise ValueError('boom')\ny = 1", inputs=(), outputs=("y",))
    b = TaskSpec(name="third", code="z = y", inputs=("y",), outputs=("z",))
    tasks = [CellTask(task=t, config=cfg) for t in (a, b)]
    with pytest.raises(WorkflowFailed) as failed:
        engine.run_workflow(WorkflowRequest(spec=assemble("wf", tasks), params={}, param_values={}))
    engine.close()
    code, out = cli(tmp_path, "logs", failed.value.execution_id, "third")
    assert code == 1
    assert f"'third' was skipped in {failed.value.execution_id}: it never ran" in out
    assert "no logs; the execution stopped at an earlier failure" in out  # (its event's reason)
    assert "made its outputs" not in out


def test_polish_of_limits_options_and_empty_listings(home: Path, tmp_path: Path) -> None:
    rows = json.loads(cli(home, "executions", "list", "--limit", "0", "--json")[1])
    assert len(rows) == 3  # 0 is all, as for cache list
    assert len(json.loads(cli(home, "executions", "list", "--limit", "1", "--json")[1])) == 1
    # db upgrade takes --db, as token and server do, and still --url.
    for option in ("--db", "--url"):
        url = f"sqlite:///{tmp_path / option[2:]}.db"
        code, out = cli(home, "db", "upgrade", option, url)
        assert code == 0 and out.startswith("schema at revision"), out
    help_text = cli(home, "db", "upgrade", "--help")[1]
    assert "$PAPERCRANE_DB" in help_text
    assert cli(tmp_path / "fresh", "token", "list") == (
        0,
        "no tokens yet (papercrane token create --project P)\n",
    )


def test_an_artifact_too_short_to_look_for_says_how_long(home: Path) -> None:
    show = json.loads(cli(home, "executions", "list", "--json")[1])[-1]["id"]
    (artifact,) = json.loads(cli(home, "executions", "show", show, "--json")[1])["nodes"]["hello"][
        "outputs"
    ].values()
    assert cli(home, "lineage", artifact[:6])[0] == 0
    code, out = cli(home, "lineage", artifact[:5])
    assert code == 1
    assert f"no artifact '{artifact[:5]}'; give its id or at least 6 of its first" in out
    code, out = cli(home, "lineage", "best")
    assert code == 1 and "papercrane executions show EXECUTION --json" in out


def test_a_kubernetes_server_with_a_bad_k8s_setting_says_so_before_it_serves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = ["--home", str(tmp_path / "home"), "server", "--port", "1", "--executor", "kubernetes"]
    result = CliRunner().invoke(main, [*base, "--k8s-pending-timeout", "0"])
    assert result.exit_code == 2 and "'--k8s-pending-timeout': 0" in result.output
    monkeypatch.setenv("PAPERCRANE_K8S_TOLERATIONS", "[{bad")
    result = CliRunner().invoke(main, base)
    assert result.exit_code == 2, result.output
    assert "PAPERCRANE_K8S_TOLERATIONS is not JSON" in result.output
