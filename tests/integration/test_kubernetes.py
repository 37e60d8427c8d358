"""The kubernetes executor against a real cluster: every attempt a Job and a pod.

Needs ``KUBECONFIG`` pointing at a cluster whose nodes have the task image
(``eval "$(scripts/k8s/cluster.sh up)"`` starts a one-node cluster on this machine and
loads local/papercrane-task:dev; ``scripts/k8s/cluster.sh image`` reloads it after a
change to code that runs in pods). Storage is a folder under pytest's tmp_path that pods
mount by hostPath at the same path, so the node must share this machine's filesystem (a
one-node local cluster). Without a reachable cluster the tests are skipped with the
reason; with ``PAPERCRANE_TEST_K8S_REQUIRED=1`` (CI) that is a failure instead.

Each test module run uses a project of its own, hence a namespace of its own
(``papercrane-<project>-development``), deleted at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest

from papercrane.backend.api import RunRequest
from papercrane.backend.config import Config
from papercrane.backend.engine import LocalEngine, WorkflowRequest
from papercrane.backend.errors import ExecutionAborted, TaskFailed
from papercrane.backend.model import Event, EventKind, Resources, Status, TaskConfig, TaskSpec
from papercrane.backend.scheduler import WorkflowRun
from papercrane.backend.workflow import CellTask, MapSpec, assemble

from ..needs import unavailable
from ..server_fixture import ServerProcess

IMAGE = os.environ.get("PAPERCRANE_K8S_IMAGE", "local/papercrane-task:dev")
PROJECT = f"k8stest{uuid.uuid4().hex[:6]}"
NAMESPACE = f"papercrane-{PROJECT}-development"
K = EventKind


# -- the cluster --------------------------------------------------------------------------------
def _unavailable(reason: str) -> NoReturn:
    """Skip, or fail where a cluster must be there (CI starts one)."""
    unavailable(reason, "PAPERCRANE_TEST_K8S_REQUIRED")


@dataclass
class Cluster:
    core: Any
    batch: Any
    rbac: Any
    host: str
    ca_file: str | None

    def jobs(self, execution_id: str, namespace: str = NAMESPACE) -> list[Any]:
        selector = f"papercrane.io/execution={execution_id}"
        return self.batch.list_namespaced_job(namespace, label_selector=selector).items

    def pods(self, execution_id: str, namespace: str = NAMESPACE) -> list[Any]:
        selector = f"papercrane.io/execution={execution_id}"
        return self.core.list_namespaced_pod(namespace, label_selector=selector).items

    def running_pod(self, execution_id: str, attempt: int = 1, timeout: float = 60) -> Any:
        def found() -> Any:
            for pod in self.pods(execution_id):
                labels = pod.metadata.labels or {}
                if (
                    labels.get("papercrane.io/attempt") == str(attempt)
                    and pod.status.phase == "Running"
                    and pod.metadata.deletion_timestamp is None
                ):
                    return pod
            return None

        return wait_for(found, timeout, f"a running pod of attempt {attempt}")

    def gone(self, execution_id: str, timeout: float = 15) -> None:
        """No Job and no pod of the execution is left (deleted, not just finishing)."""
        wait_for(
            lambda: not self.jobs(execution_id) and not self.pods(execution_id),
            timeout,
            f"the Jobs and pods of {execution_id} to be deleted",
        )


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    kubeconfig = os.environ.get("KUBECONFIG")
    if not kubeconfig:
        _unavailable(
            "no Kubernetes cluster configured: set KUBECONFIG "
            '(eval "$(scripts/k8s/cluster.sh up)" starts a local one)'
        )
    try:
        from kubernetes import client, config
    except ImportError:
        _unavailable("the kubernetes client is not installed: pip install -e '.[test]'")
    configuration = client.Configuration()
    try:
        config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        api = client.ApiClient(configuration)
        client.VersionApi(api).get_code(_request_timeout=5)
        nodes = client.CoreV1Api(api).list_node(_request_timeout=10).items
    except Exception as exc:
        _unavailable(f"the Kubernetes cluster of KUBECONFIG={kubeconfig} is unreachable: {exc}")
    images = {name for n in nodes for i in n.status.images or [] for name in i.names or []}
    if not any(name == IMAGE or name.endswith("/" + IMAGE) for name in images):
        _unavailable(
            f"the task image {IMAGE} is not on the cluster's nodes: "
            "scripts/k8s/cluster.sh image (or set PAPERCRANE_K8S_IMAGE)"
        )
    found = Cluster(
        core=client.CoreV1Api(api),
        batch=client.BatchV1Api(api),
        rbac=client.RbacAuthorizationV1Api(api),
        host=configuration.host,
        ca_file=configuration.ssl_ca_cert,
    )
    try:
        yield found
    finally:
        with contextlib.suppress(Exception):
            found.core.delete_namespace(NAMESPACE, grace_period_seconds=0)
        api.close()


@pytest.fixture(scope="module")
def k8s_env(cluster: Cluster) -> Iterator[None]:
    """Pods use the image already on the node (there is no registry to pull from)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PAPERCRANE_K8S_PULL_POLICY", "Never")
        mp.setenv("PAPERCRANE_K8S_IMAGE", IMAGE)
        for name in (
            "PAPERCRANE_K8S_NAMESPACE",
            "PAPERCRANE_K8S_CONTEXT",
            "PAPERCRANE_K8S_SECRETS",
            "PAPERCRANE_K8S_PENDING_TIMEOUT",
            "PAPERCRANE_K8S_STORAGE_VOLUME",
            "PAPERCRANE_K8S_SERVICE_ACCOUNT",
            "PAPERCRANE_K8S_POD_QUOTA",
        ):
            mp.delenv(name, raising=False)
        yield


