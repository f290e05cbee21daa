// Running a testbed cluster the way flanneld's etcd mode does: etcd inside
// the underlay namespace (on an address of the underlay bridge, so every node
// reaches it over its eth0), agents started with --etcd-endpoints, and each
// node's cni0 and pods re-addressed to the subnet its agent was allocated
// (the testbed pre-assigns 10.244.i.0/24, etcd chooses otherwise).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { agentCliPath, type Cluster, type PodInfo } from '../../src/testbed/cluster.js';
import { type CapturedChild, stopChild, waitForLine } from '../../src/testbed/exec.js';
import { EtcdServer } from './etcd-server.js';

export const ETCD_UNDERLAY_IP = '192.0.2.250';
export const PREFIX = '/coreos.com/network';

/** etcd on 192.0.2.250:2379 inside the cluster's underlay namespace; its data dir in the cluster's temp dir. */
export async function startUnderlayEtcd(cluster: Cluster, address = ETCD_UNDERLAY_IP): Promise<EtcdServer> {
  await cluster.exec(cluster.underlayNs, 'ip', ['addr', 'add', `${address}/24`, 'dev', 'br0']);
  return EtcdServer.start({ netns: cluster.underlayNs, host: address, dir: cluster.tempDir });
}

/** etcdctl (Debian's etcd-client, API v3) run inside the underlay namespace. */
export async function etcdctl(cluster: Cluster, etcd: EtcdServer, args: string[]): Promise<string> {
  const { stdout } = await cluster.exec(cluster.underlayNs, 'etcdctl', ['--endpoints', etcd.url, ...args], {
    env: { ...process.env, ETCDCTL_API: '3' },
    timeoutMs: 20_000,
  });
  return stdout;
}

/** Every lease under <prefix>/subnets/, as subnet key → lease attributes. */
export async function storedLeases(cluster: Cluster, etcd: EtcdServer): Promise<Record<string, { PublicIP: string; BackendType: string }>> {
  const out = await etcdctl(cluster, etcd, ['get', '--prefix', `${PREFIX}/subnets/`]);
  const lines = out.split('\n').filter((l) => l !== '');
  const leases: Record<string, { PublicIP: string; BackendType: string }> = {};
  for (let i = 0; i + 1 < lines.length; i += 2) leases[lines[i].slice(`${PREFIX}/subnets/`.length)] = JSON.parse(lines[i + 1]);
  return leases;
}

/** Starts `flannel-udp up --etcd-endpoints …` on node i and waits until it is ready. */
export async function startEtcdAgent(cluster: Cluster, i: number, etcd: EtcdServer, extraArgs: string[] = []): Promise<CapturedChild> {
  const node = cluster.node(i);
  const args = [
    agentCliPath, 'up',
    '--etcd-endpoints', etcd.url,
    '--subnet-file', node.subnetFile,
    '--public-ip', node.underlayIp,
    '--workers', '1',
    ...extraArgs,
  ];
  const child = cluster.spawn(node.ns, process.execPath, args, { logFile: join(cluster.tempDir, `agent-etcd-n${i}.log`) });
  try {
    await waitForLine(child, /flannel-udp agent ready/, 30_000);
  } catch (err) {
    await stopChild(child, 'SIGKILL');
    throw new Error(`etcd agent on node ${i} did not become ready: ${(err as Error).message}`);
  }
  return child;
}

export interface SubnetEnv {
  FLANNEL_NETWORK: string;
  FLANNEL_SUBNET: string;
  FLANNEL_MTU: string;
  FLANNEL_IPMASQ: string;
  text: string;
}

export function readSubnetEnv(path: string): SubnetEnv {
  const text = readFileSync(path, 'utf8');
  const env = Object.fromEntries(text.trim().split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
  return { ...(env as Omit<SubnetEnv, 'text'>), text };
}

/**
 * Moves node i's cni0 (gateway = FLANNEL_SUBNET's address) and its first pod
 * (.2 of the subnet) to the subnet the agent wrote to subnet.env, as the CNI
 * plugin would have. Returns the pod with its new address.
 */
export async function adoptSubnet(cluster: Cluster, i: number): Promise<PodInfo> {
  const node = cluster.node(i);
  const pod = cluster.pod(i);
  const { FLANNEL_SUBNET } = readSubnetEnv(node.subnetFile); // e.g. 10.244.13.1/24
  const [gateway, length] = FLANNEL_SUBNET.split('/');
  const octets = gateway.split('.').map(Number);
  const podIp = [...octets.slice(0, 3), octets[3] + 1].join('.');
  await cluster.exec(node.ns, 'ip', ['addr', 'flush', 'dev', 'cni0']);
  await cluster.exec(node.ns, 'ip', ['addr', 'add', `${gateway}/${length}`, 'dev', 'cni0']);
  await cluster.exec(pod.ns, 'ip', ['addr', 'flush', 'dev', 'eth0']);
  await cluster.exec(pod.ns, 'ip', ['addr', 'add', `${podIp}/${length}`, 'dev', 'eth0']);
  await cluster.exec(pod.ns, 'ip', ['route', 'replace', 'default', 'via', gateway]);
  return { ...pod, ip: podIp };
}

/** The timestamp the agent's logger put in front of the first line matching pattern (ms since the epoch). */
export function logTime(child: CapturedChild, pattern: RegExp): number | undefined {
  const line = child.log.snapshot().find((l) => pattern.test(l));
  if (line === undefined) return undefined;
  const t = Date.parse(line.slice(0, line.indexOf(' ')));
  return Number.isNaN(t) ? undefined : t;
}
