// What an agent restart costs the pods: pings 10 ms apart from a pod on
// node 1 to a pod on node 2 while node 1's agent is restarted, counted as
// packets (sent, answered) rather than timed. Used by the integration test
// (test/integration/agent-restart.test.ts) and bench/restart-gap.ts.
import type { Cluster } from './cluster.js';
import { waitForLine, stopChild } from './exec.js';
import { parsePing } from './measure.js';

/** sigterm / sigkill: the old agent goes, then a new one starts. handover: the new one starts first (maxSurge). */
export type RestartKind = 'sigterm' | 'sigkill' | 'handover';

export interface RestartGap {
  kind: RestartKind;
  sent: number;
  received: number;
  lost: number;
  /** The sequence numbers that went unanswered. */
  missing: number[];
  /** The longest run of consecutive unanswered sequence numbers, times the interval: the gap as the pods saw it. */
  longestGapMs: number;
  rttMaxMs: number;
}

export interface RestartGapOptions {
  count?: number;
  intervalMs?: number;
  /** The restart begins after this many replies. */
  restartAfter?: number;
}

/** Restarts node `node`'s agent once, mid-stream, and counts the pings pod(1) → pod(2) that went unanswered. */
export async function measureRestartGap(cluster: Cluster, kind: RestartKind, opts: RestartGapOptions = {}, node = 1): Promise<RestartGap> {
  const count = opts.count ?? 500;
  const intervalMs = opts.intervalMs ?? 10;
  const restartAfter = opts.restartAfter ?? 50;
  const from = cluster.pod(1);
  const to = cluster.pod(2);
  // -W: a reply may come late (queued in the TUN or the socket while a new agent warms up) and still count.
  const deadlineS = Math.ceil((count * intervalMs) / 1000) + 20;
  // Warm up first: on a loaded machine a pod's first neighbour lookup of its gateway can fail for a while
  // ("Destination Host Unreachable" from the pod itself), which is not what is measured here.
  let warm = 0;
  for (let attempt = 0; attempt < 30 && warm < 5; attempt++) {
    const r = await cluster.exec(from.ns, 'ping', ['-n', '-c', '5', '-i', '0.05', '-W', '2', to.ip], { allowFailure: true, timeoutMs: 30_000 });
    warm = Number(/(\d+) received/.exec(r.stdout)?.[1] ?? 0);
  }
  if (warm < 5) throw new Error(`pod ${from.ip} cannot reach ${to.ip} steadily before the restart`);
  // No -w: with a deadline, -c counts replies and ping would send more than `count` to make up for losses.
  const pinger = cluster.spawn(from.ns, 'ping', ['-n', '-c', String(count), '-i', String(intervalMs / 1000), '-W', '5', to.ip]);
  try {
    await waitForLine(pinger, new RegExp(`bytes from .*icmp_seq=${restartAfter} `), 30_000);
    if (kind === 'handover') {
      const exit = await cluster.handOverAgent(node);
      if (exit.code !== 0) throw new Error(`the old agent exited with ${exit.code ?? exit.signal} after the hand-over`);
    } else {
      await cluster.stopAgent(node, kind === 'sigterm' ? 'SIGTERM' : 'SIGKILL');
      await cluster.startAgent(node);
    }
    await waitForLine(pinger, /packets transmitted/, (deadlineS + 10) * 1000);
  } finally {
    await stopChild(pinger, 'SIGINT', 2000);
  }
  const text = pinger.log.text();
  const result = parsePing(text);
  const answered = new Set<number>();
  for (const m of text.matchAll(/bytes from .*icmp_seq=(\d+) /g)) answered.add(Number(m[1]));
  let longest = 0;
  let run = 0;
  const missing: number[] = [];
  for (let seq = 1; seq <= result.sent; seq++) {
    if (!answered.has(seq)) missing.push(seq);
    run = answered.has(seq) ? 0 : run + 1;
    longest = Math.max(longest, run);
  }
  return { kind, sent: result.sent, received: result.received, lost: result.sent - result.received, missing, longestGapMs: longest * intervalMs, rttMaxMs: result.rttMaxMs };
}
