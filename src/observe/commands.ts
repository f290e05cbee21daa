// `flannel-udp stats` and `flannel-udp trace`: clients of a running agent's
// control socket (control-socket.ts). They run in the agent's network
// namespace, as root, like any tool that looks at a node's network.
import { CommandLineError, parseFlags, renderFlagHelp, type FlagGroup } from '../cli-flags.js';
import { controlRequest, controlSocketPath, type TraceDone } from './control-socket.js';
import type { AgentStats } from './metrics.js';
import { renderStats } from './stats-render.js';
import { DEFAULT_TRACE_LIMIT, traceEventFromJson, traceEventToJson } from './trace-event.js';
import { compileTraceFilter, TRACE_FILTER_HELP } from './trace-filter.js';
import { renderTraceEvent } from './trace-render.js';

export const STATS_FLAGS: readonly FlagGroup[] = [
  {
    title: '',
    flags: [
      { name: 'tun', type: 'string', value: 'NAME', default: 'flannel0', help: "the agent's TUN device" },
      { name: 'watch', type: 'optional', value: 'SECONDS', help: 'refresh every SECONDS (default 2) until Ctrl-C, with a per-second column' },
      { name: 'json', type: 'boolean', help: "print the agent's answer as one JSON line (AgentStats)" },
      { name: 'socket', type: 'string', value: 'PATH', default: '/run/flannel-udp/<tun>.sock', help: 'the control socket' },
      { name: 'help', type: 'boolean', short: 'h', help: 'this text' },
    ],
  },
];

export const STATS_HELP = `Usage: flannel-udp stats [--tun NAME] [--watch [SECONDS]] [--json] [--socket PATH]

Asks the agent running on TUN NAME (in this network namespace) for its
counters and prints, per worker and in total: packets and bytes each way,
batches and packets per batch, syscalls per packet (each one a user/kernel
crossing), drops by reason, pool slots, heap, restarts; then the lease table.

${renderFlagHelp(STATS_FLAGS)}`;

export const TRACE_FLAGS: readonly FlagGroup[] = [
  {
    title: '',
    flags: [
      { name: 'tun', type: 'string', value: 'NAME', default: 'flannel0', help: "the agent's TUN device" },
      { name: 'filter', type: 'string', value: 'EXPR', help: TRACE_FILTER_HELP },
      { name: 'limit', type: 'string', value: 'N', default: String(DEFAULT_TRACE_LIMIT), help: 'packets to follow' },
      { name: 'json', type: 'boolean', help: 'one JSON line per event (headerBytes in hex) instead of drawings' },
      { name: 'socket', type: 'string', value: 'PATH', default: '/run/flannel-udp/<tun>.sock', help: 'the control socket' },
      { name: 'help', type: 'boolean', short: 'h', help: 'this text' },
    ],
  },
];

export const TRACE_HELP = `Usage: flannel-udp trace [--tun NAME] [--filter EXPR] [--limit N] [--json] [--socket PATH]

Attaches to the agent running on TUN NAME and shows every stage that traced
packets pass, as they pass them: which syscall carried the packet across the
user/kernel boundary and which way, and the layers of the packet at that
point with their field values. Ends after N packets or on Ctrl-C.

${renderFlagHelp(TRACE_FLAGS)}`;

export { CommandLineError };

function useColor(stream: NodeJS.WriteStream): boolean {
  return stream.isTTY === true && process.env.NO_COLOR === undefined && process.env.TERM !== 'dumb';
}

function write(text: string): Promise<void> {
  return new Promise((resolve) => (process.stdout.write(text) ? resolve() : process.stdout.once('drain', () => resolve())));
}

/** Ctrl-C (and SIGTERM) abort the request instead of killing the process mid-line. */
function interruptSignal(): { signal: AbortSignal; dispose(): void } {
  const controller = new AbortController();
  const abort = () => controller.abort();
  process.once('SIGINT', abort);
  process.once('SIGTERM', abort);
  return {
    signal: controller.signal,
    dispose: () => {
      process.off('SIGINT', abort);
      process.off('SIGTERM', abort);
    },
  };
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done);
  });
}

