// Soak: the agent for a long time under load while its leases keep changing.
//
//   npm run soak -- [--minutes 10] [--workers 2] [--churn-seconds 3]
//
// A 3-node testbed with the agent on every node. For the whole run:
// - an iperf3 TCP flow pod 1 → pod 2 (nodes whose leases never change), with
//   one report per second;
// - every ~3 s a lease edit: node 3's lease removed, then re-added, and
//   unrelated leases (10.244.100-250.0/24, public IPs nobody answers on)
//   added and removed at random; a ping from pod 1 to pod 3 follows the churn;
// - every 10 s, SIGUSR1 to every agent (counters, heartbeats, heaps, pool),
//   and each agent's resident memory (VmRSS), kept once a minute.
// It prints a summary, writes it to bench/results/soak-latest.md, and exits
// 0 when: no iperf3 interval had zero throughput, every SIGUSR1 was answered,
// every worker's heartbeat kept advancing, no worker restarted, every agent is
// still running, and no agent's RSS after the first minute grew by more than
// the bound below. Needs root (network namespaces), iperf3, ping, iproute2.
import { parseArgs } from 'node:util';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execFileSync } from 'node:child_process';
import { createCluster, type Cluster } from '../src/testbed/cluster.js';
import { isRunning, stopChild, waitForLine, type CapturedChild } from '../src/testbed/exec.js';
import { parsePing } from '../src/testbed/measure.js';
import { readAgentStats, residentBytes, dropDelta, type AgentStats } from '../test/support/agent-stats.js';
import { describeMachine } from './e2e/machine.js';

const MiB = 1024 * 1024;
/**
 * After the first minute (V8 and glibc reach their working size), an agent's
 * RSS may move by its heaps' young generations and allocator slack: a few
 * MiB. 32 MiB over the rest of the run flags a leak of well under 1 KiB per
 * lease change or ~1 byte per forwarded packet over 10 minutes.
 */
const RSS_GROWTH_BOUND = 32 * MiB;
const SAMPLE_EVERY_MS = 10_000;

const { values } = parseArgs({
  options: {
    minutes: { type: 'string', default: '10' },
    workers: { type: 'string', default: '2' },
    'churn-seconds': { type: 'string', default: '3' },
    help: { type: 'boolean', default: false },
  },
});
if (values.help) {
  process.stdout.write('npm run soak -- [--minutes N (10)] [--workers W (2)] [--churn-seconds S (3)]\n');
  process.exit(0);
}
const minutes = Number(values.minutes);
const workers = Number(values.workers);
const churnSeconds = Number(values['churn-seconds']);
if (!(minutes > 0) || !Number.isInteger(workers) || workers < 1 || !(churnSeconds > 0)) {
  process.stderr.write('soak: --minutes and --churn-seconds must be positive numbers, --workers a positive integer\n');
  process.exit(2);
}

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const resultFile = join(repoRoot, 'bench/results/soak-latest.md');

interface Interval {
  start: number;
  mbits: number;
  retransmits: number;
}

/** One per-second line of iperf3's text output (-f m), e.g. "[  5]   3.00-4.00   sec   112 MBytes   941 Mbits/sec    0   1.2 MBytes". */
function parseInterval(line: string): Interval | undefined {
  const m = /^\[\s*\d+\]\s+([\d.]+)-([\d.]+)\s+sec\s+[\d.]+\s+\w?Bytes\s+([\d.]+)\s+(\w?)bits\/sec(?:\s+(\d+))?/.exec(line);
  if (!m || /sender|receiver/.test(line)) return undefined;
  const scale = { '': 1e-6, K: 1e-3, M: 1, G: 1e3 }[m[4]] ?? 1;
  return { start: Number(m[1]), mbits: Number(m[3]) * scale, retransmits: Number(m[5] ?? 0) };
}

function writeLeases(path: string, leases: Record<string, unknown>): void {
  writeFileSync(`${path}.tmp`, JSON.stringify(leases, null, 2) + '\n');
  renameSync(`${path}.tmp`, path);
}

function fmt(n: number, digits = 1): string {
  return n.toFixed(digits);
}

