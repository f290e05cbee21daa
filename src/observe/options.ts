// What `flannel-udp up` was asked to observe: AgentOptions.observe. The CLI
// fills it from its flags (parseObserveFlags); the agent and the data plane
// read it. Everything is off unless asked for, but the control socket, which
// costs nothing until a client connects.
import { parseIPv4 } from '../control/ipv4-address.js';
import { compileTraceFilter } from './trace-filter.js';
import { controlSocketPath } from './control-socket.js';
import { DEFAULT_TRACE_LIMIT } from './trace-event.js';
import type { FlagSpec } from '../cli-flags.js';

export interface ObserveOptions {
  /** --trace: trace packets from the start, rendered to the agent's log (stderr). */
  trace?: {
    /** --trace-filter; '' = every packet. Already checked: it compiles. */
    filter: string;
    /** --trace-limit: packets in all (0 = no limit). */
    limit: number;
    /** --trace-rate: packets per second at most (0 = no limit). */
    perSecond: number;
  };
  /** --capture DIR: every worker writes tun-in/tun-out/udp-out/udp-in-w<k>.pcap there (pcap-writer.ts WorkerCaptures). */
  capture?: {
    dir: string;
    /** --capture-rotate-mb in bytes. */
    rotateBytes: number;
    maxFiles: number;
  };
  /** --healthz-ip/--healthz-port; undefined when the port is 0 (off, flanneld's default). */
  healthz?: { ip: string; port: number };
  /** The control socket's path (control-socket.ts), or undefined for --control-socket off. */
  controlSocket?: string;
}

export const DEFAULT_TRACE_RATE = 10;
export const DEFAULT_CAPTURE_ROTATE_MB = 64;
/** Files kept per capture point and worker, the current one included. */
export const DEFAULT_CAPTURE_FILES = 4;
export const DEFAULT_HEALTHZ_IP = '0.0.0.0';

/** The `up` flags this module reads, as a table of cli-flags.ts (the parser and --help come from it). */
export const OBSERVE_FLAGS: readonly FlagSpec[] = [
  { name: 'trace', type: 'boolean',
    help: 'trace packets from the start: every stage of each traced packet, drawn layer by layer on stderr (see flannel-udp trace)' },
  { name: 'trace-filter', type: 'string', value: 'EXPR', default: 'all',
    help: 'which packets: a tcpdump-style expression (icmp, tcp, udp, [src|dst] host A, [src|dst] net A/N, [tcp|udp] [src|dst] port N, and/or/not, parentheses)' },
  { name: 'trace-limit', type: 'string', value: 'N', default: String(DEFAULT_TRACE_LIMIT), help: 'packets to trace in all, 0 = no limit' },
  { name: 'trace-rate', type: 'string', value: 'N', default: String(DEFAULT_TRACE_RATE), help: 'packets to trace per second at most, 0 = no limit' },
  { name: 'capture', type: 'string', value: 'DIR',
    help: 'write pcap files of every packet crossing the TUN and the UDP socket: DIR/{tun-in,tun-out,udp-out,udp-in}-w<worker>.pcap (tun-*: raw IPv4; udp-*: Ethernet + outer IPv4 + UDP as sent)' },
  { name: 'capture-rotate-mb', type: 'string', value: 'N', default: String(DEFAULT_CAPTURE_ROTATE_MB),
    help: `start a new file after N MiB, keeping ${DEFAULT_CAPTURE_FILES} per capture point (x.pcap, x.1.pcap, …)` },
  { name: 'healthz-ip', type: 'string', value: 'IP', default: DEFAULT_HEALTHZ_IP, help: 'address of the health server' },
  { name: 'healthz-port', type: 'string', value: 'N', default: '0',
    help: 'serve /healthz, /readyz and /metrics (Prometheus) on this port; 0 = off' },
  { name: 'control-socket', type: 'string', value: 'PATH', default: '/run/flannel-udp/<tun>.sock',
    help: 'where `flannel-udp stats` and `trace` reach the agent, or off' },
];

export interface ObserveFlagValues {
  trace?: boolean;
  'trace-filter'?: string;
  'trace-limit'?: string;
  'trace-rate'?: string;
  capture?: string;
  'capture-rotate-mb'?: string;
  'healthz-ip'?: string;
  'healthz-port'?: string;
  'control-socket'?: string;
}

/** A flag the user must fix; the CLI prints the message and exits 2. */
export class ObserveFlagError extends Error {
  override name = 'ObserveFlagError';
}

function wholeNumber(flag: string, value: string | undefined, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (value.trim() === '' || !Number.isInteger(n) || n < min || n > max) {
    throw new ObserveFlagError(`--${flag}: "${value}" is not a whole number from ${min} to ${max}`);
  }
  return n;
}

/** The observability flags of `up` → ObserveOptions; throws ObserveFlagError on a bad value. */
export function parseObserveFlags(values: ObserveFlagValues, tunName: string): ObserveOptions {
  const observe: ObserveOptions = {};
  const traceOnly = (['trace-filter', 'trace-limit', 'trace-rate'] as const).filter((f) => values[f] !== undefined);
  if (!values.trace && traceOnly.length > 0) throw new ObserveFlagError(`--${traceOnly[0]} needs --trace`);
  if (values.trace) {
    const filter = values['trace-filter'] ?? '';
    try {
      compileTraceFilter(filter);
    } catch (err) {
      throw new ObserveFlagError(`--trace-filter: ${(err as Error).message}`);
    }
    observe.trace = {
      filter,
      limit: wholeNumber('trace-limit', values['trace-limit'], DEFAULT_TRACE_LIMIT, 0, 1e9),
      perSecond: wholeNumber('trace-rate', values['trace-rate'], DEFAULT_TRACE_RATE, 0, 1e9),
    };
  }
  if (values['capture-rotate-mb'] !== undefined && values.capture === undefined) throw new ObserveFlagError('--capture-rotate-mb needs --capture');
  if (values.capture !== undefined) {
    if (values.capture.trim() === '') throw new ObserveFlagError('--capture: give a directory');
    observe.capture = {
      dir: values.capture,
      rotateBytes: wholeNumber('capture-rotate-mb', values['capture-rotate-mb'], DEFAULT_CAPTURE_ROTATE_MB, 1, 1 << 20) * 1024 * 1024,
      maxFiles: DEFAULT_CAPTURE_FILES,
    };
  }
  const healthzIp = values['healthz-ip'] ?? DEFAULT_HEALTHZ_IP;
  try {
    parseIPv4(healthzIp);
  } catch (err) {
    throw new ObserveFlagError(`--healthz-ip: ${(err as Error).message}`);
  }
  const healthzPort = wholeNumber('healthz-port', values['healthz-port'], 0, 0, 65535);
  if (healthzPort !== 0) observe.healthz = { ip: healthzIp, port: healthzPort };
  const control = values['control-socket'];
  if (control === undefined) observe.controlSocket = controlSocketPath(tunName);
  else if (control !== 'off') {
    if (control.trim() === '') throw new ObserveFlagError('--control-socket: give a path, or off');
    observe.controlSocket = control;
  }
  return observe;
}