@pytest.fixture(scope="module")
def engine(k8s_env: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEngine]:
    """One engine (and home) for the module; its store is mounted into the pods."""
    e = LocalEngine(Config(home=tmp_path_factory.mktemp("k8s-home")))
    try:
        yield e
    finally:
        e.close()


@pytest.fixture
def fresh_engine(
    k8s_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., LocalEngine]]:
    """An engine whose kubernetes executor reads the environment given (its settings
    are read once, when the executor is made)."""
    made: list[LocalEngine] = []

    def make(**env: str) -> LocalEngine:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        e = LocalEngine(Config(home=tmp_path / f"home{len(made)}"))
        made.append(e)
        return e

    try:
        yield make
    finally:
        for e in made:
            e.close()


# -- helpers ------------------------------------------------------------------------------------
def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)


@dataclass
class Recorder:
    """A listener that keeps what it heard, with the time it heard it."""

    events: list[tuple[float, Event]] = field(default_factory=list)
    logs: list[tuple[float, str, str]] = field(default_factory=list)

    def on_event(self, event: Event, state: Any) -> None:
        self.events.append((time.monotonic(), event))

    def on_log(self, stream: str, text: str) -> None:
        self.logs.append((time.monotonic(), stream, text))

    def of(self, kind: EventKind) -> list[Event]:
        return [e for _, e in self.events if e.kind is kind]

    def first(self, kind: EventKind) -> float:
        return next(t for t, e in self.events if e.kind is kind)

    def text(self) -> str:
        return "".join(text for _, _, text in self.logs)


def spec(name: str, code: str, inputs: tuple[str, ...] = (), outputs=("y",)) -> TaskSpec:
    return TaskSpec(name=name, code=code, inputs=inputs, outputs=tuple(outputs))


def request(engine: LocalEngine, task: TaskSpec, values: dict[str, Any] | None = None, **config):
    values = values or {}
    refs = {n: engine.put_value(v, f"input {n!r}") for n, v in values.items()}
    return RunRequest(
        spec=task,
        config=TaskConfig(executor="kubernetes", **config),
        inputs=refs,
        values=values,
        project=PROJECT,
    )


def run(engine: LocalEngine, task: TaskSpec, listener: Any = None, **config: Any):
    return engine.run_task(request(engine, task, **config), listener)


@dataclass
class Background:
    """An execution proceeding on a thread, while the test looks at the cluster."""

    run: WorkflowRun
    thread: threading.Thread
    outcome: dict[str, Any]

    @property
    def id(self) -> str:
        return self.run.state.id

    def join(self, timeout: float = 120) -> Any:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the execution did not end"
        if "error" in self.outcome:
            raise self.outcome["error"]
        return self.outcome["result"]


def start(engine: LocalEngine, task: TaskSpec, listener: Any = None, **config: Any) -> Background:
    wr = engine.task_run(request(engine, task, **config), listener)
    wr.begin()
    outcome: dict[str, Any] = {}

    def proceed() -> None:
        try:
            outcome["result"] = wr.proceed()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=proceed, daemon=True)
    thread.start()
    return Background(wr, thread, outcome)


