"""Timing helpers shared by the benchmark workers (standard library only).

Every worker runs in its own process, in its own virtual environment, and writes one
JSON document of figures (milliseconds) to the path given with ``--out``. Nothing here
asserts a timing: the figures are reported, not judged.
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

MIB = 1 << 20
#: The array handed from one task to the next: 100 MiB of float64.
ARRAY_BYTES = 100 * MIB
ARRAY_LEN = ARRAY_BYTES // 8
#: Heavy libraries that ``%load_ext papercrane`` must not import.
HEAVY_MODULES = (
    "numpy",
    "pandas",
    "pyarrow",
    "sqlalchemy",
    "alembic",
    "kubernetes",
    "fsspec",
    "cloudpickle",
    "ipywidgets",
    "flytekit",
)


class NullIO(io.TextIOBase):
    """A sink for the widgets' text output while a loop is timed."""

    def write(self, text: str) -> int:
        return len(text)

    def writable(self) -> bool:
        return True


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    sink = NullIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        yield


def per_call_ms(fn: Callable[[], Any], *, n: int, rounds: int, warmup: int = 0) -> dict[str, Any]:
    """Time ``fn`` in ``rounds`` rounds of ``n`` calls; figures are per call, in ms.

    ``median`` is the median of the rounds' means (the figure reported); ``min`` the
    fastest round's mean, for a feel of the noise.
    """
    for _ in range(warmup):
        fn()
    means = []
    for _ in range(rounds):
        gc.collect()
        start = time.perf_counter_ns()
        for _ in range(n):
            fn()
        means.append((time.perf_counter_ns() - start) / n / 1e6)
    return summary(means, n=n)


