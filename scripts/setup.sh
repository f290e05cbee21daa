#!/usr/bin/env bash
# Prepares a fresh Debian 12 machine (as root) to build, test and demo
# flannel-udp: the network tools the namespace testbed drives, then the npm
# dependencies and the build. Safe to run again: it only installs what is missing.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# g++, make and python3: node-gyp builds raw-socket (a test-only dependency) during npm ci.
# podman buildah mmdebstrap runc: the image (npm run image) and the integration test that runs it.
# linux-perf: the ip-masq test traces the agent's forks with perf trace (and bench/profile.ts samples with it).
packages=(iproute2 iperf3 sockperf iputils-ping procps ethtool tcpdump linux-perf containernetworking-plugins iptables etcd-server etcd-client openssl g++ make python3 podman buildah mmdebstrap runc)

say() { printf 'setup: %s\n' "$*"; }

if [[ "$(id -u)" -ne 0 ]]; then
  say "must run as root (it installs packages; the testbed creates network namespaces)" >&2
  exit 1
fi

missing=()
for pkg in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q '^install ok installed$'; then
    missing+=("$pkg")
  fi
done

if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  # iperf3's postinst asks whether to start a system-wide daemon; answer no up front so it never prompts.
  say "preseeding iperf3/start_daemon=false"
  echo 'iperf3 iperf3/start_daemon boolean false' | debconf-set-selections
  say "apt-get update"
  apt-get update -q
  say "installing: ${missing[*]}"
  apt-get install -y -q --no-install-recommends "${missing[@]}"
  # etcd-server's package enables a system-wide etcd on :2379; the tests start their own, so keep it off.
  if [[ " ${missing[*]} " == *" etcd-server "* && -d /run/systemd/system ]]; then systemctl disable --now etcd >/dev/null 2>&1 || true; fi
else
  say "Debian packages present: ${packages[*]}"
fi

if ! command -v node >/dev/null || ! node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)'; then
  say "Node.js >= 20 is required (found: $(node --version 2>/dev/null || echo none))" >&2
  exit 1
fi

cd "$repo"
say "npm ci in $repo"
npm ci --no-audit --no-fund
say "npm run build"
npm run build
# The offline base image the image test builds on (Debian + Node.js 24; ~1 min once, then cached).
say "base image: $(bash scripts/image-base.sh)"
say "done"
