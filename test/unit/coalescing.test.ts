import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { onesComplementSumNaive, pseudoHeaderSum } from '../../src/encap/checksum.js';
import { COALESCE_MAX_UDP_SEGMENTS, COALESCE_MAX_WRITE_HEADER, CoalesceBatch } from '../../src/encap/coalescing.js';
import { DropReason } from '../../src/encap/drop-reasons.js';
import { IP_PROTOCOL_TCP, IP_PROTOCOL_UDP, validateIPv4 } from '../../src/encap/ipv4.js';
import {
  SegmentList,
  TCP_FLAG_ACK,
  TCP_FLAG_CWR,
  TCP_FLAG_ECE,
  TCP_FLAG_FIN,
  TCP_FLAG_PSH,
  TCP_FLAG_RST,
  TCP_FLAG_SYN,
  TCP_FLAG_URG,
  splitSuperPacket,
} from '../../src/encap/segmentation.js';
import {
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_GSO_TCPV4,
  VIRTIO_NET_HDR_GSO_UDP_L4,
  VIRTIO_NET_HDR_LEN,
  VirtioNetHeader,
  completePartialChecksum,
} from '../../src/encap/virtio-net-header.js';

import { read16, read32 } from '../../src/encap/bytes.js';
import { buildIPv6Header, IPV6_HEADER } from '../../src/encap/ipv6.js';
import { SRC, DST, TIMESTAMPS, ROUTER_ALERT, pattern, writePacket, type PacketSpec } from '../support/packet-fixtures.js';

// The shared pool: received packets from PACKETS on, one per SLOT bytes; the
// coalescing arena at ARENA.
const SLOT = 2048;
const PACKETS = 6; // not 4-aligned
const ARENA = 200_000;
const STRIDE = COALESCE_MAX_WRITE_HEADER + 6;
const pool = new Uint8Array(ARENA + 128 * STRIDE);

// Adds each spec as the next received packet; returns the offsets used.
function addAll(batch: CoalesceBatch, specs: PacketSpec[]): number[] {
  const offsets: number[] = [];
  specs.forEach((spec, i) => {
    const off = PACKETS + i * SLOT;
    const length = writePacket(pool, off, spec);
    offsets.push(off);
    batch.add(pool, off, length);
  });
  return offsets;
}

// Write w as the bytes the TUN would receive.
function writeBytes(batch: CoalesceBatch, w: number): Uint8Array {
  const parts: number[] = [];
  const h = batch.writeHeaderOffset[w];
  for (let i = 0; i < batch.writeHeaderLength[w]; i++) parts.push(pool[h + i]);
  for (let s = batch.writeSegmentStart[w]; s < batch.writeSegmentEnd[w]; s++) {
    const o = batch.segmentOffset[s];
    for (let i = 0; i < batch.segmentLength[s]; i++) parts.push(pool[o + i]);
  }
  return Uint8Array.from(parts);
}

// Which packets (by arrival index) each write carries, found from the
// payload / packet offsets.
function grouping(batch: CoalesceBatch, offsets: number[]): number[][] {
  const groups: number[][] = [];
  for (let w = 0; w < batch.writeCount; w++) {
    const members: number[] = [];
    for (let s = batch.writeSegmentStart[w]; s < batch.writeSegmentEnd[w]; s++) {
      members.push(Math.floor((batch.segmentOffset[s] - PACKETS) / SLOT));
      assert.ok(offsets.includes(PACKETS + members[members.length - 1] * SLOT));
    }
    groups.push(members);
  }
  return groups;
}

// Consecutive MSS-sized segments of one flow.
function flowSegments(count: number, mss: number, extra: Partial<PacketSpec> = {}, seq0 = 5000): PacketSpec[] {
  const specs: PacketSpec[] = [];
  for (let i = 0; i < count; i++) {
    specs.push({ seq: seq0 + i * mss, id: 0x100 + i, payload: pattern(mss, i + 1), ...extra });
  }
  return specs;
}

function tcpVerifies(packet: Uint8Array, ihl: number, src = SRC): boolean {
  const l4Length = packet.length - ihl;
  return onesComplementSumNaive(packet, ihl, l4Length, pseudoHeaderSum(src, DST, IP_PROTOCOL_TCP, l4Length)) === 0xffff;
}

