// Our flannel CNI plugin with the real reference plugins (Debian's
// containernetworking-plugins: bridge, host-local, portmap), driven the way a
// runtime drives kube-flannel's conflist, in namespace testbeds. Needs root;
// every cluster is destroyed in after/finally, which DELs every pod and
// removes the namespaces with whatever iptables rules the plugins made.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createCluster, type Cluster, type PodNamespace } from '../../src/testbed/cluster.js';
import { run, waitForLine } from '../../src/testbed/exec.js';
import { ping } from '../../src/testbed/measure.js';
import {
  addNetworkList,
  delNetworkList,
  invokePlugin,
  pluginConfig,
  PluginError,
  pluginVersions,
  type Attachment,
  type CniResult,
  type ConfList,
} from '../../src/cni/chain.js';
import { tcpTransfer } from '../support/pod-traffic.js';

const supportDir = join(dirname(fileURLToPath(import.meta.url)), '../support');

async function linkNames(c: Cluster, ns: string): Promise<string[]> {
  const { stdout } = await c.exec(ns, 'ip', ['-j', 'link', 'show']);
  return (JSON.parse(stdout) as Array<{ ifname: string }>).map((l) => l.ifname).sort();
}

async function link(c: Cluster, ns: string, dev: string): Promise<{ mtu: number; master?: string; operstate: string }> {
  const { stdout } = await c.exec(ns, 'ip', ['-j', '-d', 'link', 'show', 'dev', dev]);
  return (JSON.parse(stdout) as Array<{ mtu: number; master?: string; operstate: string }>)[0]!;
}

function attachment(pns: PodNamespace): Attachment {
  return { containerId: pns.ns, netns: pns.netnsPath, ifName: 'eth0' };
}

/** The flannel entry of node i's list, as the runtime sends it (name and cniVersion filled in). */
function flannelConf(list: ConfList, att: Attachment, prevResult?: CniResult): Record<string, unknown> {
  const entry = list.plugins.find((p) => p.type === 'flannel')!;
  return pluginConfig(list, entry, att, prevResult);
}

function withVersion(list: ConfList, cniVersion: string): ConfList {
  return { ...list, cniVersion };
}

/** The list with the flannel entry's subnetFile replaced. */
function withSubnetFile(list: ConfList, subnetFile: string): ConfList {
  return { ...list, plugins: list.plugins.map((p) => (p.type === 'flannel' ? { ...p, subnetFile } : p)) };
}

/** `code` undefined: any code (the reference plugins' own codes are theirs to choose). */
async function expectPluginError(promise: Promise<unknown>, code: number | undefined, message: RegExp): Promise<PluginError> {
  try {
    await promise;
  } catch (err) {
    assert.instance(err, PluginError, String(err));
    const e = err as PluginError;
    if (code !== undefined) assert.is(e.code, code, e.message);
    assert.match(e.cniMessage, message);
    return e;
  }
  assert.unreachable(`expected CNI error code ${code}`);
  throw new Error('unreachable');
}

// ---------------------------------------------------------------------------

const one = suite('flannel plugin + bridge + host-local, one node');
let c: Cluster;

one.before(async () => {
  c = await createCluster({ nodes: 1, podsPerNode: 2, dataplane: 'none' });
});
one.after(async () => {
  await c?.destroy();
});

