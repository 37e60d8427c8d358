"""Run each attempt as a Kubernetes ``batch/v1`` Job, through the official client.

The pod runs the same runner entrypoint as a local subprocess
(``python -m papercrane.backend.runner STORAGE ATTEMPT``); the task bundle, inputs,
outputs, logs and the result manifest go through storage, which the pod reaches through
a volume (the default file store: a hostPath or a PersistentVolumeClaim mounted at the
same path) or an object store. The server's own URL is never needed by the pod.

Status comes from a watch on the attempt's pod (resumed from its resourceVersion after
a disconnect), not from polling. The Job has ``backoffLimit: 0``: papercrane counts
attempts itself, so each has its own record, and decides what a failure was: the task's
exception (user), a timeout (user), out of memory (user, with a clear message), an image
that isn't there (user), or a pod lost to deletion, eviction or a node (system: retried
on its own budget). Finished Jobs are deleted (Kubernetes 1.20 has no TTL controller).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import threading
import time
from datetime import datetime, timezone
from typing import Any

from ..errors import ConfigError
from ..runner import GIVEN_UP, AttemptResult, system_error
from .base import AttemptSpec, Executor, LogSink
from .k8s_settings import KubernetesSettings, dns_label

_LABEL = "papercrane.io"
_JOB = f"{_LABEL}/job"  # on pods: the name of their attempt's Job
_IMAGE_ERRORS = {"ErrImageNeverPull", "ErrImagePull", "ImagePullBackOff", "InvalidImageName"}
#: The kubelet can't make the container from its spec (a missing Secret or ConfigMap).
_CONFIG_ERRORS = {"CreateContainerConfigError"}


_dns = dns_label

_LABEL_VALUE = re.compile(r"^(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)$")


def _label_value(text: str) -> str:
    """A label value that stands for ``text`` alone: kept as it is when valid, else
    cleaned and suffixed with a hash (so "fit[12]" and "fit_12" never share one)."""
    if _LABEL_VALUE.match(text):
        return text
    clean = re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_.-")[:54]
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{clean}_{digest}" if clean else digest


def _quantity_cpu(cores: float) -> str:
    millis = int(round(cores * 1000))
    return f"{millis // 1000}" if millis % 1000 == 0 else f"{millis}m"


#: Less memory than this and the kubelet can't even create the container (the kernel
#: refuses the cgroup): the pod would wait in ContainerCreating until the pending timeout.
MIN_MEMORY = 16 << 20


def resource_problem(attempt: AttemptSpec) -> str | None:
    """Why the task's resources can't make a pod that starts, or None.

    A number without a unit is bytes (``--memory 4``: four bytes, not 4Gi), as in
    Kubernetes. Such a pod is scheduled and then never starts, and the kubelet says so
    only in an event; refusing it before the Job is made says what to write instead."""
    res = attempt.config.resources
    name = attempt.task.name
    if res.memory is not None and res.memory < MIN_MEMORY:
        return (
            f"task {name!r} asks for --memory {_memory(res.memory)}, less than the "
            f"{_memory(MIN_MEMORY)} a container needs to start Python (a number without a "
            "unit is bytes); write it with a unit, like 512Mi or 4Gi"
        )
    if res.cpu is not None and _quantity_cpu(res.cpu) == "0":
        return (
            f"task {name!r} asks for --cpu {res.cpu:g}, less than Kubernetes' smallest "
            "amount, 1m (a thousandth of a core); write at least 1m, like 100m or 0.5"
        )
    return None


def asked_for(attempt: AttemptSpec) -> str:
    """The task's resource flags, as the user wrote them: ``--cpu 64 --memory 4Gi``."""
    res = attempt.config.resources
    parts = []
    if res.cpu is not None:
        parts.append(f"--cpu {_quantity_cpu(res.cpu)}")
    if res.memory is not None:
        parts.append(f"--memory {_memory(res.memory)}")
    if res.gpu:
        parts.append(f"--gpu {res.gpu}")
    return " ".join(parts)