def gate(engine: LocalEngine) -> Path:
    """A file the test creates to let a task go on: inside storage, which pods mount."""
    folder = Path(engine.storage.root) / "gates"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / uuid.uuid4().hex


def wait_code(path: Path) -> str:
    return f"import os, time\nwhile not os.path.exists({str(path)!r}):\n    time.sleep(0.05)\n"


def errors(engine: LocalEngine, execution_id: str) -> list[dict[str, Any]]:
    return [e.payload["error"] for e in engine.events(execution_id) if e.kind is K.ATTEMPT_FAILED]


def failure(info: pytest.ExceptionInfo[TaskFailed]) -> tuple[str, str]:
    return info.value.error_type, info.value.error_message


def quantity(value: str) -> float:
    from kubernetes.utils import parse_quantity

    return float(parse_quantity(value))


# -- a Job per attempt --------------------------------------------------------------------------
def test_a_job_per_attempt_as_the_api_server_stored_it(
    engine: LocalEngine, cluster: Cluster
) -> None:
    release = gate(engine)
    task = spec("spec_check", wait_code(release) + "y = 1")
    resources = Resources(cpu=0.25, memory=128 << 20)
    bg = start(engine, task, timeout=120, resources=resources)
    try:
        pod = cluster.running_pod(bg.id)
        (job,) = cluster.jobs(bg.id)
    finally:
        release.write_text("go")
    result = bg.join()
    assert result.nodes["spec_check"].values == {"y": 1}

    labels = {
        "papercrane.io/project": PROJECT,
        "papercrane.io/domain": "development",
        "papercrane.io/execution": bg.id,
        "papercrane.io/node": "spec_check",
        "papercrane.io/attempt": "1",
    }
    assert labels.items() <= job.metadata.labels.items()
    assert job.metadata.namespace == NAMESPACE
    assert job.spec.backoff_limit == 0
    assert job.spec.active_deadline_seconds == 120
    template = job.spec.template
    assert labels.items() <= template.metadata.labels.items()
    assert template.spec.restart_policy == "Never"
    (c,) = template.spec.containers
    root = str(Path(engine.storage.root).resolve())
    assert c.command == [
        "/opt/venv/bin/python",
        "-m",
        "papercrane.backend.runner",
        root,
        f"runs/{bg.id}/spec_check/1/attempt.json",
    ]
    assert c.image == IMAGE and c.image_pull_policy == "Never"
    for kind in ("requests", "limits"):
        got = getattr(c.resources, kind)
        assert quantity(got["cpu"]) == 0.25 and quantity(got["memory"]) == 128 << 20
    (volume,) = template.spec.volumes
    assert volume.host_path.path == root
    assert [(m.name, m.mount_path) for m in c.volume_mounts] == [(volume.name, root)]
    # The pod is the Job's, with the same labels.
    assert [o.kind for o in pod.metadata.owner_references] == ["Job"]
    assert labels.items() <= pod.metadata.labels.items()
    # A finished attempt's Job is deleted (1.20 has no TTL controller), pods with it.
    cluster.gone(bg.id)


def test_selectors_tolerations_account_and_secrets_reach_the_pod(
    fresh_engine: Callable[..., LocalEngine], cluster: Cluster
) -> None:
    from kubernetes.client.rest import ApiException

    secret = f"task-env-{uuid.uuid4().hex[:6]}"
    try:
        cluster.core.create_namespace({"metadata": {"name": NAMESPACE}})
    except ApiException as exc:
        if exc.status != 409:
            raise
    cluster.core.create_namespaced_secret(
        NAMESPACE, {"metadata": {"name": secret}, "stringData": {"PAPERCRANE_TEST_VALUE": "s3cr3t"}}
    )
    toleration = {"key": "papercrane.io/test", "operator": "Exists", "effect": "NoSchedule"}
    engine = fresh_engine(
        PAPERCRANE_K8S_NODE_SELECTOR="kubernetes.io/os=linux",
        PAPERCRANE_K8S_TOLERATIONS=json.dumps([toleration]),
        PAPERCRANE_K8S_SERVICE_ACCOUNT="default",
        PAPERCRANE_K8S_SECRETS=secret,
    )
    release = gate(engine)
    code = wait_code(release) + "y = os.environ.get('PAPERCRANE_TEST_VALUE')"
    bg = start(engine, spec("settings", code))
    try:
        pod = cluster.running_pod(bg.id)
    finally:
        release.write_text("go")
    assert bg.join().nodes["settings"].values == {"y": "s3cr3t"}  # the Secret's keys as env
    assert pod.spec.node_selector == {"kubernetes.io/os": "linux"}
    tolerations = [(t.key, t.operator, t.effect) for t in pod.spec.tolerations]
    assert (toleration["key"], "Exists", "NoSchedule") in tolerations
    assert pod.spec.service_account_name == "default"
    (c,) = pod.spec.containers
    assert [e.secret_ref.name for e in c.env_from] == [secret]
    cluster.gone(bg.id)


