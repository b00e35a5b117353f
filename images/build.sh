#!/bin/sh
# Build the demo-http images locally from Debian's busybox-static (no download).
#   images/build.sh [REPOSITORY]      default repository: dockerops/demo-http
# Tags: 1.0 and 1.1 (good), broken (never healthy), crashloop (exits 1 at once).
# With PUSH=1 the tags are also pushed (REPOSITORY must name a registry then).
set -e
here=$(cd "$(dirname "$0")" && pwd)
repo=${1:-dockerops/demo-http}
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$here/demo-http/Dockerfile" "$here/demo-http/serve" "$ctx/"
cp /bin/busybox "$ctx/busybox"
build() {  # tag version variant
    DOCKER_BUILDKIT=0 docker build -q -t "$repo:$1" --build-arg "VERSION=$2" \
        --build-arg "VARIANT=$3" "$ctx" >/dev/null 2>"$ctx/err" || { cat "$ctx/err" >&2; exit 1; }
    if [ "${PUSH:-0}" = 1 ]; then docker push -q "$repo:$1" >/dev/null; fi
    echo "$repo:$1"
}
build 1.0 1.0 good
build 1.1 1.1 good
build broken 1.2 broken
build crashloop 1.3 crashloop
