#!/usr/bin/env bash
# From nothing to a running, autoscaling bookmesh on kind (make kind-up):
#   1. the cluster from k8s/kind/cluster.yaml (kept if it exists),
#   2. metrics-server, patched for kind's self-signed kubelet certificates (HPAs need it),
#   3. cert-manager, which issues and renews the workload identities (k8s/base/pki),
#   4. the images (make images) and the third-party ones, `kind load`ed onto the nodes,
#   5. the development token key (data/pki/jwt.pub, made if missing) as the Secret
#      `token-keys`, and the kind overlay, waiting until everything is available; on a re-run,
#      a restart of the bookmesh Deployments, so they run the images just rebuilt.
# The cluster publishes the gateway's NodePort (30080) on localhost:8080: the console.
set -euo pipefail
cd "$(dirname "$0")/.."

kind=${KIND:-kind}
kubectl=${KUBECTL:-kubectl}
docker=${DOCKER:-docker}
cluster=${KIND_CLUSTER:-bookmesh}
metrics_server=${METRICS_SERVER_VERSION:-v0.7.2}
cert_manager=${CERT_MANAGER_VERSION:-v1.16.2}
cargo=${CARGO:-cargo}
# The kind overlay runs bookmesh/<name>:dev, whatever IMAGE_REPOSITORY/IMAGE_TAG say elsewhere.
repository=bookmesh
tag=dev
images=${IMAGES:?IMAGES (name:binary[:Dockerfile] ...) comes from the Makefile}

step() { printf '\n==> %s\n' "$*"; }
for tool in "$docker" "$kind" "$kubectl"; do
  command -v "$tool" >/dev/null || {
    echo "error: $tool not found (see docs/kubernetes.md, 'What you need')" >&2
    exit 1
  }
done

# kind v0.24.0's network-policy controller makes DNS flaky under egress policies (kind#3713),
# and every bookmesh pod has them: v0.25 or newer.
kind_version=$("$kind" version | sed -n 's/^kind v\([0-9]*\)\.\([0-9]*\).*/\1 \2/p')
read -r kind_major kind_minor <<<"${kind_version:-0 0}"
if ((kind_major == 0 && kind_minor < 25)); then
  echo "error: kind v0.25 or newer is needed, found: $("$kind" version)" >&2
  exit 1
fi

step "1/5 kind cluster '$cluster'"
if "$kind" get clusters | grep -qx "$cluster"; then
  echo "exists; reusing it"
  # Port mappings are fixed when a cluster is created: one made before the gateway's has none.
  if ! "$docker" port "$cluster-control-plane" 30080/tcp >/dev/null 2>&1; then
    echo "warning: this cluster does not publish the gateway on localhost:8080 (it was created" \
      "before k8s/kind/cluster.yaml mapped NodePort 30080); make kind-down and make kind-up" \
      "recreate it, or: kubectl -n bookmesh port-forward svc/gateway 8080" >&2
  fi
else
  "$kind" create cluster --name "$cluster" --config k8s/kind/cluster.yaml --wait 180s
fi
"$kubectl" config use-context "kind-$cluster" >/dev/null

step "2/5 metrics-server $metrics_server (the HPAs read CPU from it)"
"$kubectl" apply -f "https://github.com/kubernetes-sigs/metrics-server/releases/download/$metrics_server/components.yaml"
# kind's kubelets serve self-signed certificates; metrics-server must not insist on verifying them.
if ! "$kubectl" -n kube-system get deployment metrics-server \
  -o jsonpath='{.spec.template.spec.containers[0].args}' | grep -q -- --kubelet-insecure-tls; then
  "$kubectl" -n kube-system patch deployment metrics-server --type=json \
    -p '[{"op":"add","path":"/spec/template/spec/containers/0/args/-","value":"--kubelet-insecure-tls"}]'
fi
"$kubectl" -n kube-system rollout status deployment/metrics-server --timeout=180s

step "3/5 cert-manager $cert_manager (the workload identities)"
"$kubectl" apply -f "https://github.com/cert-manager/cert-manager/releases/download/$cert_manager/cert-manager.yaml"
for deployment in cert-manager cert-manager-cainjector cert-manager-webhook; do
  "$kubectl" -n cert-manager rollout status "deployment/$deployment" --timeout=180s
done

step "4/5 images ($repository/*:$tag, and the third-party ones) into the cluster's nodes"
IMAGE_REPOSITORY=$repository IMAGE_TAG=$tag scripts/build-images.sh
for image in $images; do
  "$kind" load docker-image --name "$cluster" "$repository/${image%%:*}:$tag"
done
# The databases, NATS, the collector and Jaeger: pulled once by this machine and loaded onto
# the nodes, so the nodes never pull them from Docker Hub (whose anonymous limit a second
# cluster made within the hour would hit). Pinned tags: a pulled image is reused as it is.
for image in $("$kubectl" kustomize k8s/overlays/kind | sed -n 's/^[ -]*image: *//p' | tr -d '"' |
  grep -v "^$repository/" | sort -u); do
  "$docker" image inspect "$image" >/dev/null 2>&1 || "$docker" pull "$image"
  "$kind" load docker-image --name "$cluster" "$image"
done
# A re-run after a code change rebuilt bookmesh/*:dev, but the Deployments did not change (same
# tag, same template), so nothing would roll: note which ones exist, to restart them below.
restart=$("$kubectl" -n bookmesh get deployments -o name \
  -l 'app.kubernetes.io/part-of=bookmesh,app.kubernetes.io/component in (service,gateway)' \
  2>/dev/null || true)

step "5/5 the development token key and the kind overlay"
# Users sign in with development tokens (make -s token ...) signed by the local key; the
# services get its public half. A real cluster uses an identity provider (docs/security.md).
"$cargo" run --quiet -p bookmesh-token -- --init-keys
"$kubectl" create namespace bookmesh --dry-run=client -o yaml | "$kubectl" apply -f -
"$kubectl" -n bookmesh create secret generic token-keys --from-file=jwt.pub=data/pki/jwt.pub \
  --dry-run=client -o yaml | "$kubectl" apply -f -
OVERLAY=kind scripts/deploy.sh
if [[ -n "$restart" ]]; then
  step "the images were rebuilt: restarting the bookmesh Deployments that were already running"
  # shellcheck disable=SC2086 # one name per word
  "$kubectl" -n bookmesh rollout restart $restart
  for deployment in $restart; do
    "$kubectl" -n bookmesh rollout status "$deployment" --timeout=300s
  done
fi
