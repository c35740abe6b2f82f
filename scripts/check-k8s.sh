#!/usr/bin/env bash
# Offline checks of everything that ships to a cluster (make check-k8s; no cluster, no Docker):
#   1. hadolint on the Dockerfiles, shellcheck on the scripts;
#   2. every kustomization rendered (kind and production overlays, the hpa-demo Job) and
#      validated strictly (unknown fields are errors) against Kubernetes schemas;
#   3. the invariants a schema cannot see, and a run of each binary exactly as its Deployment
#      says (tests/k8s_manifests/, against the rendered manifests).
set -euo pipefail
cd "$(dirname "$0")/.."

tools=.tools
kubectl=$tools/bin/kubectl
versions=${K8S_SCHEMA_VERSIONS:-1.31.0 1.35.0}
out=${K8S_RENDERED_DIR:-$PWD/target/k8s}
cargo=${CARGO:-cargo}

# The Rust checks read JSON: one array of objects per render.
to_json() {
  "$tools/k8s/bin/python" -c '
import json, sys, yaml
json.dump([d for d in yaml.safe_load_all(open(sys.argv[1])) if d], open(sys.argv[2], "w"))
' "$1" "$2"
}

# Every Dockerfile `make images` builds from: images/Dockerfile (the Rust binaries) and the
# notification service's own (Python).
"$tools/k8s/bin/hadolint" images/Dockerfile images/notification.Dockerfile
echo "ok - hadolint images/Dockerfile images/notification.Dockerfile"

# The kind scripts cannot run here (no Docker): static analysis is what checks them in CI.
"$tools/k8s/bin/shellcheck" scripts/*.sh .ci/run tests/smoke/*.sh clients/*.sh clients/*/*.sh
echo "ok - shellcheck on every script"

rm -rf "$out"
mkdir -p "$out"
for kustomization in overlays/kind overlays/production hpa-demo; do
  name=$(basename "$kustomization")
  "$kubectl" kustomize "k8s/$kustomization" >"$out/$name.yaml"
  for version in $versions; do
    "$tools/k8s/bin/kubernetes-validate" --strict --quiet -k "$version" "$out/$name.yaml"
  done
  to_json "$out/$name.yaml" "$out/$name.json"
  echo "ok - k8s/$kustomization renders and validates strictly against Kubernetes ${versions// /, }"
done

# The kind cluster's own configuration (the gateway's port mapping), for the same checks.
to_json k8s/kind/cluster.yaml "$out/kind-cluster.json"

images=$(make -s --no-print-directory image-list)
# The broker's permissions are checked on a real nats-server (from PyPI, like the linters).
export BOOKMESH_NATS_SERVER=$PWD/$tools/k8s/bin/nats-server
BOOKMESH_K8S_RENDERED=$out BOOKMESH_IMAGES="$images" \
  "$cargo" test -p bookmesh-mesh-tests --test k8s_manifests -- --ignored --test-threads=1
# The entrypoint test made databases and streams of its own on the local servers.
scripts/drop-test-databases.sh
"$cargo" run --quiet -p bookmesh-mesh-tests --bin drop-test-streams

