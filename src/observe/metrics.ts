// The agent's counters for Prometheus (text exposition format 0.0.4), and the
// small HTTP server that serves them with flanneld's health endpoints:
//   /healthz  200 while the process runs (flanneld's --healthz-ip/--healthz-port)
//   /readyz   200 once the data plane is up and the leases are loaded, else 503
//   /metrics  every per-worker counter, drops by reason, a batch-size histogram
// Names follow Prometheus conventions: snake_case, base units, _total for
// counters, one label per dimension (worker, direction, syscall, reason).
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { HEALTH_LIMITS, limitConnections } from './connection-limits.js';
import { dropReasonNames } from '../encap/drop-reasons.js';
import { LEASE_REJECT_REASONS } from '../control/lease-sanity.js';
import type { WorkerStatsSnapshot } from '../dataplane/worker-stats.js';

/** What the agent reports about itself: the stats command's answer, /metrics' source. */
export interface AgentStats {
  /** The node: its subnet key (10.244.1.0-24) or host name. */
  node: string;
  backend: string;
  /** The data plane is up and the leases are loaded. */
  ready: boolean;
  workers: WorkerStatsSnapshot[];
  /** How the UDP port's sockets share incoming datagrams: 'inner-flow', or 'kernel-hash (why)' (data-plane.ts). */
  receiveSpread?: string;
  /** The lease table, one "key -> public IP" per lease (agent.ts describeLease). */
  leases: string[];
  /** Leases the sense checks leave out now (lease-sanity.ts), one "key: reason: detail" each. */
  rejectedLeases?: string[];
  /** Rejections so far, by reason (LeaseRejectReason). */
  leaseRejections?: Record<string, number>;
}

// --- the batch-size histogram: bounds here, counters in the worker ---------

/**
 * Upper bounds (inclusive) of flannel_udp_batch_size, in messages per
 * sendmmsg/recvmmsg call (a message is one packet, or one GSO/GRO group with
 * offloads). A batch larger than the last bound counts in +Inf.
 */
export const BATCH_SIZE_BUCKETS: readonly number[] = [1, 2, 4, 8, 16, 32, 64, 128];

export type BatchSizeCounterPrefix = 'SendBatchSize' | 'ReceiveBatchSize';

/**
 * The worker's counters for one direction's histogram, in this order and
 * contiguous in its counter block: one per bucket, NOT cumulative (the batches
 * whose size is in (previous bound, bound]), then +Inf, then the sum of the
 * sizes: SendBatchSizeLe1, …, SendBatchSizeLe128, SendBatchSizeLeInf, SendBatchSizeSum.
 */
export function batchSizeCounterNames(prefix: BatchSizeCounterPrefix): string[] {
  return [...BATCH_SIZE_BUCKETS.map((b) => `${prefix}Le${b}`), `${prefix}LeInf`, `${prefix}Sum`];
}

/** All 20 histogram counter names, send then receive: what worker-stats.ts Counter appends. */
export const BATCH_SIZE_COUNTERS: readonly string[] = [...batchSizeCounterNames('SendBatchSize'), ...batchSizeCounterNames('ReceiveBatchSize')];

/**
 * Which bucket a batch of `size` messages counts in: 0 for ≤ 1, …, 7 for
 * ≤ 128, 8 for +Inf. The worker does `c[Counter.SendBatchSizeLe1 + batchSizeBucket(n)]++;
 * c[Counter.SendBatchSizeSum] += n`. No allocation.
 */
export function batchSizeBucket(size: number): number {
  const bounds = BATCH_SIZE_BUCKETS;
  for (let i = 0; i < bounds.length; i++) if (size <= bounds[i]) return i;
  return bounds.length;
}

// --- exposition ------------------------------------------------------------

type MetricType = 'counter' | 'gauge' | 'histogram';

interface Family {
  name: string;
  type: MetricType;
  help: string;
  samples: string[];
}

interface CounterSeries {
  counter: string;
  labels?: Record<string, string>;
  /** Multiply the counter by this (HeartbeatMs → seconds). */
  scale?: number;
}

