#!/usr/bin/env python3
"""Run papercrane's benchmarks against a pure-Python baseline and flytekit's local
execution, and print the figures side by side.

    python benchmarks/run.py              # everything (about 3 minutes after set-up)
    python benchmarks/run.py --quick      # fewer repetitions, for a smoke run
    python benchmarks/run.py --only inline,cache --no-flytekit
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
GROUPS = ("load", "inline", "local", "cache", "array")

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
    script = HERE / ("bench_papercrane.py" if side == "papercrane" else "bench_flytekit.py")
    root = tempfile.mkdtemp(prefix=f"pc-bench-{bench}-")
    out = Path(root) / "result.json"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PAPERCRANE_", "FLYTE")) and k not in ("PYTHONPATH", "VIRTUAL_ENV")
    }
    env.update(HOME=root, TMPDIR=root, IPYTHONDIR=str(Path(root) / "ipython"))
    argv = [python, str(script), bench, "--out", str(out)]
    if args.quick:
        argv.append("--quick")
    if side == "papercrane":
        argv += ["--tmp", root]
        if args.profile:
            profiles = RESULTS / "profiles"
            profiles.mkdir(parents=True, exist_ok=True)
            argv += ["--profile", str(profiles / f"{bench}.txt")]
    started = time.time()
    try:
        proc = subprocess.run(
            argv, env=env, cwd=HERE, capture_output=True, text=True, timeout=args.timeout
        )
        if proc.returncode != 0 or not out.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
            return {"error": f"exit {proc.returncode}", "stderr_tail": tail}
        data = json.loads(out.read_text())
        data["wall_s"] = round(time.time() - started, 1)
        return data
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {args.timeout} s"}
    finally:
        shutil.rmtree(root, ignore_errors=True)


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
    return rows


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