export async function fetchStats(path: string, signal?: AbortSignal): Promise<AgentStats | undefined> {
  let stats: AgentStats | undefined;
  await controlRequest(
    path,
    { cmd: 'stats' },
    (value) => {
      stats = value as AgentStats;
      return false;
    },
    { signal },
  );
  return stats;
}

export async function statsCommand(argv: string[]): Promise<void> {
  const values = parseFlags('stats', argv, STATS_FLAGS) as { tun?: string; watch?: string; json?: boolean; socket?: string; help?: boolean };
  let watchS: number | undefined;
  if (values.watch !== undefined) {
    watchS = values.watch === '' ? 2 : Number(values.watch);
    if (!(watchS > 0)) throw new CommandLineError(`--watch: "${values.watch}" is not a positive number of seconds`);
  }
  if (values.help) return write(STATS_HELP);
  const path = values.socket ?? controlSocketPath(values.tun ?? 'flannel0');
  const color = useColor(process.stdout);
  const interrupt = interruptSignal();
  try {
    let previous: { stats: AgentStats; at: number } | undefined;
    for (;;) {
      const stats = await fetchStats(path, interrupt.signal);
      if (stats === undefined || interrupt.signal.aborted) return;
      const at = Date.now();
      if (values.json) await write(JSON.stringify(stats) + '\n');
      else {
        const text = renderStats(stats, { color, previous: previous?.stats, intervalS: previous ? (at - previous.at) / 1000 : undefined });
        // In place on a terminal; one report after another when piped.
        await write(watchS !== undefined && process.stdout.isTTY ? `\x1b[H\x1b[2J${text}` : text + (watchS !== undefined ? '\n' : ''));
      }
      if (watchS === undefined) return;
      previous = { stats, at };
      await sleep(watchS * 1000, interrupt.signal);
      if (interrupt.signal.aborted) return;
    }
  } finally {
    interrupt.dispose();
  }
}

export async function traceCommand(argv: string[]): Promise<void> {
  const values = parseFlags('trace', argv, TRACE_FLAGS) as { tun?: string; filter?: string; limit?: string; json?: boolean; socket?: string; help?: boolean };
  if (values.help) return write(TRACE_HELP);
  const filter = values.filter ?? '';
  compileTraceFilter(filter); // a bad expression is reported here, with its position, before connecting
  const limit = values.limit === undefined ? DEFAULT_TRACE_LIMIT : Number(values.limit);
  if (!Number.isInteger(limit) || limit < 1 || limit > 1e9) throw new CommandLineError(`--limit: "${values.limit}" is not a whole number ≥ 1`);
  const path = values.socket ?? controlSocketPath(values.tun ?? 'flannel0');
  const color = useColor(process.stdout);
  const lastTime = new Map<string, number>();
  let done: TraceDone | undefined;
  let events = 0;
  const interrupt = interruptSignal();
  try {
    await controlRequest(
      path,
      { cmd: 'trace', filter, limit },
      (value) => {
        if (typeof value === 'object' && value !== null && (value as { done?: unknown }).done === true) {
          done = value as TraceDone;
          return false;
        }
        const ev = traceEventFromJson(value);
        events++;
        if (values.json) {
          process.stdout.write(traceEventToJson(ev) + '\n');
          return;
        }
        const key = `${ev.node} ${ev.worker} ${ev.packet}`;
        process.stdout.write(renderTraceEvent(ev, { color, previousTimeNs: lastTime.get(key) }) + '\n\n');
        lastTime.set(key, ev.timeNs);
      },
      { signal: interrupt.signal, connectTimeoutMs: 5000 },
    );
  } finally {
    interrupt.dispose();
  }
  const summary = done
    ? `trace: ${done.packets} packet(s), ${done.events} event(s)${done.dropped ? `, ${done.dropped} not shown (the terminal was too slow)` : ''}`
    : `trace: ${events} event(s), stopped`;
  process.stderr.write(summary + '\n');
}
