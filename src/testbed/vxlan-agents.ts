// VXLAN mode on the testbed: start from a cluster whose nodes run the
// kernel's vxlan device exactly as flannel's vxlan backend programs it, and
// put this agent (--backend vxlan) in place of the kernel on chosen nodes,
// keeping each node's VTEP MAC so the other nodes' neighbour and fdb entries
// stay valid. With every node replaced it is a pure agent VXLAN cluster; with
// some, a mixed one. Dual-stack clusters too: the agent publishes that one MAC
// for both families, as the kernel node's flannel.1 does there.
import { readFileSync } from 'node:fs';
import { type Cluster, underlayArgs } from './cluster.js';
import { waitForLine, type CapturedChild } from './exec.js';

/** Node i's VTEP MAC as the testbed published it in the leases file (BackendData.VtepMAC). */
export function publishedVtepMac(cluster: Cluster, i: number): string {
  const leases = JSON.parse(readFileSync(cluster.leasesFile, 'utf8')) as Record<string, { BackendData?: { VtepMAC?: string } }>;
  const subnetKey = cluster.node(i).subnet.replace('/', '-');
  // A dual-stack key is the IPv4 key, '&', the IPv6 subnet (flannel's MakeSubnetKey).
  const key = Object.keys(leases).find((k) => k.split('&')[0] === subnetKey);
  const mac = key === undefined ? undefined : leases[key]?.BackendData?.VtepMAC;
  if (!mac) throw new Error(`the leases file has no VtepMAC for ${subnetKey}: is this a kernel-vxlan cluster?`);
  return mac;
}

export async function replaceKernelVxlanWithAgent(cluster: Cluster, i: number, agentArgs: string[] = [], workers = 1): Promise<CapturedChild> {
  if (cluster.dataplane !== 'kernel-vxlan') throw new Error('replaceKernelVxlanWithAgent needs a kernel-vxlan cluster');
  const node = cluster.node(i);
  const mac = publishedVtepMac(cluster, i);
  await cluster.exec(node.ns, 'ip', ['link', 'del', 'flannel.1']);
  // Over an IPv6 underlay flanneld's second device goes too: the agent carries both families.
  if (node.underlayIp6 && cluster.ipFamilies !== 'ipv4') await cluster.exec(node.ns, 'ip', ['link', 'del', 'flannel-v6.1']);
  const agent = cluster.spawn(node.ns, process.execPath, [
    cluster.agentCli, 'up', '--backend', 'vxlan', '--vtep-mac', mac,
    '--subnet-file', node.subnetFile, '--leases', cluster.leasesFile, ...underlayArgs(node),
    '--workers', String(workers), ...agentArgs,
  ]);
  await waitForLine(agent, /flannel-udp agent ready/, 15_000);
  return agent;
}
