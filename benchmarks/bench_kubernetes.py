"""Kubernetes against the local executor, on the cluster KUBECONFIG points at
(``eval "$(scripts/k8s/cluster.sh up)"`` starts one here): pod submission to running,
the dependent-node transition (previous pod finished -> next pod created; target <= 1 s
on top of the pod's own start), and a 100-element map in pods with bounded concurrency.

    python benchmarks/bench_kubernetes.py [--map 100] [--concurrency 4] [--chain 5]

Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any


def _engine(home: Path) -> Any:
    from papercrane.backend.config import Config
    from papercrane.backend.engine import LocalEngine

    return LocalEngine(Config(home=home, project="bench", domain="development"))


def _cells(executor: str, chain: int) -> list[Any]:
    from papercrane.backend.model import TaskConfig, TaskSpec
    from papercrane.backend.workflow import CellTask

    cells = [
        CellTask(
            TaskSpec(name="n0", code="x0 = 0", inputs=(), outputs=("x0",)),
            TaskConfig(executor=executor),
        )
    ]
    for i in range(1, chain):
        cells.append(
            CellTask(
                TaskSpec(
                    name=f"n{i}",
                    code=f"x{i} = x{i - 1} + 1",
                    inputs=(f"x{i - 1}",),
                    outputs=(f"x{i}",),
                ),
                TaskConfig(executor=executor),
            )
        )
    return cells


class _JobWatch:
    """Watches the attempt pods and notes when this process first saw each one created,
    running and finished (Kubernetes' own timestamps have one-second resolution)."""

    def __init__(self, namespace: str) -> None:
        from kubernetes import client, config  # (imported here: not from two threads)

        config.load_kube_config()
        self.core = client.CoreV1Api()
        self.namespace = namespace
        self.created: dict[str, float] = {}
        self.running: dict[str, float] = {}
        self.finished: dict[str, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from kubernetes import watch

        while not self.stop.is_set():
            w = watch.Watch()
            for event in w.stream(self.core.list_namespaced_pod, self.namespace, timeout_seconds=1):
                now = time.time()
                pod = event["object"]
                node = (pod.metadata.labels or {}).get("papercrane.io/node", "")
                self.created.setdefault(node, now)
                for cs in pod.status.container_statuses or []:
                    if cs.state and (cs.state.running or cs.state.terminated):
                        self.running.setdefault(node, now)
                    if cs.state and cs.state.terminated:
                        self.finished.setdefault(node, now)

    def __enter__(self) -> _JobWatch:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join(timeout=5)


def main() -> None:
    from papercrane.backend.engine import WorkflowRequest
    from papercrane.backend.model import TaskConfig, TaskSpec
    from papercrane.backend.workflow import CellTask, MapSpec, assemble

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--map", type=int, default=100, help="elements in the map")
    parser.add_argument("--concurrency", type=int, default=4, help="pods at once")
    parser.add_argument("--chain", type=int, default=5, help="nodes in the dependent chain")
    args = parser.parse_args()
    if not os.environ.get("KUBECONFIG"):
        raise SystemExit('set KUBECONFIG (eval "$(scripts/k8s/cluster.sh up)")')
    os.environ.setdefault("PAPERCRANE_K8S_PULL_POLICY", "Never")
    from papercrane.backend.executors.kubernetes import KubernetesSettings

    namespace = KubernetesSettings.from_env().namespace_for("bench", "development")
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        engine = _engine(Path(tmp) / "home")
        try:
            # A chain: each node waits for the previous one.
            chain = assemble("chain", _cells("kubernetes", args.chain))
            with _JobWatch(namespace) as jobs:
                t0 = time.perf_counter()
                result = engine.run_workflow(
                    WorkflowRequest(spec=chain, params={}, project="bench", max_parallel=1)
                )
                chain_wall = time.perf_counter() - t0
            started = {
                e.node: e.ts
                for e in engine.events(result.execution.id)
                if e.kind.value == "attempt_started"
            }
            starts = [jobs.running[n] - started[n] for n in started if n in jobs.running]
            gaps = [
                jobs.created[f"n{i}"] - jobs.finished[f"n{i - 1}"]
                for i in range(1, args.chain)
                if f"n{i}" in jobs.created and f"n{i - 1}" in jobs.finished
            ]
            local = assemble("chain", _cells("local", args.chain))
            t0 = time.perf_counter()
            engine.run_workflow(
                WorkflowRequest(spec=local, params={}, project="bench", max_parallel=1)
            )
            local_wall = time.perf_counter() - t0
            rows.append(
                (
                    "Job submitted -> pod running (median)",
                    f"{statistics.median(starts):.2f} s",
                    "(no pod)",
                )
            )
            rows.append(
                (
                    "previous pod finished -> next pod created (median)",
                    f"{statistics.median(gaps):.2f} s" if gaps else "n/a",
                    "target <= 1 s",
                )
            )
            rows.append(
                (
                    f"chain of {args.chain} trivial tasks, wall",
                    f"{chain_wall:.1f} s",
                    f"local: {local_wall:.1f} s",
                )
            )

            # A map in pods, bounded.
            def mapped(executor: str) -> list[Any]:
                return [
                    CellTask(
                        TaskSpec(
                            name="sq", code="y = item * item", inputs=("item",), outputs=("y",)
                        ),
                        TaskConfig(executor=executor),
                        map=MapSpec("items", "item", concurrency=args.concurrency),
                    )
                ]

            items = list(range(args.map))
            params = {"items": engine.put_value(items, "items")}
            for executor in ("kubernetes", "local"):
                t0 = time.perf_counter()
                out = engine.run_workflow(
                    WorkflowRequest(
                        spec=assemble(f"map-{executor}", mapped(executor)),
                        params=params,
                        param_values={"items": items},
                        project="bench",
                        max_parallel=args.concurrency,
                    )
                )
                wall = time.perf_counter() - t0
                assert out.nodes["sq"].values["y"] == [i * i for i in items]
                rows.append(
                    (
                        f"{args.map}-element map, {args.concurrency} at once, {executor}",
                        f"{wall:.1f} s",
                        f"{wall / args.map * 1000:.0f} ms/element",
                    )
                )
        finally:
            engine.close()
    width = max(len(r[0]) for r in rows) + 2
    print()
    for label, figure, note in rows:
        print(f"{label:<{width}}{figure:>12}   {note}")


if __name__ == "__main__":
    main()
