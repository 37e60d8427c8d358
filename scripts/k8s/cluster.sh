#!/usr/bin/env bash
# A one-node Kubernetes for papercrane's tests, on this machine, with the task image in it.
#
#   eval "$(scripts/k8s/cluster.sh up)"    # build once (~6 min), start (~30 s), export KUBECONFIG
#   scripts/k8s/cluster.sh image           # rebuild the task image and load it (code changed)
#   scripts/k8s/cluster.sh down
#
# It uses the scripts in ../shared/k8s (a real kube-apiserver, scheduler, controller-manager
# and kubelet with containerd). Any other cluster works too: point KUBECONFIG at it (kind,
# k3d, minikube...) and make local/papercrane-task:dev available to its nodes (or set
# PAPERCRANE_K8S_IMAGE), with storage the pods can reach (see README, "Kubernetes").
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
SHARED=${PAPERCRANE_K8S_SHARED:-$REPO/../shared/k8s}
K8S_HOME=${K8S_HOME:-/var/cache/k8s-local}
K8S_RUN=${K8S_RUN:-/tmp/k8s-local}
IMAGE_TAR=$K8S_HOME/images/papercrane-task.tar
case "${1:-up}" in
  up)
    "$SHARED/build.sh" >&2
    "$REPO/scripts/k8s/task-image.sh" "$IMAGE_TAR" >&2   # up.sh imports every tar there
    if [ -S "$K8S_RUN/containerd/containerd.sock" ] && [ -f "$K8S_RUN/kubeconfig" ]; then
      ctr -a "$K8S_RUN/containerd/containerd.sock" -n k8s.io images import "$IMAGE_TAR" >/dev/null
      echo "export KUBECONFIG=$K8S_RUN/kubeconfig"
    else
      "$SHARED/up.sh" | tail -n 1
    fi
    ;;
  image)
    "$REPO/scripts/k8s/task-image.sh" "$IMAGE_TAR" >&2
    ctr -a "$K8S_RUN/containerd/containerd.sock" -n k8s.io images import "$IMAGE_TAR" >/dev/null
    echo "loaded local/papercrane-task:dev" >&2
    ;;
  down)
    "$SHARED/down.sh"
    ;;
  *)
    echo "usage: $0 up|image|down" >&2; exit 2 ;;
esac
