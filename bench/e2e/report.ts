// The results as text: a table for the terminal and a Markdown document.
// Metrics are rows and data planes columns, so the table stays narrow
// however many planes there are.
import { METRICS, type MetricSpec } from './metrics.js';
import type { BenchResults } from './results.js';
import type { Spread } from './summary.js';
import type { TargetOutcome } from './targets.js';
import { LOSSLESS_PCT } from './udp-sweep.js';

function num(value: number, decimals: number): string {
  return Number.isFinite(value) ? value.toFixed(decimals) : '—';
}

/** The median, with the range across repetitions when there was more than one. */
export function formatSpread(s: Spread | undefined, m: MetricSpec): string {
  if (!s) return '—';
  if (s.n === 1) return num(s.median, m.decimals);
  return `${num(s.median, m.decimals)} (${num(s.min, m.decimals)}–${num(s.max, m.decimals)})`;
}

function rowLabel(m: MetricSpec): string {
  const unit = m.unit ? `, ${m.unit}` : '';
  const way = m.better === 'higher' ? ' ↑' : m.better === 'lower' ? ' ↓' : '';
  return `${m.header}${unit}${way}`;
}

function figureRows(results: BenchResults, table: MetricSpec['table']): { header: string[]; rows: string[][] } {
  // The issue's quoted C proxy figures only when the real one was not measured in this run (--cproxy).
  const quoted = !results.planes.some((p) => p.id === 'cproxy');
  const header = ['', ...results.planes.map((p) => p.short), ...(quoted ? ['C proxy (ref.)'] : [])];
  const rows = METRICS.filter((m) => m.table === table).map((m) => [
    rowLabel(m),
    ...results.planes.map((p) => formatSpread(results.summaries[p.id]?.[m.key], m)),
    ...(quoted ? [results.reference.figures[m.key] === undefined ? '' : `${results.reference.figures[m.key]}*`] : []),
  ]);
  return { header, rows };
}

function ratioCells(t: TargetOutcome): string[] {
  const m = METRICS.find((x) => x.key === t.spec.metric)!;
  const values = t.verdict === 'n/a' && t.why ? t.why : `${num(t.numeratorValue!, m.decimals)} / ${num(t.denominatorValue!, m.decimals)}`;
  return [t.spec.name, values, t.ratio === undefined ? '—' : t.ratio.toFixed(2), `${t.spec.op} ${t.spec.limit}`, t.verdict];
}

const RATIO_HEADER = ['target (medians of this run)', 'values', 'ratio', 'target', 'verdict'];

