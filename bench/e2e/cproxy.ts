// flannel's own C udp proxy (../shared/anchors/flannel-cproxy: flannel's
// proxy_amd64.c, unchanged, with a small harness; built with its build.sh,
// never copied here) as a data plane of a testbed started with dataplane
// 'none': on every node it opens flannel0 and binds the node's address, and
// the node gets flanneld's configureIface() treatment (address, MTU, route).
// The binary comes from --cproxy PATH or FLANNEL_CPROXY.
import { existsSync } from 'node:fs';
import type { Cluster } from '../../src/testbed/cluster.js';
import { waitForLine, type CapturedChild } from '../../src/testbed/exec.js';

const CLUSTER_NETWORK = '10.244.0.0/16';
const UDP_PORT = 8285;
const READY = /^flannel C proxy: /;

/** The C proxy's path from the flag or the environment, checked; undefined when neither names one. */
export function cproxyPath(flag: string | undefined): string | undefined {
  const path = flag ?? process.env.FLANNEL_CPROXY;
  if (path === undefined || path === '') return undefined;
  if (!existsSync(path)) throw new Error(`--cproxy / FLANNEL_CPROXY: ${path} does not exist (build it: bash ../shared/anchors/flannel-cproxy/build.sh ${path})`);
  return path;
}

/** Starts the C proxy on every node of a 'none' testbed; the processes end with cluster.destroy(). */
export async function startCproxies(cluster: Cluster, binary: string): Promise<CapturedChild[]> {
  const started: CapturedChild[] = [];
  for (const node of cluster.nodes()) {
    const tunIp = node.subnet.split('/')[0]!; // flanneld gives flannel0 the lease subnet's .0 address
    const peers = cluster.nodes().filter((p) => p.index !== node.index).map((p) => `${p.subnet}=${p.underlayIp}:${UDP_PORT}`);
    const child = cluster.spawn(node.ns, binary, ['flannel0', tunIp, String(cluster.podMtu), node.underlayIp, String(UDP_PORT), ...peers]);
    started.push(child);
    await waitForLine(child, READY, 10_000);
    await cluster.exec(node.ns, 'ip', ['addr', 'add', `${tunIp}/32`, 'dev', 'flannel0']);
    await cluster.exec(node.ns, 'ip', ['link', 'set', 'flannel0', 'mtu', String(cluster.podMtu), 'up']);
    await cluster.exec(node.ns, 'ip', ['route', 'add', CLUSTER_NETWORK, 'dev', 'flannel0']);
  }
  return started;
}
