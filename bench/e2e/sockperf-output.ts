// What `sockperf ping-pong --full-rtt` prints at its end, turned into
// numbers: the round-trip percentiles (µs) of the valid part of the run (the
// warm-up is left out by sockperf itself), the observation count behind them,
// and how many requests went unanswered.
//
// sockperf's UDP ping-pong waits for each reply before it sends the next
// request, with no timeout: one lost datagram stalls the rest of the run, and
// the figures then cover only the part before the loss. `unanswered` says so.

export interface SockperfLatency {
  /** Round trips measured (the valid duration, warm-up excluded). */
  observations: number;
  p50Us: number;
  p99Us: number;
  p999Us: number;
  maxUs: number;
  minUs: number;
  avgUs: number;
}

export interface SockperfRun {
  /** Requests sent and replies received over the whole run, warm-up included. */
  sent: number;
  received: number;
  /** sent - received: lost, or (one at most) still in flight when the run's timer ended. */
  unanswered: number;
  /** The part of the run the figures cover. */
  validSeconds: number;
  /** Absent when sockperf found no valid observation (it stalled during the warm-up). */
  latency?: SockperfLatency;
}

// sockperf colours some lines even into a pipe.
const ANSI = /\x1b\[[0-9;]*m/g;

export function parseSockperf(output: string): SockperfRun {
  const text = output.replace(ANSI, '');
  const number = (pattern: RegExp, what: string): number => {
    const m = pattern.exec(text);
    if (!m) throw new Error(`sockperf output has no ${what}:\n${text.slice(-1500)}`);
    return Number(m[1]);
  };
  const total = /\[Total Run\][^\n]*SentMessages=(\d+); ReceivedMessages=(\d+)/.exec(text);
  if (!total) throw new Error(`sockperf output has no [Total Run] line:\n${text.slice(-1500)}`);
  const sent = Number(total[1]);
  const received = Number(total[2]);
  const run: SockperfRun = { sent, received, unanswered: sent - received, validSeconds: 0 };
  if (/No valid observations found/.test(text)) return run;
  run.validSeconds = number(/\[Valid Duration\] RunTime=([\d.]+) sec/, 'valid duration');
  if (!/avg-rtt=/.test(text)) {
    // Without --full-rtt sockperf reports half round trips ("avg-lat"); these figures are round trips.
    throw new Error(`sockperf was not run with --full-rtt (no avg-rtt in its output):\n${text.slice(-1500)}`);
  }
  const percentile = (p: string) => number(new RegExp(`percentile ${p.replace('.', '\\.')} =\\s*([\\d.]+)`), `percentile ${p}`);
  run.latency = {
    observations: number(/Total (\d+) observations/, 'observation count'),
    p50Us: percentile('50.000'),
    p99Us: percentile('99.000'),
    p999Us: percentile('99.900'),
    maxUs: number(/<MAX> observation =\s*([\d.]+)/, 'maximum'),
    minUs: number(/<MIN> observation =\s*([\d.]+)/, 'minimum'),
    avgUs: number(/avg-rtt=([\d.]+)/, 'average'),
  };
  return run;
}
