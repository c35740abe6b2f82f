#!/usr/bin/env bash
# Applies an overlay (OVERLAY, default kind) and waits until the databases, the broker and
# every Deployment are available, printing progress (make deploy; the last step of kind-up).
set -euo pipefail
cd "$(dirname "$0")/.."

kubectl=${KUBECTL:-kubectl}
overlay=${OVERLAY:-kind}
timeout=${DEPLOY_TIMEOUT:-300s}

echo "==> kubectl apply -k k8s/overlays/$overlay"
"$kubectl" apply -k "k8s/overlays/$overlay"

echo "==> waiting for cert-manager to issue the workload identities"
"$kubectl" -n bookmesh wait --for=condition=Ready certificates --all --timeout="$timeout"

echo "==> waiting for the databases and the broker (first start initialises their volumes)"
for statefulset in $("$kubectl" -n bookmesh get statefulsets -o name); do
  "$kubectl" -n bookmesh rollout status "$statefulset" --timeout="$timeout"
done

echo "==> waiting for every Deployment to be available"
for deployment in $("$kubectl" -n bookmesh get deployments -o name); do
  "$kubectl" -n bookmesh rollout status "$deployment" --timeout="$timeout"
done

"$kubectl" -n bookmesh get deployments,statefulsets,hpa
echo "==> bookmesh is up. From the host: make port-forward, then"
# shellcheck disable=SC2016
echo '    kubectl -n bookmesh get secret bookmesh-ca -o jsonpath="{.data.ca\.crt}" | base64 -d > kind-ca.crt'
echo "    grpcurl -cacert kind-ca.crt localhost:50053 list"
if [[ $overlay == kind ]]; then
  echo "==> the console (the gateway's NodePort 30080): http://localhost:8080"
fi
