// Kube mode dual-stack (issue 24), against the kube-apiserver stand-in as the
// other kube tests: the node's podCIDRs (one per family) become the lease's
// two subnets, the IPv6 annotations (public-ipv6, backend-v6-data and the
// overwrite / node-public-ipv6 forms) are published as flanneld's, subnet.env
// gets the IPv6 keys, and peers' IPv6 halves are read into leases, the ones
// that make no sense left out and counted.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseIPv4 } from '../../src/control/ipv4-address.js';
import { formatCidr6, formatIPv6, parseIPv6 } from '../../src/control/ipv6-address.js';
import { KubeSetupError, KubeSubnetManager, type KubeSubnetManagerOptions } from '../../src/control/kube-subnet-manager.js';
import type { Lease } from '../../src/control/lease.js';
import { KubeApiServerStandIn, type RequestRecord } from '../support/kube-apiserver-standin.js';
import { KubeAdminClient, MANIFEST, kubeletNode, makeKubePki, makeTokens, type KubePki, writeKubeconfig } from '../support/kube-standin-kit.js';

const P = 'flannel.alpha.coreos.com';
const DUAL = { Network: '10.244.0.0/16', EnableIPv6: true, IPv6Network: 'fd00:10:244::/56', Backend: { Type: 'udp' } };
let dir: string;
let pki: KubePki;
const tokens = makeTokens();
let api: KubeApiServerStandIn;
let admin: KubeAdminClient;
let agentKubeconfig: string;
const requests: RequestRecord[] = [];
let started: KubeSubnetManager[] = [];

