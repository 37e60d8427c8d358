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

The Job is built in ``k8s_jobs``, its pod followed in ``k8s_watch``, the settings read in
``k8s_settings``; this module submits, adopts and deletes Jobs and sets up namespaces.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from typing import Any

from ..errors import ConfigError
from ..runner import GIVEN_UP, AttemptResult, system_error
from .base import AttemptSpec, Executor, LogSink
from .k8s_jobs import LABEL, build_job, job_name, resource_problem
from .k8s_settings import KubernetesSettings
from .k8s_watch import PodWatch, api_reason, user_failure


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
                f"{api_reason(exc)}; check KUBECONFIG / --k8s-context and that the API server is up"
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
                + f": {api_reason(exc)}; set KUBECONFIG or --k8s-context"
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
                                "labels": {f"{LABEL}/managed-by": "papercrane"},
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
                f"service account that permission. {api_reason(exc)}"
            )
        return ConfigError(f"Kubernetes could not {what}: {api_reason(exc)}")

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
                error=user_failure("InvalidResources", problem)["error"],
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
                error=user_failure("KubernetesError", str(exc))["error"],
                started_at=started,
                ended_at=time.time(),
            )
        watch = PodWatch(self, attempt, namespace, sink, cancel)
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