one("ADD through kube-flannel's 0.3.1 list: two pods with addresses from FLANNEL_SUBNET, route via cni0, MTU = FLANNEL_MTU", async () => {
  const node = c.node(1);
  assert.match(readFileSync(node.subnetFile, 'utf8'), /FLANNEL_SUBNET=10\.244\.1\.1\/24\nFLANNEL_MTU=1472\n/);
  const pods = [c.pod(1, 0), c.pod(1, 1)];
  assert.is.not(pods[0]!.ip, pods[1]!.ip);
  for (const pod of pods) {
    assert.match(pod.ip, /^10\.244\.1\.(\d+)$/);
    assert.is.not(pod.ip, '10.244.1.1', 'the gateway is not handed out');
    const { stdout: addr } = await c.exec(pod.ns, 'ip', ['-4', '-o', 'addr', 'show', 'dev', 'eth0']);
    assert.match(addr, new RegExp(`inet ${pod.ip.replace(/\./g, '\\.')}/24 `));
    assert.is((await link(c, pod.ns, 'eth0')).mtu, 1472, 'pod MTU = FLANNEL_MTU');
    const { stdout: routes } = await c.exec(pod.ns, 'ip', ['route', 'show']);
    assert.match(routes, /^default via 10\.244\.1\.1 dev eth0/m);
    assert.match(routes, /^10\.244\.0\.0\/16 via 10\.244\.1\.1 dev eth0/m);
    const veth = await link(c, node.ns, pod.hostVeth);
    assert.is(veth.master, 'cni0', `${pod.hostVeth} is on cni0`);
    assert.is(veth.mtu, 1472);
    const { stdout: bridgeLink } = await c.exec(node.ns, 'bridge', ['-d', 'link', 'show', 'dev', pod.hostVeth]);
    assert.match(bridgeLink, /hairpin on/, 'hairpinMode from the delegate block');
    assert.ok(existsSync(join(node.cniDataDir, pod.containerId)), 'delegate configuration saved for DEL');
    assert.ok(existsSync(join(node.ipamDataDir, 'cbr0', pod.ip)), 'host-local reserved the address');
  }
  const cni0 = await link(c, node.ns, 'cni0');
  assert.is(cni0.mtu, 1472);
  const { stdout: cni0Addr } = await c.exec(node.ns, 'ip', ['-4', '-o', 'addr', 'show', 'dev', 'cni0']);
  assert.match(cni0Addr, /inet 10\.244\.1\.1\/24 /, 'the bridge plugin made cni0 the gateway (isGateway)');
  const r = await ping(c, pods[0]!.ns, pods[1]!.ip, { count: 2, intervalS: 0.2 });
  assert.is(r.received, 2, 'pods on one node reach each other over cni0');
});

one('the 0.3.1 result is what a runtime expects', async () => {
  const pod = c.pod(1, 0);
  const result = pod.result;
  assert.is(result.cniVersion, '0.3.1');
  assert.equal(
    result.interfaces!.map((i) => [i.name, i.sandbox ?? '']),
    [['cni0', ''], [pod.hostVeth, ''], ['eth0', `/var/run/netns/${pod.ns}`]],
  );
  for (const i of result.interfaces!) assert.match(i.mac ?? '', /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/);
  assert.equal(result.ips, [{ version: '4', interface: 2, address: `${pod.ip}/24`, gateway: '10.244.1.1' }]);
  assert.equal(result.routes, [{ dst: '10.244.0.0/16' }, { dst: '0.0.0.0/0', gw: '10.244.1.1' }]);
});

for (const [version, ipVersionKey] of [['1.0.0', false], ['0.4.0', true]] as const) {
  one(`ADD with a ${version} list answers in ${version}`, async () => {
    const pod = await c.addPod(1, { cniVersion: version });
    assert.is(pod.result.cniVersion, version);
    const ip = pod.result.ips![0]!;
    assert.is('version' in ip, ipVersionKey, `ips[].version is ${ipVersionKey ? 'required in' : 'gone from'} ${version}`);
    assert.is(ip.address, `${pod.ip}/24`);
    assert.is(ip.gateway, '10.244.1.1');
    assert.is(ip.interface, 2);
    await c.removePod(pod);
  });
}

one('CHECK is delegated to bridge: passes after ADD (0.4.0, 1.0.0), fails when the pod lost its default route; 0.3.1 has no CHECK (code 1)', async () => {
  const runner = c.cniRunner(1);
  for (const version of ['0.4.0', '1.0.0']) {
    const pns = await c.addPodNamespace(1);
    const att = attachment(pns);
    const list = withVersion(c.confList(1), version);
    const result = await addNetworkList(runner, list, att);
    try {
      assert.is(await invokePlugin(runner, 'CHECK', flannelConf(list, att, result), att), undefined, 'CHECK prints nothing');
      await c.exec(pns.ns, 'ip', ['route', 'del', 'default']);
      await expectPluginError(invokePlugin(runner, 'CHECK', flannelConf(list, att, result), att), undefined, /0\.0\.0\.0.*not found in routing table/);
    } finally {
      await delNetworkList(runner, list, att, result);
    }
  }
  const pod = c.pod(1, 0);
  const att = { containerId: pod.containerId, netns: `/var/run/netns/${pod.ns}`, ifName: 'eth0' };
  const e = await expectPluginError(
    invokePlugin(runner, 'CHECK', flannelConf(c.confList(1), att, pod.result), att),
    1,
    /config version does not allow CHECK/,
  );
  assert.match(e.stderr, /CHECK exists from CNI spec 0\.4\.0 on/);
});

