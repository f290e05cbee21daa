// Prometheus exposition of the agent's stats (checked by a strict parser of
// the text format, and number for number against the snapshot), the batch
// size histogram's buckets, and the /healthz, /readyz, /metrics server on
// 127.0.0.1 with an ephemeral port.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { allocateStats, counterNames, snapshotWorker, workerCounters, Counter, DROPS_BASE } from '../../src/dataplane/worker-stats.js';
import { DropReason, dropReasonNames } from '../../src/encap/drop-reasons.js';
import {
  BATCH_SIZE_BUCKETS,
  BATCH_SIZE_COUNTERS,
  METRICS_CONTENT_TYPE,
  batchSizeBucket,
  batchSizeCounterNames,
  renderMetrics,
  startHealthServer,
  type AgentStats,
} from '../../src/observe/metrics.js';

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

interface Exposition {
  help: Map<string, string>;
  type: Map<string, string>;
  samples: Sample[];
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** A strict reading of the text format 0.0.4: throws on anything a Prometheus server would reject. */
function parseExposition(text: string): Exposition {
  assert.ok(text.endsWith('\n'), 'ends with a newline');
  const help = new Map<string, string>();
  const type = new Map<string, string>();
  const samples: Sample[] = [];
  const familyOf = (name: string) => {
    for (const suffix of ['_bucket', '_sum', '_count']) {
      const base = name.slice(0, -suffix.length);
      if (name.endsWith(suffix) && type.get(base) === 'histogram') return base;
    }
    return name;
  };
  const closed = new Set<string>();
  let current = '';
  for (const line of text.slice(0, -1).split('\n')) {
    let m = /^# HELP (\S+) (.*)$/.exec(line);
    if (m) {
      assert.ok(METRIC_NAME.test(m[1]), `HELP name ${m[1]}`);
      assert.not.ok(help.has(m[1]), `one HELP for ${m[1]}`);
      help.set(m[1], m[2]);
      continue;
    }
    m = /^# TYPE (\S+) (counter|gauge|histogram|summary|untyped)$/.exec(line);
    if (m) {
      assert.not.ok(type.has(m[1]), `one TYPE for ${m[1]}`);
      assert.ok(help.has(m[1]), `HELP before TYPE for ${m[1]}`);
      type.set(m[1], m[2]);
      continue;
    }
    assert.not.ok(line.startsWith('#'), `a comment line the format does not know: ${line}`);
    m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `sample line: ${line}`);
    const [, name, labelText, valueText] = m!;
    const labels: Record<string, string> = {};
    if (labelText) {
      const re = /([^=,]+)="((?:[^"\\]|\\.)*)"(,|$)/y;
      let at = 0;
      while (at < labelText.length) {
        re.lastIndex = at;
        const l = re.exec(labelText);
        assert.ok(l, `labels of ${line}`);
        assert.ok(LABEL_NAME.test(l![1]), `label name ${l![1]}`);
        assert.not.ok(l![1] in labels, `label ${l![1]} once`);
        labels[l![1]] = l![2].replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
        at = re.lastIndex;
      }
    }
    const value = valueText === '+Inf' ? Infinity : valueText === '-Inf' ? -Infinity : Number(valueText);
    assert.ok(!Number.isNaN(value) || valueText === 'NaN', `value ${valueText}`);
    const family = familyOf(name);
    assert.ok(type.has(family), `TYPE before the samples of ${family}`);
    if (family !== current) {
      assert.not.ok(closed.has(family), `the samples of ${family} are together`);
      if (current) closed.add(current);
      current = family;
    }
    if (type.get(family) === 'counter') assert.ok(name.endsWith('_total'), `counter ${name} ends in _total`);
    samples.push({ name, labels, value });
  }
  return { help, type, samples };
}

function find(e: Exposition, name: string, labels: Record<string, string>): number {
  const hits = e.samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  assert.is(hits.length, 1, `${name} ${JSON.stringify(labels)}: ${hits.length} samples`);
  return hits[0].value;
}