test('three full segments and a short one merge into one super-packet write', () => {
  const batch = new CoalesceBatch(64, 16);
  const specs = flowSegments(3, 1000);
  specs.push({ seq: 8000, id: 0x103, payload: pattern(300, 9), flags: TCP_FLAG_ACK | TCP_FLAG_PSH });
  const offsets = addAll(batch, specs);
  assert.is(batch.finish(pool, ARENA, STRIDE), 1);
  assert.equal(grouping(batch, offsets), [[0, 1, 2, 3]]);
  assert.is(batch.writeHeaderOffset[0], ARENA);
  assert.is(batch.writeHeaderLength[0], VIRTIO_NET_HDR_LEN + 40);

  const bytes = writeBytes(batch, 0);
  const vnet = new VirtioNetHeader();
  vnet.read(bytes, 0);
  assert.equal(
    { ...vnet },
    { flags: VIRTIO_NET_HDR_F_NEEDS_CSUM, gsoType: VIRTIO_NET_HDR_GSO_TCPV4, hdrLen: 40, gsoSize: 1000, csumStart: 20, csumOffset: 16 },
  );
  const packet = bytes.subarray(VIRTIO_NET_HDR_LEN);
  assert.is(packet.length, 40 + 3300);
  assert.is(validateIPv4(packet, 0, packet.length), DropReason.None);
  assert.is(read16(packet, 2), 3340);
  assert.is(read16(packet, 4), 0x100, "first member's id");
  assert.is(read32(packet, 24), 5000, "first member's seq");
  assert.is(packet[33], TCP_FLAG_ACK | TCP_FLAG_PSH, 'PSH from the last member');
  assert.is(read16(packet, 36), pseudoHeaderSum(SRC, DST, IP_PROTOCOL_TCP, 3320), 'partial checksum, not inverted');
  // What the kernel does with NEEDS_CSUM: the result must verify.
  assert.ok(completePartialChecksum(packet, 0, packet.length, vnet.csumStart, vnet.csumOffset));
  assert.ok(tcpVerifies(packet, 20));
});

test('a packet alone: zero virtio header and the whole packet, untouched', () => {
  const batch = new CoalesceBatch(8, 8);
  const offsets = addAll(batch, [{ seq: 1, payload: pattern(500, 1) }]);
  const before = pool.slice(offsets[0], offsets[0] + 540);
  pool.fill(0xee, ARENA, ARENA + STRIDE);
  assert.is(batch.finish(pool, ARENA, STRIDE), 1);
  assert.is(batch.writeHeaderLength[0], VIRTIO_NET_HDR_LEN);
  assert.equal(Array.from(pool.subarray(ARENA, ARENA + VIRTIO_NET_HDR_LEN)), new Array(10).fill(0));
  assert.is(batch.writeSegmentEnd[0] - batch.writeSegmentStart[0], 1);
  assert.is(batch.segmentOffset[0], offsets[0]);
  assert.is(batch.segmentLength[0], 540);
  assert.equal(pool.slice(offsets[0], offsets[0] + 540), before);
});

const roundTripCases = [
  { name: '45 x 1420, PSH', mss: 1420, payload: 45 * 1420, flags: TCP_FLAG_ACK | TCP_FLAG_PSH },
  { name: 'timestamps, short tail', mss: 1448, payload: 20000, tcpOptions: TIMESTAMPS, flags: TCP_FLAG_ACK },
  { name: 'IPv4 options, odd MSS', mss: 1001, payload: 7007, ipOptions: ROUTER_ALERT, flags: TCP_FLAG_ACK | TCP_FLAG_PSH },
  { name: 'DF clear (ids must increment)', mss: 1400, payload: 9000, df: false, flags: TCP_FLAG_ACK },
  { name: 'seq and id wrap', mss: 1460, payload: 14600, seq: 0xfffff000, id: 0xfffd, flags: TCP_FLAG_ACK },
];

for (const c of roundTripCases) {
  test(`split then coalesce gives back the super-packet: ${c.name}`, () => {
    pool.fill(0);
    const superOff = 100_000;
    const payload = pattern(c.payload, c.mss);
    const spec: PacketSpec = {
      payload,
      flags: c.flags,
      seq: c.seq ?? 777,
      id: c.id ?? 0x2222,
      df: c.df,
      ipOptions: c.ipOptions,
      tcpOptions: c.tcpOptions,
      l4Checksum: 'partial',
    };
    const length = writePacket(pool, superOff, spec);
    const ihl = 20 + (c.ipOptions ?? []).length;
    const thl = 20 + (c.tcpOptions ?? []).length;
    const vnet = new VirtioNetHeader();
    vnet.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
    vnet.gsoType = VIRTIO_NET_HDR_GSO_TCPV4;
    vnet.hdrLen = ihl + thl;
    vnet.gsoSize = c.mss;
    vnet.csumStart = ihl;
    vnet.csumOffset = 16;
    const originalVnet = new Uint8Array(10);
    vnet.write(originalVnet, 0);
    const original = pool.slice(superOff, superOff + length);

    const segments = new SegmentList(64);
    const splitArena = 170_000;
    const n = splitSuperPacket(pool, superOff, length, vnet, splitArena, 128, 0, segments);
    assert.ok(n > 1);

    // "Send" each segment: header and payload side by side in a receive slot.
    const batch = new CoalesceBatch(64, 8);
    for (let i = 0; i < n; i++) {
      const off = PACKETS + i * SLOT;
      const hl = segments.headerLength[i];
      pool.copyWithin(off, segments.headerOffset[i], segments.headerOffset[i] + hl);
      pool.copyWithin(off + hl, segments.payloadOffset[i], segments.payloadOffset[i] + segments.payloadLength[i]);
      batch.add(pool, off, hl + segments.payloadLength[i]);
    }
    assert.is(batch.finish(pool, ARENA, STRIDE), 1);
    const bytes = writeBytes(batch, 0);
    assert.equal(bytes.subarray(0, 10), originalVnet, 'virtio_net_hdr');
    assert.equal(bytes.subarray(10, 10 + ihl + thl), original.subarray(0, ihl + thl), 'headers, partial checksum included');
    assert.equal(bytes.subarray(10 + ihl + thl), payload, 'payload');
  });
}

