import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { onesComplementSumNaive, pseudoHeaderSum } from '../../src/encap/checksum.js';
import { DropReason } from '../../src/encap/drop-reasons.js';
import { IP_PROTOCOL_TCP, IP_PROTOCOL_UDP, validateIPv4 } from '../../src/encap/ipv4.js';
import {
  SEGMENT_MAX_HEADERS,
  SegmentList,
  TCP_FLAG_ACK,
  TCP_FLAG_CWR,
  TCP_FLAG_FIN,
  TCP_FLAG_PSH,
  splitSuperPacket,
} from '../../src/encap/segmentation.js';
import {
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_GSO_ECN,
  VIRTIO_NET_HDR_GSO_NONE,
  VIRTIO_NET_HDR_GSO_TCPV4,
  VIRTIO_NET_HDR_GSO_TCPV6,
  VIRTIO_NET_HDR_GSO_UDP,
  VIRTIO_NET_HDR_GSO_UDP_L4,
  VirtioNetHeader,
} from '../../src/encap/virtio-net-header.js';

import { read16, read32, write16 } from '../../src/encap/bytes.js';
import { SRC, DST, TIMESTAMPS, ROUTER_ALERT, pattern, writePacket, type PacketSpec } from '../support/packet-fixtures.js';

function tsoHeader(gsoSize: number, ihl: number, l4HeaderLength: number, udp = false): VirtioNetHeader {
  const v = new VirtioNetHeader();
  v.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
  v.gsoType = udp ? VIRTIO_NET_HDR_GSO_UDP_L4 : VIRTIO_NET_HDR_GSO_TCPV4;
  v.hdrLen = ihl + l4HeaderLength;
  v.gsoSize = gsoSize;
  v.csumStart = ihl;
  v.csumOffset = udp ? 6 : 16;
  return v;
}

// Layout of the shared buffer: the super-packet at PKT, the header arena at ARENA.
const PKT = 2; // deliberately not 4-aligned
const ARENA = 70000;
const STRIDE = 192;
const HEADROOM = 28;
const pool = new Uint8Array(ARENA + 130 * STRIDE);

function segmentBytes(out: SegmentList, i: number): Uint8Array {
  const h = out.headerOffset[i];
  const p = out.payloadOffset[i];
  const packet = new Uint8Array(out.headerLength[i] + out.payloadLength[i]);
  packet.set(pool.subarray(h, h + out.headerLength[i]), 0);
  packet.set(pool.subarray(p, p + out.payloadLength[i]), out.headerLength[i]);
  return packet;
}

function l4Verifies(packet: Uint8Array, protocol: number): boolean {
  const ihl = (packet[0] & 15) * 4;
  const l4Length = packet.length - ihl;
  return onesComplementSumNaive(packet, ihl, l4Length, pseudoHeaderSum(SRC, DST, protocol, l4Length)) === 0xffff;
}

const tcpCases = [
  { name: '45 x MSS 1420 (64 KB class)', payload: 45 * 1420, mss: 1420, flags: TCP_FLAG_ACK | TCP_FLAG_PSH },
  { name: 'remainder segment, timestamps', payload: 10000, mss: 1448, tcpOptions: TIMESTAMPS, flags: TCP_FLAG_ACK },
  { name: 'odd MSS, odd remainder', payload: 5003, mss: 1001, flags: TCP_FLAG_ACK | TCP_FLAG_FIN | TCP_FLAG_PSH },
  { name: 'one segment of payload', payload: 700, mss: 1420, flags: TCP_FLAG_ACK | TCP_FLAG_PSH },
  { name: 'exactly one MSS', payload: 1420, mss: 1420, flags: TCP_FLAG_ACK },
  { name: 'IPv4 options copied', payload: 4000, mss: 1400, ipOptions: ROUTER_ALERT, tcpOptions: TIMESTAMPS, flags: TCP_FLAG_ACK },
  { name: 'CWR on the first segment only', payload: 3000, mss: 1000, flags: TCP_FLAG_ACK | TCP_FLAG_CWR, ecn: true },
  { name: 'id and seq wrap', payload: 6000, mss: 1460, id: 0xfffe, seq: 0xffffff00, flags: TCP_FLAG_ACK },
  { name: 'no payload', payload: 0, mss: 1460, flags: TCP_FLAG_ACK },
  { name: 'largest: 65535 total', payload: 65535 - 52, mss: 536, tcpOptions: TIMESTAMPS, flags: TCP_FLAG_ACK },
];

