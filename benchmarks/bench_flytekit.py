"""flytekit's side of the benchmarks: the same workloads as ``bench_papercrane.py``,
run with flytekit's local execution (in-process) in its own virtual environment.

    python bench_flytekit.py BENCH [--out FILE] [--quick]

BENCH is one of: import, task, cache, array, map, chain (``import-probe`` is the child
process of ``import``). ``run.py`` points HOME and TMPDIR at a temporary folder, so flytekit's
local cache (~/.flyte/local-cache) and its raw-data folders start empty and are removed
afterwards.

flytekit reads a task's source with ``inspect``, so the tasks are defined here, in a
file, at module level (and without ``from __future__ import annotations``).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import typing

from _common import ARRAY_LEN, array_figures, each_call_ms, per_call_ms, quiet, write_result

HERE = os.path.dirname(os.path.abspath(__file__))


def bench_import(args: argparse.Namespace) -> dict:
    """``import flytekit`` in a fresh process (what a notebook pays before its first task)."""
    reps = 5 if args.quick else 15
    argv = [sys.executable, os.path.join(HERE, "bench_flytekit.py"), "import-probe"]
    subprocess.run(argv, check=True, capture_output=True)  # warm the OS file cache
    inner, walls = [], []
    for _ in range(reps):
        start = time.perf_counter_ns()
        out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
        walls.append((time.perf_counter_ns() - start) / 1e6)
        inner.append(json.loads(out)["import_ms"])
    return {
        "import_ms": _stats(inner),
        "process_with_import_ms": _stats(walls),
        "reps": reps,
    }


def _stats(samples: list) -> dict:
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "samples": [round(s, 3) for s in samples],
    }


def import_probe() -> dict:
    start = time.perf_counter()
    import flytekit  # noqa: F401

    return {"import_ms": (time.perf_counter() - start) * 1e3}


def build_tasks() -> dict:
    import flyte_tasks

    return vars(flyte_tasks)


def bench_task(args: argparse.Namespace) -> dict:
    n, rounds = (50, 3) if args.quick else (300, 5)
    t = build_tasks()
    inc, chain3 = t["inc"], t["chain3"]
    fn = inc.task_function
    with quiet():
        start = time.perf_counter_ns()
        inc(x=1)
        cold = (time.perf_counter_ns() - start) / 1e6
        direct = per_call_ms(lambda: fn(x=1), n=n * 100, rounds=rounds, warmup=100)
        called = per_call_ms(lambda: inc(x=1), n=n, rounds=rounds, warmup=30)
        in_wf = per_call_ms(lambda: chain3(x=1), n=max(n // 3, 10), rounds=rounds, warmup=5)
    assert inc(x=1) == 2 and chain3(x=1) == 4
    return {
        "cold_first_task_ms": cold,
        "direct_call_ms": direct,
        "task_call_ms": called,
        "overhead_ms": called["median"] - direct["median"],
        "workflow_of_3_ms": in_wf,
        "workflow_per_task_ms": in_wf["median"] / 3,
    }


def bench_cache(args: argparse.Namespace) -> dict:
    n, rounds = (20, 3) if args.quick else (100, 5)
    t = build_tasks()
    t_a, t_b, t_c = t["t_a"], t["t_b"], t["t_c"]
    fa, fb, fc = t_a.task_function, t_b.task_function, t_c.task_function

    def three_tasks() -> None:
        t_c(b=t_b(a=t_a(x=21)))

    def three_direct() -> None:
        fc(b=fb(a=fa(x=21)))

    with quiet():
        start = time.perf_counter_ns()
        three_tasks()  # misses
        misses = (time.perf_counter_ns() - start) / 1e6
        calls = t["CALLS"]
        calls_after_miss = dict(calls)
        hits = per_call_ms(three_tasks, n=n, rounds=rounds, warmup=10)
        ran = {k: calls[k] - calls_after_miss[k] for k in calls}
        direct = per_call_ms(three_direct, n=n * 10, rounds=rounds, warmup=50)
    assert t_c(b=t_b(a=t_a(x=21))) == {"total": 126, "n": 3}
    return {
        "first_run_three_misses_ms": misses,
        "direct_three_calls_ms": direct,
        "three_hits_ms": hits,
        "per_hit_ms": hits["median"] / 3,
        "task_bodies_run_during_hits": sum(ran.values()),
    }


def bench_array(args: argparse.Namespace) -> dict:
    """As on papercrane's side: each quantity back to back, after a warm-up."""
    import numpy as np

    reps = 3 if args.quick else 7
    t = build_tasks()
    handoff, produce, consume = t["handoff"], t["produce"], t["consume"]
    fp, fc = produce.task_function, consume.task_function
    path = os.path.join(os.environ.get("TMPDIR") or "/tmp", "baseline.npy")
    box: dict = {"a": fp(n=ARRAY_LEN, seed=1.0)}

    def saveload() -> None:
        np.save(path, box["a"])
        np.load(path)

    def series(fn: typing.Callable) -> list:
        return each_call_ms(fn, reps=reps, warmup=1)["samples"]

    def workflow_series(n: int) -> list:
        """Run the workflow; between runs (untimed) delete the files it wrote. flytekit
        writes every output to a new file, so without this each run would also pay for
        100 MiB of fresh page cache, which on a VM is slow and erratic (see README);
        papercrane's store does not grow when the same array is stored again."""
        times = []
        for i in range(reps + 1):
            start = time.perf_counter_ns()
            box["s"] = handoff(n=n, seed=1.0)
            if i:
                times.append((time.perf_counter_ns() - start) / 1e6)
            remove_run_files()
        return times

    samples: dict = {}
    with quiet():
        samples["direct"] = series(lambda: fc(a=fp(n=ARRAY_LEN, seed=1.0)))
        samples["saveload"] = series(saveload)
        samples["save"] = series(lambda: np.save(path, box["a"]))
        samples["load"] = series(lambda: np.load(path))
        os.remove(path)
        box.clear()
        samples["produce_consume"] = workflow_series(ARRAY_LEN)
        assert box["s"] == ARRAY_LEN
        samples["tiny_direct"] = series(lambda: fc(a=fp(n=8, seed=1.0)))
        samples["tiny_produce_consume"] = workflow_series(8)
    return array_figures("flytekit", samples)