async function until(what: string, fn: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!fn()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function netConf(json: object): string {
  const path = join(dir, `net-conf-${Math.random().toString(36).slice(2)}.json`);
  writeFileSync(path, JSON.stringify(json));
  return path;
}

function manager(over: Partial<KubeSubnetManagerOptions> & { lines?: string[] } = {}): KubeSubnetManager {
  const lines = over.lines ?? [];
  const m = new KubeSubnetManager({
    kubeconfigFile: agentKubeconfig,
    annotationPrefix: P,
    netConfigPath: netConf(DUAL),
    subnetFile: join(dir, `subnet-${Math.random().toString(36).slice(2)}.env`),
    ipMasq: true,
    publicIp: parseIPv4('192.0.2.1'),
    vtepMacFor: () => '0a:00:00:00:00:01',
    env: { NODE_NAME: 'd1' },
    log: (l) => lines.push(l),
    underlayMtu: 1500,
    ...over,
  });
  started.push(m);
  return m;
}

/** A node as kubelet and kube-controller-manager leave it on a dual-stack cluster. */
function dualNode(name: string, ip: string, podCIDRs: string[]): Record<string, unknown> {
  return { ...kubeletNode(name, ip), spec: { podCIDR: podCIDRs[0], podCIDRs } };
}

const flannelAnnotations = async (name: string) => {
  const node = (await admin.getNode(name)) as { metadata: { annotations: Record<string, string> } };
  return Object.fromEntries(Object.entries(node.metadata.annotations).filter(([k]) => k.startsWith(P)));
};

const kube = suite('kube mode dual-stack against the kube-apiserver stand-in');

kube.before(async () => {
  dir = mkdtempSync(join(tmpdir(), `fut-kube-ds-${process.pid}-`));
  pki = makeKubePki(dir, ['127.0.0.1']);
  api = await KubeApiServerStandIn.start({
    host: '127.0.0.1',
    port: 0,
    tls: { cert: pki.cert, key: pki.key },
    tokens: tokens.identities,
    rbacYaml: readFileSync(MANIFEST, 'utf8'),
    onRequest: (r) => requests.push(r),
  });
  admin = new KubeAdminClient({ url: api.url, ca: pki.ca }, tokens.admin);
  agentKubeconfig = join(dir, 'agent.kubeconfig');
  writeKubeconfig(agentKubeconfig, api.url, pki.caFile, tokens.agent);
});

kube.after.each(async () => {
  for (const m of started) await m.stop();
  started = [];
});

kube.after(async () => {
  await api?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

kube('the stand-in keeps the API server\'s podCIDRs rules: two at most, one per family, the first being podCIDR', async () => {
  const r1 = await admin.request('POST', '/api/v1/nodes', dualNode('bad1', '192.0.2.90', ['10.244.90.0/24', '10.244.91.0/24']));
  assert.is(r1.status, 422);
  assert.match(JSON.stringify(r1.body), /no more than one CIDR for each IP family/);
  const r2 = await admin.request('POST', '/api/v1/nodes', { ...kubeletNode('bad2', '192.0.2.91'), spec: { podCIDR: 'fd00:10:244:5b::/64', podCIDRs: ['10.244.91.0/24', 'fd00:10:244:5b::/64'] } });
  assert.is(r2.status, 422);
  assert.match(JSON.stringify(r2.body), /must match spec\.podCIDR/);
});

kube('start: both podCIDRs become the lease, public-ipv6 is published beside public-ip, subnet.env has the IPv6 keys', async () => {
  await admin.createNode(dualNode('d1', '192.0.2.1', ['10.244.1.0/24', 'fd00:10:244:1::/64']));
  const lines: string[] = [];
  const m = manager({ lines, publicIpv6: parseIPv6('2001:db8::1') });
  const joined = await m.start();
  assert.is(formatCidr6(joined.ipv6Subnet!), 'fd00:10:244:1::/64');
  assert.is(formatIPv6(joined.publicIpv6!), '2001:db8::1');
  assert.equal(await flannelAnnotations('d1'), {
    [`${P}/backend-type`]: 'udp',
    [`${P}/backend-data`]: 'null',
    [`${P}/public-ip`]: '192.0.2.1',
    [`${P}/public-ipv6`]: '2001:db8::1',
    [`${P}/kube-subnet-manager`]: 'true',
  });
  assert.is(
    readFileSync(m['opts'].subnetFile, 'utf8'),
    'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:1::1/64\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n',
  );
  assert.ok(lines.some((l) => /IPv6Network fd00:10:244::\/56/.test(l)), lines.join('\n'));
  // A restart with the same addresses patches nothing.
  await m.stop();
  const before = requests.length;
  const again = manager({ publicIpv6: parseIPv6('2001:db8::1') });
  await again.start();
  assert.not.ok(requests.slice(before).some((r) => r.verb === 'patch'), 'no patch when nothing differs');
});

kube('vxlan publishes backend-v6-data; node-public-ipv6 chooses the IPv6 address, public-ipv6-overwrite is what peers are told', async () => {
  await admin.createNode(dualNode('d2', '192.0.2.2', ['10.244.2.0/24', 'fd00:10:244:2::/64']));
  await admin.patchNode('d2', { metadata: { annotations: { [`${P}/node-public-ipv6`]: '2001:db8::22', [`${P}/public-ipv6-overwrite`]: '2001:db8:ffff::2' } } });
  const m = manager({
    env: { NODE_NAME: 'd2' },
    netConfigPath: netConf({ ...DUAL, Backend: { Type: 'vxlan', VNI: 4 } }),
    publicIp: parseIPv4('192.0.2.2'),
    publicIpv6: parseIPv6('2001:db8::2'),
    vtepMacFor: () => '0a:00:00:00:00:02',
    vtepMacV6For: () => '0a:00:00:00:06:02',
  });
  const joined = await m.start();
  assert.is(formatIPv6(joined.publicIpv6!), '2001:db8::22', 'bind to node-public-ipv6');
  const a = await flannelAnnotations('d2');
  assert.is(a[`${P}/backend-data`], '{"VNI":4,"VtepMAC":"0a:00:00:00:00:02"}');
  assert.is(a[`${P}/backend-v6-data`], '{"VNI":4,"VtepMAC":"0a:00:00:00:06:02"}');
  assert.is(a[`${P}/public-ipv6`], '2001:db8:ffff::2');
});

kube('a dual-stack config on a node with an IPv4 podCIDR only: a warning, IPv4 only; an IPv6-only config publishes the IPv6 half and writes subnet.env without the IPv4 keys', async () => {
  await admin.createNode(kubeletNode('d3', '192.0.2.3', '10.244.3.0/24'));
  const lines: string[] = [];
  const m = manager({ lines, env: { NODE_NAME: 'd3' }, publicIp: parseIPv4('192.0.2.3'), publicIpv6: parseIPv6('2001:db8::3') });
  const joined = await m.start();
  assert.is(joined.ipv6Subnet, undefined);
  assert.ok(lines.some((l) => /^warning: node "d3" has no IPv6 pod CIDR .*its pods get IPv4 only/.test(l)), lines.join('\n'));
  assert.not.ok(`${P}/public-ipv6` in (await flannelAnnotations('d3')), 'no IPv6 half to announce');
  assert.is(readFileSync(m['opts'].subnetFile, 'utf8'), 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n');

  await admin.createNode({ ...kubeletNode('d4', '192.0.2.4'), spec: { podCIDR: 'fd00:10:244:4::/64', podCIDRs: ['fd00:10:244:4::/64'] } });
  const only6 = manager({ env: { NODE_NAME: 'd4' }, netConfigPath: netConf({ EnableIPv4: false, EnableIPv6: true, IPv6Network: 'fd00:10:244::/56' }), publicIpv6: parseIPv6('2001:db8::4') });
  const joined6 = await only6.start();
  assert.is(formatCidr6(joined6.ipv6Subnet!), 'fd00:10:244:4::/64');
  assert.is(joined6.subnetConfig.ipv6Only, true);
  assert.is(readFileSync(only6['opts'].subnetFile, 'utf8'), 'FLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:4::1/64\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n');
  const a4 = await flannelAnnotations('d4');
  assert.is(a4[`${P}/public-ipv6`], '2001:db8::4');
  assert.is(a4[`${P}/kube-subnet-manager`], 'true');
  await admin.ok('DELETE', '/api/v1/nodes/d4'); // the next test counts the flannel nodes
});

kube('peers: IPv6 halves read into leases (IPv6-only peers too); an IPv6 podCIDR outside IPv6Network or on this node\'s is reported once and left out', async () => {
  const peer = (name: string, ip: string, podCIDRs: string[], extra: Record<string, string> = {}) => ({
    ...dualNode(name, ip, podCIDRs),
    metadata: { name, annotations: { [`${P}/backend-type`]: 'udp', [`${P}/backend-data`]: 'null', [`${P}/public-ip`]: ip, [`${P}/kube-subnet-manager`]: 'true', ...extra } },
  });
  await admin.createNode(dualNode('d10', '192.0.2.10', ['10.244.10.0/24', 'fd00:10:244:10::/64']));
  await admin.createNode(peer('d11', '192.0.2.11', ['10.244.11.0/24', 'fd00:10:244:11::/64'], { [`${P}/public-ipv6`]: '2001:db8::11' }));
  const m = manager({ env: { NODE_NAME: 'd10' }, publicIp: parseIPv4('192.0.2.10') });
  await m.start();
  const source = m.leaseSource();
  const snapshots: Lease[][] = [];
  const errors: string[] = [];
  await source.start({ onLeases: (l) => snapshots.push(l), onError: (e) => errors.push(e.message) });
  const latest = () => snapshots[snapshots.length - 1];
  // d1..d4 of the tests above are peers too; this test looks at its own.
  const keys = () => latest().map((l) => l.key).filter((k) => /^(10\.244\.1\d\.|0\.0\.0\.0-0)/.test(k)).sort();
  assert.equal(keys(), ['10.244.11.0-24&fd00:10:244:11::-64']);
  const d11 = latest().find((l) => l.key.startsWith('10.244.11.0'))!;
  assert.is(formatIPv6(d11.publicIpv6!), '2001:db8::11');
  // An IPv6-only peer.
  await admin.createNode({
    ...kubeletNode('d12', '192.0.2.12'),
    spec: { podCIDR: 'fd00:10:244:12::/64', podCIDRs: ['fd00:10:244:12::/64'] },
    metadata: { name: 'd12', annotations: { [`${P}/backend-type`]: 'udp', [`${P}/backend-data`]: 'null', [`${P}/public-ipv6`]: '2001:db8::12', [`${P}/kube-subnet-manager`]: 'true' } },
  });
  await until('IPv6-only peer', () => keys().includes('0.0.0.0-0&fd00:10:244:12::-64'));
  assert.is(latest().find((l) => l.key.startsWith('0.0.0.0-0'))!.ipv6Only, true);
  // Peers whose IPv6 half makes no sense.
  await admin.createNode(peer('d13', '192.0.2.13', ['10.244.13.0/24', 'fd00:99::/64']));
  await admin.createNode(peer('d14', '192.0.2.14', ['10.244.14.0/24', 'fd00:10:244:10::/64']));
  await until('both reported', () => errors.some((e) => /d13/.test(e)) && errors.some((e) => /d14/.test(e)));
  assert.ok(errors.some((e) => /node "d13" \(lease 10\.244\.13\.0-24&fd00:99::-64\): IPv6 subnet fd00:99::\/64 is not inside the IPv6 pod network fd00:10:244::\/56; its lease is ignored \(ipv6-subnet-outside-network\)/.test(e)), errors.join('\n'));
  assert.ok(errors.some((e) => /node "d14" claims this node's subnet 10\.244\.14\.0-24&fd00:10:244:10::-64/.test(e)), errors.join('\n'));
  assert.not.ok(latest().some((l) => l.key.startsWith('10.244.13.') || l.key.startsWith('10.244.14.')));
  assert.equal(Object.fromEntries(source.ipv6Rejections), { 'ipv6-subnet-outside-network': 1 });
  // Another change elsewhere: reported once, not again.
  const count = errors.length;
  await admin.patchNode('d11', { metadata: { annotations: { [`${P}/public-ipv6`]: '2001:db8::111' } } });
  await until('d11 moved', () => formatIPv6(latest().find((l) => l.key.startsWith('10.244.11.0'))!.publicIpv6!) === '2001:db8::111');
  assert.is(errors.length, count, errors.join('\n'));
  assert.equal(Object.fromEntries(source.ipv6Rejections), { 'ipv6-subnet-outside-network': 1 });
  source.stop();
});

kube.run();
