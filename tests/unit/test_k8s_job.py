"""The Kubernetes Job of an attempt, built without a cluster: spec, labels, names."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest

from papercrane.backend.errors import ConfigError
from papercrane.backend.executors.base import AttemptSpec
from papercrane.backend.executors.k8s_jobs import (
    asked_for,
    build_job,
    job_name,
    labels,
    resource_problem,
)
from papercrane.backend.executors.k8s_settings import KubernetesSettings
from papercrane.backend.executors.k8s_watch import PodWatch
from papercrane.backend.model import Resources, TaskConfig, TaskSpec

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
STORE = "/var/papercrane/store"
KEY = "runs/e/n/1/attempt.json"


def attempt(
    node: str = "fit",
    number: int = 1,
    execution: str = "0123456789abcdef",
    project: str = "vision",
    domain: str = "staging",
    **config: object,
) -> AttemptSpec:
    spec = TaskSpec(name=node.partition("[")[0], code="y = 1", inputs=(), outputs=("y",))
    return AttemptSpec(
        execution_id=execution,
        node=node,
        attempt=number,
        task=spec,
        task_key=f"tasks/{spec.version()}.json",
        config=TaskConfig(executor="kubernetes", **config),  # type: ignore[arg-type]
        inputs={},
        project=project,
        domain=domain,
    )


def job(a: AttemptSpec | None = None, settings: KubernetesSettings | None = None, **kw: object):
    return build_job(
        a or attempt(),
        settings or KubernetesSettings(),
        str(kw.get("storage_url", STORE)),
        KEY,
        kw.get("storage_path", STORE),  # type: ignore[arg-type]
    )


def container(manifest: dict) -> dict:
    (c,) = manifest["spec"]["template"]["spec"]["containers"]
    return c


def test_one_job_per_attempt_that_never_retries_itself() -> None:
    m = job()
    assert m["apiVersion"] == "batch/v1" and m["kind"] == "Job"
    assert m["spec"]["backoffLimit"] == 0
    assert m["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert "activeDeadlineSeconds" not in m["spec"]  # no --timeout, no deadline
    a = attempt()
    assert m["metadata"]["annotations"]["papercrane.io/task-version"] == a.task.version()


def test_labels_name_project_domain_execution_node_and_attempt() -> None:
    a = attempt(node="fit", number=3)
    m = job(a)
    want = {
        "papercrane.io/project": "vision",
        "papercrane.io/domain": "staging",
        "papercrane.io/execution": "0123456789abcdef",
        "papercrane.io/node": "fit",
        "papercrane.io/attempt": "3",
        "papercrane.io/managed-by": "papercrane",
    }
    assert m["metadata"]["labels"] == want
    assert labels(a) == want
    # The pods carry them too, and their Job's name (what the executor watches).
    pod_labels = m["spec"]["template"]["metadata"]["labels"]
    assert pod_labels == {**want, "papercrane.io/job": m["metadata"]["name"]}


def test_command_is_the_runner_with_storage_and_attempt_key() -> None:
    c = container(job(storage_url="s3://bucket/prefix", storage_path=None))
    assert c["command"] == [
        "/opt/venv/bin/python",
        "-m",
        "papercrane.backend.runner",
        "s3://bucket/prefix",
        KEY,
    ]
    custom = KubernetesSettings(python="/usr/bin/python3")
    assert container(job(settings=custom))["command"][0] == "/usr/bin/python3"
    assert {"name": "PYTHONUNBUFFERED", "value": "1"} in c["env"]


def test_image_task_over_project_over_settings_and_pull_policy() -> None:
    settings = KubernetesSettings(
        image="base:1", project_images={"vision": "vision:2"}, image_pull_policy="Never"
    )
    assert container(job(attempt(), settings))["image"] == "vision:2"
    assert container(job(attempt(image="mine:3"), settings))["image"] == "mine:3"
    assert container(job(attempt(project="other"), settings))["image"] == "base:1"
    assert container(job(attempt(), settings))["imagePullPolicy"] == "Never"
    default = container(job())
    assert default["image"] == "local/papercrane-task:dev"
    assert default["imagePullPolicy"] == "IfNotPresent"


@pytest.mark.parametrize(
    ("resources", "want"),
    [
        (Resources(), {}),
        (
            Resources(cpu=0.5, memory=256 << 20),
            {
                "requests": {"cpu": "500m", "memory": str(256 << 20)},
                "limits": {"cpu": "500m", "memory": str(256 << 20)},
            },
        ),
        (
            Resources(cpu=2, gpu=1),
            {
                "requests": {"cpu": "2", "nvidia.com/gpu": "1"},
                "limits": {"cpu": "2", "nvidia.com/gpu": "1"},
            },
        ),
        (Resources(cpu=0.25), {"requests": {"cpu": "250m"}, "limits": {"cpu": "250m"}}),
    ],
)
def test_requests_and_limits_from_cpu_memory_gpu(resources: Resources, want: dict) -> None:
    assert container(job(attempt(resources=resources)))["resources"] == want


def test_node_selector_tolerations_service_account_and_secrets() -> None:
    toleration = {"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}
    settings = KubernetesSettings(
        node_selector={"pool": "gpu"},
        tolerations=[toleration],
        service_account="runner",
        secrets=["s3-creds", "tokens"],
    )
    m = job(settings=settings)
    pod = m["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "gpu"}
    assert pod["tolerations"] == [toleration]
    assert pod["serviceAccountName"] == "runner"
    assert container(m)["envFrom"] == [
        {"secretRef": {"name": "s3-creds"}},
        {"secretRef": {"name": "tokens"}},
    ]
    plain = job()["spec"]["template"]["spec"]
    assert not {"nodeSelector", "tolerations", "serviceAccountName"} & set(plain)
    assert "envFrom" not in container(job())


@pytest.mark.parametrize(("timeout", "seconds"), [(90, 90), (90.2, 91), (0.3, 1)])
def test_active_deadline_from_the_timeout(timeout: float, seconds: int) -> None:
    assert job(attempt(timeout=timeout))["spec"]["activeDeadlineSeconds"] == seconds


def test_file_storage_is_a_host_path_mounted_at_the_same_path() -> None:
    m = job()
    pod = m["spec"]["template"]["spec"]
    assert pod["volumes"] == [
        {"name": "store", "hostPath": {"path": STORE, "type": "DirectoryOrCreate"}}
    ]
    assert container(m)["volumeMounts"] == [{"name": "store", "mountPath": STORE}]


def test_file_storage_on_a_persistent_volume_claim() -> None:
    m = job(settings=KubernetesSettings(storage_volume="pvc:papercrane-store"))
    pod = m["spec"]["template"]["spec"]
    assert pod["volumes"] == [
        {"name": "store", "persistentVolumeClaim": {"claimName": "papercrane-store"}}
    ]
    assert container(m)["volumeMounts"] == [{"name": "store", "mountPath": STORE}]


def test_object_storage_needs_no_volume() -> None:
    m = job(storage_url="s3://bucket/x", storage_path=None)
    assert "volumes" not in m["spec"]["template"]["spec"]
    assert "volumeMounts" not in container(m)


ODD_NODES = [
    "fit",
    "fit[12]",
    "fit[13]",
    "fit-12",
    "fit_12",
    "Fit_Model.v2",
    "Ünïcödé täsk",
    "x" * 150,
    "x" * 150 + "[7]",
    "___",
    "a:expand",
    "a:collect",
]


def test_job_names_are_dns_labels_and_unique_per_attempt() -> None:
    names = set()
    for node in ODD_NODES:
        for number in (1, 2, 10):
            name = job_name(attempt(node=node, number=number))
            assert DNS_LABEL.match(name), name
            # Job names end up in the pods' job-name label: at most 63 characters.
            assert len(name) <= 63, name
            names.add(name)
    assert len(names) == len(ODD_NODES) * 3
    # Another execution, same node and attempt: another Job.
    assert job_name(attempt(execution="1" * 16)) != job_name(attempt(execution="2" * 16))
    # The manifest uses it.
    assert job(attempt(node="fit[12]"))["metadata"]["name"] == job_name(attempt(node="fit[12]"))


def test_label_values_are_valid_for_odd_names() -> None:
    for node in ODD_NODES:
        values = labels(attempt(node=node, project="Team Ä/b", domain="prod-" + "d" * 80))
        for key, value in values.items():
            assert len(value) <= 63 and LABEL_VALUE.match(value), (key, value)
    # A value stands for one name: a map element and a node named like it differ.
    values = {labels(attempt(node=n))["papercrane.io/node"] for n in ODD_NODES}
    assert len(values) == len(ODD_NODES)
    assert labels(attempt(node="fit"))["papercrane.io/node"] == "fit"  # valid: unchanged


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "PAPERCRANE_K8S_IMAGE": "img:1",
        "PAPERCRANE_K8S_PULL_POLICY": "Never",
        "PAPERCRANE_K8S_NAMESPACE": "tasks",
        "PAPERCRANE_K8S_CONTEXT": "prod",
        "PAPERCRANE_K8S_SERVICE_ACCOUNT": "runner",
        "PAPERCRANE_K8S_STORAGE_VOLUME": "pvc:store",
        "PAPERCRANE_K8S_SECRETS": "a,b",
        "PAPERCRANE_K8S_PENDING_TIMEOUT": "7.5",
        "PAPERCRANE_K8S_NODE_SELECTOR": "pool=gpu,zone=a",
        "PAPERCRANE_K8S_TOLERATIONS": '[{"key": "gpu", "operator": "Exists"}]',
        "PAPERCRANE_K8S_POD_QUOTA": "5",
        "KUBECONFIG": "/tmp/kubeconfig",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    s = KubernetesSettings.from_env()
    assert (s.image, s.image_pull_policy, s.namespace, s.context) == (
        "img:1",
        "Never",
        "tasks",
        "prod",
    )
    assert (s.service_account, s.storage_volume, s.kubeconfig) == (
        "runner",
        "pvc:store",
        "/tmp/kubeconfig",
    )
    assert s.secrets == ["a", "b"] and s.pending_timeout == 7.5 and s.pod_quota == 5
    assert s.node_selector == {"pool": "gpu", "zone": "a"}
    assert s.tolerations == [{"key": "gpu", "operator": "Exists"}]


def test_namespace_per_project_and_domain() -> None:
    s = KubernetesSettings()
    assert s.namespace_for("vision", "staging") == "papercrane-vision-staging"
    ns = s.namespace_for("Team_A", "Prod" + "x" * 80)
    assert DNS_LABEL.match(ns) and len(ns) <= 63
    assert KubernetesSettings(namespace="tasks").namespace_for("vision", "staging") == "tasks"


def test_the_runner_does_not_run_an_attempt_that_was_given_up(tmp_path) -> None:
    """A pod that Kubernetes (before 1.26) creates to replace a deleted one, after the
    engine gave the attempt up: the real runner, in a subprocess, leaves the attempt's
    logs and result alone and does not run the task."""
    import json
    import subprocess
    import sys

    store = tmp_path / "store"
    prefix = "runs/e/n/1"
    folder = store / prefix
    folder.mkdir(parents=True)
    (folder / "attempt.json").write_text(json.dumps({"prefix": prefix, "task_key": "nowhere"}))
    (folder / "stdout.log").write_text("starting at step 0\n")  # what the lost pod wrote
    (folder / "given-up").write_bytes(b"")
    done = subprocess.run(
        [sys.executable, "-m", "papercrane.backend.runner", str(store), f"{prefix}/attempt.json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 3
    assert "was given up" in done.stderr
    assert (folder / "stdout.log").read_text() == "starting at step 0\n"
    assert not (folder / "result.json").exists()


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("PAPERCRANE_K8S_PULL_POLICY", "Nevr", "use Always, IfNotPresent, Never"),
        ("PAPERCRANE_K8S_PENDING_TIMEOUT", "soon", "write it like 90, 45s, 30m"),
        ("PAPERCRANE_K8S_PENDING_TIMEOUT", "-5", "must be positive"),
        ("PAPERCRANE_K8S_NODE_SELECTOR", "gpu", "KEY=VALUE pairs"),
        ("PAPERCRANE_K8S_TOLERATIONS", "[{bad", "not JSON"),
        ("PAPERCRANE_K8S_TOLERATIONS", '{"key": "gpu"}', "JSON list of objects"),
        ("PAPERCRANE_K8S_POD_QUOTA", "ten", "whole number of pods"),
        ("PAPERCRANE_K8S_POD_QUOTA", "0", "whole number of pods"),
        ("PAPERCRANE_K8S_STORAGE_VOLUME", "pvc:", "hostPath or pvc:CLAIM"),
    ],
)
def test_a_bad_setting_is_refused_naming_the_variable(variable: str, value: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        KubernetesSettings.from_env({variable: value})
    message = str(info.value)
    assert variable in message and says in message and "\n" not in message


def test_the_pending_timeout_takes_a_duration() -> None:
    settings = KubernetesSettings.from_env({"PAPERCRANE_K8S_PENDING_TIMEOUT": "5m"})
    assert settings.pending_timeout == 300.0


@pytest.mark.parametrize(
    ("resources", "says"),
    [
        (Resources(memory=4), "--memory 4 bytes, less than the 16Mi"),
        (Resources(memory=15 << 20), "--memory 15Mi, less than the 16Mi"),
        (Resources(cpu=0.0001), "--cpu 0.0001, less than Kubernetes' smallest amount, 1m"),
    ],
)
def test_resources_no_container_starts_with_are_refused(resources: Resources, says: str) -> None:
    problem = resource_problem(attempt(resources=resources))
    assert problem is not None and says in problem and "'fit'" in problem


@pytest.mark.parametrize(
    "resources", [Resources(), Resources(memory=16 << 20), Resources(cpu=0.001, gpu=1)]
)
def test_resources_a_container_starts_with_pass(resources: Resources) -> None:
    assert resource_problem(attempt(resources=resources)) is None


def test_what_a_task_asks_for_reads_like_its_flags() -> None:
    asked = asked_for(attempt(resources=Resources(cpu=64, memory=3 << 30, gpu=2)))
    assert asked == "--cpu 64 --memory 3Gi --gpu 2"
    assert asked_for(attempt(resources=Resources(cpu=0.25))) == "--cpu 250m"
    assert asked_for(attempt()) == ""


class _Events:
    """A CoreV1Api that answers list_namespaced_event with the given events."""

    def __init__(self, *events: SimpleNamespace) -> None:
        self.events = events

    def list_namespaced_event(self, namespace: str, **kw: object) -> SimpleNamespace:
        return SimpleNamespace(items=list(self.events))


def _watch(core: _Events, **resources: object) -> PodWatch:
    executor = SimpleNamespace(settings=KubernetesSettings(pending_timeout=20), _core=lambda: core)
    w = PodWatch(executor, attempt(resources=Resources(**resources)), "ns", None, None)  # type: ignore[arg-type]
    w.pod_name = "pc-fit-pod"
    return w


def _event(kind: str, reason: str, message: str, at: int) -> SimpleNamespace:
    when = datetime(2026, 1, 1, 0, 0, at, tzinfo=timezone.utc)
    return SimpleNamespace(
        type=kind, reason=reason, message=message, last_timestamp=when, event_time=None
    )


def test_a_pod_no_node_takes_says_what_it_asks_for_and_how_to_wait_longer() -> None:
    w = _watch(_Events(), cpu=64)
    w.last_reason = "pending: Unschedulable: 0/1 nodes are available: 1 Insufficient cpu."
    error = w._pending_too_long()["error"]
    assert (error["kind"], error["type"]) == ("user", "PodUnschedulable")
    message = error["message"]
    assert "task 'fit' waited 20 s for a node" in message
    assert "Insufficient cpu; it asks for" in message
    assert "asks for --cpu 64: ask for less" in message
    assert "--k8s-pending-timeout" in message and "PAPERCRANE_K8S_PENDING_TIMEOUT" in message
    assert "could not be scheduled" not in message


def test_a_placed_pod_whose_container_never_starts_is_not_called_unschedulable() -> None:
    core = _Events(
        _event("Normal", "Scheduled", "Successfully assigned", 1),
        _event("Warning", "FailedMount", "older", 2),
        _event("Warning", "FailedCreatePodSandBox", "cannot allocate memory", 3),
    )
    w = _watch(core, memory=4)
    w.node_name, w.last_reason = "node-7", "pending: ContainerCreating"
    error = w._pending_too_long()["error"]
    assert error["type"] == "PodNotStarted"
    message = error["message"]
    assert "pod pc-fit-pod was placed on node node-7" in message
    assert "did not start within 20 s (ContainerCreating" in message
    assert "FailedCreatePodSandBox: cannot allocate memory" in message and "older" not in message
    assert "the node could not start it" in message


@pytest.mark.parametrize(
    ("reason", "says"),
    [
        ("ErrImageNeverPull", "PAPERCRANE_K8S_PULL_POLICY"),
        ("ErrImageNeverPull", "--k8s-pull-policy"),
        ("ImagePullBackOff", "check its name and tag"),
    ],
)
def test_an_unusable_image_names_it_and_the_setting_to_change(reason: str, says: str) -> None:
    waiting = SimpleNamespace(reason=reason, message="details")
    message = _watch(_Events())._image_message("local/nope:1", waiting)
    assert "'local/nope:1'" in message and f"{reason}: details" in message
    assert says in message and "--image" in message
