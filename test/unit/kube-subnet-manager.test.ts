// Kube mode's control plane (our own client, kube-client.ts, no test
// hooks) against the kube-apiserver stand-in on loopback, over TLS with an
// openssl CA and bearer tokens, with the RBAC of deploy/kube-flannel-udp.yml
// enforced. No root needed.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import https from 'node:https';
import { parseIPv4 } from '../../src/control/ipv4-address.js';
import { KubeSubnetManager, type KubeSubnetManagerOptions } from '../../src/control/kube-subnet-manager.js';
import { KubeClient } from '../../src/control/kube-client.js';
import { NodeWatch } from '../../src/control/kube-node-watch.js';
import { KubeLeaseSource } from '../../src/control/kube-lease-source.js';
import { annotationNames } from '../../src/control/kube-annotations.js';
import type { Lease } from '../../src/control/lease.js';
import { KubeApiServerStandIn, type RequestRecord, allows, rulesFromManifest, serviceAccount } from '../support/kube-apiserver-standin.js';
import { AGENT_SA, KubeAdminClient, MANIFEST, kubeletNode, makeKubePki, makeTokens, type KubePki, writeKubeconfig } from '../support/kube-standin-kit.js';

const P = 'flannel.alpha.coreos.com';
let dir: string;
let pki: KubePki;
const tokens = makeTokens();
let api: KubeApiServerStandIn;
let admin: KubeAdminClient;
let agentKubeconfig: string;
let nobodyKubeconfig: string;
const requests: RequestRecord[] = [];
let onRequest: ((r: RequestRecord) => void) | undefined;
let started: KubeSubnetManager[] = [];

/** Polls a condition (the stand-in and the client run in this process: a few ms per round). */
async function until(what: string, fn: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await fn())) {
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
    netConfigPath: netConf({ Network: '10.244.0.0/16', Backend: { Type: 'udp' } }),
    subnetFile: join(dir, `subnet-${Math.random().toString(36).slice(2)}.env`),
    ipMasq: true,
    publicIp: parseIPv4('192.0.2.1'),
    vtepMacFor: () => '0a:00:00:00:00:01',
    env: { NODE_NAME: 'n1' },
    log: (l) => lines.push(l),
    underlayMtu: 1500,
    ...over,
  });
  started.push(m);
  return m;
}

const kube = suite('kube mode against the kube-apiserver stand-in');

kube.before(async () => {
  dir = mkdtempSync(join(tmpdir(), `fut-kube-${process.pid}-`));
  pki = makeKubePki(dir, ['127.0.0.1']);
  api = await KubeApiServerStandIn.start({
    host: '127.0.0.1',
    port: 0,
    tls: { cert: pki.cert, key: pki.key },
    tokens: tokens.identities,
    rbacYaml: readFileSync(MANIFEST, 'utf8'),
    onRequest: (r) => {
      requests.push(r);
      onRequest?.(r);
    },
  });
  admin = new KubeAdminClient({ url: api.url, ca: pki.ca }, tokens.admin);
  agentKubeconfig = join(dir, 'agent.kubeconfig');
  writeKubeconfig(agentKubeconfig, api.url, pki.caFile, tokens.agent);
  nobodyKubeconfig = join(dir, 'nobody.kubeconfig');
  writeKubeconfig(nobodyKubeconfig, api.url, pki.caFile, tokens.nobody);
  await admin.createNode(kubeletNode('n1', '192.0.2.1', '10.244.1.0/24'));
  await admin.createNode(kubeletNode('n2', '192.0.2.2', '10.244.2.0/24'));
});

kube.after.each(async () => {
  onRequest = undefined;
  for (const m of started) await m.stop();
  started = [];
});