/** Two workers' counters, filled as a worker would, plus the histogram counters the lead adds to worker-stats.ts. */
function exampleStats(): AgentStats {
  const shared = allocateStats(2);
  const fill = (w: number, base: number) => {
    const c = workerCounters(shared, w);
    counterNames.forEach((_, i) => (c[i] = base + i));
    c[Counter.HeartbeatMs] = 1_700_000_000_500;
    c[DROPS_BASE + DropReason.NoLease] = base + 1;
    c[DROPS_BASE + DropReason.TtlExpired] = 2;
  };
  fill(0, 1000);
  fill(1, 2000);
  const workers = [snapshotWorker(shared, 0), snapshotWorker(shared, 1)];
  // sendmmsg batches of worker 0: 3 of 1, 1 of 3 (bucket ≤4), 2 of 64, 1 of 200 (+Inf).
  const send = batchSizeCounterNames('SendBatchSize');
  const receive = batchSizeCounterNames('ReceiveBatchSize');
  for (const w of workers) {
    for (const n of [...send, ...receive]) w.counters[n] = 0;
  }
  Object.assign(workers[0].counters, {
    SendBatchSizeLe1: 3,
    SendBatchSizeLe4: 1,
    SendBatchSizeLe64: 2,
    SendBatchSizeLeInf: 1,
    SendBatchSizeSum: 3 + 3 + 128 + 200,
  });
  return { node: '10.244.1.0-24', backend: 'udp', ready: true, workers, leases: ['10.244.2.0-24 -> 192.0.2.2', '10.244.3.0-24 -> 192.0.2.3'] };
}

test('batch size buckets: bounds, bucket of a size, the counter names the worker keeps', () => {
  assert.equal([...BATCH_SIZE_BUCKETS], [1, 2, 4, 8, 16, 32, 64, 128]);
  const cases: Array<[number, number]> = [
    [0, 0],
    [1, 0],
    [2, 1],
    [3, 2],
    [4, 2],
    [5, 3],
    [64, 6],
    [65, 7],
    [128, 7],
    [129, 8],
    [1024, 8],
  ];
  for (const [size, bucket] of cases) assert.is(batchSizeBucket(size), bucket, `size ${size}`);
  assert.equal(batchSizeCounterNames('SendBatchSize'), [
    'SendBatchSizeLe1',
    'SendBatchSizeLe2',
    'SendBatchSizeLe4',
    'SendBatchSizeLe8',
    'SendBatchSizeLe16',
    'SendBatchSizeLe32',
    'SendBatchSizeLe64',
    'SendBatchSizeLe128',
    'SendBatchSizeLeInf',
    'SendBatchSizeSum',
  ]);
  assert.is(BATCH_SIZE_COUNTERS.length, 20);
});

