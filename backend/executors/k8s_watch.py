"""Following one attempt's pod to its end through a watch: what its phases, container
states and events mean (the task's exception, out of memory, an image that isn't
there, a pod that cannot be scheduled or lost), its logs, and its deadlines."""

from __future__ import annotations

import json
import re
import threading
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ..runner import system_error
from .base import AttemptSpec, LogSink
from .k8s_jobs import JOB_LABEL, asked_for, job_name, memory_text

if TYPE_CHECKING:
    from .kubernetes import KubernetesExecutor


_IMAGE_ERRORS = {"ErrImageNeverPull", "ErrImagePull", "ImagePullBackOff", "InvalidImageName"}


#: The kubelet can't make the container from its spec (a missing Secret or ConfigMap).
_CONFIG_ERRORS = {"CreateContainerConfigError"}


class PodWatch:
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
        self.selector = f"{JOB_LABEL}={job_name(attempt)}"
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
            return user_failure(
                "PodUnschedulable",
                f"task {task!r} waited {waited} for a node to run it: {reason}; {fix} "
                f"let it wait longer ({wait_longer})",
            )
        warning = self._last_warning()
        return user_failure(
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
                return system_failure("LostPod", "the attempt's Job was deleted before it finished")
        return None

    def _observe(self, kind: str, pod: Any) -> dict[str, Any] | None:
        self.seen_pod = True
        self.pod_name = pod.metadata.name
        self.node_name = (pod.spec.node_name if pod.spec else None) or ""
        status = pod.status
        phase = status.phase or "Pending"
        reason = status.reason or ""
        if reason == "Evicted":
            return system_failure(
                "Evicted", f"pod {self.pod_name} was evicted: {status.message or ''}"
            )
        for cs in status.container_statuses or []:
            terminated = cs.state.terminated if cs.state else None
            if terminated is not None and terminated.reason == "OOMKilled":
                limit = self.attempt.config.resources.memory
                within = f" (its --memory {memory_text(limit)})" if limit else ""
                return user_failure(
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
            return system_failure("LostPod", f"pod {self.pod_name} was deleted while it ran")
        for cs in status.container_statuses or []:
            waiting = cs.state.waiting if cs.state else None
            if waiting is not None and waiting.reason in _IMAGE_ERRORS:
                return user_failure("ImageUnavailable", self._image_message(cs.image, waiting))
            if waiting is not None and waiting.reason in _CONFIG_ERRORS:
                return user_failure(
                    "KubernetesError",
                    f"the task's container could not be created ({waiting.reason}: "
                    f"{waiting.message or 'no details'}); check the Secrets, service account "
                    "and settings its pod uses",
                )
        if phase == "Pending":
            message = self._pending_reason(pod)
            if message and message != self.last_reason:
                self.last_reason = message
                tell_status(self.sink, message)
            return None
        if phase == "Running":
            if self.last_reason != "running":
                self.last_reason = "running"
                tell_status(self.sink, "running")
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
        return user_failure("TaskTimeout", message + "; raise --timeout if it needs longer")

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


def tell_status(sink: LogSink, message: str) -> None:
    report = getattr(sink, "status", None)
    if report is not None:
        report(message)


#: Failures another attempt would meet again (the same image, request or setting): the
#: scheduler does not spend the task's --retries on them (``retryable: False``).
FINAL_ERRORS = {"ImageUnavailable", "InvalidResources", "KubernetesError", "PodUnschedulable"}


def user_failure(type_: str, message: str) -> dict[str, Any]:
    error: dict[str, Any] = {"kind": "user", "type": type_, "message": message, "traceback": ""}
    if type_ in FINAL_ERRORS:
        error["retryable"] = False
    return {"kind": "error", "error": error}


def system_failure(type_: str, message: str) -> dict[str, Any]:
    return {"kind": "error", "error": system_error(message, type_)}


def api_reason(exc: BaseException) -> str:
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