one('DEL removes the interface and releases the address; DEL twice is not an error', async () => {
  const node = c.node(1);
  const runner = c.cniRunner(1);
  const list = c.confList(1);
  const pns = await c.addPodNamespace(1);
  const att = attachment(pns);
  const result = await addNetworkList(runner, list, att);
  const ip = result.ips![0]!.address.split('/')[0]!;
  const veth = result.interfaces![1]!.name;
  assert.ok((await linkNames(c, node.ns)).includes(veth));
  assert.ok(existsSync(join(node.ipamDataDir, 'cbr0', ip)));

  await delNetworkList(runner, list, att, result);
  assert.equal(await linkNames(c, pns.ns), ['lo'], 'eth0 is gone from the pod');
  assert.not.ok((await linkNames(c, node.ns)).includes(veth), 'the host end is gone from the node');
  assert.not.ok(existsSync(join(node.ipamDataDir, 'cbr0', ip)), 'host-local released the address');
  assert.not.ok(existsSync(join(node.cniDataDir, pns.ns)), 'the saved configuration is removed');

  await delNetworkList(runner, list, att, result);
  await delNetworkList(runner, list, { ...att, netns: '' });
});

one('DEL after subnet.env changed uses what ADD used; without the saved file it rebuilds from subnet.env', async () => {
  const node = c.node(1);
  const runner = c.cniRunner(1);
  const list = c.confList(1);
  const original = readFileSync(node.subnetFile, 'utf8');
  const first = await c.addPodNamespace(1);
  const firstResult = await addNetworkList(runner, list, attachment(first));
  const firstIp = firstResult.ips![0]!.address.split('/')[0]!;
  try {
    writeFileSync(node.subnetFile, original.replace('FLANNEL_SUBNET=10.244.1.1/24', 'FLANNEL_SUBNET=10.244.99.1/24'));
    await delNetworkList(runner, list, attachment(first), firstResult);
    assert.not.ok(existsSync(join(node.ipamDataDir, 'cbr0', firstIp)), 'released from the range ADD used, not the new one');
  } finally {
    writeFileSync(node.subnetFile, original);
  }

  const second = await c.addPodNamespace(1);
  const secondResult = await addNetworkList(runner, list, attachment(second));
  const secondIp = secondResult.ips![0]!.address.split('/')[0]!;
  rmSync(join(node.cniDataDir, second.ns));
  await delNetworkList(runner, list, attachment(second), secondResult);
  assert.not.ok(existsSync(join(node.ipamDataDir, 'cbr0', secondIp)), 'released with the rebuilt configuration');
  assert.equal(await linkNames(c, second.ns), ['lo']);
});

