// An extra host on a testbed's underlay that holds no lease: a namespace
// with a veth into the underlay bridge and an address of the underlay subnet
// (192.0.2.66 by default). Named after the cluster (so a later run's sweep of
// stale testbeds removes it if this process dies) and removed by remove(),
// which every test calls in finally.
import type { Cluster } from '../../src/testbed/cluster.js';
import { run, runInNetns, spawnInNetns, stopChild, type CapturedChild, type RunOptions, type RunResult } from '../../src/testbed/exec.js';

export interface Attacker {
  ns: string;
  ip: string;
  exec(cmd: string, args: readonly string[], opts?: RunOptions): Promise<RunResult>;
  spawn(cmd: string, args: readonly string[]): CapturedChild;
  remove(): Promise<void>;
}

export async function addAttacker(cluster: Cluster, host = 66): Promise<Attacker> {
  const ns = `${cluster.id}-atk${host}`;
  const ip = `192.0.2.${host}`;
  const port = `atk${host}`;
  const children = new Set<CapturedChild>();
  let removed = false;
  const remove = async () => {
    if (removed) return;
    removed = true;
    await Promise.all([...children].map((c) => stopChild(c, 'SIGKILL', 1000).catch(() => undefined)));
    // Deleting the namespace deletes its end of the veth, and with it the bridge port.
    await run('ip', ['netns', 'del', ns], { timeoutMs: 10_000 }).catch(() => undefined);
    await run('ip', ['-n', cluster.underlayNs, 'link', 'del', port], { timeoutMs: 10_000, allowFailure: true }).catch(() => undefined);
  };
  try {
    await run('ip', ['netns', 'add', ns]);
    await run('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    await run('ip', ['-n', cluster.underlayNs, 'link', 'add', port, 'mtu', String(cluster.underlayMtu), 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
    await run('ip', ['-n', cluster.underlayNs, 'link', 'set', port, 'master', 'br0', 'up']);
    await run('ip', ['-n', ns, 'link', 'set', 'eth0', 'mtu', String(cluster.underlayMtu), 'up']);
    await run('ip', ['-n', ns, 'addr', 'add', `${ip}/24`, 'dev', 'eth0']);
  } catch (err) {
    await remove();
    throw err;
  }
  return {
    ns,
    ip,
    exec: (cmd, args, opts) => runInNetns(ns, cmd, args, opts),
    spawn: (cmd, args) => {
      const child = spawnInNetns(ns, cmd, args);
      children.add(child);
      void child.exited.then(() => children.delete(child));
      return child;
    },
    remove,
  };
}
