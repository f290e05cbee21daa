// Observability end to end, on real agents in network namespaces:
// - `flannel-udp trace` (through the control socket) follows a ping through
//   every stage on both nodes, with the right field values;
// - `--capture` writes pcap files that pcap-parser reads, holding the ping;
// - `/metrics` counters rise by the traffic sent; /healthz and /readyz answer;
// - `flannel-udp stats` shows a drop when a pod sends to a subnet no lease covers.
// Every cluster is destroyed and every temp dir removed in `after`.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { createRequire } from 'node:module';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { agentCliPath, createCluster, type Cluster } from '../../src/testbed/cluster.js';
import { isRunning, stopChild, waitForLine, type CapturedChild } from '../../src/testbed/exec.js';
import { ping } from '../../src/testbed/measure.js';
import { udpIcmpProbe } from '../support/pod-traffic.js';
import { traceEventFromJson, type TraceEvent, type TraceStage } from '../../src/observe/trace-event.js';
import { describeLayers } from '../../src/observe/trace-render.js';
import type { AgentStats } from '../../src/observe/metrics.js';
import { formatIPv4 } from '../../src/control/ipv4-address.js';
import { ipv4Destination, ipv4Protocol, ipv4Source, ipv4Ttl } from '../../src/encap/ipv4.js';
import { createOuterUdpFields, parseOuterIPv4Udp } from '../../src/encap/udp-frame.js';
import { DropReason } from '../../src/encap/drop-reasons.js';

const require = createRequire(import.meta.url);
const pcapParser = require('pcap-parser') as {
  parse(path: string): {
    on(event: 'globalHeader', fn: (h: { linkLayerType: number }) => void): void;
    on(event: 'packet', fn: (p: { data: Buffer }) => void): void;
    on(event: 'end' | 'error', fn: (e?: Error) => void): void;
  };
};

const HEALTHZ_PORT = 9102;
const READY = /flannel-udp agent ready/;

/** Runs the CLI in a node's namespace (the agent's control socket is found from there). */
function flannelUdp(cluster: Cluster, ns: string, args: string[]) {
  return cluster.exec(ns, process.execPath, [agentCliPath, ...args], { timeoutMs: 30_000 });
}

/** GET http://127.0.0.1:<port><path> from inside a namespace (the health server listens there). */
async function httpGet(cluster: Cluster, ns: string, path: string): Promise<{ status: number; body: string }> {
  const script = `fetch('http://127.0.0.1:${HEALTHZ_PORT}${path}').then(async (r) => console.log(JSON.stringify({ status: r.status, body: await r.text() })))`;
  const { stdout } = await cluster.exec(ns, process.execPath, ['-e', script], { timeoutMs: 20_000 });
  return JSON.parse(stdout.trim());
}

