"""Where and how task pods run: the kubernetes executor's settings, and reading them.

They come from the server's ``--k8s-*`` flags or, for the embedded engine (a notebook's
own kernel), from ``PAPERCRANE_K8S_*`` variables. A variable the user mistyped is
refused here with its name and the form it takes, before any pod is made: otherwise
it surfaces as a Python traceback from deep inside the engine, or as a Kubernetes
validation error that names a field of a Job the user never wrote.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import CaptureError, ConfigError
from ..units import parse_duration

#: The values Kubernetes takes for ``imagePullPolicy``.
PULL_POLICIES = ("Always", "IfNotPresent", "Never")


def dns_label(text: str, limit: int = 63) -> str:
    """A DNS-1123 label: lowercase alphanumerics and '-', starting and ending with one."""
    clean = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-") or "x"
    if len(clean) <= limit:
        return clean
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{clean[: limit - 9].rstrip('-')}-{digest}"


@dataclass
class KubernetesSettings:
    """Where and how task pods run. From the environment (``PAPERCRANE_K8S_*``) or the
    server's flags."""

    image: str = "local/papercrane-task:dev"
    project_images: dict[str, str] = field(default_factory=dict)
    image_pull_policy: str = "IfNotPresent"
    python: str = "/opt/venv/bin/python"
    namespace: str = ""  # fixed namespace; default: one per project and domain
    create_namespaces: bool = True
    kubeconfig: str | None = None
    context: str | None = None
    service_account: str | None = None
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)
    #: How the pod reaches file storage: "hostPath" (same path on the node) or
    #: "pvc:CLAIM" (a PersistentVolumeClaim mounted at the storage path).
    storage_volume: str = "hostPath"
    #: A pod that can't be scheduled fails its attempt after this long (the scheduler's
    #: reason is in the error).
    pending_timeout: float = 300.0
    #: Running pods allowed per namespace (a ResourceQuota), on top of the server's share.
    pod_quota: int | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> KubernetesSettings:
        """The settings the ``PAPERCRANE_K8S_*`` variables give; a value that can't be
        used raises :class:`ConfigError` naming the variable and what to write."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for key, attr in (
            ("PAPERCRANE_K8S_IMAGE", "image"),
            ("PAPERCRANE_K8S_PULL_POLICY", "image_pull_policy"),
            ("PAPERCRANE_K8S_PYTHON", "python"),
            ("PAPERCRANE_K8S_NAMESPACE", "namespace"),
            ("PAPERCRANE_K8S_CONTEXT", "context"),
            ("PAPERCRANE_K8S_SERVICE_ACCOUNT", "service_account"),
            ("PAPERCRANE_K8S_STORAGE_VOLUME", "storage_volume"),
            ("KUBECONFIG", "kubeconfig"),
        ):
            if env.get(key):
                values[attr] = env[key]
        if env.get("PAPERCRANE_K8S_SECRETS"):
            values["secrets"] = [s for s in env["PAPERCRANE_K8S_SECRETS"].split(",") if s]
        if env.get("PAPERCRANE_K8S_PENDING_TIMEOUT"):
            values["pending_timeout"] = _pending_timeout(env["PAPERCRANE_K8S_PENDING_TIMEOUT"])
        if env.get("PAPERCRANE_K8S_NODE_SELECTOR"):
            values["node_selector"] = _node_selector(env["PAPERCRANE_K8S_NODE_SELECTOR"])
        if env.get("PAPERCRANE_K8S_TOLERATIONS"):
            values["tolerations"] = _tolerations(env["PAPERCRANE_K8S_TOLERATIONS"])
        if env.get("PAPERCRANE_K8S_POD_QUOTA"):
            values["pod_quota"] = _pod_quota(env["PAPERCRANE_K8S_POD_QUOTA"])
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        """Refuse values Kubernetes would refuse only at the first Job, in its words."""
        if self.image_pull_policy not in PULL_POLICIES:
            raise ConfigError(
                f"image pull policy {self.image_pull_policy!r} (PAPERCRANE_K8S_PULL_POLICY or "
                f"--k8s-pull-policy) is not one Kubernetes knows; use {', '.join(PULL_POLICIES)}"
            )
        volume = self.storage_volume
        if volume != "hostPath" and not (volume.startswith("pvc:") and volume[4:]):
            raise ConfigError(
                f"storage volume {volume!r} (PAPERCRANE_K8S_STORAGE_VOLUME or "
                "--k8s-storage-volume) is not one papercrane knows; use hostPath or pvc:CLAIM"
            )

    def namespace_for(self, project: str, domain: str) -> str:
        return self.namespace or dns_label(f"papercrane-{project}-{domain}")

    def image_for(self, project: str, task_image: str | None) -> str:
        return task_image or self.project_images.get(project) or self.image


def _pending_timeout(text: str) -> float:
    try:
        return parse_duration(text, field="PAPERCRANE_K8S_PENDING_TIMEOUT")
    except CaptureError as exc:
        raise ConfigError(str(exc)) from None


def _node_selector(text: str) -> dict[str, str]:
    selector: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(
                f"PAPERCRANE_K8S_NODE_SELECTOR {text!r}: {item!r} is not a label; write "
                "KEY=VALUE pairs separated by commas, like pool=gpu,zone=a"
            )
        selector[key.strip()] = value.strip()
    return selector


def _tolerations(text: str) -> list[dict[str, Any]]:
    example = '[{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]'
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ConfigError(
            f"PAPERCRANE_K8S_TOLERATIONS is not JSON ({exc}); write a JSON list of "
            f"tolerations, like {example}"
        ) from None
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise ConfigError(
            f"PAPERCRANE_K8S_TOLERATIONS must be a JSON list of objects, like {example}"
        )
    return value


def _pod_quota(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(
            f"PAPERCRANE_K8S_POD_QUOTA {text!r} must be a whole number of pods, 1 or more"
        )
    return value