def test_a_workflow_in_pods_gives_what_a_local_run_gives(
    engine: LocalEngine, cluster: Cluster
) -> None:
    def cells(executor: str) -> list[CellTask]:
        def cell(name: str, code: str, inputs: tuple, outputs: tuple, m: Any = None):
            return CellTask(spec(name, code, inputs, outputs), TaskConfig(executor=executor), m)

        return [
            cell(
                "make",
                "import numpy as np\nprint('making', n)\nitems = list(range(1, n + 1))\n"
                "grid = np.arange(6).reshape(2, 3) * n",
                ("n",),
                ("items", "grid"),
            ),
            cell(
                "square",
                "sq = item * item + int(grid.sum())",
                ("item", "grid"),
                ("sq",),
                MapSpec("items", "item"),
            ),
            cell(
                "total",
                "import numpy as np\ntotal = sum(sq)\nscaled = grid / total\n"
                "summary = {'total': total, 'shape': list(grid.shape), 'n': len(sq)}",
                ("sq", "grid"),
                ("total", "scaled", "summary"),
            ),
        ]

    results = {}
    recorders = {}
    for executor in ("kubernetes", "local"):
        wf = assemble(f"wf_{executor}", cells(executor))
        recorders[executor] = Recorder()
        req = WorkflowRequest(
            spec=wf,
            params={"n": engine.put_value(3, "n")},
            param_values={"n": 3},
            project=PROJECT,
        )
        results[executor] = engine.run_workflow(req, recorders[executor])

    import numpy as np

    pods, local = results["kubernetes"], results["local"]
    assert pods.execution.status is Status.SUCCEEDED
    for node in ("make", "square", "total"):
        got, want = pods.nodes[node].values, local.nodes[node].values
        assert got.keys() == want.keys(), node
        for name in want:
            if isinstance(want[name], np.ndarray):
                assert np.array_equal(got[name], want[name]), (node, name)
            else:
                assert got[name] == want[name], (node, name)
    assert pods.nodes["total"].values["summary"] == {"total": 149, "shape": [2, 3], "n": 3}
    # Every attempt (the map's three elements too) ran in a pod.
    started = recorders["kubernetes"].of(K.ATTEMPT_STARTED)
    assert sorted(e.node for e in started) == [
        "make",
        "square[0]",
        "square[1]",
        "square[2]",
        "total",
    ]
    assert {e.payload["executor"] for e in started} == {"kubernetes"}
    # A quick task's output still reaches the listener, as a local run's does.
    assert "making 3" in recorders["kubernetes"].text()
    cluster.gone(pods.execution.id)


# -- recovery -----------------------------------------------------------------------------------
STEPS = """
import time
import papercrane.checkpoint as ckpt
state = ckpt.load(default={"step": 0})
resumed_from = step = state["step"]
print("starting at step", step, flush=True)
while step < 6:
    time.sleep(0.6)
    step += 1
    ckpt.save({"step": step})
    print("step", step, flush=True)
finished_at = step
"""