# Self-test: each check must fail on a manifest that breaks what it guards. Each mutation is
# applied to a copy of k8s/, rendered like the real one, and must make its test fail.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# expect_failure WHAT TEST FILE SED-EXPRESSION [FILE SED-EXPRESSION...]; TEST is module::name
expect_failure() {
  local what=$1 test=$2
  shift 2
  rm -rf "$work/k8s" "$work/out"
  cp -r k8s "$work/k8s"
  mkdir -p "$work/out"
  cp "$out/production.json" "$out/hpa-demo.json" "$work/out/"
  while (($#)); do
    local file=$1 expression=$2
    shift 2
    sed -i "$expression" "$work/k8s/$file"
    if cmp -s "k8s/$file" "$work/k8s/$file"; then
      echo "self-test broken: '$expression' changed nothing in k8s/$file" >&2
      exit 1
    fi
  done
  "$kubectl" kustomize "$work/k8s/overlays/kind" >"$work/out/kind.yaml"
  to_json "$work/out/kind.yaml" "$work/out/kind.json"
  to_json "$work/k8s/kind/cluster.yaml" "$work/out/kind-cluster.json"
  if BOOKMESH_K8S_RENDERED=$work/out BOOKMESH_IMAGES="$images" "$cargo" test --quiet \
    -p bookmesh-mesh-tests --test k8s_manifests -- --ignored --exact "$test" >"$work/log" 2>&1; then
    echo "self-test failed: $test passed although $what" >&2
    exit 1
  fi
  if ! grep -q "panicked at tests/k8s_manifests/" "$work/log"; then
    echo "self-test failed: $test did not fail on an assertion when $what:" >&2
    cat "$work/log" >&2
    exit 1
  fi
  echo "ok - $test fails when $what"
}
expect_failure "rental may reach member's database" network_policies::network_policies_admit_exactly_the_real_callers \
  base/member/database.yaml '0,/app.kubernetes.io\/name: member$/s//app.kubernetes.io\/name: member\n        - podSelector:\n            matchLabels:\n              app.kubernetes.io\/name: rental/' \
  base/rental/network-policy.yaml 's/app.kubernetes.io\/name: rental-db$/app.kubernetes.io\/component: database/'
expect_failure "rental's database admits any pod of any namespace" network_policies::network_policies_admit_exactly_the_real_callers \
  base/rental/database.yaml 's/^  ingress:$/  ingress:\n    - {}/'
expect_failure "book cannot reach NATS" network_policies::network_policies_admit_exactly_the_real_callers \
  base/book/network-policy.yaml 's/port: 4222/port: 4223/'
expect_failure "book listens on a port its Service does not target" \
  services_and_ports::services_select_pods_and_every_port_is_one_the_binary_listens_on \
  base/book/config.env 's/BOOKMESH_LISTEN=0.0.0.0:50051/BOOKMESH_LISTEN=0.0.0.0:50059/'
expect_failure "rental sets a variable its binary does not read" \
  configuration::every_environment_variable_is_one_the_binary_reads \
  base/rental/config.env 's/^BOOKMESH_LOG_FORMAT=json$/BOOKMESH_LOG_FORMT=json/'
expect_failure "an HPA targets a Deployment that does not exist" \
  autoscaling::every_service_scales_on_cpu_between_two_and_more_replicas \
  base/bestbook/hpa.yaml '0,/    name: bestbook$/s//    name: best-book/'
expect_failure "the readiness probe asks whether the process lives, not whether it is ready" \
  probes_and_draining::probes_use_the_admin_health_endpoints_and_the_drain_fits_the_grace_period \
  base/member/deployment.yaml '/readinessProbe:/,/path:/s#path: /readyz#path: /healthz#'
expect_failure "book may publish on rental's subject" \
  nats_permissions::each_service_nats_user_does_its_part_of_the_event_flow_and_nothing_more \
  base/nats/nats.conf 's/          "bookmesh.book.events",/          "bookmesh.book.events",\n          "bookmesh.rental.events",/'
# shellcheck disable=SC2016 # the $ is sed's, literal
expect_failure "bestbook may pull from book's consumer" \
  nats_permissions::each_service_nats_user_does_its_part_of_the_event_flow_and_nothing_more \
  base/nats/nats.conf 's/"\$JS.API.CONSUMER.MSG.NEXT.BOOKMESH_RENTAL.bestbook"/"$JS.API.CONSUMER.MSG.NEXT.BOOKMESH_RENTAL.*"/'
expect_failure "rental's certificate names member" \
  identities::every_workload_mounts_the_certificate_of_its_own_identity \
  base/pki/identities.yaml 's#spiffe://bookmesh.local/ns/bookmesh/sa/rental#spiffe://bookmesh.local/ns/bookmesh/sa/member#'
expect_failure "the network keeps out loadgen, whom the policy lets rent" \
  identities::the_workloads_the_policy_lets_call_are_the_ones_the_network_lets_through \
  base/rental/network-policy.yaml '0,/app.kubernetes.io\/name: loadgen$/s//app.kubernetes.io\/name: nobody/'
expect_failure "a container may escalate privileges" pod_security::every_pod_meets_the_restricted_pod_security_standard \
  base/nats/nats.yaml 's/allowPrivilegeEscalation: false/allowPrivilegeEscalation: true/'
expect_failure "the gateway cannot reach book's admin port" \
  network_policies::the_gateway_reaches_every_service_and_only_it_reaches_their_admin_ports \
  base/gateway/network-policy.yaml '0,/port: 9090$/s//port: 9091/'
expect_failure "book may reach rental's admin port" \
  network_policies::the_gateway_reaches_every_service_and_only_it_reaches_their_admin_ports \
  base/book/network-policy.yaml 's/^  egress:$/  egress:\n    - to:\n        - podSelector:\n            matchLabels:\n              app.kubernetes.io\/name: rental\n      ports:\n        - protocol: TCP\n          port: 9090/' \
  base/rental/network-policy.yaml 's/^              app.kubernetes.io\/name: gateway$/              app.kubernetes.io\/name: gateway\n        - podSelector:\n            matchLabels:\n              app.kubernetes.io\/name: book/'
expect_failure "the gateway turns the development sign-in on" \
  configuration::the_gateway_has_no_development_sign_in_and_names_every_service_by_its_headless_service \
  base/gateway/config.env 's/^BOOKMESH_LOG_FORMAT=json$/BOOKMESH_LOG_FORMAT=json\nBOOKMESH_DEV_SIGN_IN=true/'
expect_failure "the gateway reads the admin ports through the regular Service (one replica)" \
  configuration::the_gateway_has_no_development_sign_in_and_names_every_service_by_its_headless_service \
  base/gateway/config.env 's/member=member-headless.bookmesh/member=member.bookmesh/'
expect_failure "the network keeps out the gateway, through which users read the best-sellers" \
  identities::the_workloads_the_policy_lets_call_are_the_ones_the_network_lets_through \
  base/bestbook/network-policy.yaml 's/app.kubernetes.io\/name: gateway$/app.kubernetes.io\/name: nobody/'
expect_failure "the network keeps out the gateway, through which members read their notices" \
  identities::the_workloads_the_policy_lets_call_are_the_ones_the_network_lets_through \
  base/notification/network-policy.yaml 's/app.kubernetes.io\/name: gateway$/app.kubernetes.io\/name: nobody/'
expect_failure "the notification service's Redis admits any pod of any namespace" \
  network_policies::network_policies_admit_exactly_the_real_callers \
  base/notification/redis.yaml 's/^  ingress:$/  ingress:\n    - {}/'
expect_failure "the notification service's Redis user may touch every key" \
  databases::every_service_connects_as_its_own_role_not_the_superuser \
  base/notification/redis.yaml 's/"~bookmesh:notification:\*"/"~*"/'
# shellcheck disable=SC2016 # the $ is sed's, literal
expect_failure "notification may pull from bestbook's consumer" \
  nats_permissions::each_service_nats_user_does_its_part_of_the_event_flow_and_nothing_more \
  base/nats/nats.conf 's/"\$JS.API.CONSUMER.MSG.NEXT.BOOKMESH_RENTAL.notification"/"$JS.API.CONSUMER.MSG.NEXT.BOOKMESH_RENTAL.*"/'
