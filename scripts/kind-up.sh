#!/usr/bin/env bash
# From nothing to a running, autoscaling bookmesh on kind (make kind-up):
#   1. the cluster from k8s/kind/cluster.yaml (kept if it exists),
#   2. metrics-server, patched for kind's self-signed kubelet certificates (HPAs need it),
#   3. the images (make images) and `kind load` onto the nodes,
#   4. the kind overlay, waiting until everything is available.
set -euo pipefail
cd "$(dirname "$0")/.."

kind=${KIND:-kind}
kubectl=${KUBECTL:-kubectl}
docker=${DOCKER:-docker}
cluster=${KIND_CLUSTER:-bookmesh}
metrics_server=${METRICS_SERVER_VERSION:-v0.7.2}
# The kind overlay runs bookmesh/<name>:dev, whatever IMAGE_REPOSITORY/IMAGE_TAG say elsewhere.
repository=bookmesh
tag=dev
images=${IMAGES:?IMAGES (name:binary ...) comes from the Makefile}

step() { printf '\n==> %s\n' "$*"; }
for tool in "$docker" "$kind" "$kubectl"; do
  command -v "$tool" >/dev/null || {
    echo "error: $tool not found (see docs/kubernetes.md, 'What you need')" >&2
    exit 1
  }
done

step "1/4 kind cluster '$cluster'"
if "$kind" get clusters | grep -qx "$cluster"; then
  echo "exists; reusing it"
else
  "$kind" create cluster --name "$cluster" --config k8s/kind/cluster.yaml --wait 180s
fi
"$kubectl" config use-context "kind-$cluster" >/dev/null

step "2/4 metrics-server $metrics_server (the HPAs read CPU from it)"
"$kubectl" apply -f "https://github.com/kubernetes-sigs/metrics-server/releases/download/$metrics_server/components.yaml"
# kind's kubelets serve self-signed certificates; metrics-server must not insist on verifying them.
if ! "$kubectl" -n kube-system get deployment metrics-server \
  -o jsonpath='{.spec.template.spec.containers[0].args}' | grep -q -- --kubelet-insecure-tls; then
  "$kubectl" -n kube-system patch deployment metrics-server --type=json \
    -p '[{"op":"add","path":"/spec/template/spec/containers/0/args/-","value":"--kubelet-insecure-tls"}]'
fi
"$kubectl" -n kube-system rollout status deployment/metrics-server --timeout=180s

step "3/4 images ($repository/*:$tag) into the cluster's nodes"
IMAGE_REPOSITORY=$repository IMAGE_TAG=$tag scripts/build-images.sh
for image in $images; do
  "$kind" load docker-image --name "$cluster" "$repository/${image%%:*}:$tag"
done

step "4/4 the kind overlay"
OVERLAY=kind scripts/deploy.sh