def job_name(attempt: AttemptSpec) -> str:
    base = f"pc-{attempt.execution_id[:10]}-{attempt.node}-{attempt.attempt}"
    digest = hashlib.sha256(
        f"{attempt.execution_id}/{attempt.node}/{attempt.attempt}".encode()
    ).hexdigest()[:6]
    return f"{_dns(base, 56)}-{digest}"


def labels(attempt: AttemptSpec) -> dict[str, str]:
    return {
        f"{_LABEL}/managed-by": "papercrane",
        f"{_LABEL}/execution": _label_value(attempt.execution_id),
        f"{_LABEL}/node": _label_value(attempt.node),
        f"{_LABEL}/attempt": str(attempt.attempt),
        f"{_LABEL}/project": _label_value(attempt.project),
        f"{_LABEL}/domain": _label_value(attempt.domain),
    }


def build_job(
    attempt: AttemptSpec,
    settings: KubernetesSettings,
    storage_url: str,
    attempt_key: str,
    storage_path: str | None,
) -> dict[str, Any]:
    """The Job for one attempt, as a plain manifest (unit-testable, no cluster)."""
    res = attempt.config.resources
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if res.cpu is not None:
        requests["cpu"] = limits["cpu"] = _quantity_cpu(res.cpu)
    if res.memory is not None:
        requests["memory"] = limits["memory"] = str(res.memory)
    if res.gpu:
        requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = str(res.gpu)
    container: dict[str, Any] = {
        "name": "task",
        "image": settings.image_for(attempt.project, attempt.config_image),
        "imagePullPolicy": settings.image_pull_policy,
        "command": [settings.python, "-m", "papercrane.backend.runner", storage_url, attempt_key],
        "env": [{"name": "PYTHONUNBUFFERED", "value": "1"}],
        "resources": {k: v for k, v in (("requests", requests), ("limits", limits)) if v},
    }
    if settings.secrets:
        container["envFrom"] = [{"secretRef": {"name": s}} for s in settings.secrets]
    pod: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
    if storage_path:
        if settings.storage_volume.startswith("pvc:"):
            volume = {"persistentVolumeClaim": {"claimName": settings.storage_volume[4:]}}
        else:
            volume = {"hostPath": {"path": storage_path, "type": "DirectoryOrCreate"}}
        pod["volumes"] = [{"name": "store", **volume}]
        container["volumeMounts"] = [{"name": "store", "mountPath": storage_path}]
    if settings.service_account:
        pod["serviceAccountName"] = settings.service_account
    if settings.node_selector:
        pod["nodeSelector"] = dict(settings.node_selector)
    if settings.tolerations:
        pod["tolerations"] = list(settings.tolerations)
    name = job_name(attempt)
    spec: dict[str, Any] = {
        "backoffLimit": 0,
        # The pods also carry the Job's name: the one label that selects exactly them.
        "template": {"metadata": {"labels": {**labels(attempt), _JOB: name}}, "spec": pod},
    }
    if attempt.config.timeout:
        spec["activeDeadlineSeconds"] = max(1, math.ceil(attempt.config.timeout))
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "labels": labels(attempt),
            "annotations": {f"{_LABEL}/task-version": attempt.task.version()},
        },
        "spec": spec,
    }


