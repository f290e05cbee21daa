// The agent (udp mode) against a second, independent implementation of
// flannel's udp wire format: node 1 runs bench/reference/udp_proxy.py (one
// thread, poll, read/sendto, recv/write: the structure of flannel's C proxy,
// none of our code), node 2 runs the agent. Pods are added through the CNI
// chain as everywhere else. flannel's C proxy itself is not run here (it is
// cgo inside flanneld and cannot be built on this machine); this pair tests
// the wire format as an outside implementation reads and writes it.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { createCluster, type Cluster } from '../../src/testbed/cluster.js';
import { stopChild, waitForLine } from '../../src/testbed/exec.js';
import { ping } from '../../src/testbed/measure.js';
import { tcpTransfer } from '../support/pod-traffic.js';

const test = suite('agent (udp) ⇄ independent reference forwarder, flannel udp wire format');
let cluster: Cluster;

test.before(async () => {
  cluster = await createCluster({ nodes: 2, dataplane: 'agent', nodeDataplanes: { 1: 'reference' } });
});
test.after(async () => {
  await cluster?.destroy();
});

test('each node runs the plane it was given', () => {
  assert.is(cluster.planeOf(1), 'reference');
  assert.is(cluster.planeOf(2), 'agent');
  assert.ok(cluster.reference(1), 'node 1 has a reference forwarder');
  assert.ok(cluster.agent(2), 'node 2 has an agent');
  assert.is(cluster.agent(1), undefined);
});

test('ping both ways between the reference node and the agent node', async () => {
  const there = await ping(cluster, cluster.pod(1).ns, cluster.pod(2).ip, { count: 5, intervalS: 0.2 });
  const back = await ping(cluster, cluster.pod(2).ns, cluster.pod(1).ip, { count: 5, intervalS: 0.2 });
  assert.is(there.received, 5, `reference → agent: ${JSON.stringify(there)}`);
  assert.is(back.received, 5, `agent → reference: ${JSON.stringify(back)}`);
});

test('packets of the full pod MTU cross both ways without fragmentation', async () => {
  // ICMP payload = pod MTU - 20 (IPv4) - 8 (ICMP); -M do forbids fragmenting.
  const size = String(cluster.podMtu - 28);
  for (const [from, to] of [
    [cluster.pod(1), cluster.pod(2)],
    [cluster.pod(2), cluster.pod(1)],
  ] as const) {
    const r = await cluster.exec(from.ns, 'ping', ['-n', '-q', '-c', '3', '-i', '0.2', '-w', '6', '-M', 'do', '-s', size, to.ip], {
      allowFailure: true,
    });
    assert.match(r.stdout, / 3 received/, `${from.ip} → ${to.ip} with ${size}-byte payloads:\n${r.stdout}${r.stderr}`);
  }
});

test('TCP transfers arrive intact both ways (sha256)', async () => {
  const bytes = 32 * 1024 * 1024;
  const out = await tcpTransfer(cluster, cluster.pod(1), cluster.pod(2), bytes);
  assert.is(out.received.bytes, bytes);
  assert.is(out.received.sha256, out.sent.sha256, 'reference → agent');
  const back = await tcpTransfer(cluster, cluster.pod(2), cluster.pod(1), bytes);
  assert.is(back.received.bytes, bytes);
  assert.is(back.received.sha256, back.sent.sha256, 'agent → reference');
});

test('the reference forwarder carried that traffic and dropped nothing the agent sent', async () => {
  const reference = cluster.reference(1)!;
  await stopChild(reference, 'SIGTERM', 5000);
  const line = await waitForLine(reference, /^reference udp proxy stopping:/, 5000);
  const counters = Object.fromEntries([...line.matchAll(/(\w+)=(\d+)/g)].map((m) => [m[1]!, Number(m[2])]));
  // 32 MiB in 1420-byte segments is over 23,000 packets each way.
  assert.ok(counters.tun_to_udp! > 23_000, line);
  assert.ok(counters.udp_to_tun! > 23_000, line);
  // A datagram larger than the TUN MTU would be cut short by flannel's C
  // proxy (its buffer is MTU-sized): the agent must never send one.
  assert.is(counters.oversize, 0, line);
  assert.is(counters.runt, 0, line);
  assert.is(counters.ttl_expired, 0, line);
  assert.is(counters.send_errors, 0, line);
});

test.run();

const config = suite('per-node planes: only udp-wire planes mix');

config('a kernel vxlan cluster refuses a reference node, with a message that says why', async () => {
  try {
    await createCluster({ nodes: 2, dataplane: 'kernel-vxlan', nodeDataplanes: { 1: 'reference' } });
    assert.unreachable('createCluster should have refused');
  } catch (err) {
    assert.match((err as Error).message, /udp-wire planes only; dataplane 'kernel-vxlan'/);
  }
});

config('a per-node plane that is not a udp-wire plane is refused', async () => {
  try {
    await createCluster({ nodes: 2, dataplane: 'agent', nodeDataplanes: { 2: 'host-gw' as 'agent' } });
    assert.unreachable('createCluster should have refused');
  } catch (err) {
    assert.match((err as Error).message, /nodeDataplanes\[2\]: 'host-gw' is not a udp-wire plane/);
  }
});

config.run();
