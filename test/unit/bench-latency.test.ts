// The benchmark's latency bookkeeping, without root: sockperf's output read
// into numbers, a stalled run told from a slow one, and the targets that
// divide one figure of a plane by another or by an earlier run's.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseSockperf } from '../../bench/e2e/sockperf-output.js';
import { stalled } from '../../bench/e2e/latency.js';
import { evaluateTargets, TARGETS } from '../../bench/e2e/targets.js';
import type { PlaneSummary } from '../../bench/e2e/summary.js';
import { SOCKPERF_FULL_RTT, SOCKPERF_HALF_RTT, SOCKPERF_STALLED_IN_WARMUP } from '../support/sockperf-outputs.js';

test('sockperf --full-rtt output: round-trip percentiles, counts and the valid duration', () => {
  const run = parseSockperf(SOCKPERF_FULL_RTT);
  assert.equal(
    { sent: run.sent, received: run.received, unanswered: run.unanswered, validSeconds: run.validSeconds },
    { sent: 1001, received: 1000, unanswered: 1, validSeconds: 0.548 },
  );
  assert.equal(run.latency, {
    observations: 549,
    p50Us: 13.7,
    p99Us: 1457.057,
    p999Us: 1983.5,
    maxUs: 3343.003,
    minUs: 11.467,
    avgUs: 56.845,
  });
});

test('half round trips (no --full-rtt) are refused rather than reported as round trips', () => {
  assert.throws(() => parseSockperf(SOCKPERF_HALF_RTT), /--full-rtt/);
});

test('a run with no valid observation has counts and no latency; output that is not sockperf is an error', () => {
  const run = parseSockperf(SOCKPERF_STALLED_IN_WARMUP);
  assert.equal(run, { sent: 151, received: 150, unanswered: 1, validSeconds: 0 });
  assert.throws(() => parseSockperf('sockperf: ERROR: connect failed'), /Total Run/);
});

test('stalled: a lost reply that cut the run short, not a request in flight at the end nor a slow path', () => {
  const plan = { seconds: 3, messagesPerSecond: 1000, messageBytes: 64 };
  const latency = parseSockperf(SOCKPERF_FULL_RTT).latency!;
  // One in flight at the timer, full duration: fine.
  assert.not.ok(stalled({ sent: 3001, received: 3000, unanswered: 1, validSeconds: 2.55, latency }, plan));
  // Slow round trips (fewer sent), full duration: fine.
  assert.not.ok(stalled({ sent: 1348, received: 1347, unanswered: 1, validSeconds: 2.546, latency }, plan));
  // Stopped counting after 1.08 of 2.55 s: a lost reply.
  assert.ok(stalled({ sent: 1458, received: 1457, unanswered: 1, validSeconds: 1.079, latency }, plan));
  // Nothing valid at all.
  assert.ok(stalled(parseSockperf(SOCKPERF_STALLED_IN_WARMUP), plan));
});

const spread = (median: number) => ({ min: median, median, max: median, n: 1 });

test('targets: across planes, loaded ÷ idle of one plane, and against a baseline run', () => {
  const summaries: Record<string, PlaneSummary> = {
    reference: { pingAvgMs: spread(0.5) },
    'kernel-vxlan': { pingAvgMs: spread(0.1), tcp1Gbps: spread(10) },
    agent: { pingAvgMs: spread(0.3), udpRrP99Us: spread(200), udpRrLoadedP99Us: spread(900), tcp1Gbps: spread(4), udpLosslessKpps: spread(90) },
  };
  const byName = (outcomes: ReturnType<typeof evaluateTargets>, start: string) => outcomes.find((o) => o.spec.name.startsWith(start))!;

  const withBaseline = evaluateTargets(summaries, { file: 'earlier.json', describe: 'earlier', summaries: { agent: { udpLosslessKpps: spread(100) } } });
  const vsReference = byName(withBaseline, 'agent UDP mode ping RTT (avg) ÷ reference');
  assert.is(vsReference.ratio, 0.6);
  assert.is(vsReference.verdict, 'met');
  assert.is(byName(withBaseline, 'agent UDP mode ping RTT (avg) ÷ kernel vxlan').verdict, 'NOT met');
  const loadedUdp = byName(withBaseline, 'agent UDP mode UDP RR p99 under');
  assert.equal([loadedUdp.numeratorValue, loadedUdp.denominatorValue, loadedUdp.ratio, loadedUdp.verdict], [900, 200, 4.5, 'NOT met']);
  const tcpRr = byName(withBaseline, 'agent UDP mode TCP RR p99 under');
  assert.is(tcpRr.verdict, 'n/a');
  assert.match(tcpRr.why!, /TCP RR p99 under TCP stream/);
  const before = byName(withBaseline, 'agent UDP 64 B lossless rate ÷ the baseline');
  assert.equal([before.ratio, before.verdict], [0.9, 'NOT met']);

  const noBaseline = byName(evaluateTargets(summaries), 'agent UDP 64 B lossless rate ÷ the baseline');
  assert.is(noBaseline.verdict, 'n/a');
  assert.match(noBaseline.why!, /no baseline/);
});

test('no latency target is measured against the agent itself in another configuration (flannel\'s C proxy, the reference forwarder and kernel vxlan are not the agent)', () => {
  for (const t of TARGETS.filter((t) => /RR|ping/.test(t.name))) {
    if (t.numerator !== t.denominator) assert.ok(['reference', 'kernel-vxlan', 'cproxy'].includes(t.denominator), t.name);
  }
});

test.run();
