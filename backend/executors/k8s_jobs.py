"""The Kubernetes Job of one attempt: its name and labels (valid DNS and label values
whatever the task is called), its resources (refused before submission when no node
could run them), and the pod spec that runs papercrane's runner."""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any

from .base import AttemptSpec
from .k8s_settings import KubernetesSettings, dns_label

LABEL = "papercrane.io"


JOB_LABEL = f"{LABEL}/job"  # on pods: the name of their attempt's Job


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
            f"task {name!r} asks for --memory {memory_text(res.memory)}, less than the "
            f"{memory_text(MIN_MEMORY)} a container needs to start Python (a number without a "
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
        parts.append(f"--memory {memory_text(res.memory)}")
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
        f"{LABEL}/managed-by": "papercrane",
        f"{LABEL}/execution": _label_value(attempt.execution_id),
        f"{LABEL}/node": _label_value(attempt.node),
        f"{LABEL}/attempt": str(attempt.attempt),
        f"{LABEL}/project": _label_value(attempt.project),
        f"{LABEL}/domain": _label_value(attempt.domain),
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
        "template": {"metadata": {"labels": {**labels(attempt), JOB_LABEL: name}}, "spec": pod},
    }
    if attempt.config.timeout:
        spec["activeDeadlineSeconds"] = max(1, math.ceil(attempt.config.timeout))
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "labels": labels(attempt),
            "annotations": {f"{LABEL}/task-version": attempt.task.version()},
        },
        "spec": spec,
    }


def memory_text(size: int) -> str:
    for unit, shift in (("Gi", 30), ("Mi", 20), ("Ki", 10)):
        if size % (1 << shift) == 0:
            return f"{size >> shift}{unit}"
    return f"{size} bytes"