/** Sum of a Prometheus sample over every series whose labels include `labels`. */
function metric(text: string, name: string, labels: Record<string, string>): number {
  let sum = 0;
  let found = false;
  for (const line of text.split('\n')) {
    const m = /^([a-z_:]+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[2] ?? '').matchAll(/([a-z_]+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) {
      sum += Number(m[3]);
      found = true;
    }
  }
  assert.ok(found, `no ${name} ${JSON.stringify(labels)} in /metrics`);
  return sum;
}

function fields(ev: TraceEvent, layerIndex: number): Record<string, string> {
  const layers = describeLayers(ev);
  assert.ok(layers[layerIndex], `${ev.node} #${ev.packet} ${ev.stage}: no layer ${layerIndex} (${layers.map((l) => l.name).join(', ')})`);
  return Object.fromEntries(layers[layerIndex].fields);
}

const TX_STAGES: TraceStage[] = ['tun-read', 'lease-lookup', 'encapsulate', 'udp-send'];
const RX_STAGES: TraceStage[] = ['udp-receive', 'validate', 'decapsulate', 'tun-write'];

// --- trace, metrics, stats: the cluster's own agents ------------------------

const live = suite('observing running agents: trace, /metrics, stats');
let cluster: Cluster;

live.before(async () => {
  cluster = await createCluster({
    nodes: 2,
    dataplane: 'agent',
    workers: 1,
    agentArgs: ['--healthz-ip', '127.0.0.1', '--healthz-port', String(HEALTHZ_PORT)],
  });
});
live.after(async () => {
  await cluster?.destroy();
});

live('a traced ping shows every stage on both nodes, with the right field values', async () => {
  const [n1, n2] = [cluster.node(1), cluster.node(2)];
  const [p1, p2] = [cluster.pod(1), cluster.pod(2)];
  // Two packets per node: the echo request and the echo reply, one each way.
  const args = ['trace', '--filter', `icmp and host ${p1.ip} and host ${p2.ip}`, '--limit', '2'];
  const json = cluster.spawn(n1.ns, process.execPath, [agentCliPath, ...args, '--json']);
  const drawn = cluster.spawn(n2.ns, process.execPath, [agentCliPath, ...args]);
  try {
    // No fixed wait for the clients to attach: one ping at a time until each
    // client has traced its two packets and ended. A client that attached
    // between a request and its reply traces that reply and the next request,
    // which the checks below accept (one packet each way, every stage).
    const deadline = Date.now() + 15_000;
    let replies = 0;
    while (isRunning(json) || isRunning(drawn)) {
      assert.ok(Date.now() < deadline, `the trace clients did not end within 15 s of pinging (${replies} replies):\n${json.log.tail()}\n${drawn.log.tail()}`);
      replies += (await ping(cluster, p1.ns, p2.ip, { count: 1 })).received;
    }
    await Promise.all([json.exited, drawn.exited]);
    assert.ok(replies >= 1, 'the pings went through');
    assert.is(json.exitCode, 0, json.log.tail());
    assert.is(drawn.exitCode, 0, drawn.log.tail());

    // Node 1, JSON events: the request leaves (TX), the reply comes back (RX).
    const events = json.log
      .snapshot()
      .filter((l) => l.startsWith('{') && !l.includes('"done"'))
      .map((l) => traceEventFromJson(JSON.parse(l)));
    const byPacket = new Map<number, TraceEvent[]>();
    for (const ev of events) byPacket.set(ev.packet, [...(byPacket.get(ev.packet) ?? []), ev]);
    assert.is(byPacket.size, 2, `two packets traced on node 1: ${JSON.stringify(events.map((e) => [e.packet, e.stage]))}`);
    const request = [...byPacket.values()].find((p) => p[0].stage === 'tun-read') ?? [];
    const reply = [...byPacket.values()].find((p) => p[0].stage === 'udp-receive') ?? [];
    assert.equal(
      request.map((e) => e.stage),
      TX_STAGES,
      'the request: every TX stage, in order',
    );
    assert.equal(
      reply.map((e) => e.stage),
      RX_STAGES,
      'the reply: every RX stage, in order',
    );
    for (const ev of events) assert.ok(ev.timeNs > 0 && ev.worker === 0 && ev.node.length > 0);
    for (let i = 1; i < request.length; i++) assert.ok(request[i].timeNs >= request[i - 1].timeNs, 'monotonic');

    const [read, lookup, , send] = request;
    assert.equal([read.syscall, read.crossing, read.layers, read.bytes], ['read', 'kernel→user', 'ip', 84]);
    assert.equal(
      (({ src, dst, proto, ttl, len }) => ({ src, dst, proto, ttl, len }))(fields(read, 0)),
      { src: p1.ip, dst: p2.ip, proto: 'ICMP', ttl: '63', len: '84' },
      'the pod sent TTL 64; node 1 routed it once into flannel0',
    );
    assert.is(fields(read, 1).type, 'echo-request (8)');
    assert.equal(lookup.lease, { key: '10.244.2.0-24', publicIp: n2.underlayIp });
    assert.equal([send.syscall, send.crossing, send.layers], ['sendmmsg', 'user→kernel', 'outer-ip']);
    assert.equal(
      (({ src, dst, proto }) => ({ src, dst, proto }))(fields(send, 0)),
      { src: n1.underlayIp, dst: n2.underlayIp, proto: 'UDP' },
      'the outer header: node to node',
    );
    assert.is(fields(send, 1).dport, '8285');
    assert.equal((({ src, dst, ttl }) => ({ src, dst, ttl }))(fields(send, 2)), { src: p1.ip, dst: p2.ip, ttl: '62' }, 'the agent decremented the TTL');

    const [receive, , , write] = reply;
    assert.equal([receive.syscall, receive.crossing], ['recvmmsg', 'kernel→user']);
    assert.ok(write.syscall === 'write' || write.syscall === 'writev');
    assert.is(write.crossing, 'user→kernel');
    assert.equal((({ src, dst }) => ({ src, dst }))(fields(write, 0)), { src: p2.ip, dst: p1.ip });
    assert.is(fields(write, 1).type, 'echo-reply (0)');
    assert.is(fields(write, 0).ttl, '61', 'pod 2 sent 64: node 2 routed, agent 2 and agent 1 decremented');

    // Node 2, drawn for people: the request arrives (RX), the reply leaves (TX).
    const text = drawn.log.text();
    const headers = text.split('\n').filter((l) => / #\d+  /.test(l));
    for (const label of ['[UDP receive]', '[validate]', '[decapsulate]', '[TUN write]', '[TUN read]', '[lease lookup]', '[encapsulate]', '[UDP send]']) {
      assert.ok(headers.some((h) => h.endsWith(label)), `node 2 shows ${label}:\n${headers.join('\n')}`);
    }
    assert.ok(headers.some((h) => /kernel → user  recvmmsg\(udp fd\)/.test(h)));
    assert.ok(headers.some((h) => /user → kernel  writev?\(tun fd\)/.test(h)));
    assert.match(text, new RegExp(`IPv4 \\(L3\\)\\s+src ${p1.ip.replace(/\./g, '\\.')}  dst ${p2.ip.replace(/\./g, '\\.')}  ttl 62`));
    assert.match(text, /ICMP \(L4\)\s+type echo-request \(8\)/);
    assert.match(text, /ICMP \(L4\)\s+type echo-reply \(0\)/);
    assert.match(text, new RegExp(`lease 10\\.244\\.1\\.0-24 → public IP ${n1.underlayIp.replace(/\./g, '\\.')}`));
    assert.match(text, /UDP \(L4\)\s+sport 8285  dport 8285/);
    assert.match(text, /^trace: 2 packet\(s\), 8 event\(s\)$/m);
  } finally {
    await Promise.all([stopChild(json), stopChild(drawn)]);
  }
});

live('/healthz and /readyz answer; /metrics counters rise by the traffic sent', async () => {
  const [n1, n2] = [cluster.node(1), cluster.node(2)];
  assert.equal(await httpGet(cluster, n1.ns, '/healthz'), { status: 200, body: 'flannel-udp is running\n' });
  assert.is((await httpGet(cluster, n1.ns, '/readyz')).status, 200);
  const scrape = async (ns: string) => {
    const r = await httpGet(cluster, ns, '/metrics');
    assert.is(r.status, 200);
    return r.body;
  };
  const [before1, before2] = [await scrape(n1.ns), await scrape(n2.ns)];
  const count = 20;
  const result = await ping(cluster, cluster.pod(1).ns, cluster.pod(2).ip, { count, intervalS: 0.05 });
  assert.is(result.received, count);
  const [after1, after2] = [await scrape(n1.ns), await scrape(n2.ns)];
  const rise = (before: string, after: string, name: string, labels: Record<string, string>) => metric(after, name, labels) - metric(before, name, labels);
  // Node 1 read the requests from its TUN and sent them; node 2 received them and wrote them. Replies the other way.
  assert.ok(rise(before1, after1, 'flannel_udp_packets_total', { direction: 'tun_to_udp' }) >= count);
  assert.ok(rise(before1, after1, 'flannel_udp_forwarded_packets_total', { direction: 'tun_to_udp' }) >= count);
  assert.ok(rise(before1, after1, 'flannel_udp_packets_total', { direction: 'udp_to_tun' }) >= count);
  assert.ok(rise(before2, after2, 'flannel_udp_packets_total', { direction: 'udp_to_tun' }) >= count);
  assert.ok(rise(before2, after2, 'flannel_udp_forwarded_packets_total', { direction: 'udp_to_tun' }) >= count);
  assert.ok(rise(before1, after1, 'flannel_udp_bytes_total', { direction: 'tun_to_udp' }) >= count * 84);
  assert.ok(rise(before1, after1, 'flannel_udp_syscalls_total', { syscall: 'sendmmsg' }) >= 1);
  assert.ok(rise(before1, after1, 'flannel_udp_batch_size_count', { syscall: 'sendmmsg' }) >= 1, 'the batch-size histogram counts');
  assert.is(metric(after1, 'flannel_udp_leases', {}), 1);
  assert.is(metric(after1, 'flannel_udp_ready', {}), 1);
  assert.is(metric(after1, 'flannel_udp_workers', {}), 1);
});

live('stats shows a drop when a pod sends to a subnet no lease covers', async () => {
  const n1 = cluster.node(1);
  const statsOf = async () => JSON.parse((await flannelUdp(cluster, n1.ns, ['stats', '--json'])).stdout) as AgentStats;
  const noLease = (s: AgentStats) => s.workers.reduce((a, w) => a + (w.drops['no-lease'] ?? 0), 0);
  const before = noLease(await statsOf());
  const probe = await udpIcmpProbe(cluster, cluster.pod(1), '10.244.77.5', 9999);
  assert.ok(probe.received, 'the pod got its ICMP net unreachable');
  const after = await statsOf();
  assert.is(noLease(after) - before, 1, 'exactly one no-lease drop');
  assert.is(after.leases.length, 1);
  assert.ok(after.ready);
  const table = (await flannelUdp(cluster, n1.ns, ['stats'])).stdout;
  assert.match(table, /drops\s+no-lease\s+\d+/);
  assert.match(table, new RegExp(`10\\.244\\.2\\.0-24 -> ${cluster.node(2).underlayIp.replace(/\./g, '\\.')}`));
});

live.run();

// --- captures: one agent per node with its own --capture dir ----------------

interface Frame {
  data: Uint8Array;
}

function readPcap(path: string): Promise<{ linkType: number; frames: Frame[] }> {
  return new Promise((resolve, reject) => {
    let linkType = -1;
    const frames: Frame[] = [];
    const parser = pcapParser.parse(path);
    parser.on('globalHeader', (h) => (linkType = h.linkLayerType));
    parser.on('packet', (p) => frames.push({ data: Uint8Array.from(p.data) }));
    parser.on('error', (e) => reject(e));
    parser.on('end', () => resolve({ linkType, frames }));
  });
}

/** ICMP packets of a capture: [src, dst, icmp type, ttl] of each inner IPv4 packet at `ipOffset(frame)`. */
function icmpOf(frames: Frame[], ipOffset: (f: Frame) => number): Array<[string, string, number, number]> {
  const out: Array<[string, string, number, number]> = [];
  for (const f of frames) {
    const at = ipOffset(f);
    if (at < 0 || ipv4Protocol(f.data, at) !== 1) continue;
    out.push([formatIPv4(ipv4Source(f.data, at)), formatIPv4(ipv4Destination(f.data, at)), f.data[at + 20], ipv4Ttl(f.data, at)]);
  }
  return out;
}

const captures = suite('--capture writes pcap files of both sides of the data plane');
let capCluster: Cluster;
let captureRoot: string;
const capAgents: CapturedChild[] = [];

captures.before(async () => {
  captureRoot = mkdtempSync(join(tmpdir(), 'flannel-udp-captures-'));
  // The cluster's own agents all get the same flags; each node needs its own directory, so start them here.
  capCluster = await createCluster({ nodes: 2, dataplane: 'none', workers: 1 });
  for (const node of capCluster.nodes()) {
    const child = capCluster.spawn(node.ns, process.execPath, [
      agentCliPath, 'up',
      '--subnet-file', node.subnetFile,
      '--leases', capCluster.leasesFile,
      '--public-ip', node.underlayIp,
      '--workers', '1',
      '--capture', join(captureRoot, `n${node.index}`),
      '--capture-rotate-mb', '16',
    ]);
    capAgents.push(child);
    await waitForLine(child, READY, 15_000);
  }
});
captures.after(async () => {
  await capCluster?.destroy();
  if (captureRoot) rmSync(captureRoot, { recursive: true, force: true });
});

captures('the ping is in tun-in and udp-out on node 1, in udp-in and tun-out on node 2, and the replies the other way', async () => {
  const [n1, n2] = [capCluster.node(1), capCluster.node(2)];
  const [p1, p2] = [capCluster.pod(1), capCluster.pod(2)];
  const count = 3;
  assert.is((await ping(capCluster, p1.ns, p2.ip, { count, intervalS: 0.1 })).received, count);
  // Stopping the agents closes (and so flushes) every capture.
  for (const child of capAgents) assert.is((await stopChild(child, 'SIGTERM', 5000)).code, 0);

  const dir1 = join(captureRoot, 'n1');
  const dir2 = join(captureRoot, 'n2');
  assert.equal(readdirSync(dir1).sort(), ['tun-in-w0.pcap', 'tun-out-w0.pcap', 'udp-in-w0.pcap', 'udp-out-w0.pcap']);
  const raw = (f: Frame) => (f.data.length >= 20 ? 0 : -1);
  const outer = createOuterUdpFields();
  const udp = (expect: { src: string; dst: string }) => (f: Frame) => {
    assert.is((f.data[12] << 8) | f.data[13], 0x0800, 'Ethernet carrying IPv4');
    assert.is(parseOuterIPv4Udp(f.data, 14, f.data.length - 14, outer), DropReason.None, 'a whole outer IPv4 + UDP datagram');
    assert.equal([formatIPv4(outer.srcAddr), formatIPv4(outer.dstAddr), outer.dstPort], [expect.src, expect.dst, 8285]);
    return outer.payloadOffset;
  };
  const requests = (ttl: number) => Array.from({ length: count }, () => [p1.ip, p2.ip, 8, ttl]);
  const replies = (ttl: number) => Array.from({ length: count }, () => [p2.ip, p1.ip, 0, ttl]);

  const tunIn1 = await readPcap(join(dir1, 'tun-in-w0.pcap'));
  assert.is(tunIn1.linkType, 101, 'LINKTYPE_RAW');
  assert.equal(icmpOf(tunIn1.frames, raw), requests(63), 'node 1 read the requests from flannel0');
  const udpOut1 = await readPcap(join(dir1, 'udp-out-w0.pcap'));
  assert.is(udpOut1.linkType, 1, 'LINKTYPE_ETHERNET');
  assert.equal(icmpOf(udpOut1.frames, udp({ src: n1.underlayIp, dst: n2.underlayIp })), requests(62), 'and sent them to node 2');
  const udpIn2 = await readPcap(join(dir2, 'udp-in-w0.pcap'));
  assert.equal(icmpOf(udpIn2.frames, udp({ src: n1.underlayIp, dst: n2.underlayIp })), requests(62), 'node 2 received them');
  const tunOut2 = await readPcap(join(dir2, 'tun-out-w0.pcap'));
  assert.equal(icmpOf(tunOut2.frames, raw), requests(61), 'and wrote them into its flannel0');

  assert.equal(icmpOf((await readPcap(join(dir2, 'tun-in-w0.pcap'))).frames, raw), replies(63));
  assert.equal(icmpOf((await readPcap(join(dir2, 'udp-out-w0.pcap'))).frames, udp({ src: n2.underlayIp, dst: n1.underlayIp })), replies(62));
  assert.equal(icmpOf((await readPcap(join(dir1, 'udp-in-w0.pcap'))).frames, udp({ src: n2.underlayIp, dst: n1.underlayIp })), replies(62));
  assert.equal(icmpOf((await readPcap(join(dir1, 'tun-out-w0.pcap'))).frames, raw), replies(61));
});

captures.run();