for (const c of tcpCases) {
  test(`TCP split: ${c.name}`, () => {
    pool.fill(0);
    const payload = pattern(c.payload, c.payload + c.mss);
    const spec: PacketSpec = {
      payload,
      flags: c.flags,
      seq: c.seq ?? 123456,
      id: c.id ?? 0x4242,
      ipOptions: c.ipOptions,
      tcpOptions: c.tcpOptions,
      l4Checksum: 'partial',
    };
    const length = writePacket(pool, PKT, spec);
    const ihl = 20 + (c.ipOptions ?? []).length;
    const thl = 20 + (c.tcpOptions ?? []).length;
    const original = pool.slice(PKT, PKT + length);
    const vnet = tsoHeader(c.mss, ihl, thl);
    if (c.ecn) vnet.gsoType |= VIRTIO_NET_HDR_GSO_ECN;
    const out = new SegmentList(128);

    const n = splitSuperPacket(pool, PKT, length, vnet, ARENA, STRIDE, HEADROOM, out);
    const expected = Math.max(1, Math.ceil(c.payload / c.mss));
    assert.is(n, expected);
    assert.is(out.count, expected);
    assert.equal(pool.subarray(PKT, PKT + length), original, 'super-packet untouched');

    const joined: number[] = [];
    for (let i = 0; i < n; i++) {
      assert.is(out.headerOffset[i], ARENA + i * STRIDE + HEADROOM);
      assert.is(out.headerLength[i], ihl + thl);
      assert.is(out.payloadOffset[i], PKT + ihl + thl + i * c.mss, 'payload stays in place');
      const seg = segmentBytes(out, i);
      assert.ok(seg.length <= ihl + thl + c.mss);
      assert.is(validateIPv4(seg, 0, seg.length), DropReason.None, `segment ${i} IPv4`);
      assert.is(read16(seg, 2), seg.length);
      assert.is(read16(seg, 4), (spec.id! + i) & 0xffff, 'id increments');
      assert.ok(l4Verifies(seg, IP_PROTOCOL_TCP), `segment ${i} TCP checksum`);
      assert.is(read32(seg, ihl + 4), (spec.seq! + i * c.mss) >>> 0, 'seq');
      let flags = c.flags;
      if (i !== n - 1) flags &= ~(TCP_FLAG_FIN | TCP_FLAG_PSH);
      if (i !== 0) flags &= ~TCP_FLAG_CWR;
      assert.is(seg[ihl + 13], flags, `segment ${i} flags`);
      // Everything but the rewritten fields is the original header.
      assert.equal(seg.subarray(20, ihl), original.subarray(20, ihl), 'IP options');
      assert.equal(seg.subarray(ihl + 8, ihl + 13), original.subarray(ihl + 8, ihl + 13), 'ack, data offset');
      assert.equal(seg.subarray(ihl + 14, ihl + 16), original.subarray(ihl + 14, ihl + 16), 'window');
      assert.equal(seg.subarray(ihl + 18, ihl + thl), original.subarray(ihl + 18, ihl + thl), 'urgent, options');
      for (const byte of seg.subarray(ihl + thl)) joined.push(byte);
    }
    assert.equal(Uint8Array.from(joined), payload, 'payloads concatenated');
  });
}

test('TCP split: hdr_len is a hint (the kernel may report the whole linear part)', () => {
  const length = writePacket(pool, PKT, { payload: pattern(4000, 1), l4Checksum: 'partial' });
  const vnet = tsoHeader(1448, 20, 20);
  vnet.hdrLen = 1200; // skb_headlen() on the forward path
  const out = new SegmentList(8);
  assert.is(splitSuperPacket(pool, PKT, length, vnet, ARENA, STRIDE, HEADROOM, out), 3);
  assert.is(out.headerLength[0], 40);
  for (let i = 0; i < 3; i++) assert.ok(l4Verifies(segmentBytes(out, i), IP_PROTOCOL_TCP));
});