def test_a_deleted_pod_is_a_system_failure_and_resumes_from_its_checkpoint(
    engine: LocalEngine, cluster: Cluster
) -> None:
    task = spec("steps", STEPS, outputs=("resumed_from", "finished_at"))
    bg = start(engine, task, retries=0)
    checkpoint = f"runs/{bg.id}/steps/checkpoint"

    def saved_step() -> int:
        if not engine.storage.exists(checkpoint):
            return 0
        return pickle.loads(engine.storage.read_bytes(checkpoint))["step"]

    pod = cluster.running_pod(bg.id)
    wait_for(lambda: saved_step() >= 2, 60, "the task to checkpoint step 2")
    cluster.core.delete_namespaced_pod(pod.metadata.name, NAMESPACE)  # as kubectl does
    # The retry is a new attempt: a Job of its own, labelled attempt 2.
    cluster.running_pod(bg.id, attempt=2)
    assert [j.metadata.labels["papercrane.io/attempt"] for j in cluster.jobs(bg.id)] == ["2"]
    result = bg.join()

    values = result.nodes["steps"].values
    assert values["resumed_from"] >= 2, values  # continued from the checkpoint, not from 0
    assert values["finished_at"] == 6
    node = engine.execution(bg.id).nodes["steps"]
    assert node.status is Status.SUCCEEDED
    assert node.attempt == 2
    assert (node.system_failures, node.user_failures) == (1, 0)  # no user retry spent
    (lost,) = errors(engine, bg.id)
    assert lost["kind"] == "system" and lost["type"] == "LostPod", lost
    assert pod.metadata.name in lost["message"]
    budgets = [e.payload["budget"] for e in engine.events(bg.id) if e.kind is K.RETRY_SCHEDULED]
    assert budgets == ["system"]
    assert "starting at step 0" in engine.logs(bg.id, "steps", 1)
    # Attempt 1 was given up before its Job went: a pod that Kubernetes 1.20 still
    # created for it does not run (it would rewrite this log and race attempt 2).
    assert engine.storage.exists(f"runs/{bg.id}/steps/1/given-up")
    assert not engine.storage.exists(f"runs/{bg.id}/steps/2/given-up")
    assert f"starting at step {values['resumed_from']}" in engine.logs(bg.id, "steps", 2)
    cluster.gone(bg.id)


def test_a_user_error_retries_on_the_user_budget(engine: LocalEngine, cluster: Cluster) -> None:
    code = (
        "import papercrane.checkpoint as ckpt\n"
        "n = ckpt.load(default=0) + 1\nckpt.save(n)\ndisplay(f'attempt {n}')\n"
        "if n < 3:\n    raise ValueError(f'attempt {n} fails')\ny = n\n"
    )
    result = run(engine, spec("flaky", code), retries=2)
    assert result.values == {"y": 3}
    # What each pod displayed: the failed attempts' with their failures, the last one's
    # with the result.
    events = engine.events(result.execution.id)
    shown = [
        b["data"]["text/plain"]
        for e in events
        if e.kind in (K.ATTEMPT_FAILED, K.ATTEMPT_SUCCEEDED)
        for b in (e.payload.get("display") or {}).get("displayed", [])
    ]
    assert shown == ["'attempt 1'", "'attempt 2'", "'attempt 3'"]
    node = result.execution.nodes["flaky"]
    assert node.attempt == 3
    assert (node.user_failures, node.system_failures) == (2, 0)
    failed = errors(engine, result.execution.id)
    assert [(e["kind"], e["type"], e["message"]) for e in failed] == [
        ("user", "ValueError", "attempt 1 fails"),
        ("user", "ValueError", "attempt 2 fails"),
    ]
    assert "raise ValueError" in failed[0]["traceback"]
    assert [e.payload["budget"] for e in events if e.kind is K.RETRY_SCHEDULED] == ["user"] * 2
    cluster.gone(result.execution.id)


def test_a_timeout_stops_the_pod_as_a_user_error(engine: LocalEngine, cluster: Cluster) -> None:
    task = spec("sleepy", "import time\nprint('sleeping', flush=True)\ntime.sleep(300)\ny = 1")
    began = time.monotonic()
    with pytest.raises(TaskFailed) as info:
        run(engine, task, timeout=3)
    took = time.monotonic() - began
    kind, message = failure(info)
    assert kind == "TaskTimeout" and "timeout of 3 s" in message, message
    (error,) = errors(engine, info.value.execution_id)
    assert error["kind"] == "user"
    node = engine.execution(info.value.execution_id).nodes["sleepy"]
    assert (node.attempt, node.user_failures, node.system_failures) == (1, 1, 0)
    # Stopped at the deadline, not after the pod's 30 s grace period.
    assert took < 20, took
    cluster.gone(info.value.execution_id)


def test_abort_deletes_the_jobs_and_pods(engine: LocalEngine, cluster: Cluster) -> None:
    task = spec("forever", "import time\ntime.sleep(300)\ny = 1")
    bg = start(engine, task)
    cluster.running_pod(bg.id)
    assert cluster.jobs(bg.id)
    bg.run.stop("test")
    with pytest.raises(ExecutionAborted):
        bg.join(60)
    # Gone at once: the pods are not left to run out a grace period.
    assert not cluster.jobs(bg.id)
    assert not [p for p in cluster.pods(bg.id) if p.metadata.deletion_timestamp is None]
    cluster.gone(bg.id, timeout=5)
    assert engine.execution(bg.id).status is Status.ABORTED