test('interleaved flows: one write per flow, each in order, in order of first arrival', () => {
  const batch = new CoalesceBatch(64, 16);
  const a = flowSegments(4, 1200, { sport: 1111 }, 100);
  const b = flowSegments(4, 900, { sport: 2222 }, 90000);
  const c = flowSegments(2, 1300, { src: SRC + 1 }, 5);
  const specs = [a[0], b[0], a[1], c[0], b[1], a[2], b[2], c[1], b[3], a[3]];
  const offsets = addAll(batch, specs);
  assert.is(batch.finish(pool, ARENA, STRIDE), 3);
  assert.equal(grouping(batch, offsets), [
    [0, 2, 5, 9],
    [1, 4, 6, 8],
    [3, 7],
  ]);
  for (let w = 0; w < 3; w++) {
    const packet = writeBytes(batch, w).subarray(VIRTIO_NET_HDR_LEN);
    const src = read32(packet, 12);
    assert.ok(completePartialChecksum(packet, 0, packet.length, 20, 16));
    assert.ok(tcpVerifies(packet, 20, src), `write ${w}`);
  }
});

interface PreventCase {
  name: string;
  // Packets of one flow; edit() changes one of them.
  count?: number;
  edit: (specs: PacketSpec[]) => void;
  expect: number[][];
  verify?: boolean;
}

const prevent: PreventCase[] = [
  { name: 'nothing differs (control)', edit: () => {}, expect: [[0, 1, 2]] },
  { name: 'ACK number', edit: (s) => s.slice(1).forEach((p) => (p.ack = 78)), expect: [[0], [1, 2]] },
  { name: 'window', edit: (s) => (s[2].window = 503), expect: [[0, 1], [2]] },
  { name: 'TCP option bytes (TSval tick)', edit: (s) => s.forEach((p, i) => (p.tcpOptions = i < 2 ? TIMESTAMPS : [1, 1, 8, 10, 0x12, 0x34, 0x56, 0x79, 0x9a, 0xbc, 0xde, 0xf0])), expect: [[0, 1], [2]] },
  { name: 'TCP header length', edit: (s) => (s[1].tcpOptions = [1, 1, 1, 1]), expect: [[0], [1], [2]] },
  { name: 'IPv4 option bytes', edit: (s) => s.forEach((p, i) => (p.ipOptions = i === 1 ? [0x94, 0x04, 0, 1] : ROUTER_ALERT)), expect: [[0], [1], [2]] },
  { name: 'TTL', edit: (s) => s.slice(1).forEach((p) => (p.ttl = 62)), expect: [[0], [1, 2]] },
  { name: 'TOS', edit: (s) => (s[2].tos = 0x10), expect: [[0, 1], [2]] },
  { name: 'DF', edit: (s) => (s[1].df = false), expect: [[0], [1], [2]] },
  { name: 'DF clear, ids not consecutive', edit: (s) => s.forEach((p, i) => ((p.df = false), (p.id = 10 + i * 2))), expect: [[0], [1], [2]] },
  { name: 'DF set, ids not consecutive (allowed)', edit: (s) => s.forEach((p, i) => (p.id = 10 + i * 7)), expect: [[0, 1, 2]] },
  { name: 'seq gap', edit: (s) => (s[2].seq! += 1), expect: [[0, 1], [2]] },
  { name: 'seq repeat (retransmission)', edit: (s) => (s[2].seq = s[1].seq), expect: [[0, 1], [2]] },
  { name: 'PSH ends the group', edit: (s) => (s[1].flags = TCP_FLAG_ACK | TCP_FLAG_PSH), expect: [[0, 1], [2]] },
  { name: 'PSH on the first packet', edit: (s) => (s[0].flags = TCP_FLAG_ACK | TCP_FLAG_PSH), expect: [[0], [1, 2]] },
  { name: 'FIN', edit: (s) => (s[1].flags = TCP_FLAG_ACK | TCP_FLAG_FIN), expect: [[0], [1], [2]] },
  { name: 'SYN', edit: (s) => (s[1].flags = TCP_FLAG_ACK | TCP_FLAG_SYN), expect: [[0], [1], [2]] },
  { name: 'RST', edit: (s) => (s[2].flags = TCP_FLAG_RST | TCP_FLAG_ACK), expect: [[0, 1], [2]] },
  { name: 'URG', edit: (s) => (s[1].flags = TCP_FLAG_ACK | TCP_FLAG_URG), expect: [[0], [1], [2]] },
  { name: 'ECE', edit: (s) => (s[1].flags = TCP_FLAG_ACK | TCP_FLAG_ECE), expect: [[0], [1], [2]] },
  { name: 'CWR', edit: (s) => (s[0].flags = TCP_FLAG_ACK | TCP_FLAG_CWR), expect: [[0], [1, 2]] },
  { name: 'no ACK flag', edit: (s) => (s[1].flags = 0), expect: [[0], [1], [2]] },
  {
    name: 'short middle segment closes the group',
    edit: (s) => ((s[1].payload = pattern(500, 3)), (s[2].seq = s[1].seq! + 500)),
    expect: [[0, 1], [2]],
  },
  { name: 'larger segment after the first', count: 3, edit: (s) => (s[1].payload = pattern(1001, 3)), expect: [[0], [1], [2]] },
  { name: 'zero payload never merges', edit: (s) => ((s[1].payload = new Uint8Array(0)), (s[2].seq = s[1].seq)), expect: [[0], [1], [2]] },
  { name: 'fragment', edit: (s) => (s[1].fragment = true), expect: [[0], [1], [2]] },
  { name: 'not TCP', edit: (s) => (s[1].protocol = IP_PROTOCOL_UDP), expect: [[0], [1], [2]] },
  { name: 'bad checksum, verifying', verify: true, edit: (s) => (s[1].l4Checksum = 'bad'), expect: [[0], [1], [2]] },
  { name: 'bad checksum, not verifying (the outer UDP checksum covered it)', edit: (s) => (s[1].l4Checksum = 'bad'), expect: [[0, 1, 2]] },
  { name: 'good checksums, verifying', verify: true, edit: () => {}, expect: [[0, 1, 2]] },
];