def each_call_ms(fn: Callable[[], Any], *, reps: int, warmup: int = 0) -> dict[str, Any]:
    """Time single calls (for slow things); figures in ms."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        gc.collect()
        start = time.perf_counter_ns()
        fn()
        times.append((time.perf_counter_ns() - start) / 1e6)
    return summary(times, n=1)


def summary(samples: list[float], n: int = 1) -> dict[str, Any]:
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "samples": [round(s, 4) for s in samples],
        "calls_per_sample": n,
    }


def write_result(path: str | None, data: dict[str, Any]) -> None:
    text = json.dumps(data, indent=2, sort_keys=True)
    if path:
        with open(path, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text + "\n")


def fresh_dir(parent: str | None, prefix: str) -> str:
    import tempfile

    return tempfile.mkdtemp(prefix=prefix, dir=parent or os.environ.get("TMPDIR"))


def profile_loop(path: str | None, fn: Callable[[], Any], n: int) -> None:
    """With ``path``, run ``fn`` ``n`` more times under pyinstrument (after the timed loop,
    so the profiler's own cost never reaches the figures) and write the profile as text
    and HTML. Without pyinstrument installed, say so and skip."""
    if not path:
        return

    def loop() -> None:
        for _ in range(n):
            fn()

    profile_call(path, loop, f"{n} runs of the timed loop's body profiled; divide the times by {n}")


def profile_call(path: str | None, fn: Callable[[], Any], title: str) -> None:
    """With ``path``, run ``fn`` once under pyinstrument and write the profile (see
    ``write_profile``)."""
    if not path:
        return
    try:
        from pyinstrument import Profiler
    except ImportError:
        sys.__stderr__.write("pyinstrument is not installed: no profile written\n")
        return
    profiler = Profiler(interval=0.0005)
    profiler.start()
    try:
        fn()
    finally:
        profiler.stop()
    write_profile(path, profiler, title)


def write_profile(path: str, profiler: Any, title: str, top: int = 30) -> None:
    """Write ``path`` (text: the hottest functions by self and by total time, then the
    call tree) and the HTML view beside it."""
    root = profiler.last_session.root_frame()
    with open(path, "w") as f:
        f.write(f"{title}\n\n")
        if root is not None:
            f.write(hot_functions(root, top))
            f.write("\n")
        f.write(profiler.output_text(unicode=True, color=False, show_all=False))
    with open(os.path.splitext(path)[0] + ".html", "w") as f:
        f.write(profiler.output_html())


#: Path fragments that mark papercrane's own code in a profile (pyinstrument shortens
#: paths to ../backend/... when run from benchmarks/).
OWN_CODE = ("backend/", "kernel_magics/", "/papercrane/")


def hot_functions(root: Any, top: int = 30) -> str:
    """Aggregate a pyinstrument frame tree by function: self time (time in the function's
    own code) and total time (counted once per call stack, so recursion is not double
    counted), in ms; then papercrane's own functions by total time, and the time spent
    importing modules, by package (a package's own modules, without the other packages
    they import)."""
    self_ms: dict[str, float] = {}
    total_ms: dict[str, float] = {}
    imports_ms: dict[str, float] = {}

    def key(frame: Any) -> str:
        where = frame.file_path_short or ""
        return f"{frame.function}  ({where}:{frame.line_no})"

    def walk(frame: Any, stack: frozenset[str], owner: str) -> None:
        for child in frame.children:
            if child.is_synthetic:
                if child.function == "[self]" or child.identifier == "[self]":
                    k = key(frame)
                    self_ms[k] = self_ms.get(k, 0.0) + child.time * 1e3
                continue
            k = key(child)
            if k not in stack:
                total_ms[k] = total_ms.get(k, 0.0) + child.time * 1e3
            child_owner = owner
            path = child.file_path or ""
            is_module = path.endswith(".py") or "frozen" in path
            if child.function == "<module>" and is_module and "ipykernel_" not in path:
                pkg = _package(path)
                if pkg != owner:  # a module of another package: its time is that package's
                    t = child.time * 1e3
                    imports_ms[pkg] = imports_ms.get(pkg, 0.0) + t
                    if owner:
                        imports_ms[owner] -= t
                    child_owner = pkg
            walk(child, stack | {k}, child_owner)

    walk(root, frozenset(), "")
    own = {k: v for k, v in total_ms.items() if _own(k)}
    lines = [f"total profiled: {root.time * 1e3:,.1f} ms", "", "hottest by self time (ms):"]
    lines += [f"  {v:10,.1f}  {k}" for k, v in sorted(self_ms.items(), key=lambda kv: -kv[1])[:top]]
    lines += ["", "papercrane's functions by total time (ms, callees included):"]
    lines += [f"  {v:10,.1f}  {k}" for k, v in sorted(own.items(), key=lambda kv: -kv[1])[:top]]
    if imports_ms:
        lines += ["", "importing modules, by package (ms, each package's own modules):"]
        lines += [
            f"  {v:10,.1f}  {k}" for k, v in sorted(imports_ms.items(), key=lambda kv: -kv[1])[:15]
        ]
    return "\n".join(lines) + "\n"


def _own(key: str) -> bool:
    return any(p in key for p in OWN_CODE)


def _package(path: str) -> str:
    """'…/site-packages/sqlalchemy/sql/base.py' -> 'sqlalchemy'; papercrane's own files
    -> 'papercrane'; the standard library -> 'stdlib'."""
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    if any(p in path for p in OWN_CODE):
        return "papercrane"
    if path.startswith("<frozen"):
        return "stdlib"
    return "stdlib" if "/lib/python" in path else os.path.basename(path)


def array_figures(system: str, samples: dict[str, list[float]]) -> dict[str, Any]:
    """Figures of the 100 MiB hand-off from ``samples`` (ms): ``direct`` (the two cells
    as plain code), ``saveload`` (np.save + np.load of the array), ``produce_consume``
    (the two tasks), and the ``tiny_`` variants with an 8-element array.

    ``best`` (the headline) takes the fastest run of each; ``median`` is beside it.
    """
    out: dict[str, Any] = {
        "system": system,
        "array_bytes": ARRAY_BYTES,
        "samples_ms": {k: [round(x, 3) for x in v] for k, v in samples.items()},
    }
    for label, pick in (("best", min), ("median", statistics.median)):
        m = {k: pick(v) for k, v in samples.items()}
        handoff = m["produce_consume"] - m["direct"]
        fixed = m["tiny_produce_consume"] - m["tiny_direct"]
        out[label] = {
            **{f"{k}_ms": v for k, v in m.items()},
            "handoff_ms": handoff,
            "handoff_ratio": handoff / m["saveload"],
            "size_dependent_ms": handoff - fixed,
            "size_dependent_ratio": (handoff - fixed) / m["saveload"],
        }
    return out
