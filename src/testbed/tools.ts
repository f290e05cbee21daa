// The programs the testbed and the tests run by name, each with its Debian
// package: a missing one fails with what to install ("this needs iperf3
// (Debian package iperf3; scripts/setup.sh installs it)"), never with a bare
// "spawn … ENOENT" or the opaque exit 255 of `ip netns exec` ("exec of
// "iperf3" failed: No such file or directory").
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';

/** Every program run by name, with the package scripts/setup.sh installs it from. */
export const TOOL_PACKAGES: Readonly<Record<string, string>> = {
  bash: 'bash',
  bridge: 'iproute2',
  cat: 'coreutils',
  env: 'coreutils',
  etcd: 'etcd-server',
  etcdctl: 'etcd-client',
  ethtool: 'ethtool',
  getconf: 'libc-bin',
  ip: 'iproute2',
  iperf3: 'iperf3',
  iptables: 'iptables',
  'iptables-restore': 'iptables',
  'iptables-save': 'iptables',
  ip6tables: 'iptables',
  'ip6tables-restore': 'iptables',
  'ip6tables-save': 'iptables',
  'iptables-nft': 'iptables',
  'iptables-legacy': 'iptables',
  mkdir: 'coreutils',
  mkfifo: 'coreutils',
  nsenter: 'util-linux',
  openssl: 'openssl',
  perf: 'linux-perf',
  ping: 'iputils-ping',
  podman: 'podman',
  prlimit: 'util-linux',
  python3: 'python3',
  setpriv: 'util-linux',
  sh: 'dash',
  sleep: 'coreutils',
  sockperf: 'sockperf',
  ss: 'iproute2',
  sysctl: 'procps',
  tar: 'tar',
  tcpdump: 'tcpdump',
  uname: 'coreutils',
  unshare: 'util-linux',
};

export function missingToolError(tool: string, debianPackage = TOOL_PACKAGES[tool] ?? 'unknown: add it to TOOL_PACKAGES in src/testbed/tools.ts'): Error {
  return new Error(`this needs ${tool} (Debian package ${debianPackage}; scripts/setup.sh installs it)`);
}

const found = new Set<string>();

function executable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** True when `tool` (a name looked up on PATH, or a path) can be executed; positive answers are cached per PATH. */
export function hasTool(tool: string): boolean {
  const path = process.env.PATH ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
  const key = tool.includes('/') ? tool : `${path}\0${tool}`;
  if (found.has(key)) return true;
  const ok = tool.includes('/') ? executable(tool) : path.split(delimiter).some((d) => d !== '' && executable(join(d, tool)));
  if (ok) found.add(key);
  return ok;
}

/** Throws the clear message for the first of `tools` that is not installed. */
export function requireTools(...tools: string[]): void {
  for (const tool of tools) if (!hasTool(tool)) throw missingToolError(tool);
}
