#!/usr/bin/env bash
# `npm run image [-- <podman build options>]`: builds the Containerfile with
# podman as localhost/flannel-udp:<package.json version> (FLANNEL_UDP_IMAGE
# names it otherwise) and prints the name. Without a --build-arg BASE=... it
# builds on the offline base scripts/image-base.sh makes (Debian + Node.js 24,
# no container registry needed); with one, on that base, e.g.
#   npm run image -- --build-arg BASE=docker.io/library/node:24-bookworm-slim
# --network host: the build runs npm ci and apt-get, and podman's default
# network for builds does not work on these machines.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$repo/image/containers.conf}"
command -v podman >/dev/null || { echo 'image: needs podman (Debian package podman; scripts/setup.sh installs it)' >&2; exit 1; }

version="$(node -p "require('$repo/package.json').version")"
name="${FLANNEL_UDP_IMAGE:-localhost/flannel-udp:$version}"
args=("$@")
if [[ " ${args[*]} " != *" --build-arg BASE="* && " ${args[*]} " != *" --build-arg=BASE="* ]]; then
  base="$(bash "$repo/scripts/image-base.sh")"
  args+=(--build-arg "BASE=$base")
fi
# A host that reaches the npm registry through a TLS-inspecting proxy trusts its
# CA through NODE_EXTRA_CA_CERTS: the npm ci steps get the same file.
if [[ -n "${NODE_EXTRA_CA_CERTS:-}" && -f "$NODE_EXTRA_CA_CERTS" ]]; then
  args+=(--volume "$NODE_EXTRA_CA_CERTS:$NODE_EXTRA_CA_CERTS:ro" --build-arg "NODE_EXTRA_CA_CERTS=$NODE_EXTRA_CA_CERTS")
fi
echo "image: podman build $name ${args[*]}" >&2
podman build --network host --file "$repo/Containerfile" --tag "$name" "${args[@]}" "$repo" >&2
echo "$name"