# -- logs ---------------------------------------------------------------------------------------
def test_logs_stream_live_and_stay_readable_after_the_pod_is_gone(
    engine: LocalEngine, cluster: Cluster
) -> None:
    code = (
        "import sys, time\nprint('first line', flush=True)\ntime.sleep(2.5)\n"
        "print('second line', flush=True)\nprint('to stderr', file=sys.stderr, flush=True)\n"
        "y = 1\n"
    )
    recorder = Recorder()
    result = run(engine, spec("chatty", code), recorder)
    ended = recorder.first(K.ATTEMPT_SUCCEEDED)
    heard = [t for t, _, text in recorder.logs if "first line" in text]
    assert heard, recorder.logs
    assert heard[0] < ended - 1.5, "the first line came only at the end, not while it ran"
    assert "second line" in recorder.text()

    execution_id = result.execution.id
    cluster.gone(execution_id)
    stdout = engine.logs(execution_id, "chatty", 1)
    assert "first line" in stdout and "second line" in stdout
    assert "to stderr" in engine.logs(execution_id, "chatty", 1, "stderr")
    stored = {e.payload["stream"] for e in engine.events(execution_id) if e.kind is K.LOG_STORED}
    assert stored == {"stdout", "stderr"}


# -- bad input, clear errors --------------------------------------------------------------------
def test_an_image_that_is_not_there_names_the_image(engine: LocalEngine, cluster: Cluster) -> None:
    missing = f"local/papercrane-missing:{uuid.uuid4().hex[:8]}"
    with pytest.raises(TaskFailed) as info:
        run(engine, spec("no_image", "y = 1"), image=missing, retries=2)
    kind, message = failure(info)
    assert kind == "ImageUnavailable", message
    assert missing in message and "ErrImageNeverPull" in message and "--image" in message
    # The setting that keeps the nodes from pulling it is named, with what to set.
    assert "PAPERCRANE_K8S_PULL_POLICY" in message and "IfNotPresent" in message, message
    # Every attempt would meet the same missing image: --retries is not spent on it.
    (error,) = errors(engine, info.value.execution_id)
    assert error["kind"] == "user"
    cluster.gone(info.value.execution_id)


def test_a_request_no_node_can_satisfy_pends_with_the_reason_then_fails(
    fresh_engine: Callable[..., LocalEngine], cluster: Cluster
) -> None:
    engine = fresh_engine(PAPERCRANE_K8S_PENDING_TIMEOUT="3")
    recorder = Recorder()
    with pytest.raises(TaskFailed) as info:
        run(engine, spec("wants_gpu", "y = 1"), recorder, resources=Resources(gpu=1), retries=1)
    statuses = [e.payload["message"] for e in recorder.of(K.ATTEMPT_STATUS)]
    assert any("Insufficient nvidia.com/gpu" in s for s in statuses), statuses
    # The reason was shown while pending, before the attempt failed.
    reason_at = next(
        t
        for t, e in recorder.events
        if e.kind is K.ATTEMPT_STATUS and "Insufficient" in e.payload["message"]
    )
    assert reason_at < recorder.first(K.ATTEMPT_FAILED)
    kind, message = failure(info)
    assert kind == "PodUnschedulable", message
    assert "3 s" in message and "Insufficient nvidia.com/gpu" in message
    # What it asks for, and how to let it wait longer.
    assert "asks for --gpu 1: ask for less" in message, message
    assert "PAPERCRANE_K8S_PENDING_TIMEOUT" in message, message
    assert len(errors(engine, info.value.execution_id)) == 1  # (not waited for again)
    cluster.gone(info.value.execution_id)


def test_memory_without_a_unit_is_refused_before_a_pod_waits_for_it(
    engine: LocalEngine, cluster: Cluster
) -> None:
    # "--memory 4" is four bytes: such a pod is scheduled, then never starts.
    began = time.monotonic()
    with pytest.raises(TaskFailed) as info:
        run(engine, spec("tiny", "y = 1"), resources=Resources(memory=4), retries=3)
    kind, message = failure(info)
    assert kind == "InvalidResources" and "--memory 4 bytes" in message, message
    assert "512Mi or 4Gi" in message and time.monotonic() - began < 10
    (error,) = errors(engine, info.value.execution_id)
    assert error["kind"] == "user"
    assert cluster.jobs(info.value.execution_id) == []


