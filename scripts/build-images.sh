#!/usr/bin/env bash
# Builds one container image per binary (make images). IMAGES lists them as
# name:binary[:Dockerfile]: without a Dockerfile, images/Dockerfile builds the Rust binary
# (--build-arg BINARY=<binary>); with one (the notification service, Python), that file builds
# the image, from the same context (the repository's root, narrowed by <Dockerfile>.dockerignore).
#   IMAGE_REPOSITORY (bookmesh) and IMAGE_TAG (dev) name them: bookmesh/book:dev, ...
#   RELEASE_OPT_LEVEL=s builds the Rust binaries for size (less memory, slower; docs/performance.md).
#   PLATFORMS=linux/amd64,linux/arm64 builds both through buildx; IMAGE_OUTPUT says where they
#   go (--load into the local image store, the default, needs Docker's containerd image store
#   for more than one platform; --push sends them to IMAGE_REPOSITORY's registry).
# The builder stages of images/Dockerfile are shared: the workspace compiles once per platform
# for all the Rust images.
# --provenance=false: an attestation manifest in the image index makes `kind load` fail
# ("content digest ... not found", kind issues #3795 and #4236).
set -euo pipefail
cd "$(dirname "$0")/.."

repository=${IMAGE_REPOSITORY:-bookmesh}
tag=${IMAGE_TAG:-dev}
platforms=${PLATFORMS:-}
read -r -a output <<<"${IMAGE_OUTPUT:---load}"
docker=${DOCKER:-docker}
images=${IMAGES:?IMAGES (name:binary[:Dockerfile] ...) comes from the Makefile}

command -v "$docker" >/dev/null || {
  echo "error: $docker not found: building images needs Docker (or DOCKER=podman)" >&2
  exit 1
}
for image in $images; do
  name=${image%%:*}
  rest=${image#*:}
  binary=${rest%%:*}
  if [[ $rest == *:* ]]; then
    dockerfile=${rest#*:}
    build_args=()
  else
    dockerfile=images/Dockerfile
    build_args=(--build-arg "BINARY=$binary" --build-arg "RELEASE_OPT_LEVEL=${RELEASE_OPT_LEVEL:-3}")
  fi
  [[ -f $dockerfile ]] || {
    echo "error: $dockerfile (for $name) not found" >&2
    exit 1
  }
  echo "==> $repository/$name:$tag ($binary from $dockerfile${platforms:+, $platforms})"
  if [[ -n $platforms ]]; then
    "$docker" buildx build --platform "$platforms" "${output[@]}" --provenance=false \
      -f "$dockerfile" "${build_args[@]}" -t "$repository/$name:$tag" .
  else
    DOCKER_BUILDKIT=1 "$docker" build --provenance=false \
      -f "$dockerfile" "${build_args[@]}" -t "$repository/$name:$tag" .
  fi
done