for (const c of prevent) {
  test(`merge rule: ${c.name}`, () => {
    pool.fill(0);
    const specs = flowSegments(c.count ?? 3, 1000);
    c.edit(specs);
    const batch = new CoalesceBatch(16, 16, c.verify ?? false);
    const offsets = addAll(batch, specs);
    batch.finish(pool, ARENA, STRIDE);
    assert.equal(grouping(batch, offsets), c.expect);
  });
}

test('merge rule: the merged total length stays within 65535', () => {
  pool.fill(0);
  const mss = 1460;
  const specs = flowSegments(46, mss); // 40 + 46*1460 = 67200 > 65535
  const batch = new CoalesceBatch(64, 8);
  const offsets = addAll(batch, specs);
  assert.is(batch.finish(pool, ARENA, STRIDE), 2);
  const groups = grouping(batch, offsets);
  const fit = Math.floor((65535 - 40) / mss); // 44
  assert.is(groups[0].length, fit);
  assert.is(groups[1].length, 46 - fit);
  const first = writeBytes(batch, 0).subarray(VIRTIO_NET_HDR_LEN);
  assert.is(read16(first, 2), 40 + fit * mss);
  assert.ok(40 + (fit + 1) * mss > 65535);
});

test('a lone packet of a flow is never overtaken by later packets of that flow', () => {
  pool.fill(0);
  const specs = flowSegments(4, 1000);
  // A pure ACK (window update) between segments 1 and 2, with the seq the
  // next data segment also carries: segment 2 must not join [0, 1].
  const ack: PacketSpec = { seq: specs[2].seq, id: 0x200, payload: new Uint8Array(0), window: 600 };
  const batch = new CoalesceBatch(16, 16);
  const offsets = addAll(batch, [specs[0], specs[1], ack, specs[2], specs[3]]);
  batch.finish(pool, ARENA, STRIDE);
  assert.equal(grouping(batch, offsets), [[0, 1], [2], [3, 4]]);
});

test('flows beyond maxGroups are written packet by packet', () => {
  pool.fill(0);
  const a = flowSegments(2, 1000, { sport: 1 });
  const b = flowSegments(2, 1000, { sport: 2 });
  const batch = new CoalesceBatch(8, 1);
  const offsets = addAll(batch, [a[0], b[0], a[1], b[1]]);
  batch.finish(pool, ARENA, STRIDE);
  assert.equal(grouping(batch, offsets), [[0, 2], [1], [3]]);
});

