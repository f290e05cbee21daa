// Our flannel CNI plugin on a dual-stack subnet.env (issue 24), with the real
// reference plugins (Debian's containernetworking-plugins: bridge, host-local),
// in a namespace testbed: every pod gets one address of each family from
// host-local's two ranges, cni0 is each family's gateway, the routes cover
// both pod networks, pods on one node reach each other over IPv6, and DEL
// releases both addresses. Needs root; the cluster is destroyed in after.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createCluster, type Cluster, type PodNamespace } from '../../src/testbed/cluster.js';
import { ping } from '../../src/testbed/measure.js';
import { addNetworkList, delNetworkList, type Attachment, type CniResult, type ConfList } from '../../src/cni/chain.js';

const DUAL_ENV =
  'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:1::1/64\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n';

const attachment = (pns: PodNamespace): Attachment => ({ containerId: pns.ns, netns: pns.netnsPath, ifName: 'eth0' });
const withSubnetFile = (list: ConfList, subnetFile: string): ConfList => ({
  ...list,
  plugins: list.plugins.map((p) => (p.type === 'flannel' ? { ...p, subnetFile } : p)),
});

const dual = suite('flannel plugin + bridge + host-local on a dual-stack subnet.env');
let c: Cluster;

dual.before(async () => {
  c = await createCluster({ nodes: 1, podsPerNode: 0, dataplane: 'none' });
});
dual.after(async () => {
  await c?.destroy();
});

dual('ADD: an IPv4 and an IPv6 address per pod, cni0 the gateway of both, routes to both networks, ping -6 between pods; DEL releases both', async () => {
  const node = c.node(1);
  const envFile = join(c.tempDir, 'subnet-dual.env');
  writeFileSync(envFile, DUAL_ENV);
  const runner = c.cniRunner(1);
  const list = withSubnetFile(c.confList(1), envFile);
  const pods: { pns: PodNamespace; result: CniResult; v4: string; v6: string }[] = [];
  try {
    for (let i = 0; i < 2; i++) {
      const pns = await c.addPodNamespace(1);
      const result = await addNetworkList(runner, list, attachment(pns));
      const ips = result.ips ?? [];
      assert.is(ips.length, 2, JSON.stringify(result));
      const v4 = ips.find((a) => !a.address.includes(':'))!;
      const v6 = ips.find((a) => a.address.includes(':'))!;
      assert.match(v4.address, /^10\.244\.1\.\d+\/24$/);
      assert.is(v4.gateway, '10.244.1.1');
      assert.match(v6.address, /^fd00:10:244:1::[0-9a-f]+\/64$/);
      assert.is.not(v6.address, 'fd00:10:244:1::1/64', 'the gateway is not handed out');
      assert.is(v6.gateway, 'fd00:10:244:1::1');
      pods.push({ pns, result, v4: v4.address.split('/')[0]!, v6: v6.address.split('/')[0]! });
    }
    assert.is.not(pods[0]!.v6, pods[1]!.v6);
    for (const pod of pods) {
      const { stdout: addr6 } = await c.exec(pod.pns.ns, 'ip', ['-6', '-o', 'addr', 'show', 'dev', 'eth0', 'scope', 'global']);
      assert.match(addr6, new RegExp(`inet6 ${pod.v6}/64 `));
      const { stdout: routes6 } = await c.exec(pod.pns.ns, 'ip', ['-6', 'route', 'show']);
      assert.match(routes6, /^fd00:10:244::\/56 via fd00:10:244:1::1 dev eth0/m, routes6);
      assert.match(routes6, /^default via fd00:10:244:1::1 dev eth0/m, 'isDefaultGateway from the delegate block, for both families');
      const { stdout: routes4 } = await c.exec(pod.pns.ns, 'ip', ['-4', 'route', 'show']);
      assert.match(routes4, /^10\.244\.0\.0\/16 via 10\.244\.1\.1 dev eth0/m);
      assert.ok(existsSync(join(node.ipamDataDir, 'cbr0', pod.v6)), 'host-local reserved the IPv6 address');
    }
    const { stdout: cni0 } = await c.exec(node.ns, 'ip', ['-6', '-o', 'addr', 'show', 'dev', 'cni0', 'scope', 'global']);
    assert.match(cni0, /inet6 fd00:10:244:1::1\/64 /, 'the bridge plugin made cni0 the IPv6 gateway (isGateway)');
    const r = await ping(c, pods[0]!.pns.ns, pods[1]!.v6, { count: 3, intervalS: 0.2 });
    assert.is(r.received, 3, 'pods on one node reach each other over IPv6 through cni0');
    // The bridge plugin waits for the pods' addresses to pass duplicate address detection, not for cni0's:
    // until it has (about a second), packets to the gateway address wait in the kernel.
    const deadline = Date.now() + 10_000;
    for (;;) {
      const { stdout: tentative } = await c.exec(node.ns, 'ip', ['-6', '-o', 'addr', 'show', 'dev', 'cni0', 'tentative']);
      if (tentative.trim() === '') break;
      if (Date.now() > deadline) assert.unreachable(`cni0's IPv6 address still tentative after 10 s: ${tentative}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const g = await ping(c, pods[1]!.pns.ns, 'fd00:10:244:1::1', { count: 2, intervalS: 0.2 });
    assert.is(g.received, 2, 'and their IPv6 gateway');
  } finally {
    for (const pod of pods) await delNetworkList(runner, list, attachment(pod.pns), pod.result);
  }
  for (const pod of pods) {
    assert.not.ok(existsSync(join(node.ipamDataDir, 'cbr0', pod.v6)), 'host-local released the IPv6 address');
    assert.not.ok(existsSync(join(node.ipamDataDir, 'cbr0', pod.v4)), 'and the IPv4 one');
  }
});

dual('a broken FLANNEL_IPV6_SUBNET is a CNI error naming the key, and nothing is left behind', async () => {
  const envFile = join(c.tempDir, 'subnet-dual-broken.env');
  writeFileSync(envFile, DUAL_ENV.replace('FLANNEL_IPV6_SUBNET=fd00:10:244:1::1/64', 'FLANNEL_IPV6_SUBNET=fd00:10:244:1::1/129'));
  const pns = await c.addPodNamespace(1);
  const err = await addNetworkList(c.cniRunner(1), withSubnetFile(c.confList(1), envFile), attachment(pns)).then(
    () => undefined,
    (e: Error) => e,
  );
  assert.ok(err, 'ADD refused');
  // subnet.env's parser refuses it, naming the line, the key and the value (as for the IPv4 keys).
  assert.match(String(err), /subnet-dual-broken\.env:\d+: FLANNEL_IPV6_SUBNET: "fd00:10:244:1::1\/129" is not a valid IPv6 CIDR/);
  const { stdout } = await c.exec(pns.ns, 'ip', ['-j', 'link', 'show']);
  assert.equal((JSON.parse(stdout) as Array<{ ifname: string }>).map((l) => l.ifname), ['lo'], 'no interface in the pod');
});

dual.run();