def test_a_placed_pod_whose_container_never_starts_says_so_with_the_kubelets_event(
    fresh_engine: Callable[..., LocalEngine], cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With the check above off, a four-byte memory limit: the pod is scheduled and the
    # kubelet fails to make its sandbox, over and over (it was "could not be scheduled:
    # ContainerCreating", after the full pending timeout).
    from papercrane.backend.executors import k8s_jobs

    monkeypatch.setattr(k8s_jobs, "MIN_MEMORY", 1)
    engine = fresh_engine(PAPERCRANE_K8S_PENDING_TIMEOUT="8")
    with pytest.raises(TaskFailed) as info:
        run(engine, spec("never_starts", "y = 1"), resources=Resources(memory=4))
    kind, message = failure(info)
    if kind == "OutOfMemory":  # pragma: no cover - a node that does start it
        pytest.skip(f"this cluster's nodes start a container under a 4-byte limit: {message}")
    assert kind == "PodNotStarted", message
    assert "was placed on node" in message and "did not start within 8 s" in message
    assert "ContainerCreating" in message and "could not start it" in message, message
    assert "could not be scheduled" not in message
    cluster.gone(info.value.execution_id)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_cluster_names_the_context(
    fresh_engine: Callable[..., LocalEngine], tmp_path: Path
) -> None:
    port = _free_port()  # nothing listens there
    kubeconfig = tmp_path / "broken-kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters: [{{name: nowhere, cluster: {{server: 'https://127.0.0.1:{port}'}}}}]\n"
        "users: [{name: someone, user: {token: abc}}]\n"
        "contexts: [{name: papercrane-broken, context: {cluster: nowhere, user: someone}}]\n"
        "current-context: papercrane-broken\n"
    )
    engine = fresh_engine(KUBECONFIG=str(kubeconfig))
    began = time.monotonic()
    with pytest.raises(TaskFailed) as info:
        run(engine, spec("unreachable", "y = 1"))
    kind, message = failure(info)
    assert kind == "KubernetesError", message
    assert "context 'papercrane-broken'" in message and f"127.0.0.1:{port}" in message
    assert "refused" in message.lower(), message
    assert time.monotonic() - began < 30


def test_a_context_that_does_not_exist_is_named(
    fresh_engine: Callable[..., LocalEngine], cluster: Cluster
) -> None:
    engine = fresh_engine(PAPERCRANE_K8S_CONTEXT="no-such-context")
    with pytest.raises(TaskFailed) as info:
        run(engine, spec("no_context", "y = 1"))
    kind, message = failure(info)
    assert kind == "KubernetesError", message
    assert "no-such-context" in message and "it has:" in message, message


