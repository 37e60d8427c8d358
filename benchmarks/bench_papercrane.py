"""papercrane's side of the benchmarks. Run by ``run.py`` in the papercrane benchmark
environment, one benchmark per process, each with its own temporary PAPERCRANE_HOME:

    python bench_papercrane.py BENCH [--out FILE] [--quick] [--profile FILE]

BENCH is one of: load, inline, local, cache, array-inline, array-local
(``load-probe`` is the child process the ``load`` benchmark starts).

Tasks go through ``ip.run_cell_magic("task", ...)`` on a real IPython
``InteractiveShell``, as a notebook cell would; the widget's text output is discarded
while a loop is timed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from typing import Any

from _common import (
    ARRAY_LEN,
    HEAVY_MODULES,
    array_figures,
    each_call_ms,
    fresh_dir,
    per_call_ms,
    profile_loop,
    quiet,
    write_result,
)

HERE = os.path.dirname(os.path.abspath(__file__))


# -- helpers -------------------------------------------------------------------------------
def new_shell(load: bool = True) -> Any:
    from IPython.core.interactiveshell import InteractiveShell

    ip = InteractiveShell.instance()
    if load:
        ip.run_line_magic("load_ext", "papercrane")
    return ip


def task(ip: Any, flags: str, cell: str) -> None:
    ip.run_cell_magic("task", flags, cell)


def run_cell(ip: Any, cell: str) -> None:
    result = ip.run_cell(cell, store_history=False, silent=True)
    result.raise_error()


def use_fresh_home(root: str | None) -> str:
    home = fresh_dir(root, "papercrane-home-")
    os.environ["PAPERCRANE_HOME"] = home
    for var in ("PAPERCRANE_DB", "PAPERCRANE_STORAGE", "PAPERCRANE_URL", "PAPERCRANE_EXECUTOR"):
        os.environ.pop(var, None)
    return home


def spawn_ms(argv: list[str], *, n: int, rounds: int) -> dict[str, Any]:
    def once() -> None:
        subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)

    return per_call_ms(once, n=n, rounds=rounds, warmup=2)


# -- 1. %load_ext papercrane ---------------------------------------------------------------
def load_probe(mode: str) -> dict[str, Any]:
    """Child process: start a shell (and load the extension); report what it cost."""
    t0 = time.perf_counter()
    ip = new_shell(load=False)
    t1 = time.perf_counter()
    before = set(sys.modules)
    if mode == "load":
        ip.run_line_magic("load_ext", "papercrane")
    t2 = time.perf_counter()
    new = sorted(set(sys.modules) - before)
    tops = sorted({m.partition(".")[0] for m in new})
    return {
        "shell_ms": (t1 - t0) * 1e3,
        "load_ext_ms": (t2 - t1) * 1e3,
        "new_modules": new,
        "new_top_level": tops,
        "heavy_imported_by_load": [m for m in HEAVY_MODULES if m in tops],
        "heavy_loaded_after": [m for m in HEAVY_MODULES if m in sys.modules],
    }


def bench_load(args: argparse.Namespace) -> dict[str, Any]:
    import json

    reps = 5 if args.quick else 15
    probe = [sys.executable, os.path.join(HERE, "bench_papercrane.py"), "load-probe"]

    def run(mode: str) -> tuple[float, dict[str, Any]]:
        start = time.perf_counter_ns()
        out = subprocess.run(
            [*probe, "--mode", mode], check=True, capture_output=True, text=True
        ).stdout
        wall = (time.perf_counter_ns() - start) / 1e6
        return wall, json.loads(out)

    run("bare"), run("load")  # warm the OS file cache
    walls: dict[str, list[float]] = {"bare": [], "load": []}
    inner: dict[str, list[dict[str, Any]]] = {"bare": [], "load": []}
    for _ in range(reps):
        for mode in ("bare", "load"):
            wall, data = run(mode)
            walls[mode].append(wall)
            inner[mode].append(data)
    last = inner["load"][-1]
    return {
        "load_ext_ms": _stats([d["load_ext_ms"] for d in inner["load"]]),
        "shell_start_ms": _stats([d["shell_ms"] for d in inner["bare"]]),
        "process_bare_ms": _stats(walls["bare"]),
        "process_with_load_ms": _stats(walls["load"]),
        "new_modules_count": len(last["new_modules"]),
        "new_top_level": last["new_top_level"],
        "heavy_imported_by_load": last["heavy_imported_by_load"],
        "heavy_loaded_after": last["heavy_loaded_after"],
        "reps": reps,
    }


def _stats(samples: list[float]) -> dict[str, Any]:
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "samples": [round(s, 3) for s in samples],
    }


# -- 2. inline per-task overhead -----------------------------------------------------------
TRIVIAL = "y = x + 1\n"


def bench_inline(args: argparse.Namespace) -> dict[str, Any]:
    n, rounds = (20, 3) if args.quick else (100, 5)
    ip = new_shell()
    run_cell(ip, "x = 1")
    with quiet():
        start = time.perf_counter_ns()
        task(ip, "--executor inline", TRIVIAL)
        cold = (time.perf_counter_ns() - start) / 1e6
        ns = ip.user_ns
        direct = per_call_ms(lambda: exec(TRIVIAL, ns), n=n * 10, rounds=rounds, warmup=100)
        cell = per_call_ms(lambda: run_cell(ip, TRIVIAL), n=n, rounds=rounds, warmup=20)
        magic = per_call_ms(
            lambda: task(ip, "--executor inline", TRIVIAL), n=n, rounds=rounds, warmup=20
        )
        profile_loop(args.profile, lambda: task(ip, "--executor inline", TRIVIAL), n)
    assert ip.user_ns["y"] == 2
    return {
        "cold_first_task_ms": cold,
        "direct_exec_ms": direct,
        "plain_ipython_cell_ms": cell,
        "task_inline_ms": magic,
        "overhead_ms": magic["median"] - direct["median"],
    }


# -- 3. local per-task overhead ------------------------------------------------------------
def bench_local(args: argparse.Namespace) -> dict[str, Any]:
    n, rounds = (5, 3) if args.quick else (10, 5)
    ip = new_shell()
    run_cell(ip, "x = 1")
    py = sys.executable
    spawn = spawn_ms([py, "-c", "pass"], n=n, rounds=rounds)
    runner_import = spawn_ms([py, "-c", "import papercrane.backend.runner"], n=n, rounds=rounds)
    with quiet():
        task(ip, "--executor local", TRIVIAL)  # engine start-up is not per-task overhead
        ns = ip.user_ns
        direct = per_call_ms(lambda: exec(TRIVIAL, ns), n=1000, rounds=rounds, warmup=100)
        magic = per_call_ms(
            lambda: task(ip, "--executor local", TRIVIAL), n=n, rounds=rounds, warmup=3
        )
        profile_loop(args.profile, lambda: task(ip, "--executor local", TRIVIAL), n)
    assert ip.user_ns["y"] == 2
    overhead = magic["median"] - direct["median"]
    return {
        "bare_spawn_ms": spawn,
        "runner_import_spawn_ms": runner_import,
        "direct_exec_ms": direct,
        "task_local_ms": magic,
        "overhead_ms": overhead,
        "overhead_minus_spawn_ms": overhead - spawn["median"],
    }


# -- 4. cache hits -------------------------------------------------------------------------
CACHED_CELLS = (
    "a = x * 2\n",
    "b = [a] * 3\n",
    "c = {'total': sum(b), 'n': len(b)}\n",
)


def bench_cache(args: argparse.Namespace) -> dict[str, Any]:
    n, rounds = (20, 3) if args.quick else (100, 5)
    ip = new_shell()
    run_cell(ip, "x = 21")

    def three_tasks() -> None:
        for cell in CACHED_CELLS:
            task(ip, "--cache", cell)  # default executor (local): a hit must not spawn

    def three_direct() -> None:
        for cell in CACHED_CELLS:
            exec(cell, ns)

    with quiet():
        start = time.perf_counter_ns()
        three_tasks()  # misses: three local runs that fill the cache
        misses = (time.perf_counter_ns() - start) / 1e6
        ns = ip.user_ns
        direct = per_call_ms(three_direct, n=n * 10, rounds=rounds, warmup=50)
        hits = per_call_ms(three_tasks, n=n, rounds=rounds, warmup=10)
        profile_loop(args.profile, three_tasks, n)
    assert ip.user_ns["c"] == {"total": 126, "n": 3}
    runs = _count_events(ip)
    return {
        "first_run_three_misses_ms": misses,
        "direct_three_cells_ms": direct,
        "three_hits_ms": hits,
        "per_hit_ms": hits["median"] / 3,
        "executions_recorded": runs,
    }


def _count_events(ip: Any) -> dict[str, int]:
    from papercrane.backend.model import EventKind

    magics = ip.magics_manager.registry["PapercraneMagics"]
    engine = magics.session.engine
    counts = {"cache_hit": 0, "attempt_started": 0}
    for row in engine.list_executions(limit=100_000):
        for e in engine.events(row["id"]):
            if e.kind is EventKind.CACHE_HIT:
                counts["cache_hit"] += 1
            elif e.kind is EventKind.ATTEMPT_STARTED:
                counts["attempt_started"] += 1
    return counts


# -- 5. a 100 MiB array from one task to the next ------------------------------------------
PRODUCE = "a = np.arange(n, dtype=np.float64) + seed\n"
CONSUME = "s = float(a[-1])\n"


def bench_array(args: argparse.Namespace, executor: str) -> dict[str, Any]:
    """Each quantity runs ``reps`` times back to back after a warm-up, so every run finds
    memory the previous one just freed (see README: first-touch memory on this VM)."""
    import numpy as np

    reps = 3 if args.quick else 7
    home = os.environ["PAPERCRANE_HOME"]
    ip = new_shell()
    run_cell(ip, f"import numpy as np\nn = {ARRAY_LEN}\nseed = 1.0")
    flags = f"--executor {executor}"
    # The same content every time: a rerun still writes and hashes the whole array, then
    # finds it stored and drops the copy, so the store does not grow by 100 MiB a run.
    ns: dict[str, Any] = {"np": np, "n": ARRAY_LEN, "seed": 1.0}
    tiny_ns: dict[str, Any] = {"np": np, "n": 8, "seed": 1.0}
    path = os.path.join(home, "baseline.npy")

    def direct(space: dict[str, Any]) -> None:
        exec(PRODUCE, space)
        exec(CONSUME, space)

    def saveload() -> None:
        np.save(path, ns["a"])
        np.load(path)

    def tasks(n: int) -> None:
        ip.user_ns["n"] = n
        task(ip, flags, PRODUCE)
        task(ip, flags, CONSUME)

    samples: dict[str, list[float]] = {}
    with quiet():
        samples["direct"] = series(lambda: direct(ns), reps)
        samples["saveload"] = series(saveload, reps)
        samples["save"] = series(lambda: np.save(path, ns["a"]), reps)
        samples["load"] = series(lambda: np.load(path), reps)
        os.remove(path)
        samples["produce_consume"] = series(lambda: tasks(ARRAY_LEN), reps)
        profile_loop(args.profile, lambda: tasks(ARRAY_LEN), reps)
        assert ip.user_ns["s"] == ARRAY_LEN
        samples["tiny_direct"] = series(lambda: direct(tiny_ns), reps)
        samples["tiny_produce_consume"] = series(lambda: tasks(8), reps)
    return array_figures(executor, samples)


def series(fn: Any, reps: int) -> list[float]:
    return each_call_ms(fn, reps=reps, warmup=1)["samples"]


# -- entry point ---------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "bench",
        choices=["load", "load-probe", "inline", "local", "cache", "array-inline", "array-local"],
    )
    parser.add_argument("--out")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--profile", help="after timing, profile the loop again with pyinstrument into this file"
    )
    parser.add_argument("--mode", choices=["bare", "load"], default="load")
    parser.add_argument("--tmp", help="folder for temporary PAPERCRANE_HOMEs")
    args = parser.parse_args()

    if args.bench == "load-probe":
        write_result(None, load_probe(args.mode))
        return 0
    home = use_fresh_home(args.tmp)
    try:
        if args.bench == "load":
            result = bench_load(args)
        elif args.bench == "inline":
            result = bench_inline(args)
        elif args.bench == "local":
            result = bench_local(args)
        elif args.bench == "cache":
            result = bench_cache(args)
        else:
            result = bench_array(args, args.bench.removeprefix("array-"))
    finally:
        shutil.rmtree(home, ignore_errors=True)
    result["python"] = sys.version.split()[0]
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