interface FamilySpec {
  name: string;
  type: 'counter' | 'gauge';
  help: string;
  series: CounterSeries[];
}

/** Per-worker counters (worker-stats.ts Counter) and the metric each becomes. */
export const WORKER_METRICS: readonly FamilySpec[] = [
  {
    name: 'flannel_udp_packets_total',
    type: 'counter',
    help: 'Packets entering the data plane: read from the TUN (tun_to_udp; a TSO super-packet counts once) or received from peers (udp_to_tun).',
    series: [
      { counter: 'TunReadPackets', labels: { direction: 'tun_to_udp' } },
      { counter: 'UdpReceivedPackets', labels: { direction: 'udp_to_tun' } },
    ],
  },
  {
    name: 'flannel_udp_bytes_total',
    type: 'counter',
    help: 'Bytes of the packets entering the data plane (inner IPv4 packets), by direction.',
    series: [
      { counter: 'TunReadBytes', labels: { direction: 'tun_to_udp' } },
      { counter: 'UdpReceivedBytes', labels: { direction: 'udp_to_tun' } },
    ],
  },
  {
    name: 'flannel_udp_forwarded_packets_total',
    type: 'counter',
    help: 'Packets leaving the data plane: datagrams sent to peers (tun_to_udp) or packets written to the TUN (udp_to_tun).',
    series: [
      { counter: 'UdpSentPackets', labels: { direction: 'tun_to_udp' } },
      { counter: 'TunWrittenPackets', labels: { direction: 'udp_to_tun' } },
    ],
  },
  {
    name: 'flannel_udp_forwarded_bytes_total',
    type: 'counter',
    help: 'Bytes leaving the data plane (UDP payloads sent, packets written to the TUN), by direction.',
    series: [
      { counter: 'UdpSentBytes', labels: { direction: 'tun_to_udp' } },
      { counter: 'TunWrittenBytes', labels: { direction: 'udp_to_tun' } },
    ],
  },
  {
    name: 'flannel_udp_ipv6_packets_total',
    type: 'counter',
    help: 'Of flannel_udp_packets_total, the IPv6 packets (a dual-stack node; the rest are IPv4), by direction.',
    series: [
      { counter: 'Ipv6TunReadPackets', labels: { direction: 'tun_to_udp' } },
      { counter: 'Ipv6UdpReceivedPackets', labels: { direction: 'udp_to_tun' } },
    ],
  },
  {
    name: 'flannel_udp_icmp_sent_total',
    type: 'counter',
    help: 'ICMP errors (net unreachable) written back into the TUN.',
    series: [{ counter: 'IcmpSent' }],
  },
  {
    name: 'flannel_udp_icmp_suppressed_total',
    type: 'counter',
    help: 'ICMP errors not sent because the per-source or the global rate limit was reached (the packets themselves are counted as drops).',
    series: [{ counter: 'IcmpSuppressed' }],
  },
  {
    name: 'flannel_udp_syscalls_total',
    type: 'counter',
    help: 'System calls made by the worker, by syscall: each one is a user/kernel crossing.',
    series: [
      { counter: 'SyscallsTunRead', labels: { syscall: 'read' } },
      { counter: 'SyscallsTunWrite', labels: { syscall: 'write' } },
      { counter: 'SyscallsTunWritev', labels: { syscall: 'writev' } },
      { counter: 'SyscallsSend', labels: { syscall: 'sendmmsg' } },
      { counter: 'SyscallsReceive', labels: { syscall: 'recvmmsg' } },
      { counter: 'SyscallsPoll', labels: { syscall: 'poll' } },
    ],
  },
  {
    name: 'flannel_udp_batches_total',
    type: 'counter',
    help: 'Batches handed to sendmmsg or taken from recvmmsg.',
    series: [
      { counter: 'SendBatches', labels: { syscall: 'sendmmsg' } },
      { counter: 'ReceiveBatches', labels: { syscall: 'recvmmsg' } },
    ],
  },
  {
    name: 'flannel_udp_offload_super_packets_split_total',
    type: 'counter',
    help: 'TSO/USO super-packets read from the TUN and cut into wire-sized packets.',
    series: [{ counter: 'SuperPacketsSplit' }],
  },
  {
    name: 'flannel_udp_offload_segments_split_total',
    type: 'counter',
    help: 'Wire-sized packets cut from super-packets.',
    series: [{ counter: 'SegmentsFromSplit' }],
  },
  {
    name: 'flannel_udp_offload_gso_sends_total',
    type: 'counter',
    help: 'Messages sent with UDP_SEGMENT (UDP GSO), each becoming several datagrams.',
    series: [{ counter: 'GsoSends' }],
  },
  {
    name: 'flannel_udp_offload_gro_receives_total',
    type: 'counter',
    help: 'Received messages the kernel had coalesced (UDP GRO).',
    series: [{ counter: 'GroReceives' }],
  },
  {
    name: 'flannel_udp_offload_coalesced_writes_total',
    type: 'counter',
    help: 'TUN writes carrying several received TCP segments merged into one super-packet.',
    series: [{ counter: 'CoalescedWrites' }],
  },
  {
    name: 'flannel_udp_offload_segments_coalesced_total',
    type: 'counter',
    help: 'Received TCP segments merged into super-packets.',
    series: [{ counter: 'SegmentsCoalesced' }],
  },
  {
    name: 'flannel_udp_worker_restarts_total',
    type: 'counter',
    help: 'Times the worker thread was restarted after it failed.',
    series: [{ counter: 'Restarts' }],
  },
  {
    name: 'flannel_udp_pool_slots',
    type: 'gauge',
    help: "Packet buffers in the worker's pool (fixed at start: the pool never grows).",
    series: [{ counter: 'PoolSlots' }],
  },
  {
    name: 'flannel_udp_worker_heap_bytes',
    type: 'gauge',
    help: "The worker isolate's used V8 heap, sampled at start and after each control message (nothing else in a worker allocates, so it cannot change in between).",
    series: [{ counter: 'HeapUsedBytes' }],
  },
  {
    name: 'flannel_udp_lease_table_version',
    type: 'gauge',
    help: 'Version of the lease table the worker forwards with.',
    series: [{ counter: 'LeaseTableVersion' }],
  },
  {
    name: 'flannel_udp_worker_heartbeat_timestamp_seconds',
    type: 'gauge',
    help: "Unix time of the worker's last loop turn. An idle worker sleeps in poll() with no timeout, so an old value means stuck only where flannel_udp_worker_waiting is 0.",
    series: [{ counter: 'HeartbeatMs', scale: 0.001 }],
  },
  {
    name: 'flannel_udp_worker_waiting',
    type: 'gauge',
    help: 'Whether the worker is asleep in poll() waiting for packets or a control message (1) or running (0).',
    series: [{ counter: 'Waiting' }],
  },
];