@pytest.fixture
def no_rights(cluster: Cluster, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A namespace and a kubeconfig for a service account in it that may do nothing."""
    namespace = f"papercrane-rbac-{uuid.uuid4().hex[:6]}"
    cluster.core.create_namespace({"metadata": {"name": namespace}})
    try:
        cluster.core.create_namespaced_service_account(
            namespace, {"metadata": {"name": "no-rights"}}
        )

        def token() -> str | None:  # 1.20: the token controller makes a Secret for it
            sa = cluster.core.read_namespaced_service_account("no-rights", namespace)
            for ref in sa.secrets or []:
                secret = cluster.core.read_namespaced_secret(ref.name, namespace)
                if secret.type == "kubernetes.io/service-account-token" and secret.data:
                    import base64

                    return base64.b64decode(secret.data["token"]).decode()
            return None

        found = wait_for(token, 30, "the service account's token Secret")
        ca = f"certificate-authority: {cluster.ca_file}" if cluster.ca_file else ""
        ca = ca or "insecure-skip-tls-verify: true"
        kubeconfig = tmp_path / "no-rights-kubeconfig"
        kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters: [{{name: c, cluster: {{server: '{cluster.host}', {ca}}}}}]\n"
            f"users: [{{name: no-rights, user: {{token: '{found}'}}}}]\n"
            "contexts: [{name: no-rights, context: {cluster: c, user: no-rights}}]\n"
            "current-context: no-rights\n"
        )
        yield namespace, kubeconfig
    finally:
        with contextlib.suppress(Exception):
            cluster.core.delete_namespace(namespace, grace_period_seconds=0)


def test_rbac_refusing_to_create_jobs_says_so(
    fresh_engine: Callable[..., LocalEngine], no_rights: tuple[str, Path], cluster: Cluster
) -> None:
    namespace, kubeconfig = no_rights
    engine = fresh_engine(KUBECONFIG=str(kubeconfig), PAPERCRANE_K8S_NAMESPACE=namespace)
    with pytest.raises(TaskFailed) as info:
        run(engine, spec("refused", "y = 1"))
    kind, message = failure(info)
    assert kind == "KubernetesError", message
    assert "RBAC" in message and "403" in message, message
    assert "create Job" in message and namespace in message, message
    assert f"system:serviceaccount:{namespace}:no-rights" in message, message
    assert not cluster.batch.list_namespaced_job(namespace).items


def test_a_secret_that_does_not_exist_is_named(
    fresh_engine: Callable[..., LocalEngine], cluster: Cluster
) -> None:
    engine = fresh_engine(PAPERCRANE_K8S_SECRETS="missing")
    with pytest.raises(TaskFailed) as info:
        run(engine, spec("no_secret", "y = 1"))
    kind, message = failure(info)
    assert kind == "KubernetesError", message
    assert "Secret 'missing'" in message and NAMESPACE in message, message
    cluster.gone(info.value.execution_id)


def test_out_of_memory_is_a_user_error_about_memory(engine: LocalEngine, cluster: Cluster) -> None:
    code = "print('allocating', flush=True)\nblob = b'x' * (512 << 20)\ny = len(blob)\n"
    try:
        result = run(engine, spec("hungry", code), resources=Resources(memory=64 << 20))
    except TaskFailed as exc:
        kind, message = exc.error_type, exc.error_message
        execution_id = exc.execution_id
    else:  # pragma: no cover - a kubelet that does not enforce memory limits
        pytest.xfail(
            f"the task allocated 512 MiB under a 64Mi limit and got {result.values}: "
            "this cluster's kubelet does not enforce memory limits"
        )
    assert kind == "OutOfMemory", message
    assert "memory" in message and "64Mi" in message and "--memory" in message, message
    (error,) = errors(engine, execution_id)
    assert error["kind"] == "user"  # not retried as a lost pod
    cluster.gone(execution_id)


# -- a server restart ---------------------------------------------------------------------------
def test_a_restarted_server_adopts_its_running_job(
    k8s_env: None, cluster: Cluster, tmp_path: Path
) -> None:
    from papercrane.backend.client import RemoteEngine

    home = tmp_path / "srv"
    server = ServerProcess(
        home, extra=["--executor", "kubernetes", "--k8s-pull-policy", "Never"]
    ).start()
    # Pods mount the project's part of the server's storage: marks go there.
    marks = home / "store" / "projects" / PROJECT / "development" / "marks"
    marks.mkdir(parents=True)
    starts, release = marks / "starts", marks / "release"
    code = (
        f"with open({str(starts)!r}, 'a') as f:\n    f.write('started\\n')\n"
        + wait_code(release)
        + "y = 'done'\n"
    )
    client = RemoteEngine(server.url, server.token(PROJECT), PROJECT)
    try:
        execution_id = client.submit_task(
            RunRequest(
                spec=spec("adopted", code),
                config=TaskConfig(),  # the server's default executor: kubernetes
                inputs={},
                project=PROJECT,
            )
        )
        pod = cluster.running_pod(execution_id)
        wait_for(starts.exists, 60, "the task to start")
        server.kill()  # SIGKILL: its watch dies, the Job goes on
        assert [j.metadata.name for j in cluster.jobs(execution_id)], "the Job went with it"
        server.start()  # resumes the execution, finds the Job by its labels
        # A graceful stop (SIGTERM) leaves the Job running as well, for the next server.
        server.stop()
        assert cluster.running_pod(execution_id, timeout=1).metadata.name == pod.metadata.name
        server.start()
        release.write_text("go")
        state = client.follow(execution_id)
        assert state.status is Status.SUCCEEDED, state
        node = state.nodes["adopted"]
        assert node.attempt == 1  # the same attempt went on: no new one
        assert (node.system_failures, node.user_failures) == (0, 0)
        events = client.events(execution_id)
        assert not [e for e in events if e.kind is K.ATTEMPT_FAILED]
        assert len([e for e in events if e.kind is K.ATTEMPT_STARTED]) == 1
        assert starts.read_text() == "started\n"  # one pod, never restarted
        (ref,) = [client.artifact(i) for i in node.outputs.values()]
        assert client.load(ref) == "done"
        cluster.gone(execution_id)
    finally:
        client.close()
        server.stop()