class KubernetesExecutor(Executor):
    name = "kubernetes"
    can_adopt = True
    quick_to_follow = False

    def __init__(self, artifacts: Any, settings: KubernetesSettings | None = None) -> None:
        super().__init__(artifacts)
        self.settings = settings or KubernetesSettings.from_env()
        self._api: Any = None
        self._ready_namespaces: set[str] = set()
        self._lock = threading.Lock()

    # -- the cluster ------------------------------------------------------------------------
    def api(self) -> Any:
        with self._lock:
            if self._api is None:
                self._api = self._connect()
            return self._api

    def _connect(self) -> Any:
        try:
            from kubernetes import client, config
        except ImportError:
            raise ConfigError(
                "the kubernetes executor needs the kubernetes client: "
                "pip install 'papercrane[kubernetes]'"
            ) from None
        kubeconfig = self.settings.kubeconfig or "~/.kube/config"
        where = "the in-cluster service account"
        # A configuration of our own: loading one into the client's global default would
        # change the cluster of every other client in this process.
        configuration = client.Configuration()
        try:
            if os.environ.get("KUBERNETES_SERVICE_HOST") and not self.settings.kubeconfig:
                config.load_incluster_config(client_configuration=configuration)
            else:
                where = f"context {self._context_name()!r}"
                config.load_kube_config(
                    config_file=self.settings.kubeconfig,
                    context=self.settings.context,
                    client_configuration=configuration,
                )
            api = client.ApiClient(configuration)
            server = api.configuration.host
            if server:
                where += f" at {server}"
            client.VersionApi(api).get_code(_request_timeout=10)
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(
                f"cannot reach the Kubernetes cluster of {where} (kubeconfig {kubeconfig}): "
                f"{_reason(exc)}; check KUBECONFIG / --k8s-context and that the API server is up"
            ) from None
        return api

    def _context_name(self) -> str:
        """The context that will be used, checked against the kubeconfig (by name, so
        errors can say which one)."""
        from kubernetes import config

        kubeconfig = self.settings.kubeconfig or "~/.kube/config"
        try:
            contexts, current = config.list_kube_config_contexts(
                config_file=self.settings.kubeconfig
            )
        except Exception as exc:
            raise ConfigError(
                f"cannot read the kubeconfig {kubeconfig}"
                + (f" (context {self.settings.context!r})" if self.settings.context else "")
                + f": {_reason(exc)}; set KUBECONFIG or --k8s-context"
            ) from None
        names = [c.get("name", "") for c in contexts or []]
        if self.settings.context:
            if self.settings.context not in names:
                raise ConfigError(
                    f"context {self.settings.context!r} is not in the kubeconfig {kubeconfig} "
                    f"(it has: {', '.join(names) or 'none'}); fix --k8s-context / "
                    "PAPERCRANE_K8S_CONTEXT"
                )
            return self.settings.context
        return (current or {}).get("name", "") or "(no current context)"

    def _core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.api())

    def _batch(self) -> Any:
        from kubernetes import client

        return client.BatchV1Api(self.api())

    def ensure_namespace(self, namespace: str) -> None:
        if namespace in self._ready_namespaces:
            return
        from kubernetes.client.rest import ApiException

        core = self._core()
        try:
            core.read_namespace(namespace)
        except ApiException as exc:
            if exc.status == 404 and self.settings.create_namespaces:
                try:
                    core.create_namespace(
                        {
                            "metadata": {
                                "name": namespace,
                                "labels": {f"{_LABEL}/managed-by": "papercrane"},
                            }
                        }
                    )
                except ApiException as inner:
                    if inner.status != 409:
                        raise self._refused(inner, f"create namespace {namespace!r}") from None
            elif exc.status == 404:
                raise ConfigError(
                    f"namespace {namespace!r} does not exist and papercrane may not create it; "
                    "create it, or allow namespace creation"
                ) from None
            elif exc.status != 403:  # may read pods but not namespaces: carry on
                raise self._refused(exc, f"read namespace {namespace!r}") from None
        if self.settings.pod_quota is not None:
            self._quota(namespace)
        self._ready_namespaces.add(namespace)

    def _quota(self, namespace: str) -> None:
        from kubernetes.client.rest import ApiException

        body = {
            "metadata": {"name": "papercrane-pods"},
            "spec": {"hard": {"pods": str(self.settings.pod_quota)}},
        }
        try:
            self._core().create_namespaced_resource_quota(namespace, body)
        except ApiException as exc:
            if exc.status == 409:
                self._core().replace_namespaced_resource_quota("papercrane-pods", namespace, body)
            else:
                raise self._refused(exc, f"set the pod quota of {namespace!r}") from None

    def _check_secrets(self, namespace: str) -> None:
        from kubernetes.client.rest import ApiException

        for name in self.settings.secrets:
            try:
                self._core().read_namespaced_secret(name, namespace)
            except ApiException as exc:
                if exc.status == 404:
                    raise ConfigError(
                        f"Secret {name!r} does not exist in namespace {namespace!r}; create it "
                        f"(kubectl -n {namespace} create secret generic {name} ...) or remove "
                        "it from the task environment settings"
                    ) from None
                if exc.status != 403:
                    raise self._refused(exc, f"read Secret {name!r}") from None

    @staticmethod
    def _refused(exc: Any, what: str) -> ConfigError:
        if getattr(exc, "status", None) == 403:
            return ConfigError(
                f"Kubernetes refused to {what} (RBAC, 403 Forbidden): give papercrane's "
                f"service account that permission. {_reason(exc)}"
            )
        return ConfigError(f"Kubernetes could not {what}: {_reason(exc)}")

    def _storage(self) -> tuple[str, str | None]:
        storage = self.storage
        if storage.local:
            root = str(storage.root.resolve())
            return root, root
        return storage.url_root, None

    # -- an attempt ---------------------------------------------------------------------------
    def run(
        self,
        attempt: AttemptSpec,
        sink: LogSink,
        cancel: threading.Event | None = None,
        adopt: bool = False,
    ) -> AttemptResult:
        from kubernetes.client.rest import ApiException

        namespace = self.settings.namespace_for(attempt.project, attempt.domain)
        started = time.time()
        storage_url, mount = self._storage()
        key = f"{attempt.prefix}/attempt.json"
        name = job_name(attempt)
        problem = None if adopt else resource_problem(attempt)
        if problem:
            return AttemptResult(
                "failed",
                error=_user("InvalidResources", problem)["error"],
                started_at=started,
                ended_at=time.time(),
            )
        try:
            self.ensure_namespace(namespace)
            if not adopt:
                self._check_secrets(namespace)
                attempt.strict_environment = True
                self.storage.write_bytes(key, json.dumps(attempt.to_dict()).encode())
                manifest = build_job(attempt, self.settings, storage_url, key, mount)
                try:
                    self._batch().create_namespaced_job(namespace, manifest)
                except ApiException as exc:
                    if exc.status != 409:  # 409: it exists already (a retried submission)
                        raise self._refused(exc, f"create Job {name} in {namespace!r}") from None
        except ConfigError as exc:
            return AttemptResult(
                "failed",
                error=_user("KubernetesError", str(exc))["error"],
                started_at=started,
                ended_at=time.time(),
            )
        watch = _PodWatch(self, attempt, namespace, sink, cancel)
        outcome: dict[str, Any] = {"kind": "broken"}
        try:
            outcome = watch.follow()
        finally:
            # A pod that ended by itself goes with its Job. One that may still run (an
            # abort, a timeout, a lost or stuck pod) is deleted now, without the grace
            # period: the runner is PID 1 in its container and ignores SIGTERM, so it
            # would otherwise go on for 30 s, next to the attempt that replaces it.
            # The server shutting down leaves it alone (a restarted server adopts it).
            ended = outcome["kind"] in ("done", "failed")
            if not ended and outcome["kind"] != "detached":
                # Before the Job goes: a pod its controller still creates (Kubernetes
                # before 1.26 replaces a deleted one) finds this and does not run.
                with contextlib.suppress(Exception):
                    self.storage.write_bytes(f"{attempt.prefix}/{GIVEN_UP}", b"")
            if outcome["kind"] != "detached":
                self.delete(namespace, name, None if ended else watch.selector)
        result = self._result(attempt, outcome, started)
        if not watch.streamed:
            # The pod finished before it was seen running (a quick task): the listener
            # gets the output from the logs the runner stored, as a local run's would.
            for stream, log_key in sorted(result.logs.items()):
                try:
                    text = self.storage.read_bytes(log_key).decode("utf-8", "replace")
                except Exception:
                    continue
                if text:
                    sink.log(stream, text)
        return result

    def adopt(self, attempt: AttemptSpec) -> bool:
        """Is this attempt's Job still there (a restarted server takes it over)?"""
        from kubernetes.client.rest import ApiException

        namespace = self.settings.namespace_for(attempt.project, attempt.domain)
        try:
            self._batch().read_namespaced_job(job_name(attempt), namespace)
        except (ApiException, ConfigError):
            return False
        return True

    def delete(self, namespace: str, name: str, pods: str | None = None) -> None:
        """Delete an attempt's Job; with ``pods`` (a label selector), also delete its
        pods at once (no grace period) rather than leave them to the garbage collector,
        which deletes them gracefully."""
        from kubernetes.client.rest import ApiException

        try:
            self._batch().delete_namespaced_job(
                name, namespace, propagation_policy="Background", grace_period_seconds=0
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
        except Exception:
            pass
        if pods:
            # (if this fails, the garbage collector still deletes them, gracefully)
            with contextlib.suppress(Exception):
                self._core().delete_collection_namespaced_pod(
                    namespace, label_selector=pods, grace_period_seconds=0
                )

    def _result(
        self, attempt: AttemptSpec, outcome: dict[str, Any], started: float
    ) -> AttemptResult:
        end = time.time()
        if outcome["kind"] in ("aborted", "detached"):
            return AttemptResult(
                "aborted",
                error=system_error("the attempt was stopped", "Aborted"),
                started_at=started,
                ended_at=end,
            )
        try:
            data = json.loads(self.storage.read_bytes(f"{attempt.prefix}/result.json"))
            result = AttemptResult.from_dict(data)
        except Exception:
            result = None
        if result is not None and outcome["kind"] in ("done", "failed"):
            return result
        error = outcome.get("error") or system_error(
            "the pod ended without reporting a result", "LostPod"
        )
        result = AttemptResult("failed", error=error, started_at=started, ended_at=end)
        for stream in ("stdout", "stderr"):
            log_key = f"{attempt.prefix}/{stream}.log"
            if self.storage.size(log_key):
                result.logs[stream] = log_key
        return result


class _PodWatch:
    """Follows one attempt's pod through a watch until it ends, streaming its log."""

    def __init__(
        self,
        executor: KubernetesExecutor,
        attempt: AttemptSpec,
        namespace: str,
        sink: LogSink,
        cancel: threading.Event | None,
    ) -> None:
        self.executor = executor
        self.attempt = attempt
        self.namespace = namespace
        self.sink = sink
        self.cancel = cancel
        self.selector = f"{_JOB}={job_name(attempt)}"
        self.pod_name = ""
        self.log_thread: threading.Thread | None = None
        self.seen_pod = False
        self.pending_since = time.monotonic()
        self.last_reason = ""
        #: The node the pod was placed on ("" while it is not scheduled).
        self.node_name = ""

    @property
    def streamed(self) -> bool:
        """Whether the pod's log was followed live (the listener has the output)."""
        return self.log_thread is not None

    def follow(self) -> dict[str, Any]:
        from kubernetes import watch
        from kubernetes.client.rest import ApiException

        core = self.executor._core()
        version = ""
        while True:
            if self.cancel is not None and self.cancel.is_set():
                return self._stopped()
            w = watch.Watch()
            try:
                if not version:
                    listed = core.list_namespaced_pod(self.namespace, label_selector=self.selector)
                    version = listed.metadata.resource_version
                    for pod in listed.items:
                        outcome = self._observe("ADDED", pod)
                        if outcome is not None:
                            return outcome
                    outcome = self._check_missing(listed.items)
                    if outcome is not None:
                        return outcome
                for event in w.stream(
                    core.list_namespaced_pod,
                    self.namespace,
                    label_selector=self.selector,
                    resource_version=version,
                    timeout_seconds=2,
                    _request_timeout=10,
                ):
                    version = event["object"].metadata.resource_version
                    outcome = self._observe(event["type"], event["object"])
                    if outcome is not None:
                        return outcome
                    if self.cancel is not None and self.cancel.is_set():
                        return self._stopped()
                outcome = self._idle()
                if outcome is not None:
                    return outcome
            except ApiException as exc:
                if exc.status == 410:  # our resourceVersion is too old: list again
                    version = ""
                    continue
                raise
            except Exception as exc:  # a dropped connection: resume from `version`
                if "Read timed out" not in str(exc) and "Connection" not in str(exc):
                    raise
            finally:
                w.stop()

    def _stopped(self) -> dict[str, Any]:
        """Cancelled: an abort (the pod goes), or the server shutting down (``detach``:
        the Job goes on, for the next server to adopt)."""
        if getattr(self.cancel, "detach", False):
            return {"kind": "detached"}
        return {"kind": "aborted"}

    def _idle(self) -> dict[str, Any] | None:
        """Between watch windows: the pending timeout, and a Job that vanished."""
        if not self.seen_pod and time.monotonic() - self.pending_since > 30:
            return self._check_missing([])
        if (
            self.pod_name
            and self.last_reason.startswith("pending")
            and (time.monotonic() - self.pending_since > self.executor.settings.pending_timeout)
        ):
            return self._pending_too_long()
        return None

    def _pending_too_long(self) -> dict[str, Any]:
        """The pending timeout: a pod no node took (what it asks for, and how to wait
        longer), or one placed on a node whose container never started (the kubelet's
        last warning about it, which is only in the pod's events)."""
        waited = f"{self.executor.settings.pending_timeout:g} s"
        task = self.attempt.task.name
        wait_longer = (
            "--k8s-pending-timeout on the server, PAPERCRANE_K8S_PENDING_TIMEOUT in the "
            "notebook's environment"
        )
        reason = self.last_reason[len("pending: ") :].rstrip(". ") or "pending"
        if not self.node_name:
            asks = asked_for(self.attempt)
            fix = (
                f"it asks for {asks}: ask for less, or"
                if asks
                else "check the node selector and tolerations, or"
            )
            return _user(
                "PodUnschedulable",
                f"task {task!r} waited {waited} for a node to run it: {reason}; {fix} "
                f"let it wait longer ({wait_longer})",
            )
        warning = self._last_warning()
        return _user(
            "PodNotStarted",
            f"task {task!r}: pod {self.pod_name} was placed on node {self.node_name} but its "
            f"container did not start within {waited} ({reason}"
            + (f"; {warning}" if warning else "")
            + f"); the node could not start it: check the task's --memory/--cpu and the "
            f"node's kubelet, or let it wait longer ({wait_longer})",
        )

    def _last_warning(self) -> str:
        """The newest Warning event about the pod, shortened: "Reason: message"."""
        try:
            events = self.executor._core().list_namespaced_event(
                self.namespace,
                field_selector=f"involvedObject.name={self.pod_name}",
                _request_timeout=10,
            )
        except Exception:
            return ""
        warnings = [e for e in events.items or [] if e.type == "Warning"]
        if not warnings:
            return ""
        newest = max(
            warnings,
            key=lambda e: e.last_timestamp or e.event_time or e.metadata.creation_timestamp,
        )
        text = f"{newest.reason}: {newest.message or ''}".strip()
        return text if len(text) <= 300 else text[:297] + "..."

    def _check_missing(self, pods: list[Any]) -> dict[str, Any] | None:
        from kubernetes.client.rest import ApiException

        if pods:
            return None
        try:
            self.executor._batch().read_namespaced_job(job_name(self.attempt), self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return _system("LostPod", "the attempt's Job was deleted before it finished")
        return None

    def _observe(self, kind: str, pod: Any) -> dict[str, Any] | None:
        self.seen_pod = True
        self.pod_name = pod.metadata.name
        self.node_name = (pod.spec.node_name if pod.spec else None) or ""
        status = pod.status
        phase = status.phase or "Pending"
        reason = status.reason or ""
        if reason == "Evicted":
            return _system("Evicted", f"pod {self.pod_name} was evicted: {status.message or ''}")
        for cs in status.container_statuses or []:
            terminated = cs.state.terminated if cs.state else None
            if terminated is not None and terminated.reason == "OOMKilled":
                limit = self.attempt.config.resources.memory
                within = f" (its --memory {_memory(limit)})" if limit else ""
                return _user(
                    "OutOfMemory",
                    f"task {self.attempt.task.name!r} ran out of memory{within} and was "
                    "killed (OOMKilled); raise --memory or make the task use less",
                )
        if phase not in ("Succeeded", "Failed") and (
            kind == "DELETED" or pod.metadata.deletion_timestamp is not None
        ):
            # Being deleted before it ended: by the Job's deadline (a timeout), or by
            # someone or something else (kubectl, an eviction, a node drain): lost.
            if self._deadline_hit():
                return self._timeout()
            return _system("LostPod", f"pod {self.pod_name} was deleted while it ran")
        for cs in status.container_statuses or []:
            waiting = cs.state.waiting if cs.state else None
            if waiting is not None and waiting.reason in _IMAGE_ERRORS:
                return _user("ImageUnavailable", self._image_message(cs.image, waiting))
            if waiting is not None and waiting.reason in _CONFIG_ERRORS:
                return _user(
                    "KubernetesError",
                    f"the task's container could not be created ({waiting.reason}: "
                    f"{waiting.message or 'no details'}); check the Secrets, service account "
                    "and settings its pod uses",
                )
        if phase == "Pending":
            message = self._pending_reason(pod)
            if message and message != self.last_reason:
                self.last_reason = message
                _status(self.sink, message)
            return None
        if phase == "Running":
            if self.last_reason != "running":
                self.last_reason = "running"
                _status(self.sink, "running")
                self._stream_logs()
            return None
        if phase == "Succeeded":
            self._join_logs()
            return {"kind": "done"}
        if phase == "Failed":
            self._join_logs()
            if reason == "DeadlineExceeded" or self._deadline_hit():
                return self._timeout()
            # Used only if the runner wrote no result (it was killed, or crashed).
            return {"kind": "failed", "error": system_error(self._exit(pod), "LostPod")}
        return None

    def _image_message(self, image: str, waiting: Any) -> str:
        """What is wrong with the pod's image, and which setting changes it."""
        why = f"{waiting.reason}: {waiting.message or 'not present'}"
        if waiting.reason == "ErrImageNeverPull":
            return (
                f"image {image!r} is not on the cluster's nodes, and the pull policy Never "
                f"keeps them from pulling it ({why}); import it on the nodes, or set the pull "
                "policy to IfNotPresent (--k8s-pull-policy on the server, "
                "PAPERCRANE_K8S_PULL_POLICY in the notebook's environment), or choose another "
                "image with --image"
            )
        return (
            f"image {image!r} can't be pulled by the cluster's nodes ({why}); check its name "
            "and tag and that the nodes may pull from its registry (an image pull Secret), or "
            "choose another image with --image"
        )

    def _exit(self, pod: Any) -> str:
        for cs in pod.status.container_statuses or []:
            terminated = cs.state.terminated if cs.state else None
            if terminated is not None:
                how = f"exit code {terminated.exit_code}"
                if terminated.signal:
                    how += f", signal {terminated.signal}"
                if terminated.reason:
                    how += f", {terminated.reason}"
                return f"pod {self.pod_name} ended without reporting a result ({how})"
        return f"pod {self.pod_name} ended without reporting a result"

    def _timeout(self) -> dict[str, Any]:
        message = (
            f"task {self.attempt.task.name!r} ran longer than its timeout of "
            f"{self.attempt.config.timeout:g} s and was stopped (the Job's "
            "activeDeadlineSeconds)"
        )
        if self.last_reason.startswith("pending"):  # the time went on waiting for a node
            message += f"; its pod never started running ({self.last_reason})"
        return _user("TaskTimeout", message + "; raise --timeout if it needs longer")

    def _deadline_hit(self) -> bool:
        """Did the Job's activeDeadlineSeconds end this attempt? The Job controller
        deletes the pods first and marks the Job failed just after, so a deletion close
        to the deadline waits a moment for that mark."""
        from kubernetes.client.rest import ApiException

        if not self.attempt.config.timeout:
            return False
        give_up = time.monotonic() + 3
        while True:
            try:
                job = self.executor._batch().read_namespaced_job(
                    job_name(self.attempt), self.namespace
                )
            except ApiException:
                return False
            status = job.status
            for cond in status.conditions or []:
                if cond.type == "Failed" and cond.status == "True":
                    return cond.reason == "DeadlineExceeded"
            deadline = job.spec.active_deadline_seconds or 0
            if status.start_time is None or not deadline or time.monotonic() > give_up:
                return False
            elapsed = (datetime.now(timezone.utc) - status.start_time).total_seconds()
            if elapsed < deadline - 2:
                return False  # well before the deadline: it was something else
            time.sleep(0.2)

    def _pending_reason(self, pod: Any) -> str:
        for cond in pod.status.conditions or []:
            if cond.type == "PodScheduled" and cond.status == "False":
                return f"pending: {cond.reason}: {cond.message}"
        for cs in pod.status.container_statuses or []:
            if cs.state and cs.state.waiting and cs.state.waiting.reason:
                return f"pending: {cs.state.waiting.reason}"
        return "pending"

    def _stream_logs(self) -> None:
        if self.log_thread is not None:
            return

        def pump() -> None:
            try:
                stream = self.executor._core().read_namespaced_pod_log(
                    self.pod_name, self.namespace, follow=True, _preload_content=False
                )
                for chunk in stream.stream(4096):
                    self.sink.log("stdout", chunk.decode("utf-8", "replace"))
            except Exception:
                pass  # the logs are also in storage, written by the runner

        self.log_thread = threading.Thread(target=pump, daemon=True, name="pod-log")
        self.log_thread.start()

    def _join_logs(self) -> None:
        if self.log_thread is not None:
            self.log_thread.join(timeout=5)


def _memory(size: int) -> str:
    for unit, shift in (("Gi", 30), ("Mi", 20), ("Ki", 10)):
        if size % (1 << shift) == 0:
            return f"{size >> shift}{unit}"
    return f"{size} bytes"


def _status(sink: LogSink, message: str) -> None:
    report = getattr(sink, "status", None)
    if report is not None:
        report(message)


#: Failures another attempt would meet again (the same image, request or setting): the
#: scheduler does not spend the task's --retries on them (``retryable: False``).
_FINAL = {"ImageUnavailable", "InvalidResources", "KubernetesError", "PodUnschedulable"}


def _user(type_: str, message: str) -> dict[str, Any]:
    error: dict[str, Any] = {"kind": "user", "type": type_, "message": message, "traceback": ""}
    if type_ in _FINAL:
        error["retryable"] = False
    return {"kind": "error", "error": error}


def _system(type_: str, message: str) -> dict[str, Any]:
    return {"kind": "error", "error": system_error(message, type_)}


def _reason(exc: BaseException) -> str:
    body = getattr(exc, "body", None)
    if body:
        try:
            return json.loads(body).get("message", str(body))
        except (ValueError, TypeError):
            return str(body)[:300]
    cause = getattr(exc, "reason", None)  # urllib3's MaxRetryError: the last failure
    if isinstance(cause, BaseException):
        text = str(cause)
        # "<urllib3.connection.HTTPSConnection object at 0x..>: Failed to establish..."
        text = re.sub(r"^<[^>]*>:\s*", "", text)
        return text[:300] or type(cause).__name__
    return str(exc)[:300] or type(exc).__name__