const HISTOGRAM_PREFIXES: ReadonlyArray<[BatchSizeCounterPrefix, string]> = [
  ['SendBatchSize', 'sendmmsg'],
  ['ReceiveBatchSize', 'recvmmsg'],
];

/** Prometheus sample value: integers as digits, NaN and ±Inf spelled its way. */
export function formatSampleValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

function escapeLabelValue(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

function escapeHelp(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

function labelText(labels: Record<string, string>): string {
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${escapeLabelValue(v)}"`);
  return parts.length ? `{${parts.join(',')}}` : '';
}

/** CamelCase counter name → snake_case ("OuterFragmented" → "outer_fragmented"). */
function snakeCase(name: string): string {
  return name
    .replace(/([a-z0-9])([A-Z])/g, '$1_$2')
    .replace(/([A-Z]+)([A-Z][a-z])/g, '$1_$2')
    .toLowerCase();
}

/**
 * The Prometheus text for an agent's stats. Every counter of a worker
 * snapshot appears: the known ones under the names of WORKER_METRICS, a
 * counter added later under flannel_udp_<snake_case>_total until it gets its
 * own entry. Every drop reason appears for every worker, 0 included, so a
 * rate() works from the first scrape.
 */
export function renderMetrics(stats: AgentStats): string {
  const families = new Map<string, Family>();
  const family = (name: string, type: MetricType, help: string): Family => {
    let f = families.get(name);
    if (!f) families.set(name, (f = { name, type, help, samples: [] }));
    return f;
  };
  const sample = (f: Family, suffix: string, labels: Record<string, string>, value: number) =>
    f.samples.push(`${f.name}${suffix}${labelText(labels)} ${formatSampleValue(value)}`);

  sample(family('flannel_udp_info', 'gauge', 'The agent: its node and backend (always 1).'), '', { node: stats.node, backend: stats.backend }, 1);
  if (stats.receiveSpread !== undefined) {
    const inner = stats.receiveSpread === 'inner-flow';
    sample(family('flannel_udp_receive_spread_inner_flow', 'gauge', "Incoming datagrams go to workers by their inner flow (1), or by the kernel's outer 4-tuple hash (0)."), '', {}, inner ? 1 : 0);
  }
  sample(family('flannel_udp_ready', 'gauge', 'The data plane is up and the leases are loaded (1) or not (0).'), '', {}, stats.ready ? 1 : 0);
  sample(family('flannel_udp_leases', 'gauge', 'Peer leases in the lease table.'), '', {}, stats.leases.length);
  sample(family('flannel_udp_leases_rejected', 'gauge', 'Leases left out of the lease table by the sense checks now.'), '', {}, stats.rejectedLeases?.length ?? 0);
  const rejections = family('flannel_udp_lease_rejections_total', 'counter', 'Leases rejected by the sense checks (a bad PublicIP or subnet), by reason.');
  for (const reason of LEASE_REJECT_REASONS) sample(rejections, '', { reason }, stats.leaseRejections?.[reason] ?? 0);
  sample(family('flannel_udp_workers', 'gauge', 'Worker threads (one per TUN queue).'), '', {}, stats.workers.length);

  const mapped = new Set<string>(BATCH_SIZE_COUNTERS);
  for (const spec of WORKER_METRICS) for (const s of spec.series) mapped.add(s.counter);
  const reasons = dropReasonNames.filter((n, code) => code !== 0 && !n.startsWith('unused-'));

  for (const w of stats.workers) {
    const worker = String(w.worker);
    for (const spec of WORKER_METRICS) {
      const f = family(spec.name, spec.type, spec.help);
      for (const s of spec.series) {
        const v = w.counters[s.counter];
        if (v === undefined) continue;
        sample(f, '', { worker, ...s.labels }, v * (s.scale ?? 1));
      }
    }
    const drops = family('flannel_udp_drops_total', 'counter', 'Packets not forwarded, by reason (drop-reasons.ts); each packet counts under exactly one reason.');
    const seen = new Set<string>();
    for (const reason of [...reasons, ...Object.keys(w.drops)]) {
      if (seen.has(reason)) continue;
      seen.add(reason);
      sample(drops, '', { worker, reason }, w.drops[reason] ?? 0);
    }
    for (const [prefix, syscall] of HISTOGRAM_PREFIXES) {
      const names = batchSizeCounterNames(prefix);
      if (!names.every((n) => w.counters[n] !== undefined)) continue;
      const h = family(
        'flannel_udp_batch_size',
        'histogram',
        'Messages per sendmmsg/recvmmsg call (one packet each, or one GSO/GRO group with offloads).',
      );
      let cumulative = 0;
      BATCH_SIZE_BUCKETS.forEach((bound, i) => {
        cumulative += w.counters[names[i]];
        sample(h, '_bucket', { worker, syscall, le: String(bound) }, cumulative);
      });
      cumulative += w.counters[names[BATCH_SIZE_BUCKETS.length]];
      sample(h, '_bucket', { worker, syscall, le: '+Inf' }, cumulative);
      sample(h, '_sum', { worker, syscall }, w.counters[names[BATCH_SIZE_BUCKETS.length + 1]]);
      sample(h, '_count', { worker, syscall }, cumulative);
    }
    for (const [counter, value] of Object.entries(w.counters)) {
      if (mapped.has(counter)) continue;
      const f = family(`flannel_udp_${snakeCase(counter)}_total`, 'counter', `Worker counter ${counter} (worker-stats.ts).`);
      sample(f, '', { worker }, value);
    }
  }

  const out: string[] = [];
  for (const f of families.values()) {
    if (f.samples.length === 0) continue;
    out.push(`# HELP ${f.name} ${escapeHelp(f.help)}`, `# TYPE ${f.name} ${f.type}`, ...f.samples);
  }
  return out.join('\n') + '\n';
}

// --- the HTTP server -------------------------------------------------------

export const METRICS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';
/** All of a request's headers must arrive within this. */
export const HEADERS_TIMEOUT_MS = 5_000;
/** The whole request must arrive within this. */
export const REQUEST_TIMEOUT_MS = 10_000;

export interface HealthServerOptions {
  /** Address to listen on (flanneld's --healthz-ip, default 0.0.0.0). */
  ip: string;
  /** Port; 0 picks a free one (the agent starts no server at all for --healthz-port 0). */
  port: number;
  snapshot: () => AgentStats;
  ready: () => boolean;
  log: (line: string) => void;
}

export interface HealthServer {
  /** The port it listens on (the one picked when 0 was asked). */
  readonly port: number;
  readonly address: string;
  close(): Promise<void>;
}

/** Starts the /healthz, /readyz, /metrics server; rejects if the address cannot be bound. */
export function startHealthServer(opts: HealthServerOptions): Promise<HealthServer> {
  const handle = (req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { 'content-type': 'text/plain; charset=utf-8', allow: 'GET, HEAD' }).end('method not allowed\n');
      return;
    }
    const send = (status: number, type: string, body: string) => {
      res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body) });
      res.end(req.method === 'HEAD' ? undefined : body);
    };
    try {
      if (path === '/healthz') return send(200, 'text/plain; charset=utf-8', 'flannel-udp is running\n');
      if (path === '/readyz') {
        return opts.ready() ? send(200, 'text/plain; charset=utf-8', 'ready\n') : send(503, 'text/plain; charset=utf-8', 'not ready\n');
      }
      if (path === '/metrics') return send(200, METRICS_CONTENT_TYPE, renderMetrics(opts.snapshot()));
      send(404, 'text/plain; charset=utf-8', 'not found: try /healthz, /readyz or /metrics\n');
    } catch (err) {
      opts.log(`healthz: ${path}: ${(err as Error).message}`);
      if (!res.headersSent) send(500, 'text/plain; charset=utf-8', 'internal error\n');
    }
  };
  // A request must be complete within these, or its connection is closed (slow or stalled clients hold descriptors).
  const server: Server = createServer(
    { headersTimeout: HEADERS_TIMEOUT_MS, requestTimeout: REQUEST_TIMEOUT_MS, keepAliveTimeout: 5_000, connectionsCheckingInterval: 1_000 },
    handle,
  );
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      reject(new Error(`healthz: cannot listen on ${opts.ip}:${opts.port}: ${err.code === 'EADDRINUSE' ? 'the port is in use' : err.message}`));
    };
    server.once('error', onError);
    // SO_REUSEPORT (Node >= 22.12, ignored before): during a hand-over (agent.ts) the new agent serves its
    // /readyz on the same port while the old one still runs, as a DaemonSet rolling update with maxSurge needs.
    server.listen({ port: opts.port, host: opts.ip, reusePort: true } as Parameters<Server['listen']>[0], () => {
      server.off('error', onError);
      limitConnections(server, 'healthz', HEALTH_LIMITS, opts.log);
      const addr = server.address() as AddressInfo;
      opts.log(`healthz: serving /healthz, /readyz and /metrics on http://${addr.address}:${addr.port}`);
      resolve({
        port: addr.port,
        address: addr.address,
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done());
            server.closeAllConnections();
          }),
      });
    });
  });
}
