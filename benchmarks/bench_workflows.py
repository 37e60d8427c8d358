"""papercrane's workflow benchmarks (issue 3). Run by ``run.py`` in the papercrane
benchmark environment, one benchmark per process, each with its own temporary
PAPERCRANE_HOME:

    python bench_workflows.py BENCH [--out FILE] [--quick] [--profile FILE] [--tmp DIR]

BENCH is one of:

- ``map-inline``: ``%%task --map xs --executor inline [--cache]`` over 1,000 elements
  through the real magic: no cache, all misses, all hits;
- ``map-local``: the same map with ``--executor local --map-concurrency <cores>`` over a
  smaller list (every element is a subprocess);
- ``chain-inline`` / ``chain-local``: a chain of 50 trivial tasks run as one workflow,
  through the engine API and through ``%workflow run``; the gaps between a node's
  ``attempt_succeeded`` and the next node's ``attempt_started`` come from the store's
  events;
- ``papermill``: notebooks/quickstart.ipynb re-run with papermill (all cache hits)
  against plain papermill on the same notebook with the magics removed;
- ``big``: a chain (and, smaller, a wide DAG) of trivial inline tasks registered and run
  through the engine API, at growing sizes up to 100,000 nodes, each size in its own
  process (``big-probe``), with time and peak memory.

Nothing is asserted about timings; results are checked (values, cache hits) so that a
figure never describes a run that did something else.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from typing import Any

from _common import (
    each_call_ms,
    fresh_dir,
    profile_call,
    quiet,
    summary,
    write_result,
)
from bench_papercrane import new_shell, run_cell, spawn_ms, task, use_fresh_home

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
QUICKSTART = os.path.join(REPO, "notebooks", "quickstart.ipynb")
MAP_CELL = "y = x + 1\n"


def _engine(ip: Any) -> Any:
    return ip.magics_manager.registry["PapercraneMagics"].session.engine


def _last_execution(engine: Any) -> str:
    return engine.list_executions(limit=1)[0]["id"]


def _kinds(engine: Any, execution_id: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for e in engine.events(execution_id):
        counts[e.kind.value] = counts.get(e.kind.value, 0) + 1
    return counts


def _profile_path(base: str | None, suffix: str) -> str | None:
    if not base:
        return None
    root, ext = os.path.splitext(base)
    return f"{root}-{suffix}{ext}"


def file_create_ms(n: int) -> dict[str, Any]:
    """What the file system charges for one small new file written the way storage
    writes one (a temporary file, then a rename into a two-level folder), in ms each:
    on a VM this alone can be a large share of a trivial task."""
    import uuid

    root = fresh_dir(os.environ["PAPERCRANE_HOME"], "fs-probe-")
    start = time.perf_counter_ns()
    os.makedirs(os.path.join(root, "tmp"))
    for i in range(n):
        name = uuid.uuid4().hex
        tmp = os.path.join(root, "tmp", name)
        with open(tmp, "wb") as f:
            f.write(b"%d" % i)
        folder = os.path.join(root, name[:2])
        os.makedirs(folder, exist_ok=True)
        os.replace(tmp, os.path.join(folder, name))
    elapsed = (time.perf_counter_ns() - start) / 1e6 / n
    shutil.rmtree(root, ignore_errors=True)
    return {"per_file_ms": elapsed, "files": n}


# -- 6. a 1,000-element map -------------------------------------------------------------
def bench_map_inline(args: argparse.Namespace) -> dict[str, Any]:
    n = 1000
    rounds = 3 if args.quick else 7
    ip = new_shell()
    ns = ip.user_ns
    flags = "--map xs --executor inline"
    with quiet():
        # The session's first task pays papercrane's deferred imports and creates the
        # store (row 2 reports that); a small map warms the map path too.
        run_cell(ip, "w = 1\nws = [1, 2, 3]")
        task(ip, "--executor inline", "z = w + 1\n")
        task(ip, "--map ws --executor inline --cache", "v = w + 1\n")

        def direct(xs: list[int]) -> list[int]:
            space = {}
            ys = []
            for x in xs:
                space["x"] = x
                exec(MAP_CELL, space)
                ys.append(space["y"])
            return ys

        def timed(flag: str, xs: list[int]) -> float:
            ns["xs"] = xs
            start = time.perf_counter_ns()
            task(ip, flag, MAP_CELL)
            elapsed = (time.perf_counter_ns() - start) / 1e6
            assert ns["y"] == [x + 1 for x in xs], "the map's outputs are wrong"
            return elapsed

        # A new list every round, so every element (and output) is a new value: with
        # --cache each is a miss, and either way its artifacts are written for the
        # first time. "same list" repeats one list without --cache: the artifacts exist
        # already, so that figure leaves out writing new files.
        offset = [10_000]

        def fresh() -> list[int]:
            offset[0] += n
            return list(range(offset[0], offset[0] + n))

        fixed = list(range(n))
        files = file_create_ms(n)
        direct_ms = each_call_ms(lambda: direct(fixed), reps=rounds, warmup=2)
        timed(flags, fixed)  # warm-up
        same = summary([timed(flags, fixed) for _ in range(rounds)])
        nocache = summary([timed(flags, fresh()) for _ in range(rounds)])
        misses = summary([timed(flags + " --cache", fresh()) for _ in range(rounds)])
        engine = _engine(ip)
        miss_counts = _kinds(engine, _last_execution(engine))
        last = ns["xs"]
        hits = summary([timed(flags + " --cache", last) for _ in range(rounds)])
        hit_counts = _kinds(engine, _last_execution(engine))
        miss_prof = _profile_path(args.profile, "miss")
        hit_prof = _profile_path(args.profile, "hit")
        if miss_prof:
            xs = fresh()
            profile_call(
                miss_prof, lambda: timed(flags + " --cache", xs), f"one {n}-element map, all misses"
            )
            profile_call(
                hit_prof, lambda: timed(flags + " --cache", xs), f"one {n}-element map, all hits"
            )
    return {
        "elements": n,
        "direct_loop_ms": direct_ms,
        "file_create": files,
        "nocache_ms": nocache,
        "nocache_same_list_ms": same,
        "miss_ms": misses,
        "hit_ms": hits,
        "per_element_miss_ms": misses["median"] / n,
        "per_element_hit_ms": hits["median"] / n,
        "last_miss_run_events": miss_counts,
        "last_hit_run_events": hit_counts,
    }


def bench_map_local(args: argparse.Namespace) -> dict[str, Any]:
    n = 40 if args.quick else 100
    cores = os.cpu_count() or 2
    miss_rounds, hit_rounds = (1, 2) if args.quick else (2, 5)
    ip = new_shell()
    ns = ip.user_ns
    flags = f"--map xs --executor local --map-concurrency {cores} --cache"
    spawn = spawn_ms([sys.executable, "-c", "pass"], n=5, rounds=3)
    with quiet():
        run_cell(ip, "w = 1\nws = [1, 2]")
        task(ip, "--executor local", "z = w + 1\n")  # engine start-up, first spawn
        task(ip, "--map ws --executor local --cache --map-concurrency 2", "v = w + 1\n")

        def timed(xs: list[int]) -> float:
            ns["xs"] = xs
            start = time.perf_counter_ns()
            task(ip, flags, MAP_CELL)
            elapsed = (time.perf_counter_ns() - start) / 1e6
            assert ns["y"] == [x + 1 for x in xs], "the map's outputs are wrong"
            return elapsed

        offset = [10_000]

        def fresh() -> list[int]:
            offset[0] += n
            return list(range(offset[0], offset[0] + n))

        misses = summary([timed(fresh()) for _ in range(miss_rounds)])
        engine = _engine(ip)
        miss_counts = _kinds(engine, _last_execution(engine))
        last = ns["xs"]
        hits = summary([timed(last) for _ in range(hit_rounds)])
        hit_counts = _kinds(engine, _last_execution(engine))
        if args.profile:
            xs = fresh()
            profile_call(args.profile, lambda: timed(xs), f"one {n}-element local map, all misses")
    return {
        "elements": n,
        "concurrency": cores,
        "bare_spawn_ms": spawn,
        "ideal_per_element_ms": spawn["median"] / cores,
        "miss_ms": misses,
        "hit_ms": hits,
        "per_element_miss_ms": misses["median"] / n,
        "per_element_hit_ms": hits["median"] / n,
        "last_miss_run_events": miss_counts,
        "last_hit_run_events": hit_counts,
    }


# -- 7. a chain of 50 trivial tasks --------------------------------------------------------
CHAIN = 50


def chain_spec(n: int, executor: str) -> Any:
    from papercrane.backend.model import TaskConfig, TaskSpec
    from papercrane.backend.workflow import CellTask, assemble

    config = TaskConfig(executor=executor)
    cells = []
    for k in range(n):
        src = "x" if k == 0 else f"y{k - 1}"
        spec = TaskSpec(name=f"t{k}", code=f"y{k} = {src} + 1\n", inputs=(src,), outputs=(f"y{k}",))
        cells.append(CellTask(task=spec, config=config))
    return assemble("chain", cells)


def wide_spec(n: int, executor: str) -> Any:
    from papercrane.backend.model import TaskConfig, TaskSpec
    from papercrane.backend.workflow import CellTask, assemble

    config = TaskConfig(executor=executor)
    cells = [
        CellTask(
            task=TaskSpec(
                name=f"t{k}", code=f"y{k} = x + {k}\n", inputs=("x",), outputs=(f"y{k}",)
            ),
            config=config,
        )
        for k in range(n)
    ]
    return assemble("wide", cells)


def chain_figures(engine: Any, execution_id: str, n: int) -> dict[str, Any]:
    """Transition gaps (attempt_succeeded of t_k -> attempt_started of t_k+1) and attempt
    spans (attempt_started -> attempt_succeeded) of one chain execution, from its events."""
    from papercrane.backend.model import EventKind

    started: dict[str, float] = {}
    succeeded: dict[str, float] = {}
    reported: dict[str, float] = {}
    evs = engine.events(execution_id)
    for e in evs:
        if e.kind is EventKind.ATTEMPT_STARTED:
            started.setdefault(e.node, e.ts)
        elif e.kind is EventKind.ATTEMPT_SUCCEEDED:
            succeeded[e.node] = e.ts
            reported[e.node] = float(e.payload.get("duration") or 0.0)
    assert len(started) == n and len(succeeded) == n, "not every node ran exactly once"
    gaps = [(started[f"t{k + 1}"] - succeeded[f"t{k}"]) * 1e3 for k in range(n - 1)]
    spans = [(succeeded[f"t{k}"] - started[f"t{k}"]) * 1e3 for k in range(n)]
    first = min(e.ts for e in evs)
    last = max(e.ts for e in evs)
    # The attempt span minus the duration the attempt itself reports (inline: the task
    # body and storing its outputs; local: the whole subprocess, timed by the executor):
    # what the scheduler does inside the span, e.g. the store commit it makes right
    # after emitting attempt_started.
    inside = [spans[k] - reported[f"t{k}"] * 1e3 for k in range(n)]
    return {
        "gaps_ms": gaps,
        "spans_ms": spans,
        "inside_span_ms": inside,
        "created_to_first_start_ms": (started["t0"] - first) * 1e3,
        "last_success_to_end_ms": (last - succeeded[f"t{n - 1}"]) * 1e3,
    }


def bench_chain(args: argparse.Namespace, executor: str) -> dict[str, Any]:
    from papercrane.backend.config import Config
    from papercrane.backend.engine import LocalEngine, WorkflowRequest

    quick, full = (3, 7) if executor == "inline" else (1, 3)
    rounds = quick if args.quick else full
    engine = LocalEngine(Config(home=os.environ["PAPERCRANE_HOME"]))
    spec = chain_spec(CHAIN, executor)
    seed = [0]

    def once() -> str:
        # A new x every run: every node's output is a new value (a new artifact to
        # write), as when a workflow runs on new data.
        seed[0] += 1000
        x = seed[0]
        ref = engine.put_value(x, "parameter 'x'")
        request = WorkflowRequest(
            spec=spec, params={"x": ref}, param_values={"x": x}, max_parallel=4
        )
        result = engine.run_workflow(request)
        assert result.nodes[f"t{CHAIN - 1}"].values[f"y{CHAIN - 1}"] == x + CHAIN
        return result.execution.id

    once()  # warm-up: imports, executor, registration of the 50 tasks
    files = file_create_ms(200)
    walls, gaps, spans, heads, tails, inside = [], [], [], [], [], []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        eid = once()
        walls.append((time.perf_counter_ns() - start) / 1e6)
        fig = chain_figures(engine, eid, CHAIN)
        gaps += fig["gaps_ms"]
        spans += fig["spans_ms"]
        inside += fig["inside_span_ms"]
        heads.append(fig["created_to_first_start_ms"])
        tails.append(fig["last_success_to_end_ms"])
    if args.profile:
        profile_call(
            _profile_path(args.profile, "engine"), once, f"one {CHAIN}-node chain, engine API"
        )
    engine.close()
    magic = chain_via_magic(args, executor)
    return {
        "nodes": CHAIN,
        "executor": executor,
        "rounds": rounds,
        "file_create": files,
        "engine_api": {
            "gap_ms": _dist(gaps),
            "attempt_span_ms": _dist(spans),
            "span_minus_reported_ms": _dist(inside),
            "wall_ms": summary(walls),
            "wall_per_node_ms": statistics.median(walls) / CHAIN,
            "created_to_first_start_ms": statistics.median(heads),
            "last_success_to_end_ms": statistics.median(tails),
        },
        "workflow_magic": magic,
    }


def chain_via_magic(args: argparse.Namespace, executor: str) -> dict[str, Any]:
    """The same chain as 50 ``%%task`` cells, then ``%workflow run`` (with its widget)."""
    ip = new_shell()
    rounds = 1 if (args.quick or executor == "local") else 3
    run_cell(ip, "x = 1")
    with quiet():
        for k in range(CHAIN):
            src = "x" if k == 0 else f"y{k - 1}"
            task(ip, f"t{k} --executor {executor}", f"y{k} = {src} + 1\n")
        engine = _engine(ip)
        walls, gaps, spans, inside = [], [], [], []
        for r in range(rounds):
            x = 10**7 + 1000 * r  # new values every run (and not the engine API run's)
            start = time.perf_counter_ns()
            ip.run_line_magic("workflow", f"run -p x={x}")
            walls.append((time.perf_counter_ns() - start) / 1e6)
            assert ip.user_ns[f"y{CHAIN - 1}"] == x + CHAIN
            eid = _last_execution(engine)
            fig = chain_figures(engine, eid, CHAIN)
            gaps += fig["gaps_ms"]
            spans += fig["spans_ms"]
            inside += fig["inside_span_ms"]
        if args.profile:
            profile_call(
                _profile_path(args.profile, "magic"),
                lambda: ip.run_line_magic("workflow", "run -p x=20000001"),
                f"one {CHAIN}-node chain, %workflow run",
            )
    return {
        "gap_ms": _dist(gaps),
        "attempt_span_ms": _dist(spans),
        "span_minus_reported_ms": _dist(inside),
        "wall_ms": summary(walls),
        "wall_per_node_ms": statistics.median(walls) / CHAIN,
    }


def _dist(samples: list[float]) -> dict[str, Any]:
    s = sorted(samples)
    return {
        "median": statistics.median(s),
        "p90": s[int(0.9 * (len(s) - 1))],
        "max": s[-1],
        "min": s[0],
        "n": len(s),
    }


# -- 8. papermill: cached quickstart vs the same notebook without magics ---------------------
def plain_variant(dest: str) -> str:
    """quickstart.ipynb with ``%load_ext papercrane`` dropped and each ``%%task`` line
    removed, so every cell runs as normal code."""
    import nbformat

    nb = nbformat.read(QUICKSTART, as_version=4)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        lines = cell.source.splitlines(keepends=True)
        lines = [ln for ln in lines if not ln.strip().startswith("%load_ext papercrane")]
        if lines and lines[0].startswith("%%task"):
            lines = lines[1:]
        assert not any(ln.lstrip().startswith("%") for ln in lines), "a magic is left"
        cell.source = "".join(lines)
    path = os.path.join(dest, "quickstart-plain.ipynb")
    nbformat.write(nb, path)
    return path


def profiled_variant(src: str, dest: str, out: str) -> str:
    """``src`` with pyinstrument started in a first cell and written out in a last one."""
    import nbformat

    nb = nbformat.read(src, as_version=4)
    start = (
        f"import sys; sys.path.insert(0, {HERE!r})\n"
        "from pyinstrument import Profiler\n"
        "_bench_profiler = Profiler(interval=0.0005, async_mode='disabled')\n"
        "_bench_profiler.start()"
    )
    stop = (
        "_bench_profiler.stop()\n"
        "from _common import write_profile\n"
        f"write_profile({out!r}, _bench_profiler, 'the notebook in its kernel (cells only, "
        "not kernel start-up)')"
    )
    nb.cells.insert(0, nbformat.v4.new_code_cell(start))
    nb.cells.append(nbformat.v4.new_code_cell(stop))
    path = os.path.join(dest, os.path.basename(src).replace(".ipynb", "-profiled.ipynb"))
    nbformat.write(nb, path)
    return path


def bench_papermill(args: argparse.Namespace) -> dict[str, Any]:
    import logging

    import nbformat
    import papermill
    from jupyter_client.kernelspec import KernelSpecManager

    logging.getLogger("papermill").setLevel(logging.WARNING)
    reps = 2 if args.quick else 5
    work = fresh_dir(args.tmp, "papermill-")
    plain = plain_variant(work)
    out = os.path.join(work, "out.ipynb")
    kernel = KernelSpecManager().get_kernel_spec("python3")

    def execute(path: str) -> tuple[float, dict[str, float]]:
        start = time.perf_counter_ns()
        with quiet():
            papermill.execute_notebook(
                path, out, progress_bar=False, log_output=False, cwd=work, kernel_name="python3"
            )
        wall = (time.perf_counter_ns() - start) / 1e6
        nb = nbformat.read(out, as_version=4)
        cells = {}
        for i, cell in enumerate(nb.cells):
            if cell.cell_type == "code":
                label = (cell.source.splitlines() or ["(empty)"])[0][:40]
                cells[f"{i:02d} {label}"] = cell.metadata["papermill"]["duration"] * 1e3
        return wall, cells

    first_wall, first_cells = execute(QUICKSTART)  # fills the cache: every task runs
    filled_at = time.time()
    execute(plain)  # warm the OS file cache for the plain run too
    walls: dict[str, list[float]] = {"cached": [], "plain": []}
    cells: dict[str, list[dict[str, float]]] = {"cached": [], "plain": []}
    for _ in range(reps):
        for label, path in (("cached", QUICKSTART), ("plain", plain)):
            wall, per_cell = execute(path)
            walls[label].append(wall)
            cells[label].append(per_cell)
    # Every task of the timed runs must have been a cache hit.
    from papercrane.backend.config import Config
    from papercrane.backend.engine import LocalEngine

    engine = LocalEngine(Config(home=os.environ["PAPERCRANE_HOME"]))
    counts: dict[str, int] = {}
    for row in engine.list_executions(limit=10_000):
        if row["created_at"] > filled_at:
            for kind, k in _kinds(engine, row["id"]).items():
                counts[kind] = counts.get(kind, 0) + k
    engine.close()
    profiles = {}
    if args.profile:
        for label, path in (("cached", QUICKSTART), ("plain", plain)):
            target = _profile_path(args.profile, label)
            execute(profiled_variant(path, work, target))
            profiles[label] = target

    def cell_medians(runs: list[dict[str, float]]) -> dict[str, float]:
        return {k: statistics.median(r[k] for r in runs) for k in runs[0]}

    cached, base = statistics.median(walls["cached"]), statistics.median(walls["plain"])
    cached_cells, plain_cells = cell_medians(cells["cached"]), cell_medians(cells["plain"])
    shutil.rmtree(work, ignore_errors=True)
    return {
        "reps": reps,
        "kernel_argv0": kernel.argv[0],
        "first_run_ms": first_wall,
        "first_run_cells_ms": first_cells,
        "cached_ms": summary(walls["cached"]),
        "plain_ms": summary(walls["plain"]),
        "ratio": cached / base,
        "cached_cells_ms": cached_cells,
        "plain_cells_ms": plain_cells,
        "cached_cells_total_ms": sum(cached_cells.values()),
        "plain_cells_total_ms": sum(plain_cells.values()),
        "events_in_timed_runs": counts,
        "profiles": profiles,
    }


# -- 9. a 100,000-node workflow --------------------------------------------------------------
def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def big_probe(shape: str, n: int, profile: str | None, trace: str | None) -> dict[str, Any]:
    """Child process: build, register and run one workflow of ``n`` trivial inline tasks.
    With ``profile``, under pyinstrument; with ``trace``, under tracemalloc, writing the
    biggest allocation sites still alive after the run (the result held) to ``trace``."""
    from papercrane.backend.config import Config
    from papercrane.backend.engine import LocalEngine, WorkflowRequest
    from papercrane.backend.model import EventKind

    home = os.environ["PAPERCRANE_HOME"]
    engine = LocalEngine(Config(home=home))
    ref = engine.put_value(1, "parameter 'x'")
    mem: dict[str, float] = {"start_rss_mib": rss_mib()}
    phases: dict[str, float] = {}
    profiler = None
    if trace:
        import tracemalloc

        tracemalloc.start(25)  # deep enough to find papercrane's frame behind a dataclass
    if profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.001)
        profiler.start()

    t0 = time.perf_counter()
    spec = (chain_spec if shape == "chain" else wide_spec)(n, "inline")
    t1 = time.perf_counter()
    mem["after_build_rss_mib"] = rss_mib()
    engine.register_workflow(spec, "default", "development")
    t2 = time.perf_counter()
    mem["after_register_rss_mib"] = rss_mib()
    request = WorkflowRequest(spec=spec, params={"x": ref}, param_values={"x": 1}, max_parallel=4)
    result = engine.run_workflow(request)
    t3 = time.perf_counter()
    if profiler is not None:
        profiler.stop()
        from _common import write_profile

        write_profile(profile, profiler, f"build + register + run of a {n}-node {shape}")
    mem["after_run_rss_mib"] = rss_mib()
    mem["peak_rss_mib"] = peak_mib()
    if trace:
        write_tracemalloc(trace, f"live memory after build + register + run of a {n}-node {shape}")
    phases = {
        "build_s": t1 - t0,
        "register_s": t2 - t1,
        "run_s": t3 - t2,
        "total_s": t3 - t0,
    }
    last = f"t{n - 1}"
    want = n + 1 if shape == "chain" else n  # y_k = y_{k-1} + 1, or x + k
    assert result.nodes[last].values[f"y{n - 1}"] == want, "wrong result"
    execution_id = result.execution.id
    del result
    t4 = time.perf_counter()
    evs = engine.events(execution_id)
    read_s = time.perf_counter() - t4
    started = sum(1 for e in evs if e.kind is EventKind.ATTEMPT_STARTED)
    db = os.path.join(home, "papercrane.db")
    files = sum(len(f) for _, _, f in os.walk(os.path.join(home, "store")))
    engine.close()
    mem["peak_rss_after_reading_events_mib"] = peak_mib()
    return {
        "shape": shape,
        "nodes": n,
        **phases,
        "per_node_ms": phases["total_s"] / n * 1e3,
        "run_per_node_ms": phases["run_s"] / n * 1e3,
        **mem,
        "events": len(evs),
        "attempts_started": started,
        "read_events_s": read_s,
        "db_mib": os.path.getsize(db) / 2**20,
        "store_files": files,
    }


def write_tracemalloc(path: str, title: str, top: int = 25) -> None:
    import tracemalloc

    snapshot = tracemalloc.take_snapshot()
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    snapshot = snapshot.filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    with open(path, "w") as f:
        f.write(f"{title}\n\ntraced now {current / 2**20:,.1f} MiB, ")
        f.write(f"traced peak {peak / 2**20:,.1f} MiB\n")
        stats = snapshot.statistics("filename")
        f.write("\nbiggest by file (where the allocation itself happened):\n")
        for stat in stats[:top]:
            where = stat.traceback[0].filename
            f.write(f"  {stat.size / 2**20:9.1f} MiB  {stat.count:>9,} blocks  {where}\n")
        # Each allocation charged to the innermost line of papercrane's (or this
        # benchmark's) code on its stack: a dataclass's generated __init__ or a json
        # decoder is charged to the line that called it.
        by_line: dict[str, list[int]] = {}
        for stat in snapshot.statistics("traceback"):
            where = "(no papercrane frame)"
            for frame in reversed(stat.traceback):  # innermost first
                name = frame.filename
                if any(p in name for p in ("/backend/", "/kernel_magics/", "bench_workflows")):
                    where = f"{name}:{frame.lineno}"
                    break
            slot = by_line.setdefault(where, [0, 0])
            slot[0] += stat.size
            slot[1] += stat.count
        f.write("\nbiggest by papercrane line (innermost papercrane frame on the stack):\n")
        for where, (size, count) in sorted(by_line.items(), key=lambda kv: -kv[1][0])[:top]:
            f.write(f"  {size / 2**20:9.1f} MiB  {count:>9,} blocks  {where}\n")


def bench_big(args: argparse.Namespace) -> dict[str, Any]:
    """Each size in a fresh child process (so each peak memory is its own). The largest
    chain runs only if the one before it extrapolates to within the time budget."""
    budget = args.big_budget
    target = args.big_nodes
    chain_sizes = [1_000, 10_000] if args.quick else [1_000, 10_000, target]
    chain_sizes = sorted({s for s in chain_sizes if s <= target} | {min(target, 10_000)})
    # The wide shape shows how the per-node cost grows with the number of ready nodes.
    wide_sizes = [1_000, 4_000] if args.quick else [2_000, 8_000, 16_000]
    out: dict[str, Any] = {"chain": [], "wide": [], "budget_s": budget, "target_nodes": target}
    for shape, sizes in (("chain", chain_sizes), ("wide", wide_sizes)):
        previous = None
        for n in sizes:
            if previous is not None and shape == "chain":
                # Per-node cost grows a little with size (bigger tables, more files), so
                # allow 1.5x the per-node time of the last size.
                estimate = previous["total_s"] / previous["nodes"] * n * 1.5
                if estimate > budget:
                    out["skipped"] = {
                        "nodes": n,
                        "estimated_s": estimate,
                        "reason": f"estimated {estimate:.0f} s > budget {budget} s",
                    }
                    break
            data = run_probe(args, shape, n, None)
            out[shape].append(data)
            previous = data
            if "error" in data:
                break
    if args.profile:
        # Profiled (and memory-traced) runs of smaller sizes, after the timed ones.
        for shape, n in (("chain", 10_000), ("wide", 8_000 if not args.quick else 4_000)):
            path = _profile_path(args.profile, f"{shape}-{n}")
            out.setdefault("profiled", []).append(run_probe(args, shape, n, path))
        trace = _profile_path(args.profile, "chain-10000-memory")
        out.setdefault("profiled", []).append(run_probe(args, "chain", 10_000, None, trace))
    return out


def run_probe(
    args: argparse.Namespace, shape: str, n: int, profile: str | None, trace: str | None = None
) -> dict[str, Any]:
    home = fresh_dir(args.tmp, f"big-{shape}-{n}-")
    env = {**os.environ, "PAPERCRANE_HOME": home}
    argv = [sys.executable, os.path.abspath(__file__), "big-probe", "--shape", shape]
    argv += ["--nodes", str(n)]
    if profile:
        argv += ["--profile", profile]
    if trace:
        argv += ["--trace", trace]
    start = time.perf_counter()
    try:
        proc = subprocess.run(argv, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = proc.stderr.strip().splitlines()[-10:]
            return {"shape": shape, "nodes": n, "error": f"exit {proc.returncode}", "tail": tail}
        data = json.loads(proc.stdout)
        data["process_s"] = time.perf_counter() - start
        return data
    finally:
        shutil.rmtree(home, ignore_errors=True)


# -- entry point ---------------------------------------------------------------------------
BENCHES = [
    "map-inline",
    "map-local",
    "chain-inline",
    "chain-local",
    "papermill",
    "big",
    "big-probe",
]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("bench", choices=BENCHES)
    parser.add_argument("--out")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--profile", help="write pyinstrument profiles next to this path")
    parser.add_argument("--tmp", help="folder for temporary PAPERCRANE_HOMEs")
    parser.add_argument("--shape", choices=["chain", "wide"], default="chain")
    parser.add_argument("--nodes", type=int, default=100_000)
    parser.add_argument("--trace", help="big-probe: write a tracemalloc summary here")
    parser.add_argument("--big-nodes", type=int, default=100_000)
    parser.add_argument("--big-budget", type=int, default=900, help="seconds for the largest")
    args = parser.parse_args()

    if args.bench == "big-probe":
        write_result(None, big_probe(args.shape, args.nodes, args.profile, args.trace))
        return 0
    home = use_fresh_home(args.tmp)
    try:
        if args.bench == "map-inline":
            result = bench_map_inline(args)
        elif args.bench == "map-local":
            result = bench_map_local(args)
        elif args.bench.startswith("chain-"):
            result = bench_chain(args, args.bench.removeprefix("chain-"))
        elif args.bench == "papermill":
            result = bench_papermill(args)
        else:
            result = bench_big(args)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    result["python"] = sys.version.split()[0]
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
