// The command-line tools the tests drive, and the Debian package of each: a
// missing tool fails its test with what to install, not with a bare
// "spawnSync … ENOENT" (or "exec of … failed" from ip netns exec).
import { execFileSync, type ExecFileSyncOptions } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';

/** Every tool a test runs by name, with the package scripts/setup.sh installs it from. */
export const TOOL_PACKAGES: Readonly<Record<string, string>> = {
  bridge: 'iproute2',
  etcd: 'etcd-server',
  etcdctl: 'etcd-client',
  ip: 'iproute2',
  iperf3: 'iperf3',
  iptables: 'iptables',
  'iptables-restore': 'iptables',
  'iptables-nft': 'iptables',
  'iptables-legacy': 'iptables',
  openssl: 'openssl',
  ping: 'iputils-ping',
  python3: 'python3',
  setpriv: 'util-linux',
  sockperf: 'sockperf',
  tcpdump: 'tcpdump',
  unshare: 'util-linux',
};

function missing(tool: string, debianPackage = TOOL_PACKAGES[tool] ?? 'unknown: add it to TOOL_PACKAGES'): Error {
  return new Error(`this test needs ${tool} (Debian package ${debianPackage}; scripts/setup.sh installs it)`);
}

/** Throws the clear message unless every tool is on PATH (for tools started with spawn or in a namespace). */
export function requireTools(...tools: string[]): void {
  const dirs = (process.env.PATH ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin').split(delimiter);
  for (const tool of tools) {
    const found = dirs.some((d) => {
      try {
        accessSync(join(d, tool), constants.X_OK);
        return true;
      } catch {
        return false;
      }
    });
    if (!found) throw missing(tool);
  }
}

export function runRequiredTool(tool: string, debianPackage: string, args: readonly string[], opts: ExecFileSyncOptions = {}): string {
  try {
    return execFileSync(tool, args, { encoding: 'utf8', ...opts }) as string;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw missing(tool, debianPackage);
    throw err;
  }
}

/** runRequiredTool with the package from TOOL_PACKAGES. */
export function runTool(tool: string, args: readonly string[], opts: ExecFileSyncOptions = {}): string {
  return runRequiredTool(tool, TOOL_PACKAGES[tool] ?? 'unknown', args, opts);
}