test('reset() makes the batch reusable; capacity and stride misuse throw', () => {
  pool.fill(0);
  const batch = new CoalesceBatch(3, 4);
  addAll(batch, flowSegments(3, 800));
  assert.throws(() => batch.add(pool, PACKETS, 100), RangeError);
  assert.throws(() => batch.finish(pool, ARENA, COALESCE_MAX_WRITE_HEADER - 1), RangeError);
  assert.is(batch.finish(pool, ARENA, COALESCE_MAX_WRITE_HEADER), 1);
  batch.reset();
  assert.is(batch.packetCount, 0);
  // Same flow, new batch: nothing carried over from the previous one.
  const specs = flowSegments(2, 800, {}, 5000 + 3 * 800);
  const offsets = addAll(batch, specs);
  assert.is(batch.finish(pool, ARENA, STRIDE), 1);
  assert.equal(grouping(batch, offsets), [[0, 1]]);
  batch.reset();
  assert.is(batch.finish(pool, ARENA, STRIDE), 0);
});

test('a merged write resegments into the packets it was made of', () => {
  pool.fill(0);
  const specs = flowSegments(5, 1200, { tcpOptions: TIMESTAMPS });
  specs[4].payload = pattern(321, 4);
  const batch = new CoalesceBatch(16, 16);
  const offsets = addAll(batch, specs);
  assert.is(batch.finish(pool, ARENA, STRIDE), 1);
  const merged = writeBytes(batch, 0);
  const work = new Uint8Array(merged.length + 16 * 192);
  work.set(merged);
  const vnet = new VirtioNetHeader();
  vnet.read(work, 0);
  const out = new SegmentList(8);
  const n = splitSuperPacket(work, 10, merged.length - 10, vnet, merged.length, 192, 0, out);
  assert.is(n, 5);
  for (let i = 0; i < n; i++) {
    const seg = new Uint8Array(out.headerLength[i] + out.payloadLength[i]);
    seg.set(work.subarray(out.headerOffset[i], out.headerOffset[i] + out.headerLength[i]));
    seg.set(work.subarray(out.payloadOffset[i], out.payloadOffset[i] + out.payloadLength[i]), out.headerLength[i]);
    assert.equal(seg, pool.subarray(offsets[i], offsets[i] + seg.length), `segment ${i}`);
  }
});

// ---- UDP: USO super-packets (udpSegmentation) ----

// Consecutive datagrams of one UDP flow: one payload size each, consecutive ids.
function flowDatagrams(sizes: number[], extra: Partial<PacketSpec> = {}, id0 = 0x300): PacketSpec[] {
  return sizes.map((size, i) => ({
    protocol: IP_PROTOCOL_UDP,
    id: (id0 + i) & 0xffff,
    payload: pattern(size, 100 + i),
    ...extra,
  }));
}

const repeat = (size: number, count: number): number[] => new Array(count).fill(size);

function udpVerifies(packet: Uint8Array, ihl: number, src = SRC): boolean {
  const l4Length = packet.length - ihl;
  return onesComplementSumNaive(packet, ihl, l4Length, pseudoHeaderSum(src, DST, IP_PROTOCOL_UDP, l4Length)) === 0xffff;
}

// Splits write w of `batch` with splitSuperPacket, as the kernel's USO would,
// and returns each resulting datagram as bytes.
function resegment(batch: CoalesceBatch, w: number, capacity = 64): Uint8Array[] {
  const merged = writeBytes(batch, w);
  const stride = 128;
  const work = new Uint8Array(merged.length + capacity * stride);
  work.set(merged);
  const vnet = new VirtioNetHeader();
  vnet.read(work, 0);
  const out = new SegmentList(capacity);
  const n = splitSuperPacket(work, 10, merged.length - 10, vnet, merged.length, stride, 0, out);
  assert.ok(n > 0, `split failed: ${n}`);
  const datagrams: Uint8Array[] = [];
  for (let i = 0; i < n; i++) {
    const seg = new Uint8Array(out.headerLength[i] + out.payloadLength[i]);
    seg.set(work.subarray(out.headerOffset[i], out.headerOffset[i] + out.headerLength[i]));
    seg.set(work.subarray(out.payloadOffset[i], out.payloadOffset[i] + out.payloadLength[i]), out.headerLength[i]);
    datagrams.push(seg);
  }
  return datagrams;
}

