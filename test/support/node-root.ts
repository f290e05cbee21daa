// A testbed node's own file system view, for what runs "on the host" of a node
// the DaemonSet was deployed to: the node's network namespace plus a private
// mount namespace in which /run, /opt and /var/lib are the node's directories
// (under its root in the temp dir), so the CNI plugin install-cni put into
// <root>/opt/cni/bin runs with the absolute paths it was written with
// (/opt/flannel-udp/..., /run/flannel/subnet.env, /var/lib/cni/...), as
// kubelet's runtime runs it on a real node. /run/netns stays the host's, so
// CNI_NETNS paths keep working. The mounts end with the process.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { PluginRunner } from '../../src/cni/chain.js';
import { run } from '../../src/testbed/exec.js';

const VIEW_SCRIPT = [
  'set -e',
  'root=$1; shift',
  'mount --rbind /run/netns "$root/run/netns"',
  'mount --rbind "$root/run" /run',
  'mount --bind "$root/opt" /opt',
  'mount --bind "$root/var/lib" /var/lib',
  'exec "$@"',
].join('\n');

export function prepareNodeRoot(root: string): void {
  for (const d of ['run/netns', 'opt', 'var/lib']) mkdirSync(join(root, d), { recursive: true });
}

/** argv that runs `cmd` in the node's network namespace and file system view. */
export function inNodeView(netnsPath: string, root: string, cmd: string, args: readonly string[] = []): string[] {
  return [`--net=${netnsPath}`, 'unshare', '--mount', '--propagation', 'private', 'sh', '-c', VIEW_SCRIPT, 'node-view', root, cmd, ...args];
}

/** The runtime's CNI plugin runner on that node: CNI_PATH as the node's (its /opt/cni/bin, then Debian's reference plugins). */
export function nodeViewRunner(netnsPath: string, root: string, cniPath: readonly string[]): PluginRunner {
  return {
    cniPath,
    // The plugin path is looked up on the host (findPlugin), so map the node's /opt back for the lookup only.
    exec: (path, env, stdin) =>
      run('nsenter', inNodeView(netnsPath, root, path.startsWith(root) ? path.slice(root.length) : path), {
        env,
        input: stdin,
        allowFailure: true,
        timeoutMs: 60_000,
      }),
  };
}
