#!/usr/bin/env bash
# Builds one container image per binary from images/Dockerfile (make images).
#   IMAGE_REPOSITORY (bookmesh) and IMAGE_TAG (dev) name them: bookmesh/book:dev, ...
#   PLATFORMS=linux/amd64,linux/arm64 builds both through buildx; IMAGE_OUTPUT says where they
#   go (--load into the local image store, the default, needs Docker's containerd image store
#   for more than one platform; --push sends them to IMAGE_REPOSITORY's registry).
# The builder stages are shared: the workspace compiles once per platform for all images.
# --provenance=false: an attestation manifest in the image index makes `kind load` fail
# ("content digest ... not found", kind issues #3795 and #4236).
set -euo pipefail
cd "$(dirname "$0")/.."

repository=${IMAGE_REPOSITORY:-bookmesh}
tag=${IMAGE_TAG:-dev}
platforms=${PLATFORMS:-}
read -r -a output <<<"${IMAGE_OUTPUT:---load}"
docker=${DOCKER:-docker}
images=${IMAGES:?IMAGES (name:binary ...) comes from the Makefile}

command -v "$docker" >/dev/null || {
  echo "error: $docker not found: building images needs Docker (or DOCKER=podman)" >&2
  exit 1
}
for image in $images; do
  name=${image%%:*}
  binary=${image#*:}
  echo "==> $repository/$name:$tag ($binary${platforms:+, $platforms})"
  if [[ -n $platforms ]]; then
    "$docker" buildx build --platform "$platforms" "${output[@]}" --provenance=false \
      -f images/Dockerfile --build-arg "BINARY=$binary" -t "$repository/$name:$tag" .
  else
    DOCKER_BUILDKIT=1 "$docker" build --provenance=false \
      -f images/Dockerfile --build-arg "BINARY=$binary" -t "$repository/$name:$tag" .
  fi
done