test('UDP: same-size datagrams merge into one USO write', () => {
  pool.fill(0);
  const batch = new CoalesceBatch(64, 16, false, true);
  const specs = flowDatagrams(repeat(64, 5));
  const offsets = addAll(batch, specs);
  assert.is(batch.finish(pool, ARENA, STRIDE), 1);
  assert.equal(grouping(batch, offsets), [[0, 1, 2, 3, 4]]);
  assert.is(batch.writeHeaderLength[0], VIRTIO_NET_HDR_LEN + 28);

  const bytes = writeBytes(batch, 0);
  const vnet = new VirtioNetHeader();
  vnet.read(bytes, 0);
  assert.equal(
    { ...vnet },
    { flags: VIRTIO_NET_HDR_F_NEEDS_CSUM, gsoType: VIRTIO_NET_HDR_GSO_UDP_L4, hdrLen: 28, gsoSize: 64, csumStart: 20, csumOffset: 6 },
  );
  const packet = bytes.subarray(VIRTIO_NET_HDR_LEN);
  assert.is(packet.length, 28 + 5 * 64);
  assert.is(validateIPv4(packet, 0, packet.length), DropReason.None, 'IPv4 header checksum rebuilt');
  assert.is(read16(packet, 2), 28 + 320, 'IPv4 total length');
  assert.is(read16(packet, 4), 0x300, "first member's id");
  assert.is(read16(packet, 20), 40000, 'source port');
  assert.is(read16(packet, 22), 5201, 'destination port');
  assert.is(read16(packet, 24), 8 + 320, 'UDP length covers every payload');
  assert.is(read16(packet, 26), pseudoHeaderSum(SRC, DST, IP_PROTOCOL_UDP, 328), 'partial checksum, not inverted');
  // The segments are the payloads, in order, where they were received.
  for (let i = 0; i < 5; i++) {
    const s = batch.writeSegmentStart[0] + i;
    assert.is(batch.segmentOffset[s], offsets[i] + 28);
    assert.is(batch.segmentLength[s], 64);
    assert.equal(packet.subarray(28 + i * 64, 28 + (i + 1) * 64), specs[i].payload, `payload ${i}`);
  }
  // What the kernel does with NEEDS_CSUM when it does not resegment: must verify.
  assert.ok(completePartialChecksum(packet, 0, packet.length, vnet.csumStart, vnet.csumOffset));
  assert.ok(udpVerifies(packet, 20));
});

test('UDP: a datagram alone is written untouched, zero virtio header', () => {
  pool.fill(0);
  const batch = new CoalesceBatch(8, 8, false, true);
  const offsets = addAll(batch, flowDatagrams([100]));
  const before = pool.slice(offsets[0], offsets[0] + 128);
  pool.fill(0xee, ARENA, ARENA + STRIDE);
  assert.is(batch.finish(pool, ARENA, STRIDE), 1);
  assert.is(batch.writeHeaderLength[0], VIRTIO_NET_HDR_LEN);
  assert.equal(Array.from(pool.subarray(ARENA, ARENA + VIRTIO_NET_HDR_LEN)), new Array(10).fill(0));
  assert.is(batch.segmentOffset[0], offsets[0]);
  assert.is(batch.segmentLength[0], 128);
  assert.equal(pool.slice(offsets[0], offsets[0] + 128), before);
});

interface UdpRuleCase {
  name: string;
  sizes?: number[];
  edit?: (specs: PacketSpec[]) => void;
  expect: number[][];
  verify?: boolean;
  udpSegmentation?: boolean;
}

const udpRules: UdpRuleCase[] = [
  { name: 'nothing differs (control)', expect: [[0, 1, 2]] },
  { name: 'option off: nothing UDP merges', udpSegmentation: false, expect: [[0], [1], [2]] },
  { name: 'a shorter last datagram closes the group', sizes: [64, 64, 30, 64], expect: [[0, 1, 2], [3]] },
  { name: 'a shorter datagram in the middle splits', sizes: [64, 30, 64, 64], expect: [[0, 1], [2, 3]] },
  { name: 'a larger datagram in the middle splits', sizes: [64, 64, 100, 64, 64], expect: [[0, 1], [2, 3], [4]] },
  { name: 'a larger first datagram takes the next, shorter one as its last', sizes: [100, 64, 64], expect: [[0, 1], [2]] },
  { name: 'zero-length payload never merges', sizes: [64, 0, 64], expect: [[0], [1], [2]] },
  { name: 'zero checksum (none) is written alone', edit: (s) => (s[1].l4Checksum = 'zero'), expect: [[0], [1], [2]] },
  { name: 'zero checksum on the first', edit: (s) => (s[0].l4Checksum = 'zero'), expect: [[0], [1, 2]] },
  { name: 'bad checksum, verifying', verify: true, edit: (s) => (s[1].l4Checksum = 'bad'), expect: [[0], [1], [2]] },
  { name: 'bad checksum, not verifying', edit: (s) => (s[1].l4Checksum = 'bad'), expect: [[0, 1, 2]] },
  { name: 'good checksums, verifying', verify: true, expect: [[0, 1, 2]] },
  { name: 'UDP length shorter than the IPv4 payload (padding)', edit: (s) => (s[1].udpLength = 8 + 60), expect: [[0], [1], [2]] },
  { name: 'TTL', edit: (s) => s.slice(1).forEach((p) => (p.ttl = 62)), expect: [[0], [1, 2]] },
  { name: 'TOS', edit: (s) => (s[2].tos = 0x10), expect: [[0, 1], [2]] },
  { name: 'DF', edit: (s) => (s[1].df = false), expect: [[0], [1], [2]] },
  { name: 'DF clear, consecutive ids', edit: (s) => s.forEach((p) => (p.df = false)), expect: [[0, 1, 2]] },
  { name: 'DF clear, ids not consecutive', edit: (s) => s.forEach((p, i) => ((p.df = false), (p.id = 10 + i * 2))), expect: [[0], [1], [2]] },
  { name: 'DF set, ids not consecutive (allowed)', edit: (s) => s.forEach((p, i) => (p.id = 10 + i * 7)), expect: [[0, 1, 2]] },
  { name: 'IPv4 options, identical', edit: (s) => s.forEach((p) => (p.ipOptions = ROUTER_ALERT)), expect: [[0, 1, 2]] },
  { name: 'IPv4 option bytes differ', edit: (s) => s.forEach((p, i) => (p.ipOptions = i === 1 ? [0x94, 0x04, 0, 1] : ROUTER_ALERT)), expect: [[0], [1], [2]] },
  { name: 'IPv4 header length differs', edit: (s) => (s[1].ipOptions = ROUTER_ALERT), expect: [[0], [1], [2]] },
  { name: 'a fragment is alone and belongs to no flow (a later fragment has no ports)', edit: (s) => (s[1].fragment = true), expect: [[0, 2], [1]] },
  { name: 'another source port is another flow', edit: (s) => (s[1].sport = 40001), expect: [[0, 2], [1]] },
];

