#!/usr/bin/env bash
# Builds the egressd image from the repository: a static binary compiled on
# this machine, copied into a FROM-scratch image (see Dockerfile).
#   compose/build-image.sh [TAG]     default tag: egressd:local
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:-egressd:local}
CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o compose/egressd ./cmd/egressd
cp /etc/ssl/certs/ca-certificates.crt compose/ca-certificates.crt
docker build -t "$tag" compose/