kube.after(async () => {
  await api?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

kube('the stand-in is strict: 401 without a token, 403 outside the RBAC, 404, 405, 415, 400, 409, 422', async () => {
  const anon = new KubeAdminClient({ url: api.url, ca: pki.ca }, 'not-a-token');
  assert.is((await anon.request('GET', '/api/v1/nodes')).status, 401);
  const nobody = new KubeAdminClient({ url: api.url, ca: pki.ca }, tokens.nobody);
  const denied = await nobody.request('GET', '/api/v1/nodes');
  assert.is(denied.status, 403);
  assert.is(denied.body.kind, 'Status');
  assert.match(denied.body.message, /User "system:serviceaccount:default:default" cannot list resource "nodes"/);
  const agent = new KubeAdminClient({ url: api.url, ca: pki.ca }, tokens.agent);
  assert.is((await agent.request('GET', '/api/v1/nodes')).status, 200, 'the role allows list');
  assert.is((await agent.request('DELETE', '/api/v1/nodes/n2')).status, 403, 'but not delete');
  assert.is((await agent.request('PATCH', '/api/v1/nodes/n2', { spec: {} }, 'application/merge-patch+json')).status, 403, 'nor patching the node itself');
  assert.is((await agent.request('GET', '/api/v1/namespaces/kube-system/secrets/x')).status, 404);
  assert.is((await admin.request('GET', '/api/v1/services')).status, 404);
  assert.is((await admin.request('GET', '/apis/apps/v1/daemonsets')).status, 404);
  assert.is((await admin.request('PUT', '/api/v1/nodes/n2', {})).status, 405);
  assert.is((await admin.request('GET', '/api/v1/nodes?labelSelector=a%3Db')).status, 400, 'selectors are refused, not ignored');
  assert.is((await admin.request('GET', '/api/v1/nodes?watch=true&timeoutSeconds=5m')).status, 400, 'a watch parameter that does not parse');
  assert.is((await admin.request('GET', '/api/v1/nodes?watch=true&allowWatchBookmarks=yes')).status, 400, 'a watch parameter that does not parse');
  const protobuf = await new Promise<number>((resolve, reject) =>
    https
      .get(new URL('/api/v1/nodes', api.url), { ca: pki.ca, headers: { Authorization: `Bearer ${tokens.admin}`, Accept: 'application/vnd.kubernetes.protobuf' }, agent: false }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      })
      .on('error', reject),
  );
  assert.is(protobuf, 406, 'an Accept without JSON');
  assert.is((await admin.request('PATCH', '/api/v1/nodes/n2/status', { metadata: {} }, 'application/json')).status, 415);
  assert.is((await admin.request('PATCH', '/api/v1/nodes/n2/status', { metadata: {} }, 'application/json-patch+json')).status, 415);
  assert.is((await admin.request('PATCH', '/api/v1/nodes/n2/status', '{"metadata": ', 'application/strategic-merge-patch+json')).status, 400);
  const stale = await admin.request('PATCH', '/api/v1/nodes/n2/status', { metadata: { resourceVersion: '1', annotations: { a: 'b' } } }, 'application/strategic-merge-patch+json');
  assert.is(stale.status, 409);
  assert.is(stale.body.reason, 'Conflict');
  assert.is((await admin.request('PATCH', '/api/v1/nodes/n2', { spec: { podCIDR: '10.244.99.0/24' } }, 'application/merge-patch+json')).status, 422, 'podCIDR may not change');
  assert.is((await admin.request('PATCH', '/api/v1/nodes/n2/status', { metadata: { annotations: { a: 1 } } }, 'application/strategic-merge-patch+json')).status, 400, 'annotation values are strings');
  assert.is((await admin.request('GET', '/api/v1/nodes/nope')).status, 404);
  assert.is((await admin.request('PATCH', '/api/v1/nodes/n2', { metadata: { name: 'other' } }, 'application/merge-patch+json')).status, 400, 'a patch may not rename');
  // TLS: a client trusting another CA does not get through.
  const err = await new KubeAdminClient({ url: api.url, ca: readFileSync(pki.otherCaFile, 'utf8') }, tokens.admin).request('GET', '/api/v1/nodes').then(
    () => undefined,
    (e: Error) => e,
  );
  assert.ok(err, 'TLS verification must fail');
  assert.match(String((err as NodeJS.ErrnoException).code ?? err.message), /SELF_SIGNED|UNABLE|CERT|verify/i);
});

kube('start: the lease published as flanneld annotations, subnet.env written, NetworkUnavailable=False (FlannelIsUp)', async () => {
  const lines: string[] = [];
  const m = manager({ lines });
  const joined = await m.start();
  assert.is(joined.nodeName, 'n1');
  assert.is(joined.subnetConfig.mtu, 1472);
  const node = (await admin.getNode('n1')) as any;
  const flannel = Object.fromEntries(Object.entries(node.metadata.annotations).filter(([k]) => k.startsWith(P)));
  assert.equal(flannel, {
    [`${P}/backend-type`]: 'udp',
    [`${P}/backend-data`]: 'null',
    [`${P}/public-ip`]: '192.0.2.1',
    [`${P}/kube-subnet-manager`]: 'true',
  });
  assert.is(node.metadata.annotations['node.alpha.kubernetes.io/ttl'], '0', "kubelet's annotation is kept");
  assert.is(readFileSync(m['opts'].subnetFile, 'utf8'), 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n');
  await m.completeLease();
  const after = (await admin.getNode('n1')) as any;
  const cond = after.status.conditions.find((c: any) => c.type === 'NetworkUnavailable');
  assert.is(cond.status, 'False');
  assert.is(cond.reason, 'FlannelIsUp');
  assert.is(cond.message, 'Flannel is running on this node');
  assert.match(cond.lastTransitionTime, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
  assert.equal(after.status.addresses, node.status.addresses, 'the rest of the status is untouched');
  assert.equal(after.spec, node.spec);
  assert.ok(lines.some((l) => /condition NetworkUnavailable=False \(FlannelIsUp\)/.test(l)), lines.join('\n'));

  // A restart finds the annotations in place and patches nothing.
  await m.stop();
  const before = requests.length;
  const again = manager({ lines });
  await again.start();
  assert.not.ok(requests.slice(before).some((r) => r.verb === 'patch'), 'no patch when nothing differs');
  assert.ok(lines.some((l) => /already carries this lease's annotations/.test(l)));
});

kube('the node is found from POD_NAME + POD_NAMESPACE; a vxlan config publishes VNI and VtepMAC', async () => {
  await admin.ok('POST', '/api/v1/namespaces/kube-flannel-udp/pods', {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'kube-flannel-udp-ds-abcde', namespace: 'kube-flannel-udp' },
    spec: { nodeName: 'n2', containers: [{ name: 'kube-flannel-udp', image: 'flannel-udp:0.1.0' }] },
  });
  const m = manager({
    env: { POD_NAME: 'kube-flannel-udp-ds-abcde', POD_NAMESPACE: 'kube-flannel-udp' },
    netConfigPath: netConf({ Network: '10.244.0.0/16', Backend: { Type: 'vxlan', VNI: 4 } }),
    publicIp: parseIPv4('192.0.2.2'),
    vtepMacFor: (ip) => (ip === parseIPv4('192.0.2.2') ? '0a:00:00:00:00:02' : 'wrong'),
  });
  const joined = await m.start();
  assert.is(joined.nodeName, 'n2');
  assert.is(joined.subnetConfig.mtu, 1450);
  const node = (await admin.getNode('n2')) as any;
  assert.is(node.metadata.annotations[`${P}/backend-type`], 'vxlan');
  assert.is(node.metadata.annotations[`${P}/backend-data`], '{"VNI":4,"VtepMAC":"0a:00:00:00:00:02"}');
  assert.ok(requests.some((r) => r.verb === 'get' && r.resource === 'pods' && r.name === 'kube-flannel-udp-ds-abcde' && r.status === 200));
});

kube('no podCIDR: the error names --allocate-node-cidrs and --cluster-cidr, the manager waits and goes on once the CIDR is set', async () => {
  await admin.createNode(kubeletNode('n3', '192.0.2.3'));
  const lines: string[] = [];
  const m = manager({ lines, env: { NODE_NAME: 'n3' }, publicIp: parseIPv4('192.0.2.3') });
  let joined: Awaited<ReturnType<KubeSubnetManager['start']>> | undefined;
  const start = m.start().then((j) => (joined = j));
  await until('the podCIDR error', () => lines.some((l) => /no spec\.podCIDR/.test(l)));
  const error = lines.find((l) => /no spec\.podCIDR/.test(l))!;
  assert.match(error, /^error: node "n3" has no spec\.podCIDR/);
  assert.match(error, /--allocate-node-cidrs=true --cluster-cidr=10\.244\.0\.0\/16/);
  assert.match(error, /not exiting/);
  assert.is(joined, undefined, 'still waiting');
  await admin.patchNode('n3', { spec: { podCIDR: '10.244.3.0/24', podCIDRs: ['10.244.3.0/24'] } });
  await start;
  assert.is(joined!.subnetConfig.subnet.ip, parseIPv4('10.244.3.1'));
  assert.ok(lines.some((l) => /now has pod CIDR 10\.244\.3\.0\/24; going on/.test(l)));
});

kube('a podCIDR outside Network is named with the fix; a missing node too', async () => {
  await admin.createNode(kubeletNode('n4', '192.0.2.4', '10.96.4.0/24'));
  const lines: string[] = [];
  const m = manager({ lines, env: { NODE_NAME: 'n4' } });
  const pending = m.start().catch((e: Error) => e);
  await until('the outside-Network error', () => lines.some((l) => /outside the Network/.test(l)));
  assert.ok(lines.some((l) => /spec\.podCIDR 10\.96\.4\.0\/24, outside the Network 10\.244\.0\.0\/16 .*--cluster-cidr must equal/.test(l)), lines.join('\n'));
  await m.stop();
  assert.instance(await pending, Error, 'stop() ends the wait');
  const lines2: string[] = [];
  const ghost = manager({ lines: lines2, env: { NODE_NAME: 'ghost' } });
  const pending2 = ghost.start().catch((e: Error) => e);
  await until('the missing-node error', () => lines2.some((l) => /node "ghost" does not exist/.test(l)));
  await ghost.stop();
  await pending2;
});

kube('node-public-ip chooses the public IP; public-ip-overwrite is published instead', async () => {
  await admin.createNode(kubeletNode('n5', '192.0.2.5', '10.244.5.0/24'));
  await admin.patchNode('n5', { metadata: { annotations: { [`${P}/node-public-ip`]: '192.0.2.55', [`${P}/public-ip-overwrite`]: '203.0.113.5' } } });
  const m = manager({ env: { NODE_NAME: 'n5' }, publicIp: parseIPv4('192.0.2.5') });
  const joined = await m.start();
  assert.is(joined.publicIp, parseIPv4('192.0.2.55'), 'bind to node-public-ip');
  const node = (await admin.getNode('n5')) as any;
  assert.is(node.metadata.annotations[`${P}/public-ip`], '203.0.113.5', 'peers are told the overwrite');
});

kube('a conflicting write between read and patch: 409, the node is read again and the patch retried', async () => {
  await admin.createNode(kubeletNode('n6', '192.0.2.6', '10.244.6.0/24'));
  let raced = false;
  onRequest = (r) => {
    // Right after the agent listed the nodes, someone else changes n6: the agent's view is stale.
    if (!raced && r.user === serviceAccount(AGENT_SA.namespace, AGENT_SA.name).user && r.verb === 'list') {
      raced = true;
      api.annotateNode('n6', { 'example.com/touched': 'yes' });
    }
  };
  const lines: string[] = [];
  const m = manager({ lines, env: { NODE_NAME: 'n6' } });
  await m.start();
  assert.ok(raced);
  assert.ok(lines.some((l) => /409 Conflict\); reading it again/.test(l)), lines.join('\n'));
  const node = (await admin.getNode('n6')) as any;
  assert.is(node.metadata.annotations['example.com/touched'], 'yes', 'the other write survives');
  assert.is(node.metadata.annotations[`${P}/kube-subnet-manager`], 'true');
  const mine = requests.filter((r) => r.name === 'n6' && r.resource === 'nodes/status' && r.verb === 'patch').map((r) => r.status);
  assert.equal(mine, [409, 200]);
});

kube('a token without the role: 403 is reported with the API server\'s words and retried, not a crash', async () => {
  const lines: string[] = [];
  const m = manager({ lines, kubeconfigFile: nobodyKubeconfig });
  const pending = m.start().catch((e: Error) => e);
  await until('the 403 line', () => lines.some((l) => /403/.test(l)));
  assert.ok(lines.some((l) => /listing nodes: 403 nodes is forbidden: User "system:serviceaccount:default:default" cannot list/.test(l)), lines.join('\n'));
  await m.stop();
  await pending;
});

kube('peers: flannel nodes become leases live; a deleted node\'s lease goes; the own node is left out', async () => {
  const m = manager({ env: { NODE_NAME: 'n1' } });
  await m.start();
  const source = m.leaseSource();
  const snapshots: Lease[][] = [];
  const errors: string[] = [];
  await source.start({ onLeases: (l) => snapshots.push(l), onError: (e) => errors.push(e.message) });
  const keys = () => snapshots[snapshots.length - 1].map((l) => l.key).sort();
  // n2 (vxlan, published above), n3, n5, n6 carry flannel annotations by now; n4 never published.
  assert.equal(keys(), ['10.244.2.0-24', '10.244.3.0-24', '10.244.5.0-24', '10.244.6.0-24']);
  // A node joins, annotated by its flanneld.
  await admin.createNode({
    ...kubeletNode('n7', '192.0.2.7', '10.244.7.0/24'),
    metadata: {
      name: 'n7',
      annotations: { [`${P}/backend-type`]: 'udp', [`${P}/backend-data`]: 'null', [`${P}/public-ip`]: '192.0.2.7', [`${P}/kube-subnet-manager`]: 'true' },
    },
  });
  await until('n7 as a lease', () => keys().includes('10.244.7.0-24'));
  const n7 = snapshots[snapshots.length - 1].find((l) => l.key === '10.244.7.0-24')!;
  assert.is(n7.publicIp, parseIPv4('192.0.2.7'));
  // Its public IP changes.
  await admin.patchNode('n7', { metadata: { annotations: { [`${P}/public-ip`]: '192.0.2.77' } } });
  await until('n7 moved', () => snapshots[snapshots.length - 1].find((l) => l.key === '10.244.7.0-24')?.publicIp === parseIPv4('192.0.2.77'));
  // Heartbeats (status changes) do not produce a snapshot.
  const count = snapshots.length;
  await admin.ok('PATCH', '/api/v1/nodes/n7/status', { status: { conditions: [{ type: 'Ready', status: 'True' }] } }, 'application/strategic-merge-patch+json');
  await admin.deleteNode('n7');
  await until('n7 gone', () => !keys().includes('10.244.7.0-24'));
  assert.is(snapshots.length, count + 1, 'one snapshot for the delete, none for the status change');
  // A broken flannel node is reported once and left out.
  await admin.createNode({ ...kubeletNode('n8', '192.0.2.8', '10.244.8.0/24'), metadata: { name: 'n8', annotations: { [`${P}/kube-subnet-manager`]: 'true', [`${P}/backend-type`]: 'udp', [`${P}/public-ip`]: 'nonsense' } } });
  await until('n8 reported', () => errors.some((e) => /node "n8"/.test(e)));
  assert.not.ok(keys().includes('10.244.8.0-24'));
  await admin.deleteNode('n8');
  source.stop();
});

kube('the watch: resumes from its resourceVersion after a normal end, lists again after 410 (compaction, restart)', async () => {
  const lines: string[] = [];
  const watch = new NodeWatch(new KubeClient({ kubeconfigFile: agentKubeconfig }), { log: (l) => lines.push(l), onError: (e) => lines.push(`error: ${e.message}`), minWatchSeconds: 1, initialBackoffMs: 50 });
  await watch.start();
  try {
    assert.is(watch.counts.lists, 1);
    // timeoutSeconds is 1..2 s: the server ends the stream, the watch resumes without a list.
    await until('a second watch', () => watch.counts.watches >= 2, 5000);
    assert.is(watch.counts.lists, 1, 'resumed from the resourceVersion, no list');
    await admin.createNode(kubeletNode('w1', '192.0.2.31', '10.244.31.0/24'));
    await until('w1 seen', () => watch.get('w1') !== undefined);
    // The API server unreachable while a node joins and etcd compacts: the watch, retried from
    // its resourceVersion, gets ERROR 410 once the server is back, and lists again.
    await api.close();
    await until('the outage noticed', () => lines.some((l) => /API server is unreachable/.test(l)));
    await admin.request('GET', '/api/v1/nodes').then(() => assert.unreachable('closed'), () => undefined);
    api.annotateNode('w1', { 'example.com/while-away': '1' });
    api.compact();
    await api.reopen();
    await until('410 and a new list', () => watch.counts.expired >= 1 && watch.counts.lists >= 2, 10_000);
    assert.is(watch.get('w1')!.metadata!.annotations!['example.com/while-away'], '1', 'the change made while away is seen');
    assert.ok(lines.some((l) => /reachable again after/.test(l)), lines.join('\n'));
    await admin.createNode(kubeletNode('w2', '192.0.2.32', '10.244.32.0/24'));
    await until('w2 seen', () => watch.get('w2') !== undefined);
    assert.ok(lines.some((l) => /expired \(410 Gone\); listing again/.test(l)), lines.join('\n'));
    // A restart drops the stream; the watch resumes from where it was (nothing changed meanwhile, so no 410) and goes on live.
    const watches = watch.counts.watches;
    await api.restart();
    await admin.deleteNode('w1');
    await until('w1 deleted after the restart', () => watch.counts.watches > watches && watch.get('w1') === undefined, 10_000).catch((e: Error) => {
      throw new Error(`${e.message}: ${JSON.stringify(watch.counts)}\n${lines.join('\n')}`);
    });
    await admin.createNode(kubeletNode('w3', '192.0.2.33', '10.244.33.0/24'));
    await until('w3 seen live', () => watch.get('w3') !== undefined);
  } finally {
    await watch.stop();
    for (const n of ['w2', 'w3']) await admin.request('DELETE', `/api/v1/nodes/${n}`);
  }
});

kube('the periodic resync hands the same snapshot over again from the cache, without an API call', async () => {
  const watch = new NodeWatch(new KubeClient({ kubeconfigFile: agentKubeconfig }), { log: () => undefined, onError: () => undefined });
  await watch.start();
  const source = new KubeLeaseSource(watch, { names: annotationNames(P), ownNode: 'n1', ownSubnet: { ip: 0, network: 0, prefixLength: 32, mask: 0xffffffff }, describe: 't', resyncMs: 50 });
  const snapshots: string[] = [];
  try {
    const before = requests.length;
    await source.start({ onLeases: (l) => snapshots.push(l.map((x) => x.key).sort().join(',')), onError: () => undefined });
    await until('three resyncs', () => snapshots.length >= 4);
    assert.is(new Set(snapshots).size, 1, 'the same snapshot each time');
    assert.ok(snapshots[0].includes('10.244.2.0-24'));
    assert.equal(requests.slice(before).filter((r) => r.verb !== 'watch'), [], 'no request but the watch already open');
  } finally {
    source.stop();
    await watch.stop();
  }
});

kube("RBAC: every call the agent made is allowed by the manifest's ClusterRole, and every rule is used", () => {
  const agentUser = serviceAccount(AGENT_SA.namespace, AGENT_SA.name).user;
  // (verb '' = refused before routing: the strictness test's probe of an unknown path)
  const made = requests.filter((r) => r.user === agentUser && r.status !== 401 && r.verb !== '');
  const forbidden = made.filter((r) => r.status === 403 && !(r.verb === 'delete' || (r.verb === 'patch' && r.resource === 'nodes')));
  assert.equal(forbidden, [], 'no 403 for the agent beyond the two probes of the strictness test');
  const used = new Set(made.filter((r) => r.status !== 403).map((r) => `${r.verb} ${r.resource}`));
  assert.equal([...used].sort(), ['get nodes', 'get pods', 'list nodes', 'patch nodes/status', 'watch nodes']);
  const rules = rulesFromManifest(readFileSync(MANIFEST, 'utf8'))(serviceAccount(AGENT_SA.namespace, AGENT_SA.name));
  for (const call of used) {
    const [verb, resource] = call.split(' ');
    assert.ok(allows(rules, verb, resource, 'x'), call);
  }
  // Nothing in the role beyond what was used.
  const granted = rules.flatMap((r) => (r.resources ?? []).flatMap((res) => r.verbs.map((v) => `${v} ${res}`)));
  assert.equal(granted.sort(), [...used].sort());
});

kube.run();