for (const c of udpRules) {
  test(`UDP merge rule: ${c.name}`, () => {
    pool.fill(0);
    const specs = flowDatagrams(c.sizes ?? repeat(64, 3));
    c.edit?.(specs);
    const batch = new CoalesceBatch(16, 16, c.verify ?? false, c.udpSegmentation ?? true);
    const offsets = addAll(batch, specs);
    batch.finish(pool, ARENA, STRIDE);
    assert.equal(grouping(batch, offsets), c.expect);
  });
}

test('UDP: interleaved flows keep per-flow order; TCP and UDP with the same ports never mix', () => {
  pool.fill(0);
  const a = flowDatagrams(repeat(64, 4), { sport: 1111 }, 0x10);
  const b = flowDatagrams([200, 200, 200, 50], { sport: 2222 }, 0x20);
  const t = flowSegments(3, 1000, { sport: 1111 }); // same addresses and ports as flow a
  const specs = [a[0], b[0], t[0], a[1], b[1], t[1], a[2], b[2], t[2], b[3], a[3]];
  const batch = new CoalesceBatch(16, 16, false, true);
  const offsets = addAll(batch, specs);
  assert.is(batch.finish(pool, ARENA, STRIDE), 3);
  assert.equal(grouping(batch, offsets), [
    [0, 3, 6, 10],
    [1, 4, 7, 9],
    [2, 5, 8],
  ]);
  const tcp = writeBytes(batch, 2);
  assert.is(tcp[1], VIRTIO_NET_HDR_GSO_TCPV4);
  const udp = writeBytes(batch, 1);
  assert.is(udp[1], VIRTIO_NET_HDR_GSO_UDP_L4);
  assert.is(read16(udp, VIRTIO_NET_HDR_LEN + 24), 8 + 650);
});

test('UDP: a group closes at 64 datagrams', () => {
  pool.fill(0);
  const count = 70;
  const batch = new CoalesceBatch(count, 4, false, true);
  const offsets = addAll(batch, flowDatagrams(repeat(16, count)));
  assert.is(batch.finish(pool, ARENA, STRIDE), 2);
  const groups = grouping(batch, offsets);
  assert.is(groups[0].length, COALESCE_MAX_UDP_SEGMENTS);
  assert.is(groups[1].length, count - COALESCE_MAX_UDP_SEGMENTS);
  assert.is(read16(writeBytes(batch, 0), VIRTIO_NET_HDR_LEN + 24), 8 + 64 * 16);
  assert.is(read16(writeBytes(batch, 1), VIRTIO_NET_HDR_LEN + 4), 0x300 + 64, 'second group starts at its own id');
});

test('UDP: the merged total length stays within 65535', () => {
  pool.fill(0);
  const size = 1400;
  const count = 50; // 28 + 50*1400 > 65535
  const batch = new CoalesceBatch(count, 4, false, true);
  const offsets = addAll(batch, flowDatagrams(repeat(size, count)));
  assert.is(batch.finish(pool, ARENA, STRIDE), 2);
  const groups = grouping(batch, offsets);
  const fit = Math.floor((65535 - 28) / size); // 46
  assert.is(groups[0].length, fit);
  assert.is(groups[1].length, count - fit);
  assert.is(read16(writeBytes(batch, 0), VIRTIO_NET_HDR_LEN + 2), 28 + fit * size);
});

