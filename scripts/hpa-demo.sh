#!/usr/bin/env bash
# Autoscaling, watched (make hpa-demo): runs the load generator as a Job in the cluster
# against the rental service and prints the HPAs every 15 s while they scale out under the
# load and back in after it, then a summary.
set -euo pipefail
cd "$(dirname "$0")/.."

kubectl=${KUBECTL:-kubectl}
namespace=bookmesh
job=hpa-demo-loadgen
settle_timeout=${SETTLE_TIMEOUT:-900}

"$kubectl" -n "$namespace" get hpa >/dev/null
"$kubectl" -n "$namespace" delete job "$job" --ignore-not-found --wait
"$kubectl" apply -k k8s/hpa-demo

declare -A most
show() {
  printf '\n%s\n' "$(date +%T)"
  "$kubectl" -n "$namespace" get hpa \
    -o custom-columns='HPA:.metadata.name,CPU%:.status.currentMetrics[0].resource.current.averageUtilization,TARGET%:.spec.metrics[0].resource.target.averageUtilization,REPLICAS:.status.currentReplicas,DESIRED:.status.desiredReplicas,MIN:.spec.minReplicas,MAX:.spec.maxReplicas'
  while read -r name replicas; do
    # An HPA that has not reconciled yet reports no replica count.
    replicas=${replicas:-0}
    ((replicas > ${most[$name]:-0})) && most[$name]=$replicas
  done < <("$kubectl" -n "$namespace" get hpa -o jsonpath='{range .items[*]}{.metadata.name} {.status.currentReplicas}{"\n"}{end}')
  return 0
}

echo "==> load running; the HPAs read CPU every 15 s (metrics-server), scale out at once"
until "$kubectl" -n "$namespace" get job "$job" \
  -o jsonpath='{.status.conditions[?(@.status=="True")].type}' | grep -Eq 'Complete|Failed'; do
  show
  sleep 15
done
echo "==> load generator report"
"$kubectl" -n "$namespace" logs "job/$job" | tail -n 25

echo "==> load over; scale-in waits out the 120 s stabilization window, then 1 pod per 30 s"
started=$SECONDS
while ((SECONDS - started < settle_timeout)); do
  show
  above=$("$kubectl" -n "$namespace" get hpa \
    -o jsonpath='{range .items[*]}{.status.currentReplicas}>{.spec.minReplicas}{"\n"}{end}' |
    awk -F'>' '$1 > $2' | wc -l)
  ((above == 0)) && break
  sleep 15
done

echo
echo "==> most replicas seen per service during the run"
for name in "${!most[@]}"; do
  echo "  $name: ${most[$name]}"
done