function textTable(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ').trimEnd();
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

function markdownTable(header: string[], rows: string[][]): string {
  const esc = (c: string) => c.replace(/\|/g, '\\|');
  return [
    `| ${header.map(esc).join(' | ')} |`,
    `|${header.map((_, i) => (i === 0 ? ' --- ' : ' ---: ')).join('|')}|`,
    ...rows.map((r) => `| ${r.map(esc).join(' | ')} |`),
  ].join('\n');
}

function planeKey(results: BenchResults): string[] {
  return results.planes.map((p) => `${p.short}: ${p.label}`);
}

function failures(results: BenchResults): string[] {
  return results.reps.filter((r) => r.error).map((r) => `${r.planeId} rep ${r.rep}: ${r.error!.split('\n')[0]}`);
}

function repsLine(results: BenchResults): string {
  return `${results.plan.reps} repetition(s) per plane, median (min–max)`;
}

function baselineLine(results: BenchResults): string {
  return results.baseline
    ? `"before" = ${results.baseline.file} (${results.baseline.describe}): across runs, not side by side`
    : '"before": no earlier run found, so that target is n/a';
}

export function consoleReport(results: BenchResults): string {
  const throughput = figureRows(results, 'throughput');
  const latency = figureRows(results, 'latency');
  return [
    `flannel-udp end-to-end benchmark (${results.mode}${results.plan.latencyOnly ? ', latency only' : ''}), ${repsLine(results)}; ↑ higher is better, ↓ lower is better`,
    '',
    textTable(throughput.header, throughput.rows),
    '',
    `Latency: ping, and sockperf ping-pong round trips (${results.plan.rrMessageBytes} B, ${results.plan.rrMessagesPerSecond}/s, ${results.plan.rrSeconds} s per run), idle and under one iperf3 TCP stream`,
    textTable(latency.header, latency.rows),
    `* ${results.reference.label}`,
    '',
    textTable(RATIO_HEADER, results.targets.map(ratioCells)),
    baselineLine(results),
    '',
    ...planeKey(results),
    ...failures(results).map((f) => `FAILED ${f}`),
  ].join('\n');
}

function sweepLines(results: BenchResults): string[] {
  const lines: string[] = [];
  for (const plane of results.planes) {
    for (const rep of results.reps.filter((r) => r.planeId === plane.id && !r.error)) {
      const sweep = rep.detail.udpSweep as
        | { points: { targetPps: number; sentPps: number; receivedPps: number; lossPct: number; receiverSocketDropPct: number }[]; stoppedEarly?: string }
        | undefined;
      if (!sweep) continue;
      const points = sweep.points
        .map((p) => `${p.targetPps / 1000}k: sent ${(p.sentPps / 1000).toFixed(1)}k, rx ${(p.receivedPps / 1000).toFixed(1)}k, loss ${p.lossPct.toFixed(1)} % (${p.receiverSocketDropPct.toFixed(1)} % at the receiving socket)`)
        .join('; ');
      lines.push(`- ${plane.short}, rep ${rep.rep}: ${points}${sweep.stoppedEarly ? `; stopped: ${sweep.stoppedEarly}` : ''}`);
    }
  }
  return lines;
}

export function markdownReport(results: BenchResults): string {
  const throughput = figureRows(results, 'throughput');
  const latency = figureRows(results, 'latency');
  const m = results.machine;
  const p = results.plan;
  const fail = failures(results);
  return [
    '# flannel-udp end-to-end benchmark',
    '',
    `${results.mode === 'quick' ? '**Quick smoke run** (`--quick`): short runs, one repetition; not for conclusions. ' : ''}` +
      `${m.date}, ${results.durationS.toFixed(0)} s. Kernel ${m.kernel}, ${m.cpuCount} × ${m.cpuModel}, ${m.memoryGiB} GiB, Node ${m.node}, ${m.iperf3}, ${m.ping}, ${m.sockperf ?? 'sockperf ?'}, ${m.python3 ?? 'python3 ?'}, source ${m.gitDescribe}. ` +
      `Load average when the run began: ${m.loadAverageAtStart.toFixed(2)} (other work on this machine shares the CPUs).`,
    '',
    `Testbed: 2 nodes in network namespaces joined by a veth/bridge underlay with MTU 1500, one pod per node; traffic from pod 1 to pod 2. ` +
      `A fresh testbed per plane and repetition; repetitions are interleaved across planes so slow drifts in the machine's load hit every plane alike.`,
    '',
    `${repsLine(results)}. ↑ higher is better, ↓ lower is better.`,
    '',
    ...(results.plan.latencyOnly ? ['Run with `--latency-only`: no TCP 4-stream run and no UDP sweep.', ''] : []),
    markdownTable(throughput.header, throughput.rows),
    '',
    '## Latency',
    '',
    markdownTable(latency.header, latency.rows),
    '',
    results.planes.some((p) => p.id === 'cproxy')
      ? "**C proxy**: flannel's own C proxy, measured in this run (--cproxy)."
      : `\\* ${results.reference.label}. flannel's own C proxy was not measured in this run (npm run bench -- --cproxy PATH measures it); the latency reference measured in this run is the ` +
        '**reference fwd** column, an independent forwarder with the C proxy\'s structure (bench/reference/udp_proxy.py).',
    '',
    '## Targets',
    '',
    markdownTable(RATIO_HEADER, results.targets.map(ratioCells)),
    '',
    baselineLine(results),
    '',
    '## Data planes',
    '',
    ...planeKey(results).map((l) => `- ${l}`),
    '',
    '## How each figure is taken',
    '',
    `- **TCP**: iperf3, ${p.tcpSeconds} s measured after ${p.tcpOmitSeconds} s of warm-up that iperf3 leaves out (\`-O ${p.tcpOmitSeconds}\`); receiver's count.`,
    `- **UDP 64 B**: iperf3 \`-u -l ${p.udpPacketLen}\` at target rates ${p.udpRatesPps.map((r) => `${r / 1000}k`).join(', ')} pps, ${p.udpSecondsPerRate} s each, ` +
      `split over ${p.udpParallel} iperf3 pairs side by side (one single-threaded iperf3 cannot offer or absorb enough on this machine). ` +
      `The sweep stops once loss reaches 5 % or the senders fall short of the target, then tries ${p.udpRefineSteps} rate(s) halfway between the highest lossless and the lowest lossy target. "lossless" is the received rate at the highest target with < ${LOSSLESS_PCT} % end-to-end loss; "path only" the same when drops at the receiving iperf3's full socket buffer (UDP RcvbufErrors in the server pod) are not counted, since those say iperf3 read too slowly, not that the path lost packets; "peak rx" the most received at any target.`,
    `- **ping**: ${p.pingCount} pings at ${p.pingIntervalS} s interval (allowed as root).`,
    `- **RR (request/response)**: \`sockperf ping-pong --full-rtt\` from pod 1 to a \`sockperf server\` in pod 2, over UDP and over TCP: ` +
      `${p.rrMessageBytes}-byte requests, each answered before the next, paced at ${p.rrMessagesPerSecond} per second (so the path goes quiet between requests, as for RPCs), ` +
      `${p.rrSeconds} s per run of which sockperf leaves its first 0.4 s of warm-up out; percentiles of the full round trip in µs. ` +
      `"under TCP stream": the same runs while one iperf3 TCP stream goes from pod 1 to pod 2 through the same nodes (started first, measured from its first one-second report on); ` +
      `"TCP stream during loaded RR" is what that stream moved meanwhile (pod 2's eth0 rx), since a plane that carries less of it is also less loaded. ` +
      `sockperf's UDP ping-pong waits for a lost reply forever, so a run that lost one covers only the time before the loss: it is run again (3 runs at most) and counted in "RR runs stalled by a lost reply".`,
    `- **machine CPU**: busy time of the whole machine (user+nice+system+irq+softirq from /proc/stat) over the TCP 1-stream run, ` +
      `divided by the GB that entered the server pod (its eth0 rx bytes, warm-up included). ` +
      `It includes iperf3 itself on both ends, so it compares planes rather than pricing one; and when a plane saturates every CPU it comes to (CPUs × seconds) ÷ GB, the inverse of its throughput.`,
    `- **busy before traffic**: CPUs busy during ${p.idleBaselineSeconds} s with the testbed up and no traffic of ours, just before the measurements. ` +
      `Not subtracted from anything: well above 0 it means other work shared the machine and disturbed that repetition.`,
    `- **agent CPU**: utime+stime of both agent processes (all worker threads) from /proc/<pid>/stat over the same run, per the same GB.`,
    `- **syscalls/pkt**: both agents' system calls (every \`Syscalls*\` SIGUSR1 counter: TUN read/write, sendmmsg, recvmmsg, poll) over the whole repetition, per datagram sent through the tunnel.`,
    `- **heap**: sum of the agents' worker V8 heaps (sampled once a second) before the first and after the last measurement.`,
    '',
    '## UDP sweeps',
    '',
    ...sweepLines(results),
    ...(fail.length ? ['', '## Failures', '', ...fail.map((f) => `- ${f}`)] : []),
    '',
  ].join('\n');
}