test('the exposition parses, and every number is the snapshot', () => {
  const stats = exampleStats();
  const e = parseExposition(renderMetrics(stats));
  const [w0, w1] = stats.workers;

  assert.is(find(e, 'flannel_udp_info', { node: '10.244.1.0-24', backend: 'udp' }), 1);
  assert.is(find(e, 'flannel_udp_ready', {}), 1);
  assert.is(find(e, 'flannel_udp_leases', {}), 2);
  assert.is(find(e, 'flannel_udp_workers', {}), 2);
  for (const w of [w0, w1]) {
    const worker = String(w.worker);
    const c = w.counters;
    assert.is(find(e, 'flannel_udp_packets_total', { worker, direction: 'tun_to_udp' }), c.TunReadPackets);
    assert.is(find(e, 'flannel_udp_packets_total', { worker, direction: 'udp_to_tun' }), c.UdpReceivedPackets);
    assert.is(find(e, 'flannel_udp_bytes_total', { worker, direction: 'tun_to_udp' }), c.TunReadBytes);
    assert.is(find(e, 'flannel_udp_bytes_total', { worker, direction: 'udp_to_tun' }), c.UdpReceivedBytes);
    assert.is(find(e, 'flannel_udp_forwarded_packets_total', { worker, direction: 'tun_to_udp' }), c.UdpSentPackets);
    assert.is(find(e, 'flannel_udp_forwarded_packets_total', { worker, direction: 'udp_to_tun' }), c.TunWrittenPackets);
    assert.is(find(e, 'flannel_udp_forwarded_bytes_total', { worker, direction: 'tun_to_udp' }), c.UdpSentBytes);
    assert.is(find(e, 'flannel_udp_forwarded_bytes_total', { worker, direction: 'udp_to_tun' }), c.TunWrittenBytes);
    assert.is(find(e, 'flannel_udp_syscalls_total', { worker, syscall: 'read' }), c.SyscallsTunRead);
    assert.is(find(e, 'flannel_udp_syscalls_total', { worker, syscall: 'write' }), c.SyscallsTunWrite);
    assert.is(find(e, 'flannel_udp_syscalls_total', { worker, syscall: 'writev' }), c.SyscallsTunWritev);
    assert.is(find(e, 'flannel_udp_syscalls_total', { worker, syscall: 'sendmmsg' }), c.SyscallsSend);
    assert.is(find(e, 'flannel_udp_syscalls_total', { worker, syscall: 'recvmmsg' }), c.SyscallsReceive);
    assert.is(find(e, 'flannel_udp_syscalls_total', { worker, syscall: 'poll' }), c.SyscallsPoll);
    assert.is(find(e, 'flannel_udp_batches_total', { worker, syscall: 'sendmmsg' }), c.SendBatches);
    assert.is(find(e, 'flannel_udp_batches_total', { worker, syscall: 'recvmmsg' }), c.ReceiveBatches);
    assert.is(find(e, 'flannel_udp_icmp_sent_total', { worker }), c.IcmpSent);
    assert.is(find(e, 'flannel_udp_worker_restarts_total', { worker }), c.Restarts);
    assert.is(find(e, 'flannel_udp_pool_slots', { worker }), c.PoolSlots);
    assert.is(find(e, 'flannel_udp_worker_heap_bytes', { worker }), c.HeapUsedBytes);
    assert.is(find(e, 'flannel_udp_worker_heartbeat_timestamp_seconds', { worker }), 1_700_000_000.5);
    assert.is(find(e, 'flannel_udp_drops_total', { worker, reason: 'no-lease' }), w.drops['no-lease']);
    assert.is(find(e, 'flannel_udp_drops_total', { worker, reason: 'ttl-expired' }), 2);
    // Every reason is there, 0 included, so rate() works from the first scrape.
    for (const [code, reason] of dropReasonNames.entries()) {
      if (code === 0 || reason.startsWith('unused-')) continue;
      find(e, 'flannel_udp_drops_total', { worker, reason });
    }
  }
  assert.is(e.type.get('flannel_udp_packets_total'), 'counter');
  assert.is(e.type.get('flannel_udp_pool_slots'), 'gauge');
  assert.is(e.type.get('flannel_udp_leases'), 'gauge');
  assert.is(e.type.get('flannel_udp_batch_size'), 'histogram');
  for (const [name, text] of e.help) assert.ok(text.length > 10, `HELP of ${name}`);
});

test('every counter of a worker snapshot appears, those added later under a generic name', () => {
  const stats = exampleStats();
  stats.workers[0].counters.SomethingNew = 7;
  const text = renderMetrics(stats);
  const e = parseExposition(text);
  assert.is(find(e, 'flannel_udp_something_new_total', { worker: '0' }), 7);
  // Every counter value of worker 1 is visible somewhere (values are distinct by construction).
  const values = new Set(e.samples.filter((s) => s.labels.worker === '1').map((s) => s.value));
  for (const name of counterNames) {
    if (name === 'HeartbeatMs') continue; // in seconds
    assert.ok(values.has(stats.workers[1].counters[name]), `${name} = ${stats.workers[1].counters[name]} is exported`);
  }
});

test('the batch-size histogram: cumulative buckets, +Inf = count, sum', () => {
  const e = parseExposition(renderMetrics(exampleStats()));
  const bucket = (le: string) => find(e, 'flannel_udp_batch_size_bucket', { worker: '0', syscall: 'sendmmsg', le });
  assert.equal(
    ['1', '2', '4', '8', '16', '32', '64', '128', '+Inf'].map(bucket),
    [3, 3, 4, 4, 4, 4, 6, 6, 7],
  );
  assert.is(find(e, 'flannel_udp_batch_size_count', { worker: '0', syscall: 'sendmmsg' }), 7);
  assert.is(find(e, 'flannel_udp_batch_size_sum', { worker: '0', syscall: 'sendmmsg' }), 334);
  assert.is(find(e, 'flannel_udp_batch_size_count', { worker: '1', syscall: 'recvmmsg' }), 0);
  // Without the worker's histogram counters (not wired yet), no histogram rather than made-up zeros.
  const bare = exampleStats();
  for (const w of bare.workers) for (const n of BATCH_SIZE_COUNTERS) delete w.counters[n];
  const e2 = parseExposition(renderMetrics(bare));
  assert.not.ok(e2.type.has('flannel_udp_batch_size'));
  assert.not.ok(e2.samples.some((s) => s.name.includes('batch_size')));
});

