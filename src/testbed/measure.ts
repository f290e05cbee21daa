// Traffic measurements between pods of a testbed cluster, with ping and
// iperf3 run inside the pods' namespaces and their output parsed into numbers.
import type { Cluster } from './cluster.js';
import { stopChild, waitForLine } from './exec.js';

export interface PingOptions {
  count?: number;
  intervalS?: number;
}

export interface PingResult {
  sent: number;
  received: number;
  lossPct: number;
  /** NaN when nothing came back. */
  rttMinMs: number;
  rttAvgMs: number;
  rttMaxMs: number;
}

export async function ping(cluster: Cluster, fromNs: string, toIp: string, opts: PingOptions = {}): Promise<PingResult> {
  const count = opts.count ?? 5;
  const intervalS = opts.intervalS ?? 0.2;
  // -w bounds the whole run, so a black hole costs seconds, not a hang; ping exits 1 on loss, which is a result here.
  const deadlineS = Math.ceil(count * intervalS) + 3;
  const { stdout } = await cluster.exec(
    fromNs,
    'ping',
    ['-n', '-q', '-c', String(count), '-i', String(intervalS), '-w', String(deadlineS), toIp],
    { allowFailure: true, timeoutMs: (deadlineS + 10) * 1000 },
  );
  return parsePing(stdout);
}

export function parsePing(text: string): PingResult {
  const counts = /(\d+) packets transmitted, (\d+) (?:packets )?received/.exec(text);
  if (!counts) throw new Error(`unrecognised ping output:\n${text}`);
  const sent = Number(counts[1]);
  const received = Number(counts[2]);
  const rtt = /= ([\d.]+)\/([\d.]+)\/([\d.]+)\/[\d.]+ ms/.exec(text);
  return {
    sent,
    received,
    lossPct: sent ? ((sent - received) / sent) * 100 : 100,
    rttMinMs: rtt ? Number(rtt[1]) : NaN,
    rttAvgMs: rtt ? Number(rtt[2]) : NaN,
    rttMaxMs: rtt ? Number(rtt[3]) : NaN,
  };
}

export interface IperfTcpOptions {
  seconds?: number;
  streams?: number;
  /** iperf3 -O: seconds run first and left out of the figures (slow start, ARP); default 0. */
  omitSeconds?: number;
  /** iperf3 -M: the TCP maximum segment size; default the path's. */
  mss?: number;
}

export interface IperfTcpResult {
  /** As counted by the receiver. */
  bitsPerSecond: number;
  retransmits: number;
}

export interface IperfUdpOptions {
  seconds?: number;
  /** UDP payload bytes per datagram; default 1400. */
  packetLen?: number;
  /** iperf3 -b syntax, e.g. '1G', '200M'; default '1G'. */
  bitrate?: string;
  /** Target datagrams per second; overrides bitrate (iperf3 paces by payload bits). */
  packetsPerSecond?: number;
}

export interface IperfUdpResult {
  sentPackets: number;
  lostPackets: number;
  lossPct: number;
  /** Datagrams per second that reached the server. */
  receivedPps: number;
  /** Datagrams per second the client managed to send (below the target when the sender is the limit). */
  sentPps: number;
}

export async function iperf3Tcp(
  cluster: Cluster,
  serverNs: string,
  serverIp: string,
  clientNs: string,
  opts: IperfTcpOptions = {},
): Promise<IperfTcpResult> {
  const seconds = opts.seconds ?? 5;
  const omit = opts.omitSeconds ?? 0;
  // iperf3 runs the omitted seconds before the -t seconds; the timeout's slack covers them.
  const report = await runIperf3(cluster, serverNs, serverIp, clientNs, seconds, [
    '-P', String(opts.streams ?? 1),
    ...(opts.mss !== undefined ? ['-M', String(opts.mss)] : []),
    ...(omit > 0 ? ['-O', String(omit)] : []),
  ]);
  const end = report.end as { sum_received?: { bits_per_second?: number }; sum_sent?: { retransmits?: number } };
  return {
    bitsPerSecond: end.sum_received?.bits_per_second ?? 0,
    retransmits: end.sum_sent?.retransmits ?? 0,
  };
}