test('TCP split: without NEEDS_CSUM the checksum fields are not required', () => {
  const length = writePacket(pool, PKT, { payload: pattern(3000, 2), l4Checksum: 'partial' });
  const vnet = tsoHeader(1448, 20, 20);
  vnet.flags = 0;
  vnet.csumStart = 0;
  vnet.csumOffset = 0;
  const out = new SegmentList(8);
  assert.is(splitSuperPacket(pool, PKT, length, vnet, ARENA, STRIDE, HEADROOM, out), 3);
  for (let i = 0; i < 3; i++) assert.ok(l4Verifies(segmentBytes(out, i), IP_PROTOCOL_TCP));
});

const udpCases = [
  { name: '40 x 1472', payload: 40 * 1472, mss: 1472 },
  { name: 'odd remainder', payload: 3001, mss: 1000 },
  { name: 'one datagram', payload: 100, mss: 1472 },
];

for (const c of udpCases) {
  test(`USO split: ${c.name}`, () => {
    pool.fill(0);
    const payload = pattern(c.payload, 7 + c.payload);
    const length = writePacket(pool, PKT, { protocol: IP_PROTOCOL_UDP, payload, id: 9, l4Checksum: 'partial' });
    const out = new SegmentList(64);
    const n = splitSuperPacket(pool, PKT, length, tsoHeader(c.mss, 20, 8, true), ARENA, STRIDE, HEADROOM, out);
    assert.is(n, Math.ceil(c.payload / c.mss));
    const joined: number[] = [];
    for (let i = 0; i < n; i++) {
      const seg = segmentBytes(out, i);
      assert.is(validateIPv4(seg, 0, seg.length), DropReason.None);
      assert.is(read16(seg, 4), 9 + i);
      assert.is(read16(seg, 20 + 4), seg.length - 20, 'UDP length');
      assert.is.not(read16(seg, 20 + 6), 0, 'UDP checksum present');
      assert.ok(l4Verifies(seg, IP_PROTOCOL_UDP), `segment ${i} UDP checksum`);
      for (const byte of seg.subarray(28)) joined.push(byte);
    }
    assert.equal(Uint8Array.from(joined), payload);
  });
}

test('USO split: a computed UDP checksum of 0 is sent as 0xFFFF', () => {
  pool.fill(0);
  const payload = pattern(200, 5);
  // Make the single datagram's full sum 0xffff through its last payload word.
  payload[198] = 0;
  payload[199] = 0;
  let length = writePacket(pool, PKT, { protocol: IP_PROTOCOL_UDP, payload });
  write16(pool, PKT + 26, 0);
  const sum = onesComplementSumNaive(pool, PKT + 20, length - 20, pseudoHeaderSum(SRC, DST, IP_PROTOCOL_UDP, length - 20));
  payload[198] = ~sum >>> 8;
  payload[199] = ~sum;
  length = writePacket(pool, PKT, { protocol: IP_PROTOCOL_UDP, payload, l4Checksum: 'partial' });
  const out = new SegmentList(4);
  assert.is(splitSuperPacket(pool, PKT, length, tsoHeader(1472, 20, 8, true), ARENA, STRIDE, HEADROOM, out), 1);
  const seg = segmentBytes(out, 0);
  assert.is(read16(seg, 26), 0xffff);
  assert.ok(l4Verifies(seg, IP_PROTOCOL_UDP));
});

interface MalformedCase {
  name: string;
  reason: number;
  edit: (v: VirtioNetHeader, pkt: Uint8Array) => void;
  udp?: boolean;
  capacity?: number;
  length?: number;
}