const udpRoundTrips = [
  { name: '64 x 64 B (iperf3 -u -l 64)', sizes: repeat(64, 64) },
  { name: '10 x 1000 B and a 300 B tail', sizes: [...repeat(1000, 10), 300] },
  { name: 'odd sizes', sizes: [...repeat(333, 7), 1] },
  { name: 'IPv4 options', sizes: repeat(500, 6), extra: { ipOptions: ROUTER_ALERT } },
  { name: 'DF clear, ids wrap', sizes: repeat(700, 5), extra: { df: false }, id0: 0xfffe },
];

for (const c of udpRoundTrips) {
  test(`UDP round trip: USO resegmentation of the merged write gives back the datagrams: ${c.name}`, () => {
    pool.fill(0);
    const specs = flowDatagrams(c.sizes, c.extra ?? {}, c.id0 ?? 0x300);
    const batch = new CoalesceBatch(64, 8, true, true);
    const offsets = addAll(batch, specs);
    assert.is(batch.finish(pool, ARENA, STRIDE), 1);
    const datagrams = resegment(batch, 0);
    assert.is(datagrams.length, specs.length);
    datagrams.forEach((d, i) => {
      assert.equal(d, pool.subarray(offsets[i], offsets[i] + d.length), `datagram ${i}`);
    });
  });
}

test('UDP round trip: split then coalesce gives back the USO super-packet', () => {
  pool.fill(0);
  const superOff = 100_000;
  const mss = 1200;
  const payload = pattern(mss * 9 + 77, 5);
  const length = writePacket(pool, superOff, { protocol: IP_PROTOCOL_UDP, payload, id: 0x4444, l4Checksum: 'partial' });
  const vnet = new VirtioNetHeader();
  vnet.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
  vnet.gsoType = VIRTIO_NET_HDR_GSO_UDP_L4;
  vnet.hdrLen = 28;
  vnet.gsoSize = mss;
  vnet.csumStart = 20;
  vnet.csumOffset = 6;
  const originalVnet = new Uint8Array(10);
  vnet.write(originalVnet, 0);
  const original = pool.slice(superOff, superOff + length);

  const segments = new SegmentList(64);
  const n = splitSuperPacket(pool, superOff, length, vnet, 170_000, 128, 0, segments);
  assert.is(n, 10);
  const batch = new CoalesceBatch(64, 8, true, true);
  for (let i = 0; i < n; i++) {
    const off = PACKETS + i * SLOT;
    const hl = segments.headerLength[i];
    pool.copyWithin(off, segments.headerOffset[i], segments.headerOffset[i] + hl);
    pool.copyWithin(off + hl, segments.payloadOffset[i], segments.payloadOffset[i] + segments.payloadLength[i]);
    batch.add(pool, off, hl + segments.payloadLength[i]);
  }
  assert.is(batch.finish(pool, ARENA, STRIDE), 1);
  const bytes = writeBytes(batch, 0);
  assert.equal(bytes.subarray(0, 10), originalVnet, 'virtio_net_hdr');
  assert.equal(bytes.subarray(10, 38), original.subarray(0, 28), 'headers, partial checksum included');
  assert.equal(bytes.subarray(38), payload, 'payload');
});

// An IPv6 flow whose folded addresses (each address's four words XORed) and
// ports equal an IPv4 flow's: the two used to share one flow-table bucket, and
// interleaved they kept closing each other's group (4 writes). With IPv6
// keyed by a protocol of its own, each flow merges (2 writes).
test('an IPv6 flow whose address folds equal an IPv4 flow\'s: both still merge, each on its own', () => {
  const batch = new CoalesceBatch(8, 8);
  const v4 = flowSegments(2, 100);
  const offsets: number[] = [];
  for (let i = 0; i < 2; i++) {
    const off4 = PACKETS + (2 * i) * SLOT;
    const length4 = writePacket(pool, off4, v4[i]);
    const off6 = PACKETS + (2 * i + 1) * SLOT;
    const src6 = new Uint8Array(16);
    const dst6 = new Uint8Array(16);
    new DataView(src6.buffer).setUint32(0, SRC);
    new DataView(dst6.buffer).setUint32(0, DST);
    const tcpLength = length4 - 20;
    buildIPv6Header(pool, off6, tcpLength, IP_PROTOCOL_TCP, 64, src6, 0, dst6, 0);
    pool.copyWithin(off6 + IPV6_HEADER, off4 + 20, off4 + length4);
    batch.add(pool, off4, length4);
    batch.add(pool, off6, IPV6_HEADER + tcpLength);
    offsets.push(off4, off6);
  }
  assert.is(batch.finish(pool, ARENA, STRIDE), 2);
  assert.equal(grouping(batch, offsets), [
    [0, 2],
    [1, 3],
  ]);
});

test.run();