test('label values are escaped; a not-ready agent with no workers still exposes valid text', () => {
  const e = parseExposition(renderMetrics({ node: 'a"b\\c\nd', backend: 'vxlan', ready: false, workers: [], leases: [] }));
  assert.is(find(e, 'flannel_udp_info', { backend: 'vxlan' }), 1);
  assert.is(e.samples.find((s) => s.name === 'flannel_udp_info')!.labels.node, 'a"b\\c\nd');
  assert.is(find(e, 'flannel_udp_ready', {}), 0);
  assert.is(find(e, 'flannel_udp_workers', {}), 0);
});

test('the receive spread: 1 for inner-flow, 0 for the kernel hash (a fallback included), absent when the agent has no data plane', () => {
  const spread = (receiveSpread?: string) =>
    parseExposition(renderMetrics({ node: 'n', backend: 'udp', ready: true, workers: [], leases: [], receiveSpread })).samples.find(
      (s) => s.name === 'flannel_udp_receive_spread_inner_flow',
    )?.value;
  assert.is(spread('inner-flow'), 1);
  assert.is(spread('kernel-hash (the kernel refused the program: Invalid argument)'), 0);
  assert.is(spread(undefined), undefined);
});

async function get(port: number, path: string, method = 'GET'): Promise<{ status: number; type: string | null; body: string }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { method });
  return { status: res.status, type: res.headers.get('content-type'), body: await res.text() };
}

test('health server: /healthz 200, /readyz 503 then 200, /metrics, 404 and 405; closed after close()', async () => {
  let ready = false;
  let stats = exampleStats();
  const logs: string[] = [];
  const server = await startHealthServer({ ip: '127.0.0.1', port: 0, snapshot: () => stats, ready: () => ready, log: (l) => logs.push(l) });
  try {
    assert.ok(server.port > 0);
    assert.match(logs.join('\n'), new RegExp(`http://127\\.0\\.0\\.1:${server.port}`));
    const health = await get(server.port, '/healthz');
    assert.is(health.status, 200);
    assert.is(health.body, 'flannel-udp is running\n');
    assert.is((await get(server.port, '/readyz')).status, 503);
    ready = true;
    assert.is((await get(server.port, '/readyz')).status, 200);
    const metrics = await get(server.port, '/metrics');
    assert.is(metrics.status, 200);
    assert.is(metrics.type, METRICS_CONTENT_TYPE);
    assert.is(metrics.body, renderMetrics(stats));
    // Counters move between scrapes.
    stats = exampleStats();
    stats.workers[0].counters.TunReadPackets += 5;
    const again = parseExposition((await get(server.port, '/metrics?x=1')).body);
    assert.is(find(again, 'flannel_udp_packets_total', { worker: '0', direction: 'tun_to_udp' }), 1005);
    assert.is((await get(server.port, '/nope')).status, 404);
    assert.is((await get(server.port, '/metrics', 'POST')).status, 405);
    const head = await get(server.port, '/healthz', 'HEAD');
    assert.is(head.status, 200);
    assert.is(head.body, '');
    // A snapshot that throws is a 500, not a crash.
    stats = undefined as unknown as AgentStats;
    assert.is((await get(server.port, '/metrics')).status, 500);
  } finally {
    await server.close();
  }
  assert.not.ok(await fetch(`http://127.0.0.1:${server.port}/healthz`).then(() => true, () => false), 'closed');
});

test('health server: a port another program holds is a clear error', async () => {
  // Another program's listener, without SO_REUSEPORT: the health server's own
  // reusePort (for a hand-over between two agents, Node >= 22.12) cannot share it.
  const other = createServer();
  await new Promise<void>((resolve) => other.listen(0, '127.0.0.1', resolve));
  const port = (other.address() as AddressInfo).port;
  try {
    await startHealthServer({ ip: '127.0.0.1', port, snapshot: exampleStats, ready: () => true, log: () => undefined }).then(
      (server) => server.close().then(() => assert.unreachable('a server on a port another program holds')),
      (err: Error) => assert.match(err.message, new RegExp(`healthz: cannot listen on 127\\.0\\.0\\.1:${port}: the port is in use`)),
    );
  } finally {
    await new Promise((resolve) => other.close(resolve));
  }
});

test.run();