one('ADD with a missing or broken subnet file: a CNI error saying what is wrong, and nothing left behind', async () => {
  const node = c.node(1);
  const runner = c.cniRunner(1);
  const missing = join(c.tempDir, 'no-such-subnet.env');
  const broken = join(c.tempDir, 'broken-subnet.env');
  writeFileSync(broken, 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_IPMASQ=true\n');
  const cases: Array<[string, number, RegExp]> = [
    [missing, 11, /no-such-subnet\.env: no such file/],
    [broken, 7, /broken-subnet\.env: missing FLANNEL_MTU/],
  ];
  for (const [file, code, message] of cases) {
    const nodeLinks = await linkNames(c, node.ns);
    const reservations = readdirSync(join(node.ipamDataDir, 'cbr0')).sort();
    const pns = await c.addPodNamespace(1);
    await expectPluginError(addNetworkList(runner, withSubnetFile(c.confList(1), file), attachment(pns)), code, message);
    assert.equal(await linkNames(c, pns.ns), ['lo'], 'no interface in the pod');
    assert.equal(await linkNames(c, node.ns), nodeLinks, 'no veth on the node');
    assert.not.ok(existsSync(join(node.cniDataDir, pns.ns)), 'no saved configuration');
    assert.equal(readdirSync(join(node.ipamDataDir, 'cbr0')).sort(), reservations, 'no address reserved');
  }
});

one('VERSION lists the supported versions', async () => {
  const v = await pluginVersions(c.cniRunner(1), 'flannel');
  assert.is(v.cniVersion, '1.0.0');
  for (const version of ['0.3.1', '0.4.0', '1.0.0']) assert.ok(v.supportedVersions.includes(version), `${version} missing`);
});

one.run();

// ---------------------------------------------------------------------------

const masq = suite('FLANNEL_IPMASQ=false: the bridge masquerades, and nothing of it outlives the testbed');

masq('ipMasq rules appear in the node namespace only, go with DEL, and the host is untouched', async () => {
  const hostNatBefore = (await run('iptables-save', ['-t', 'nat'])).stdout.replace(/^#.*\n/gm, '');
  const cluster = await createCluster({ nodes: 1, dataplane: 'none', ipMasq: false });
  try {
    const node = cluster.node(1);
    assert.match(readFileSync(node.subnetFile, 'utf8'), /FLANNEL_IPMASQ=false/);
    const saved = JSON.parse(readFileSync(join(node.cniDataDir, cluster.pod(1).containerId), 'utf8'));
    assert.is(saved.ipMasq, true, 'ipMasq = !FLANNEL_IPMASQ');
    const nat = (await cluster.exec(node.ns, 'iptables', ['-t', 'nat', '-S'])).stdout;
    assert.match(nat, new RegExp(`-A POSTROUTING -s ${cluster.pod(1).ip.replace(/\./g, '\\.')}/32 .*-j CNI-`));
    assert.match(nat, /-j MASQUERADE/);
    await cluster.removePod(cluster.pod(1));
    const after = (await cluster.exec(node.ns, 'iptables', ['-t', 'nat', '-S'])).stdout;
    assert.not.match(after, /CNI-/, `rules left after DEL:\n${after}`);
  } finally {
    await cluster.destroy();
  }
  const hostNatAfter = (await run('iptables-save', ['-t', 'nat'])).stdout.replace(/^#.*\n/gm, '');
  assert.is(hostNatAfter, hostNatBefore, "the host's own nat table is unchanged");
});

masq.run();

// ---------------------------------------------------------------------------

const two = suite('two nodes, pods through the plugin, agent running');
let cl: Cluster;

two.before(async () => {
  cl = await createCluster({ nodes: 2, dataplane: 'agent', workers: 1 });
});
two.after(async () => {
  await cl?.destroy();
});

two('pod to pod across nodes: ping both ways and a TCP transfer with matching sha256', async () => {
  const [p1, p2] = [cl.pod(1), cl.pod(2)];
  for (const pod of [p1, p2]) assert.ok(existsSync(join(cl.node(pod.node).cniDataDir, pod.containerId)), `${pod.ns} was added through the plugin`);
  assert.is((await ping(cl, p1.ns, p2.ip, { count: 3, intervalS: 0.2 })).received, 3);
  assert.is((await ping(cl, p2.ns, p1.ip, { count: 3, intervalS: 0.2 })).received, 3);
  const bytes = 16 * 1024 * 1024;
  const r = await tcpTransfer(cl, p1, p2, bytes);
  assert.is(r.received.bytes, bytes);
  assert.is(r.received.sha256, r.sent.sha256);
});

/** A TCP transfer from a namespace to host:port (a node's address), hashed at both ends. */
async function transferTo(fromNs: string, host: string, port: number, sinkNs: string, bytes: number) {
  const sink = cl.spawn(sinkNs, process.execPath, [join(supportDir, 'tcp-sink.js'), '0.0.0.0', '8080']);
  await waitForLine(sink, /^listening$/, 10_000);
  const source = await cl.exec(fromNs, process.execPath, [join(supportDir, 'tcp-source.js'), host, String(port), String(bytes)], { timeoutMs: 60_000 });
  const received = JSON.parse(await waitForLine(sink, /^\{.*sha256/, 10_000)) as { bytes: number; sha256: string };
  const sent = JSON.parse(source.stdout.trim().split('\n').pop()!) as { bytes: number; sha256: string };
  return { sent, received };
}

two('portmap: a hostPort set through the chain forwards node 1\'s address:18080 to the pod, from another node and from node 1 itself', async () => {
  const pod = await cl.addPod(1, { portMappings: [{ hostPort: 18080, containerPort: 8080, protocol: 'tcp' }] });
  const n1 = cl.node(1);
  const nat = (await cl.exec(n1.ns, 'iptables', ['-t', 'nat', '-S'])).stdout;
  assert.match(nat, new RegExp(`--dport 18080 -j DNAT --to-destination ${pod.ip.replace(/\./g, '\\.')}:8080`));
  const bytes = 4 * 1024 * 1024;
  for (const fromNs of [cl.node(2).ns, n1.ns]) {
    const r = await transferTo(fromNs, n1.underlayIp, 18080, pod.ns, bytes);
    assert.is(r.received.bytes, bytes, `from ${fromNs}`);
    assert.is(r.received.sha256, r.sent.sha256, `from ${fromNs}`);
  }
  await cl.removePod(pod);
  const after = (await cl.exec(n1.ns, 'iptables', ['-t', 'nat', '-S'])).stdout;
  assert.not.match(after, /18080/, `portmap rules left after DEL:\n${after}`);
});

two.run();