async function main(): Promise<number> {
  const startedAt = new Date();
  const cluster: Cluster = await createCluster({ nodes: 3, dataplane: 'agent', workers });
  const children: CapturedChild[] = [];
  const lines: string[] = [];
  const say = (line: string) => {
    lines.push(line);
    process.stdout.write(line + '\n');
  };
  try {
    const [p1, p2, p3] = [cluster.pod(1), cluster.pod(2), cluster.pod(3)];
    const agents = [1, 2, 3].map((i) => cluster.agent(i)!);
    const pids = agents.map((a) => a.pid!);
    const original = JSON.parse(readFileSync(cluster.leasesFile, 'utf8')) as Record<string, unknown>;
    const seconds = Math.round(minutes * 60);
    say(`soak: ${minutes} min, 3 nodes, ${workers} worker(s) per agent, lease change every ~${churnSeconds} s; iperf3 TCP ${p1.ip} → ${p2.ip}`);

    const server = cluster.spawn(p2.ns, 'iperf3', ['-s', '-1', '--forceflush', '-B', p2.ip, '-p', '5401']);
    children.push(server);
    await waitForLine(server, /Server listening/, 10_000);
    const client = cluster.spawn(p1.ns, 'iperf3', ['-c', p2.ip, '-p', '5401', '-t', String(seconds), '-i', '1', '-f', 'm', '--forceflush', '--connect-timeout', '3000']);
    children.push(client);
    const intervals: Interval[] = [];
    client.log.on('line', (line: string) => {
      const iv = parseInterval(line);
      if (iv) intervals.push(iv);
    });
    // pod 1 → pod 3 follows the churn: answered while node 3 has its lease, "net unreachable" while not.
    // -c, not -w: with a deadline, iputils ping quits at the first ICMP error.
    const churnPing = cluster.spawn(p1.ns, 'ping', ['-n', '-q', '-i', '0.5', '-c', String(seconds * 2), p3.ip]);
    children.push(churnPing);

    const statsBefore = await Promise.all(agents.map((a) => readAgentStats(a)));
    const rssPerMinute: number[][] = [agents.map((_, k) => residentBytes(pids[k]))];
    const samples: AgentStats[][] = [statsBefore];
    let answered = 0;
    let unanswered = 0;
    let slowestAnswerMs = 0;
    let oldestHeartbeatMs = 0;
    const stalled: string[] = [];
    let leaseChanges = 0;
    let node3Present = true;
    const unrelated = new Map<string, unknown>();
    let rng = 0x5eed;
    const random = (n: number) => {
      rng = (Math.imul(rng, 1103515245) + 12345) >>> 0;
      return (rng >>> 8) % n;
    };

    const t0 = Date.now();
    const end = t0 + seconds * 1000;
    let nextSample = t0 + SAMPLE_EVERY_MS;
    let nextMinute = t0 + 60_000;
    let nextChurn = t0 + churnSeconds * 1000;
    while (Date.now() < end && isRunning(client)) {
      await new Promise((r) => setTimeout(r, 200));
      const now = Date.now();
      // No edit in the last 2 s, so the last one is applied before the final look.
      if (now >= nextChurn && now < end - 2000) {
        nextChurn += churnSeconds * 1000;
        node3Present = !node3Present;
        // Unrelated leases come and go: 0-2 added, 0-2 removed, at most 40 live.
        for (let k = random(3); k > 0 && unrelated.size < 40; k--) {
          const x = 100 + random(151);
          unrelated.set(`10.244.${x}.0-24`, { PublicIP: `192.0.2.${x}`, BackendType: 'udp' });
        }
        for (let k = random(3); k > 0 && unrelated.size > 0; k--) unrelated.delete([...unrelated.keys()][random(unrelated.size)]);
        const leases: Record<string, unknown> = { ...original, ...Object.fromEntries(unrelated) };
        if (!node3Present) delete leases['10.244.3.0-24'];
        writeLeases(cluster.leasesFile, leases);
        leaseChanges++;
      }
      if (now >= nextSample) {
        nextSample += SAMPLE_EVERY_MS;
        const round: AgentStats[] = [];
        for (let k = 0; k < agents.length; k++) {
          try {
            const s = await readAgentStats(agents[k], 10_000);
            answered++;
            slowestAnswerMs = Math.max(slowestAnswerMs, s.answeredMs);
            const previous = samples[samples.length - 1][k];
            for (const w of s.workers) {
              oldestHeartbeatMs = Math.max(oldestHeartbeatMs, s.at - w.counters.HeartbeatMs);
              const before = previous.workers.find((p) => p.worker === w.worker);
              if (before && w.counters.HeartbeatMs <= before.counters.HeartbeatMs) stalled.push(`agent ${k + 1} worker ${w.worker} at ${fmt((now - t0) / 1000, 0)} s`);
            }
            round.push(s);
          } catch (err) {
            unanswered++;
            say(`  agent ${k + 1} did not answer SIGUSR1: ${(err as Error).message.split('\n')[0]}`);
            round.push(samples[samples.length - 1][k]);
          }
        }
        samples.push(round);
      }
      if (now >= nextMinute) {
        nextMinute += 60_000;
        const rss = agents.map((_, k) => (isRunning(agents[k]) ? residentBytes(pids[k]) : NaN));
        rssPerMinute.push(rss);
        const iv = intervals.slice(-60);
        say(
          `  minute ${rssPerMinute.length - 1}: RSS ${rss.map((b) => fmt(b / MiB)).join(' / ')} MiB; iperf3 last minute ${fmt(iv.reduce((a, x) => a + x.mbits, 0) / Math.max(1, iv.length), 0)} Mbit/s avg, ` +
            `min ${fmt(Math.min(...iv.map((x) => x.mbits)), 0)}; ${leaseChanges} lease changes so far`,
        );
      }
    }
    // Leave the file as it started (one more lease change), then the last look.
    writeLeases(cluster.leasesFile, original);
    leaseChanges++;
    await waitForLine(client, /receiver/, 30_000).catch(() => '');
    await new Promise((r) => setTimeout(r, 1000));
    const statsAfter = await Promise.all(agents.map((a) => readAgentStats(a).catch(() => undefined)));
    const rssEnd = agents.map((_, k) => (isRunning(agents[k]) ? residentBytes(pids[k]) : NaN));
    await stopChild(churnPing, 'SIGINT', 3000);
    const churn = (() => {
      try {
        return parsePing(churnPing.log.text());
      } catch {
        return undefined;
      }
    })();

    // ---- summary ----
    const alive = agents.map((a, k) => isRunning(a) && a.pid === pids[k]);
    const mbits = intervals.map((x) => x.mbits);
    const zero = intervals.filter((x) => x.mbits === 0);
    const retransmits = intervals.reduce((a, x) => a + x.retransmits, 0);
    const restarts = statsAfter.map((s, k) => (s ? s.totals.Restarts - statsBefore[k].totals.Restarts : NaN));
    const growth = agents.map((_, k) => {
      const later = [...rssPerMinute.slice(1).map((r) => r[k]), rssEnd[k]];
      return Math.max(...later) - Math.min(...later);
    });
    const versions = statsAfter.map((s, k) => (s ? s.totals.LeaseTableVersion / workers - statsBefore[k].totals.LeaseTableVersion / workers : NaN));
    const heaps = agents.map((_, k) => samples.flatMap((round) => round[k].workers.map((w) => w.counters.HeapUsedBytes)));
    const expectedIntervals = seconds;

    const checks: Array<[string, boolean]> = [
      [`every agent still running, same pid`, alive.every(Boolean)],
      [`iperf3 reported every second (${intervals.length} of ${expectedIntervals} intervals)`, intervals.length >= expectedIntervals - 1],
      [`no iperf3 interval with zero throughput (${zero.length})`, zero.length === 0],
      [`every SIGUSR1 answered (${answered} of ${answered + unanswered})`, unanswered === 0],
      [`every worker's heartbeat advanced between samples (${stalled.length} stalls)`, stalled.length === 0],
      [`no worker restarted (${restarts.join(' / ')})`, restarts.every((n) => n === 0)],
      [`RSS after minute 1 moved < ${RSS_GROWTH_BOUND / MiB} MiB (${growth.map((g) => fmt(g / MiB)).join(' / ')} MiB)`, growth.every((g) => g < RSS_GROWTH_BOUND)],
    ];
    const ok = checks.every(([, pass]) => pass);

    const out: string[] = [];
    out.push(`# Soak: ${minutes} min under iperf3 load with lease churn`);
    out.push('');
    out.push(`Run ${startedAt.toISOString()} on ${execFileSync('uname', ['-r']).toString().trim()}, ${(await import('node:os')).cpus().length} vCPU, Node ${process.version}, source ${describeMachine().gitDescribe}; \`npm run soak -- --minutes ${minutes} --workers ${workers} --churn-seconds ${churnSeconds}\`.`);
    out.push('3-node namespace testbed, the agent (UDP backend) on every node. iperf3 TCP pod 1 → pod 2 the whole time (nodes 1 and 2: leases never change);');
    out.push(`every ~${churnSeconds} s a lease edit (node 3's lease removed / re-added, unrelated leases added / removed); ping pod 1 → pod 3 throughout.`);
    out.push('');
    out.push(`**Verdict: ${ok ? 'PASS' : 'FAIL'}**`);
    out.push('');
    for (const [what, pass] of checks) out.push(`- ${pass ? 'ok' : 'FAILED'}: ${what}`);
    out.push('');
    out.push('## Resident memory (VmRSS, MiB), once a minute');
    out.push('');
    out.push('| minute | agent 1 | agent 2 | agent 3 |');
    out.push('| ---: | ---: | ---: | ---: |');
    rssPerMinute.forEach((r, m) => out.push(`| ${m} | ${r.map((b) => fmt(b / MiB)).join(' | ')} |`));
    out.push(`| end | ${rssEnd.map((b) => fmt(b / MiB)).join(' | ')} |`);
    out.push('');
    out.push(`Growth after minute 1 (max − min): ${growth.map((g, k) => `agent ${k + 1} ${fmt(g / MiB)} MiB`).join(', ')}; first to last: ${rssEnd.map((b, k) => `${fmt((b - rssPerMinute[0][k]) / MiB)}`).join(' / ')} MiB.`);
    out.push(`Worker heaps (HeapUsedBytes, every 10 s): ${heaps.map((h, k) => `agent ${k + 1} ${fmt(Math.min(...h) / MiB)}-${fmt(Math.max(...h) / MiB)} MiB`).join(', ')}; pool slots ${statsAfter.map((s) => s?.totals.PoolSlots ?? '?').join(' / ')} (fixed).`);
    out.push('');
    out.push('## Traffic and control plane');
    out.push('');
    out.push(`- iperf3 TCP pod 1 → pod 2: ${intervals.length} one-second intervals, ${fmt(Math.min(...mbits), 0)} / ${fmt(mbits.reduce((a, b) => a + b, 0) / Math.max(1, mbits.length), 0)} / ${fmt(Math.max(...mbits), 0)} Mbit/s min / avg / max, ${zero.length} at zero, ${retransmits} retransmits.`);
    out.push(`- Lease changes written: ${leaseChanges} (the last restores the original file); lease table versions applied per agent: ${versions.map((v) => fmt(v, 0)).join(' / ')}.`);
    const unreachable = /\+(\d+) errors/.exec(churnPing.log.text())?.[1] ?? '0';
    out.push(`- ping pod 1 → pod 3 through the churn: ${churn ? `${churn.sent} sent, ${churn.received} answered, ${unreachable} answered with ICMP net unreachable (node 3's lease was present half the time)` : 'no summary'}.`);
    out.push(`- SIGUSR1: ${answered} answered, ${unanswered} not, slowest ${fmt(slowestAnswerMs, 0)} ms; oldest heartbeat seen ${fmt(oldestHeartbeatMs / 1000, 1)} s (poll timeout 1 s).`);
    out.push(`- Drops over the run: ${statsAfter.map((s, k) => `agent ${k + 1}: ${s ? Object.entries(dropDelta(statsBefore[k], s)).map(([r, n]) => `${r} ${n}`).join(', ') || 'none' : '?'}`).join('; ')}.`);
    if (stalled.length) out.push(`- Stalled heartbeats: ${stalled.slice(0, 10).join('; ')}`);
    out.push('');
    say('');
    for (const line of out) say(line);
    mkdirSync(dirname(resultFile), { recursive: true });
    writeFileSync(resultFile, out.join('\n') + '\n');
    say(`(written to ${resultFile})`);
    return ok ? 0 : 1;
  } finally {
    await Promise.all(children.map((c) => stopChild(c, 'SIGKILL', 1000).catch(() => undefined)));
    await cluster.destroy();
  }
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`soak: ${(err as Error).stack ?? err}\n`);
    process.exit(1);
  },
);
