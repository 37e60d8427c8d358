#!/usr/bin/env python3
"""Run papercrane's benchmarks against a pure-Python baseline and flytekit's local
execution, and print the figures side by side.

    python benchmarks/run.py              # everything (about 12 minutes after set-up)
    python benchmarks/run.py --quick      # fewer repetitions, for a smoke run
    python benchmarks/run.py --only inline,cache --no-flytekit
    python benchmarks/run.py --only map,chain,papermill,big   # issue 3's benchmarks
    python benchmarks/run.py --profile    # also write pyinstrument profiles

The first run creates two virtual environments next to this file, each with its own
packages: ``.venv-papercrane`` (papercrane installed editable from this checkout, plus
numpy and pyinstrument) and ``.venv-flytekit`` (flytekit and numpy). flytekit never
enters papercrane's own dependencies. Later runs reuse them; ``--rebuild`` recreates
them. This script needs nothing but the standard library to start: after the set-up it
re-runs itself in the papercrane environment, where rich draws the table.

Every benchmark runs in a fresh process with its own temporary HOME, TMPDIR, IPYTHONDIR
and PAPERCRANE_HOME, removed afterwards. Nothing is asserted: the figures are printed
next to their targets and saved to ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
PC_VENV = HERE / ".venv-papercrane"
FK_VENV = HERE / ".venv-flytekit"
FLYTEKIT_SPEC = "flytekit==1.16.31"
GROUPS = ("load", "inline", "local", "cache", "array", "map", "chain", "papermill", "big")
#: papercrane's benchmarks that live in bench_workflows.py (issue 3).
WORKFLOW_BENCHES = {"map-inline", "map-local", "chain-inline", "chain-local", "papermill", "big"}

#: (group, side, worker bench name) in the order they run.
JOBS = [
    ("load", "papercrane", "load"),
    ("load", "flytekit", "import"),
    ("inline", "papercrane", "inline"),
    ("inline", "flytekit", "task"),
    ("local", "papercrane", "local"),
    ("cache", "papercrane", "cache"),
    ("cache", "flytekit", "cache"),
    ("array", "papercrane", "array-inline"),
    ("array", "papercrane", "array-local"),
    ("array", "flytekit", "array"),
    ("map", "papercrane", "map-inline"),
    ("map", "papercrane", "map-local"),
    ("map", "flytekit", "map"),
    ("chain", "papercrane", "chain-inline"),
    ("chain", "papercrane", "chain-local"),
    ("chain", "flytekit", "chain"),
    ("papermill", "papercrane", "papermill"),
    ("big", "papercrane", "big"),
]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- environments -----------------------------------------------------------------------
def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_venv(venv: Path, requirements: list[str], stamp_extra: str, rebuild: bool) -> Path:
    """Create ``venv`` with ``requirements`` unless an up-to-date one is there."""
    stamp = hashlib.sha256(json.dumps([requirements, stamp_extra]).encode()).hexdigest()
    stamp_file = venv / ".bench-stamp"
    py = venv_python(venv)
    if not rebuild and py.exists() and stamp_file.exists() and stamp_file.read_text() == stamp:
        return py
    if venv.exists():
        shutil.rmtree(venv)
    log(f"creating {venv.relative_to(REPO)} ({' '.join(requirements)}) ...")
    started = time.time()
    quiet_run([sys.executable, "-m", "venv", str(venv)])
    pip = [str(py), "-m", "pip", "--disable-pip-version-check", "-q"]
    quiet_run([*pip, "install", "--upgrade", "pip"])
    quiet_run([*pip, "install", *requirements])
    stamp_file.write_text(stamp)
    log(f"  ready in {time.time() - started:.0f} s")
    return py


def quiet_run(argv: list[str]) -> None:
    """Run a set-up command; show its output only if it fails."""
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"set-up failed: {' '.join(argv)}")


def setup(args: argparse.Namespace) -> tuple[str, str | None]:
    if args.papercrane_python:
        pc = args.papercrane_python
    else:
        pyproject = (REPO / "pyproject.toml").read_bytes()
        pc = str(
            ensure_venv(
                PC_VENV,
                ["-e", str(REPO), "numpy", "pyinstrument"],
                hashlib.sha256(pyproject).hexdigest(),
                args.rebuild,
            )
        )
    fk = None
    if not args.no_flytekit:
        fk = str(ensure_venv(FK_VENV, [args.flytekit_spec, "numpy"], "", args.rebuild))
    return pc, fk


# -- running the workers ------------------------------------------------------------------
def run_job(python: str, side: str, bench: str, args: argparse.Namespace) -> dict[str, Any]:
    if side == "flytekit":
        script = HERE / "bench_flytekit.py"
    elif bench in WORKFLOW_BENCHES:
        script = HERE / "bench_workflows.py"
    else:
        script = HERE / "bench_papercrane.py"
    root = tempfile.mkdtemp(prefix=f"pc-bench-{bench}-")
    out = Path(root) / "result.json"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PAPERCRANE_", "FLYTE")) and k not in ("PYTHONPATH", "VIRTUAL_ENV")
    }
    env.update(HOME=root, TMPDIR=root, IPYTHONDIR=str(Path(root) / "ipython"))
    # Bytecode caches as in any installed environment: pip compiles the dependencies'
    # modules when it installs them, but papercrane is installed editable, so with
    # PYTHONDONTWRITEBYTECODE set (some sandboxes and CI images set it) every fresh
    # process, each papermill kernel, would compile papercrane's ~8,000 lines again
    # (~75 ms here), a cost no user's installation has.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    argv = [python, str(script), bench, "--out", str(out)]
    if args.quick:
        argv.append("--quick")
    if side == "papercrane":
        argv += ["--tmp", root]
        if args.profile:
            profiles = RESULTS / "profiles"
            profiles.mkdir(parents=True, exist_ok=True)
            argv += ["--profile", str(profiles / f"{bench}.txt")]
        if bench == "big":
            argv += ["--big-nodes", str(args.big_nodes), "--big-budget", str(args.big_budget)]
    started = time.time()
    busy_before, children_before = cpu_busy_s(), children_cpu_s()
    try:
        proc = subprocess.run(
            argv, env=env, cwd=HERE, capture_output=True, text=True, timeout=args.timeout
        )
        if proc.returncode != 0 or not out.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
            return {"error": f"exit {proc.returncode}", "stderr_tail": tail}
        data = json.loads(out.read_text())
        wall = time.time() - started
        data["wall_s"] = round(wall, 1)
        busy_after, children_after = cpu_busy_s(), children_cpu_s()
        if busy_before is not None and busy_after is not None:
            # CPU the rest of the machine used meanwhile (busy CPU time minus this job's
            # own), in cores: other work on the machine skews the figures.
            other = (busy_after - busy_before) - (children_after - children_before)
            data["other_cores"] = round(max(other, 0.0) / wall, 2)
        return data
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {args.timeout} s"}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def cpu_busy_s() -> float | None:
    """Busy CPU seconds of the whole machine since boot (Linux), all cores together."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return None
    values = [int(v) for v in fields]
    busy = sum(values[:8]) - values[3] - values[4]  # all but idle and iowait
    return busy / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def machine_info(pc_python: str, fk_python: str | None) -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory_gib"] = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass

    def version(python: str, dist: str) -> str:
        code = f"import importlib.metadata as m; print(m.version({dist!r}))"
        proc = subprocess.run([python, "-c", code], capture_output=True, text=True)
        return proc.stdout.strip() or "?"

    info["papercrane"] = version(pc_python, "papercrane")
    info["numpy"] = version(pc_python, "numpy")
    info["ipython"] = version(pc_python, "ipython")
    if fk_python:
        info["flytekit"] = version(fk_python, "flytekit")
    git = subprocess.run(
        ["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True, text=True
    )
    info["commit"] = git.stdout.strip() or "?"
    return info


# -- the table ----------------------------------------------------------------------------------
def ms(x: float | None) -> str:
    if x is None:
        return "-"
    if abs(x) >= 100:
        return f"{x:,.0f} ms"
    if abs(x) >= 10:
        return f"{x:.1f} ms"
    if abs(x) >= 0.1:
        return f"{x:.2f} ms"
    return f"{x * 1000:.1f} µs"


def med(d: dict[str, Any] | None, key: str) -> float | None:
    if not d or "error" in d or key not in d:
        return None
    v = d[key]
    return v["median"] if isinstance(v, dict) else v


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("yes" if ok else "NO")


def ratio_text(arr: dict[str, Any]) -> str:
    b, m = arr["best"], arr["median"]
    return f"{ms(b['handoff_ms'])} = {b['handoff_ratio']:.1f}× (median {m['handoff_ratio']:.1f}×)"


def build_rows(res: dict[str, dict[str, Any]]) -> list[tuple[str, ...]]:
    """(benchmark, papercrane, pure Python, flytekit, target, meets) as text."""
    pc, fk = res.get("papercrane", {}), res.get("flytekit", {})
    rows: list[tuple[str, ...]] = []

    def err(d: dict[str, Any] | None) -> str | None:
        return f"error: {d['error']}" if d and "error" in d else None

    # 1. %load_ext
    load, imp = pc.get("load"), fk.get("import")
    if load is not None:
        heavy = load.get("heavy_imported_by_load")
        rows.append(
            (
                "1. `%load_ext papercrane` (fresh shell)",
                err(load) or ms(med(load, "load_ext_ms")),
                f"IPython shell start {ms(med(load, 'shell_start_ms'))}",
                err(imp) or (f"`import flytekit` {ms(med(imp, 'import_ms'))}" if imp else "-"),
                "imports nothing heavy",
                verdict(None if heavy is None else not heavy),
            )
        )
        if heavy is not None:
            tops = ", ".join(load.get("new_top_level", []))
            heavy_text = ", ".join(heavy) or "none"
            rows.append(
                (
                    "↳ modules it imports",
                    f"{load.get('new_modules_count')} ({tops}); heavy: {heavy_text}",
                    "-",
                    "-",
                    "no pandas/numpy/sqlalchemy/k8s",
                    verdict(not heavy),
                )
            )
    # 2. inline
    inl, ftask = pc.get("inline"), fk.get("task")
    load, imp = pc.get("load"), fk.get("import")
    if inl is not None:
        fk_over = med(ftask, "overhead_ms")
        ov = med(inl, "overhead_ms")
        target = f"< ½ flytekit's ({ms(fk_over / 2)})" if fk_over else "< ½ flytekit's (~0.4 ms)"
        limit = fk_over / 2 if fk_over else 0.4
        rows.append(
            (
                "2. per-task overhead, `inline`",
                err(inl) or ms(ov),
                f"exec {ms(med(inl, 'direct_exec_ms'))}; "
                f"IPython cell {ms(med(inl, 'plain_ipython_cell_ms'))}",
                err(ftask) or (f"{ms(fk_over)} (@task call)" if ftask else "-"),
                target,
                verdict(None if ov is None else ov < limit),
            )
        )
        load_ms, imp_ms = med(load, "load_ext_ms"), med(imp, "import_ms")
        cold = err(inl) or ms(med(inl, "cold_first_task_ms"))
        if load_ms is not None and not err(inl):
            cold += f" (+ load_ext {ms(load_ms)})"
        fk_cold = "-"
        if ftask is not None:
            fk_cold = err(ftask) or ms(med(ftask, "cold_first_task_ms"))
            if imp_ms is not None and not err(ftask):
                fk_cold += f" (+ import {ms(imp_ms)})"
        rows.append(("↳ first task in a fresh session", cold, "-", fk_cold, "(info)", "-"))
    # 3. local
    loc = pc.get("local")
    if loc is not None:
        ov, spawn = med(loc, "overhead_ms"), med(loc, "bare_spawn_ms")
        rows.append(
            (
                "3. per-task overhead, `local`",
                err(loc) or f"{ms(ov)} (spawn + {ms(med(loc, 'overhead_minus_spawn_ms'))})",
                f"bare `python -c pass` spawn {ms(spawn)}",
                "n/a (runs in-process)",
                f"≤ spawn + 5 ms ({ms(spawn + 5) if spawn is not None else '?'})",
                verdict(None if ov is None or spawn is None else ov <= spawn + 5),
            )
        )
        rows.append(
            (
                "↳ spawn importing the runner",
                err(loc) or ms(med(loc, "runner_import_spawn_ms")),
                "`python -c 'import papercrane.backend.runner'`",
                "-",
                "(info)",
                "-",
            )
        )
    # 4. cache
    cache, fcache = pc.get("cache"), fk.get("cache")
    if cache is not None:
        hit = med(cache, "per_hit_ms")
        three = med(cache, "three_hits_ms")
        rows.append(
            (
                "4. cache hit, 3 small tasks (per task)",
                err(cache) or f"{ms(hit)} ({ms(three)} for 3)",
                f"re-running the cells {ms((med(cache, 'direct_three_cells_ms') or 0) / 3)}",
                err(fcache)
                or (
                    f"{ms(med(fcache, 'per_hit_ms'))} ({ms(med(fcache, 'three_hits_ms'))} for 3)"
                    if fcache
                    else "-"
                ),
                "≤ 0.5 ms",
                verdict(None if hit is None else hit <= 0.5),
            )
        )
    # 5. array
    for bench, label in (("array-inline", "`inline`"), ("array-local", "`local`")):
        arr = pc.get(bench)
        farr = fk.get("array")
        if arr is None:
            continue
        if "error" in arr:
            rows.append(
                (
                    f"5. 100 MiB array task → task, {label}",
                    err(arr) or "",
                    "-",
                    "-",
                    "≤ 2× np.save+np.load",
                    "-",
                )
            )
            continue
        b = arr["best"]
        fk_text = "-"
        if farr is not None:
            fb = farr.get("best")
            fk_text = err(farr) or (ratio_text(farr) if fb else "-")
        rows.append(
            (
                f"5. 100 MiB array task → task, {label}",
                ratio_text(arr),
                f"np.save+np.load {ms(b['saveload_ms'])} = 1×",
                fk_text,
                "≤ 2× np.save+np.load",
                verdict(b["handoff_ratio"] <= 2),
            )
        )
        fsize = farr.get("best", {}).get("size_dependent_ratio") if farr else None
        rows.append(
            (
                "↳ of which size-dependent",
                f"{ms(b['size_dependent_ms'])} = {b['size_dependent_ratio']:.1f}×",
                "(minus the same tasks on 8 elements)",
                f"{fsize:.1f}×" if fsize is not None else "-",
                "(info)",
                "-",
            )
        )
    rows += workflow_rows(pc, fk)
    return rows


def secs(x: float | None) -> str:
    """Seconds: 0.84 s, 12.3 s, 1,234 s."""
    if x is None:
        return "-"
    return f"{x:.2f} s" if x < 10 else (f"{x:.1f} s" if x < 100 else f"{x:,.0f} s")


def workflow_rows(pc: dict[str, Any], fk: dict[str, Any]) -> list[tuple[str, ...]]:
    """Rows 6-9 (issue 3): map, chain transitions, papermill re-run, 100,000 nodes."""
    rows: list[tuple[str, ...]] = []

    def err(d: dict[str, Any] | None) -> str | None:
        return f"error: {d['error']}" if d and "error" in d else None

    # 6. map of 1,000 elements, inline
    mi, fmap = pc.get("map-inline"), fk.get("map")
    if mi is not None:
        fk_nocache = med(fmap, "nocache_ms")
        limit = fk_nocache if fk_nocache is not None else 56.0
        target = f"≤ flytekit's map ({ms(limit)}; issue: 56 ms)"
        n = mi.get("elements", 1000)
        if err(mi):
            rows.append(
                (
                    f"6. map of {n:,} trivial elements, `inline`",
                    err(mi) or "",
                    "-",
                    "-",
                    target,
                    "-",
                )
            )
        else:
            miss, hit = med(mi, "miss_ms"), med(mi, "hit_ms")
            hits = mi.get("last_hit_run_events", {})
            fk_text = err(fmap) or (f"map_task {ms(fk_nocache)} (no cache)" if fmap else "-")
            rows.append(
                (
                    f"6. map of {n:,} trivial elements, `inline --cache`, 1st run (misses)",
                    f"{ms(miss)} ({ms(miss / n)} per element)",
                    f"loop exec-ing the cell {ms(med(mi, 'direct_loop_ms'))}; "
                    f"one new small file {ms(mi['file_create']['per_file_ms'])}",
                    fk_text,
                    target,
                    verdict(miss <= limit),
                )
            )
            fk_hit = "-"
            if fmap and not err(fmap):
                fk_hit = (
                    f"cached map_task, same list {ms(med(fmap, 'hit_ms'))} "
                    f"({fmap.get('bodies_run_in_hits')} bodies ran)"
                )
            rows.append(
                (
                    "↳ 2nd run, same list (all hits)",
                    f"{ms(hit)} ({ms(hit / n)} per element; "
                    f"{hits.get('cache_hit', 0) - 1:,} element hits, "
                    f"{hits.get('attempt_started', 0)} attempts)",
                    "-",
                    fk_hit,
                    target,
                    verdict(hit <= limit),
                )
            )
            fk_miss = "-"
            if fmap and not err(fmap):
                fk_miss = (
                    f"cached map_task, new list {ms(med(fmap, 'miss_ms'))}; one element "
                    f"changed re-runs {fmap.get('bodies_run_with_one_element_changed'):,} of "
                    f"{fmap.get('elements'):,} (cache per map, not per element)"
                )
            rows.append(
                (
                    "↳ without `--cache` (new list; same list again)",
                    f"{ms(med(mi, 'nocache_ms'))}; {ms(med(mi, 'nocache_same_list_ms'))}",
                    "(same list: its artifacts exist, no new files)",
                    fk_miss,
                    "(info)",
                    "-",
                )
            )
    # 6. map, local
    ml = pc.get("map-local")
    if ml is not None:
        n = ml.get("elements", 100)
        cores = ml.get("concurrency", 2)
        label = f"6. map of {n} elements, `local` (--map-concurrency {cores}), misses"
        if err(ml):
            rows.append((label, err(ml) or "", "-", "-", "(info)", "-"))
        else:
            rows.append(
                (
                    label,
                    f"{ms(med(ml, 'miss_ms'))} = {ms(ml['per_element_miss_ms'])} per element",
                    f"`python -c pass` spawn {ms(med(ml, 'bare_spawn_ms'))} ÷ "
                    f"{ml.get('concurrency')} cores = {ms(ml['ideal_per_element_ms'])} per element",
                    "n/a (local map_task runs in-process, one by one)",
                    "(info; no target)",
                    "-",
                )
            )
            rows.append(
                (
                    "↳ 2nd run, same list (all hits)",
                    f"{ms(med(ml, 'hit_ms'))} = {ms(ml['per_element_hit_ms'])} per element",
                    "-",
                    "-",
                    "(info)",
                    "-",
                )
            )
    # 7. chain of 50
    fchain = fk.get("chain")
    for bench, limit in (("chain-inline", 5.0), ("chain-local", 20.0)):
        ch = pc.get(bench)
        if ch is None:
            continue
        executor = bench.removeprefix("chain-")
        label = f"7. chain of 50 tasks, `{executor}`: node → next node gap"
        target = f"≤ {limit:g} ms (excl. task bodies)"
        if err(ch):
            rows.append((label, err(ch) or "", "-", "-", target, "-"))
            continue
        api, magic = ch["engine_api"], ch["workflow_magic"]
        gap = api["gap_ms"]["median"]
        mgap = magic["gap_ms"]["median"]
        fk_text = "-"
        if fchain is not None:
            fk_text = (
                err(fchain)
                or f"(no events) whole run: {ms(med(fchain, 'wall_per_node_ms'))} per node"
            )
        rows.append(
            (
                label,
                f"{ms(gap)} median, p90 {ms(api['gap_ms']['p90'])} (engine API); "
                f"{ms(mgap)}, p90 {ms(magic['gap_ms']['p90'])} (`%workflow run`)",
                "attempt_succeeded(k) → attempt_started(k+1), store events",
                fk_text,
                target,
                verdict(max(gap, mgap) <= limit),
            )
        )
        rows.append(
            (
                "↳ whole run ÷ 50 nodes",
                f"{ms(api['wall_per_node_ms'])} (engine API); "
                f"{ms(magic['wall_per_node_ms'])} (`%workflow run`)",
                f"attempt (started → succeeded) {ms(api['attempt_span_ms']['median'])}"
                + unreported(api)
                + f"; one new small file {ms(ch['file_create']['per_file_ms'])}",
                "-",
                "(info)",
                "-",
            )
        )
    # 8. papermill
    pmr = pc.get("papermill")
    if pmr is not None:
        label = "8. papermill re-run of quickstart.ipynb (all cache hits)"
        if err(pmr):
            rows.append((label, err(pmr) or "", "-", "-", "≤ 1.1× plain papermill", "-"))
        else:
            ratio = pmr["ratio"]
            ev = pmr.get("events_in_timed_runs", {})
            rows.append(
                (
                    label,
                    f"{secs(med(pmr, 'cached_ms') / 1e3)} = {ratio:.2f}× "
                    f"({ev.get('cache_hit', 0)} hits, {ev.get('attempt_started', 0)} attempts)",
                    f"papermill, magics removed {secs(med(pmr, 'plain_ms') / 1e3)} = 1×",
                    "-",
                    "≤ 1.1×",
                    verdict(ratio <= 1.1),
                )
            )
            rows.append(
                (
                    "↳ time in the cells (papermill's per-cell durations)",
                    f"{ms(pmr['cached_cells_total_ms'])}; first run (misses): "
                    f"{secs(pmr['first_run_ms'] / 1e3)} in all",
                    f"{ms(pmr['plain_cells_total_ms'])}",
                    "-",
                    "(info)",
                    "-",
                )
            )
    # 9. big
    big = pc.get("big")
    if big is not None:
        rows += big_rows(big, err(big))
    return rows


def unreported(api: dict[str, Any]) -> str:
    """The part of the attempt span that the attempt's own reported duration leaves out."""
    if "span_minus_reported_ms" not in api:
        return ""
    extra = api["span_minus_reported_ms"]["median"]
    return f", of which outside the attempt's own duration {ms(extra)}"


def big_rows(big: dict[str, Any], error: str | None) -> list[tuple[str, ...]]:
    target = big.get("target_nodes", 100_000)
    label = f"9. {target:,}-node workflow, `inline`, engine API"
    if error:
        return [(label, error, "-", "-", "time and memory (report)", "-")]
    rows: list[tuple[str, ...]] = []
    chain = [c for c in big.get("chain", []) if "error" not in c]
    failed = [c for c in big.get("chain", []) + big.get("wide", []) if "error" in c]
    largest = chain[-1] if chain else None
    if largest is not None:
        n = largest["nodes"]
        text = (
            f"{secs(largest['total_s'])} = {largest['per_node_ms']:.2f} ms/node "
            f"(build {secs(largest['build_s'])}, register {secs(largest['register_s'])}, "
            f"run {secs(largest['run_s'])})"
        )
        if n < target:
            per = largest["total_s"] / n
            why = "over --big-budget" if big.get("skipped") else "--quick"
            text += f"; {target:,} nodes not run ({why}), ≈ {secs(per * target)} extrapolated"
        rows.append(
            (
                f"9. {n:,}-node chain, `inline`, engine API",
                text,
                f"peak RSS {largest['peak_rss_mib']:,.0f} MiB (from "
                f"{largest['start_rss_mib']:.0f} MiB after imports)",
                "-",
                "report time and memory",
                "-",
            )
        )
        rows.append(
            (
                "↳ what it leaves",
                f"{largest['events']:,} events, SQLite {largest['db_mib']:,.0f} MiB, "
                f"{largest['store_files']:,} files in storage",
                f"reading its events back {secs(largest['read_events_s'])}",
                "-",
                "(info)",
                "-",
            )
        )
    if chain:
        rows.append(
            (
                "↳ chain: ms per node by size",
                "; ".join(f"{c['nodes']:,}: {c['per_node_ms']:.2f}" for c in chain),
                "; ".join(f"{c['nodes']:,}: {c['peak_rss_mib']:,.0f} MiB" for c in chain),
                "-",
                "(info)",
                "-",
            )
        )
    wide = [c for c in big.get("wide", []) if "error" not in c]
    if wide:
        text = "; ".join(f"{c['nodes']:,}: {c['per_node_ms']:.2f}" for c in wide)
        fit = linear_fit([c["nodes"] for c in wide], [c["per_node_ms"] for c in wide])
        if fit is not None and fit[1] > 0:
            a, b = fit
            text += (
                f" (fit: {a:.2f} + {b * 1000:.3f}·n/1,000 ms per node ⇒ {target:,} wide ≈ "
                f"{secs(target * (a + b * target) / 1000)})"
            )
        rows.append(
            (
                "↳ wide DAG (all nodes read one parameter): ms per node by size",
                text,
                "; ".join(f"{c['nodes']:,}: {c['peak_rss_mib']:,.0f} MiB" for c in wide),
                "-",
                "(info)",
                "-",
            )
        )
    for c in failed:
        rows.append(
            (f"↳ {c['shape']} of {c['nodes']:,} nodes", f"error: {c['error']}", "-", "-", "-", "-")
        )
    return rows


def linear_fit(xs: list[float], ys: list[float]) -> tuple[float, float] | None:
    """Least-squares (a, b) of y = a + b·x; None for fewer than two distinct x."""
    if len(set(xs)) < 2:
        return None
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    return my - b * mx, b


HEADER = ("benchmark", "papercrane", "pure-Python baseline", "flytekit (local)", "target", "meets")


def render_markdown(rows: list[tuple[str, ...]]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render_plain(rows: list[tuple[str, ...]]) -> str:
    table = [HEADER, *rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(HEADER))]
    out = []
    for n, row in enumerate(table):
        out.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def print_table(rows: list[tuple[str, ...]], plain: bool) -> None:
    rows = [tuple(c.replace("`", "") for c in row) for row in rows]
    if not plain:
        try:
            from rich.console import Console
            from rich.markup import escape
            from rich.table import Table
        except ImportError:
            plain = True
    if plain:
        print(render_plain(rows))
        return
    table = Table(title="papercrane benchmarks")
    for name in HEADER:
        table.add_column(name, overflow="fold")
    marks = {"yes": "[green]yes[/]", "NO": "[bold red]NO[/]"}
    for row in rows:
        table.add_row(*(escape(c) for c in row[:-1]), marks.get(row[-1], escape(row[-1])))
    Console(width=max(160, shutil.get_terminal_size().columns)).print(table)


def machine_line(info: dict[str, Any]) -> str:
    parts = [
        info.get("date", ""),
        f"{info.get('cpu', platform.machine())}, {info.get('cpu_count')} cores, "
        f"{info.get('memory_gib', '?')} GiB",
        info.get("platform", ""),
        f"Python {info.get('python')}",
        f"papercrane {info.get('papercrane')} ({info.get('commit')})",
        f"IPython {info.get('ipython')}",
        f"numpy {info.get('numpy')}",
    ]
    if info.get("flytekit"):
        parts.append(f"flytekit {info['flytekit']}")
    others = info.get("other_cores_by_job")
    if others:
        worst = max(others, key=others.get)
        parts.append(
            f"other processes busy {min(others.values()):.2f}–{others[worst]:.2f} cores "
            f"during the jobs (most: {worst})"
        )
    return " · ".join(p for p in parts if p)


# -- main -----------------------------------------------------------------------------------------
def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    p.add_argument(
        "--only",
        default=",".join(GROUPS),
        help=f"comma-separated groups to run: {','.join(GROUPS)}",
    )
    p.add_argument("--no-flytekit", action="store_true", help="skip flytekit (and its venv)")
    p.add_argument(
        "--profile",
        action="store_true",
        help="write pyinstrument profiles of papercrane's timed loops to results/profiles/",
    )
    p.add_argument(
        "--papercrane-python",
        help="use this interpreter (with papercrane, numpy, pyinstrument installed) "
        "instead of creating benchmarks/.venv-papercrane",
    )
    p.add_argument(
        "--flytekit-spec",
        default=FLYTEKIT_SPEC,
        help=f"pip requirement for flytekit (default {FLYTEKIT_SPEC})",
    )
    p.add_argument("--rebuild", action="store_true", help="recreate the benchmark venvs")
    p.add_argument("--plain", action="store_true", help="plain-text table instead of rich")
    p.add_argument(
        "--show", action="store_true", help="print the table of results/latest.json; run nothing"
    )
    p.add_argument("--timeout", type=int, default=1800, help="seconds per benchmark process")
    p.add_argument(
        "--big-nodes",
        type=int,
        default=100_000,
        help="nodes of the largest workflow of the `big` group (default 100000)",
    )
    p.add_argument(
        "--big-budget",
        type=int,
        default=900,
        help="run the largest workflow only if the 10,000-node run extrapolates to at most "
        "this many seconds (default 900)",
    )
    p.add_argument("--in-venv", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--flytekit-python", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.groups = [g.strip() for g in args.only.split(",") if g.strip()]
    unknown = set(args.groups) - set(GROUPS)
    if unknown:
        p.error(f"unknown group(s) {', '.join(sorted(unknown))}; choose from {', '.join(GROUPS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.show:
        saved = json.loads((RESULTS / "latest.json").read_text())
        print_table(build_rows(saved["results"]), args.plain)
        print(machine_line(saved["machine"]))
        return 0
    if not args.in_venv:
        pc, fk = setup(args)
        rest = [a for a in argv if a != "--rebuild"]
        rest += ["--in-venv", "--papercrane-python", pc]
        if fk:
            rest += ["--flytekit-python", fk]
        sys.stdout.flush()
        os.execv(pc, [pc, str(Path(__file__).resolve()), *rest])
    pc_python = args.papercrane_python or sys.executable
    fk_python = None if args.no_flytekit else args.flytekit_python

    results: dict[str, dict[str, Any]] = {"papercrane": {}, "flytekit": {}}
    started = time.time()
    for group, side, bench in JOBS:
        if group not in args.groups:
            continue
        python = pc_python if side == "papercrane" else fk_python
        if python is None:
            continue
        log(f"[{time.time() - started:5.0f} s] {side}: {bench} ...")
        data = run_job(python, side, bench, args)
        if "error" in data:
            log(f"    failed: {data['error']}")
            for line in data.get("stderr_tail", []):
                log(f"      {line}")
        results[side][bench] = data

    info = machine_info(pc_python, fk_python)
    others = {
        f"{side}:{bench}": d["other_cores"]
        for side, benches in results.items()
        for bench, d in benches.items()
        if d.get("other_cores") is not None
    }
    if others:
        info["other_cores_by_job"] = others
    info["date"] = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    info["quick"] = args.quick
    rows = build_rows(results)
    print()
    print_table(rows, args.plain)
    print(machine_line(info))

    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(
        json.dumps({"machine": info, "results": results}, indent=2, sort_keys=True)
    )
    (RESULTS / "latest.md").write_text(f"{render_markdown(rows)}\n\n{machine_line(info)}\n")
    (RESULTS / "latest.txt").write_text(f"{render_plain(rows)}\n\n{machine_line(info)}\n")
    log(f"saved results/latest.{{json,md,txt}} in {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
