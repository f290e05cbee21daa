// `flannel-udp stats` as text: per-worker columns and a total, crossings per
// packet, drops, offload rows when used, the per-second column of --watch.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { renderStats, formatBytes, formatCount } from '../../src/observe/stats-render.js';
import type { AgentStats } from '../../src/observe/metrics.js';
import type { WorkerStatsSnapshot } from '../../src/dataplane/worker-stats.js';

function stats(scale: number, extra: Record<string, number> = {}): AgentStats {
  const worker = (w: number): WorkerStatsSnapshot => ({
    worker: w,
    counters: {
      TunReadPackets: 1000 * scale * (w + 1),
      TunReadBytes: 84_000 * scale * (w + 1),
      UdpSentPackets: 1000 * scale * (w + 1),
      UdpSentBytes: 84_000 * scale * (w + 1),
      UdpReceivedPackets: 500 * scale,
      UdpReceivedBytes: 42_000 * scale,
      TunWrittenPackets: 500 * scale,
      TunWrittenBytes: 42_000 * scale,
      SyscallsTunRead: 1010 * scale * (w + 1),
      SyscallsSend: 20 * scale * (w + 1),
      SyscallsReceive: 10 * scale,
      SyscallsTunWrite: 500 * scale,
      SendBatches: 20 * scale * (w + 1),
      ReceiveBatches: 10 * scale,
      PoolSlots: 129,
      HeapUsedBytes: 2.5 * 1024 * 1024,
      Restarts: w,
      ...extra,
    },
    drops: w === 1 ? { 'ttl-expired': 3 * scale } : ({} as Record<string, number>),
  });
  return { node: 'node-2', backend: 'vxlan', ready: false, workers: [worker(1), worker(0)], leases: [] };
}

test('columns per worker (sorted) and a total; crossings per packet; drops summed', () => {
  const text = renderStats(stats(1));
  assert.match(text, /^flannel-udp  node node-2  backend vxlan  not ready  2 worker\(s\)  0 lease\(s\)\n/);
  assert.match(text, /\n\s+worker 0\s+worker 1\s+total\n/);
  assert.match(text, /tun → udp\s+packets read\s+1,000\s+2,000\s+3,000/);
  assert.match(text, /bytes read\s+82\.0 KiB\s+164\.1 KiB\s+246\.1 KiB/);
  assert.match(text, /syscalls\/packet\s+1\.03\s+1\.03\s+1\.03/, '(1010 reads + 20 sendmmsg) per 1000 datagrams');
  assert.match(text, /udp → tun\s+datagrams received\s+500\s+500\s+1,000/);
  assert.match(text, /\n\s+syscalls\/packet\s+1\.02\s+1\.02\s+1\.02\n/, '(10 recvmmsg + 500 writes) per 500');
  assert.match(text, /packets\/sendmmsg\s+50\.0/);
  assert.match(text, /drops\s+ttl-expired\s+0\s+3\s+3/);
  assert.match(text, /restarts\s+0\s+1\s+1/);
  assert.match(text, /leases \(0\)\n  none\n$/);
  assert.not.match(text, /offloads/, 'no offload rows when none were used');
  assert.not.match(text, /per second/);
  assert.not.match(text, /\x1b\[/);
  assert.match(renderStats(stats(1), { color: true }), /\x1b\[1mflannel-udp\x1b\[0m/);
});

test('no drops at all: a "none" row; offload rows once used', () => {
  const s = stats(1, { SuperPacketsSplit: 10, SegmentsFromSplit: 450, GsoSends: 10 });
  s.workers[0].drops = {};
  const text = renderStats(s);
  assert.match(text, /drops\s+none\s+0\s+0\s+0/);
  assert.match(text, /offloads\s+super-packets split\s+10\s+10\s+20/);
  assert.match(text, /segments from split\s+450/);
});

test('dual-stack: the IPv6 share of the packets, only once there was any', () => {
  assert.not.match(renderStats(stats(1)), /ipv6/, 'an IPv4-only node shows no IPv6 rows');
  const text = renderStats(stats(1, { Ipv6TunReadPackets: 250, Ipv6UdpReceivedPackets: 100 }));
  assert.match(text, /of them ipv6\s+packets read \(tun\)\s+250\s+250\s+500/);
  assert.match(text, /\n\s+datagrams received\s+100\s+100\s+200\n/);
});

test('--watch: a per-second column from two snapshots', () => {
  const text = renderStats(stats(3), { previous: stats(1), intervalS: 2 });
  assert.match(text, /total\s+per second\n/);
  assert.match(text, /packets read\s+3,000\s+6,000\s+9,000\s+3,000\n/, '(9000 − 3000) / 2 s');
  assert.match(text, /bytes read\s+.*\s+246\.1 KiB\n/);
  assert.match(text, /ttl-expired\s+0\s+9\s+9\s+3\n/);
  assert.match(text, /syscalls\/packet\s+1\.03\s+1\.03\s+1\.03\n/, 'ratios have no rate');
});

test('number formats', () => {
  assert.is(formatCount(1234567), '1,234,567');
  assert.is(formatCount(NaN), '-');
  assert.is(formatBytes(512), '512 B');
  assert.is(formatBytes(1536), '1.5 KiB');
  assert.is(formatBytes(5 * 1024 ** 3), '5.0 GiB');
});

test.run();