const malformed: MalformedCase[] = [
  { name: 'gso_size 0', reason: DropReason.BadVirtioNetHeader, edit: (v) => (v.gsoSize = 0) },
  { name: 'csum_start not the IP header length', reason: DropReason.BadVirtioNetHeader, edit: (v) => (v.csumStart = 24) },
  { name: 'csum_offset not the TCP checksum', reason: DropReason.BadVirtioNetHeader, edit: (v) => (v.csumOffset = 6) },
  { name: 'gso_type NONE', reason: DropReason.BadVirtioNetHeader, edit: (v) => (v.gsoType = VIRTIO_NET_HDR_GSO_NONE) },
  { name: 'gso_type TCPV6 on IPv4', reason: DropReason.BadVirtioNetHeader, edit: (v) => (v.gsoType = VIRTIO_NET_HDR_GSO_TCPV6) },
  { name: 'gso_type UFO', reason: DropReason.BadVirtioNetHeader, edit: (v) => (v.gsoType = VIRTIO_NET_HDR_GSO_UDP) },
  { name: 'TCPV4 on a UDP packet', reason: DropReason.BadVirtioNetHeader, edit: (_v, p) => (p[PKT + 9] = IP_PROTOCOL_UDP) },
  {
    name: 'UDP_L4 on a TCP packet',
    reason: DropReason.BadVirtioNetHeader,
    edit: (v) => {
      v.gsoType = VIRTIO_NET_HDR_GSO_UDP_L4;
      v.csumOffset = 6;
    },
  },
  { name: 'UDP_L4 csum_offset 16', reason: DropReason.BadVirtioNetHeader, udp: true, edit: (v) => (v.csumOffset = 16) },
  { name: 'hdr_len beyond the packet', reason: DropReason.BadVirtioNetHeader, edit: (v) => (v.hdrLen = 5000) },
  { name: 'TCP data offset 4', reason: DropReason.BadVirtioNetHeader, edit: (_v, p) => (p[PKT + 20 + 12] = 0x40) },
  { name: 'total length shorter than IPv4 + TCP', reason: DropReason.BadVirtioNetHeader, edit: (_v, p) => write16(p, PKT + 2, 30) },
  {
    name: 'TCP options beyond the packet',
    reason: DropReason.BadVirtioNetHeader,
    edit: (_v, p) => {
      p[PKT + 20 + 12] = 0xf0;
      write16(p, PKT + 2, 70);
    },
  },
  { name: 'a fragment', reason: DropReason.BadVirtioNetHeader, edit: (_v, p) => (p[PKT + 6] |= 0x20) },
  { name: 'not IPv4', reason: DropReason.NotIPv4, edit: (_v, p) => (p[PKT] = 0x65) },
  { name: 'IHL 4', reason: DropReason.BadHeaderLength, edit: (_v, p) => (p[PKT] = 0x44) },
  { name: 'total length beyond the read', reason: DropReason.BadTotalLength, edit: (_v, p) => write16(p, PKT + 2, 5000) },
  { name: 'shorter than an IPv4 header', reason: DropReason.TooShort, edit: () => {}, length: 19 },
  { name: 'more segments than the list holds', reason: DropReason.TooManySegments, edit: () => {}, capacity: 2 },
];

for (const c of malformed) {
  test(`malformed super-packet: ${c.name} → ${c.reason}`, () => {
    pool.fill(0);
    const length = writePacket(pool, PKT, {
      protocol: c.udp ? IP_PROTOCOL_UDP : IP_PROTOCOL_TCP,
      payload: pattern(4000, 3),
      l4Checksum: 'partial',
    });
    const vnet = tsoHeader(1400, 20, c.udp ? 8 : 20, c.udp);
    const out = new SegmentList(c.capacity ?? 16);
    assert.is(splitSuperPacket(pool, PKT, length, vnet, ARENA, STRIDE, HEADROOM, new SegmentList(16)), 3, 'valid before the edit');
    c.edit(vnet, pool);
    assert.is(splitSuperPacket(pool, PKT, c.length ?? length, vnet, ARENA, STRIDE, HEADROOM, out), -c.reason);
    assert.is(out.count, 0);
  });
}

test('an arena stride too small for the largest headers is a caller bug', () => {
  const length = writePacket(pool, PKT, { payload: pattern(100, 1), l4Checksum: 'partial' });
  const out = new SegmentList(4);
  assert.throws(() => splitSuperPacket(pool, PKT, length, tsoHeader(1400, 20, 20), ARENA, HEADROOM + SEGMENT_MAX_HEADERS - 1, HEADROOM, out), RangeError);
  assert.is(splitSuperPacket(pool, PKT, length, tsoHeader(1400, 20, 20), ARENA, HEADROOM + SEGMENT_MAX_HEADERS, HEADROOM, out), 1);
});

test.run();