def bench_map(args: argparse.Namespace) -> dict:
    """``map_task`` over 1,000 trivial elements inside a workflow, run locally: without
    cache, and with ``cache=True`` on the mapped task (a new list: misses; the same list
    again: hits). A counter shows which runs executed the task bodies, and a list that
    differs in one element shows whether the cache is per element or per map."""
    n = 1000
    rounds = 3 if args.quick else 7
    t = build_tasks()
    map_inc, map_cached, calls = t["map_inc"], t["map_inc_cached"], t["CALLS"]
    offset = [10_000]

    def fresh() -> list:
        offset[0] += n
        return list(range(offset[0], offset[0] + n))

    def timed(wf: typing.Any, xs: list) -> float:
        start = time.perf_counter_ns()
        ys = wf(xs=xs)
        elapsed = (time.perf_counter_ns() - start) / 1e6
        assert list(ys) == [x + 1 for x in xs]
        return elapsed

    def direct(xs: list) -> list:
        fn = t["inc"].task_function
        return [fn(x=x) for x in xs]

    fixed = list(range(n))
    with quiet():
        direct_ms = each_call_ms(lambda: direct(fixed), reps=rounds, warmup=2)
        timed(map_inc, fixed)  # warm-up
        nocache = [timed(map_inc, fresh()) for _ in range(rounds)]
        before = calls["m"]
        misses = [timed(map_cached, fresh()) for _ in range(rounds)]
        bodies_in_misses = calls["m"] - before
        last = list(range(offset[0], offset[0] + n))
        before = calls["m"]
        hits = [timed(map_cached, last) for _ in range(rounds)]
        bodies_in_hits = calls["m"] - before
        before = calls["m"]
        one_changed = [*last[:-1], -1]
        changed_ms = timed(map_cached, one_changed)
        bodies_one_changed = calls["m"] - before
    return {
        "elements": n,
        "direct_loop_ms": _stats(direct_ms["samples"]),
        "nocache_ms": _stats(nocache),
        "miss_ms": _stats(misses),
        "hit_ms": _stats(hits),
        "bodies_run_in_misses": bodies_in_misses,
        "bodies_run_in_hits": bodies_in_hits,
        "one_element_changed_ms": changed_ms,
        "bodies_run_with_one_element_changed": bodies_one_changed,
    }


def bench_chain(args: argparse.Namespace) -> dict:
    """A ``@workflow`` of 50 chained trivial tasks run locally (flytekit keeps no event
    timestamps, so the figure is the wall time per node)."""
    rounds = 5 if args.quick else 15
    t = build_tasks()
    chain50, n = t["chain50"], t["CHAIN"]
    seed = [0]

    def once() -> None:
        seed[0] += 1000
        assert chain50(x=seed[0]) == seed[0] + n

    with quiet():
        walls = each_call_ms(once, reps=rounds, warmup=2)
    return {"nodes": n, "wall_ms": walls, "wall_per_node_ms": walls["median"] / n}


def remove_run_files() -> None:
    """Delete the files in flytekit's sandbox folders (``$TMPDIR/flyte*``), keeping the
    folders; the local cache lives elsewhere (``$HOME/.flyte``)."""
    tmp = os.environ.get("TMPDIR")
    if not tmp:
        return
    for entry in os.scandir(tmp):
        if entry.is_dir() and entry.name.startswith("flyte"):
            for dirpath, _dirs, files in os.walk(entry.path):
                for name in files:
                    os.remove(os.path.join(dirpath, name))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "bench", choices=["import", "import-probe", "task", "cache", "array", "map", "chain"]
    )
    parser.add_argument("--out")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.bench == "import-probe":
        write_result(None, import_probe())
        return 0
    result = {
        "import": bench_import,
        "task": bench_task,
        "cache": bench_cache,
        "array": bench_array,
        "map": bench_map,
        "chain": bench_chain,
    }[args.bench](args)
    import flytekit

    result["flytekit_version"] = flytekit.__version__
    result["python"] = sys.version.split()[0]
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