export async function iperf3Udp(
  cluster: Cluster,
  serverNs: string,
  serverIp: string,
  clientNs: string,
  opts: IperfUdpOptions = {},
): Promise<IperfUdpResult> {
  const seconds = opts.seconds ?? 5;
  const packetLen = opts.packetLen ?? 1400;
  const bitrate = opts.packetsPerSecond !== undefined ? String(Math.round(opts.packetsPerSecond * packetLen * 8)) : opts.bitrate ?? '1G';
  const report = await runIperf3(cluster, serverNs, serverIp, clientNs, seconds, ['-u', '-l', String(packetLen), '-b', bitrate]);
  // For UDP the client's end.sum carries the server's view (packets it expected and lost).
  const sum = (report.end as { sum?: { packets?: number; lost_packets?: number; seconds?: number } }).sum ?? {};
  const sentPackets = sum.packets ?? 0;
  const lostPackets = sum.lost_packets ?? 0;
  const duration = sum.seconds || seconds;
  return {
    sentPackets,
    lostPackets,
    lossPct: sentPackets ? (lostPackets / sentPackets) * 100 : 100,
    receivedPps: (sentPackets - lostPackets) / duration,
    sentPps: sentPackets / duration,
  };
}

export interface UdpSocketCounters {
  /** Datagrams delivered to sockets. */
  inDatagrams: number;
  /** Datagrams dropped because a socket's receive buffer was full: the reader, not the network, fell behind. */
  receiveBufferErrors: number;
}

/** The UDP counters of one namespace (/proc/net/snmp follows the reader's namespace). */
export async function udpSocketCounters(cluster: Cluster, ns: string): Promise<UdpSocketCounters> {
  const { stdout } = await cluster.exec(ns, 'cat', ['/proc/net/snmp']);
  const [names, values] = stdout.split('\n').filter((l) => l.startsWith('Udp: '));
  if (!names || !values) throw new Error(`no Udp lines in /proc/net/snmp of ${ns}`);
  const keys = names.split(/\s+/).slice(1);
  const nums = values.split(/\s+/).slice(1).map(Number);
  const get = (key: string) => nums[keys.indexOf(key)] ?? NaN;
  return { inDatagrams: get('InDatagrams'), receiveBufferErrors: get('RcvbufErrors') };
}

export interface InterfaceCounters {
  rxBytes: number;
  rxPackets: number;
  txBytes: number;
  txPackets: number;
}

/** Byte and packet counters of one interface in one namespace. */
export async function interfaceCounters(cluster: Cluster, ns: string, dev: string): Promise<InterfaceCounters> {
  const { stdout } = await cluster.exec(ns, 'ip', ['-j', '-s', 'link', 'show', 'dev', dev]);
  const [link] = JSON.parse(stdout) as { stats64?: { rx?: { bytes: number; packets: number }; tx?: { bytes: number; packets: number } } }[];
  const stats = link?.stats64;
  if (!stats?.rx || !stats.tx) throw new Error(`no statistics for ${dev} in ${ns}`);
  return { rxBytes: stats.rx.bytes, rxPackets: stats.rx.packets, txBytes: stats.tx.bytes, txPackets: stats.tx.packets };
}

let portCounter = 0;

/**
 * One-off server (-1) bound to the pod IP in the server's namespace, then the
 * client with JSON output. The port varies per call so that measurements
 * running side by side in one namespace do not collide.
 */
async function runIperf3(
  cluster: Cluster,
  serverNs: string,
  serverIp: string,
  clientNs: string,
  seconds: number,
  clientArgs: string[],
): Promise<{ end: unknown }> {
  const port = 5201 + (portCounter++ % 200);
  // --forceflush: without a tty iperf3 buffers stdout, and we wait for its "listening" line.
  const server = cluster.spawn(serverNs, 'iperf3', ['-s', '-1', '--forceflush', '-B', serverIp, '-p', String(port)]);
  try {
    await waitForLine(server, /Server listening on/, 10_000);
    const { stdout } = await cluster.exec(
      clientNs,
      'iperf3',
      ['-c', serverIp, '-p', String(port), '-t', String(seconds), '-J', '--connect-timeout', '3000', ...clientArgs],
      { timeoutMs: (seconds + 30) * 1000, allowFailure: true },
    );
    let report: { end?: unknown; error?: string };
    try {
      report = JSON.parse(stdout);
    } catch {
      throw new Error(`iperf3 client printed no JSON:\n${stdout.slice(0, 2000)}`);
    }
    if (report.error) throw new Error(`iperf3 to ${serverIp}:${port} failed: ${report.error}\nserver said:\n${server.log.tail(10)}`);
    return { end: report.end ?? {} };
  } finally {
    await stopChild(server, 'SIGTERM', 2000);
  }
}
