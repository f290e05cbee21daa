// `flannel-udp stats` for people: one column per worker and a total, rows
// grouped by direction, the user/kernel crossings per packet, drops by
// reason, and the lease table. Pure: AgentStats in, text out.
import type { WorkerStatsSnapshot } from '../dataplane/worker-stats.js';
import type { AgentStats } from './metrics.js';

export interface StatsRenderOptions {
  color?: boolean;
  /** The previous snapshot and the seconds between the two: adds a per-second column (stats --watch). */
  previous?: AgentStats;
  intervalS?: number;
}

function counter(w: WorkerStatsSnapshot, name: string): number {
  return w.counters[name] ?? 0;
}

function sum(workers: WorkerStatsSnapshot[], name: string): number {
  return workers.reduce((a, w) => a + counter(w, name), 0);
}

export function formatCount(n: number): string {
  return Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '-';
}

export function formatBytes(n: number): string {
  if (!Number.isFinite(n)) return '-';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${v} B` : `${v.toFixed(1)} ${units[u]}`;
}

function ratio(a: number, b: number, digits = 2): string {
  return b > 0 ? (a / b).toFixed(digits) : '-';
}

interface Row {
  group: string;
  label: string;
  /** One value per worker, then the total. */
  cells: string[];
  /** For the per-second column: the raw total of a counter row. */
  rate?: (s: AgentStats) => number;
  format?: (n: number) => string;
}

const TUN_TO_UDP_SYSCALLS = ['SyscallsTunRead', 'SyscallsSend'];
const UDP_TO_TUN_SYSCALLS = ['SyscallsReceive', 'SyscallsTunWrite', 'SyscallsTunWritev'];

function syscallsPerPacket(workers: WorkerStatsSnapshot[], syscalls: string[], packets: string): string {
  const calls = syscalls.reduce((a, s) => a + sum(workers, s), 0);
  return ratio(calls, sum(workers, packets));
}

export function renderStats(stats: AgentStats, opts: StatsRenderOptions = {}): string {
  const paint = (code: string, text: string) => (opts.color ? `\x1b[${code}m${text}\x1b[0m` : text);
  const workers = [...stats.workers].sort((a, b) => a.worker - b.worker);
  const each = (f: (ws: WorkerStatsSnapshot[]) => string) => [...workers.map((w) => f([w])), f(workers)];
  const countRow = (group: string, label: string, name: string, format = formatCount): Row => ({
    group,
    label,
    cells: each((ws) => format(sum(ws, name))),
    rate: (s) => sum(s.workers, name),
    format,
  });

  const rows: Row[] = [
    countRow('tun → udp', 'packets read', 'TunReadPackets'),
    countRow('', 'bytes read', 'TunReadBytes', formatBytes),
    countRow('', 'datagrams sent', 'UdpSentPackets'),
    countRow('', 'bytes sent', 'UdpSentBytes', formatBytes),
    { group: '', label: 'syscalls/packet', cells: each((ws) => syscallsPerPacket(ws, TUN_TO_UDP_SYSCALLS, 'UdpSentPackets')) },
    countRow('udp → tun', 'datagrams received', 'UdpReceivedPackets'),
    countRow('', 'bytes received', 'UdpReceivedBytes', formatBytes),
    countRow('', 'packets written', 'TunWrittenPackets'),
    countRow('', 'bytes written', 'TunWrittenBytes', formatBytes),
    { group: '', label: 'syscalls/packet', cells: each((ws) => syscallsPerPacket(ws, UDP_TO_TUN_SYSCALLS, 'UdpReceivedPackets')) },
    countRow('batches', 'sendmmsg', 'SendBatches'),
    { group: '', label: 'packets/sendmmsg', cells: each((ws) => ratio(sum(ws, 'UdpSentPackets'), sum(ws, 'SendBatches'), 1)) },
    countRow('', 'recvmmsg', 'ReceiveBatches'),
    { group: '', label: 'packets/recvmmsg', cells: each((ws) => ratio(sum(ws, 'UdpReceivedPackets'), sum(ws, 'ReceiveBatches'), 1)) },
    countRow('syscalls', 'read', 'SyscallsTunRead'),
    countRow('', 'write', 'SyscallsTunWrite'),
    countRow('', 'writev', 'SyscallsTunWritev'),
    countRow('', 'sendmmsg', 'SyscallsSend'),
    countRow('', 'recvmmsg', 'SyscallsReceive'),
    countRow('', 'poll', 'SyscallsPoll'),
    countRow('icmp', 'net unreachable sent', 'IcmpSent'),
  ];
  // A dual-stack node's IPv6 share of the packets above (absent on a node that has seen none: IPv4-only output unchanged).
  if (sum(workers, 'Ipv6TunReadPackets') + sum(workers, 'Ipv6UdpReceivedPackets') > 0) {
    rows.push(
      countRow('of them ipv6', 'packets read (tun)', 'Ipv6TunReadPackets'),
      countRow('', 'datagrams received', 'Ipv6UdpReceivedPackets'),
    );
  }
  if (sum(workers, 'SuperPacketsSplit') + sum(workers, 'CoalescedWrites') + sum(workers, 'GroReceives') > 0) {
    rows.push(
      countRow('offloads', 'super-packets split', 'SuperPacketsSplit'),
      countRow('', 'segments from split', 'SegmentsFromSplit'),
      countRow('', 'GSO sends', 'GsoSends'),
      countRow('', 'GRO receives', 'GroReceives'),
      countRow('', 'coalesced writes', 'CoalescedWrites'),
    );
  }
  const reasons = [...new Set(workers.flatMap((w) => Object.keys(w.drops)))].sort();
  if (reasons.length === 0) rows.push({ group: 'drops', label: 'none', cells: each(() => '0') });
  reasons.forEach((reason, i) =>
    rows.push({
      group: i === 0 ? 'drops' : '',
      label: reason,
      cells: each((ws) => formatCount(ws.reduce((a, w) => a + (w.drops[reason] ?? 0), 0))),
      rate: (s) => s.workers.reduce((a, w) => a + (w.drops[reason] ?? 0), 0),
    }),
  );
  rows.push(
    { group: 'worker', label: 'pool slots', cells: each((ws) => formatCount(sum(ws, 'PoolSlots'))) },
    { group: '', label: 'heap', cells: each((ws) => formatBytes(sum(ws, 'HeapUsedBytes'))) },
    { group: '', label: 'restarts', cells: each((ws) => formatCount(sum(ws, 'Restarts'))) },
  );

  const withRate = opts.previous !== undefined && (opts.intervalS ?? 0) > 0;
  const header = ['', '', ...workers.map((w) => `worker ${w.worker}`), 'total', ...(withRate ? ['per second'] : [])];
  const table = rows.map((r) => {
    const cells = [r.group, r.label, ...r.cells];
    if (withRate) {
      const per = r.rate ? (r.rate(stats) - r.rate(opts.previous!)) / opts.intervalS! : NaN;
      cells.push(Number.isNaN(per) ? '' : (r.format ?? formatCount)(Math.max(0, per)));
    }
    return cells;
  });
  const widths = header.map((h, i) => Math.max(h.length, ...table.map((c) => (c[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i < 2 ? c.padEnd(widths[i]) : c.padStart(widths[i])))
      .join('  ')
      .trimEnd();

  const out = [
    `${paint('1', 'flannel-udp')}  node ${stats.node}  backend ${stats.backend}  ${stats.ready ? paint('32', 'ready') : paint('31', 'not ready')}  ` +
      `${workers.length} worker(s)  ${stats.leases.length} lease(s)` +
      (stats.receiveSpread ? `  receive spread: ${stats.receiveSpread}` : ''),
    '',
    paint('1', line(header)),
    ...table.map((c) => (c[0] !== '' ? paint('1', c[0].padEnd(widths[0])) + line(c).slice(widths[0]) : line(c))),
    '',
    paint('1', `leases (${stats.leases.length})`),
    ...(stats.leases.length ? stats.leases.map((l) => `  ${l}`) : ['  none']),
    ...(stats.rejectedLeases?.length ? ['', paint('31', `rejected leases (${stats.rejectedLeases.length})`), ...stats.rejectedLeases.map((l) => `  ${l}`)] : []),
  ];
  return out.join('\n') + '\n';
}
