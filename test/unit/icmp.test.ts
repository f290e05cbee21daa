import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { internetChecksum } from '../../src/encap/checksum.js';
import { DropReason } from '../../src/encap/drop-reasons.js';
import {
  ICMP_DEST_UNREACH,
  ICMP_DEST_UNREACH_MAX_LENGTH,
  ICMP_ECHO_REPLY,
  ICMP_ECHO_REQUEST,
  ICMP_FRAG_NEEDED,
  ICMP_NET_UNREACHABLE,
  buildIcmpDestUnreachable,
  buildIcmpEcho,
} from '../../src/encap/icmp.js';
import {
  IPV4_OFFSET_CHECKSUM,
  IPV4_OFFSET_FLAGS_FRAGMENT,
  IPV4_OFFSET_SOURCE,
  IPV4_OFFSET_DESTINATION,
  IPV4_OFFSET_TOTAL_LENGTH,
  buildIPv4Header,
  ipv4Destination,
  ipv4Protocol,
  ipv4Source,
  ipv4TotalLength,
  validateIPv4,
} from '../../src/encap/ipv4.js';

const POD_ADDR = 0x0af40105; // 10.244.1.5
const REMOTE_POD_ADDR = 0x0af40909; // 10.244.9.9
const NODE_TUN_ADDR = 0x0af40100; // 10.244.1.0

// UDP 10.244.1.5:54321 -> 10.244.9.9:53, ID 0x1234, DF, TTL 64, payload "abcd".
// IP checksum 0x08a4 computed independently (Python).
const UDP_PACKET = [
  0x45, 0x00, 0x00, 0x20, 0x12, 0x34, 0x40, 0x00, 0x40, 0x11, 0x08, 0xa4, 0x0a, 0xf4, 0x01, 0x05, 0x0a, 0xf4,
  0x09, 0x09, /* UDP */ 0xd4, 0x31, 0x00, 0x35, 0x00, 0x0c, 0x00, 0x00, /* payload */ 0x61, 0x62, 0x63, 0x64,
];

// The net-unreachable reply to UDP_PACKET from 10.244.1.0 with IP ID 1.
// IP checksum: 4500+0038+0001+0000+4001+0af4+0100+0af4+0105 = 9d27, ~ = 62d8.
// ICMP checksum: 0300 + (quoted IP header, sums to ffff ≡ 0) + d431+0035+000c+0000
//   = 0300 + d472 = d772, ~ = 288d.
const EXPECTED_NET_UNREACHABLE = [
  0x45, 0x00, 0x00, 0x38, 0x00, 0x01, 0x00, 0x00, 0x40, 0x01, 0x62, 0xd8, 0x0a, 0xf4, 0x01, 0x00, 0x0a, 0xf4,
  0x01, 0x05, /* ICMP */ 0x03, 0x00, 0x28, 0x8d, 0x00, 0x00, 0x00, 0x00, /* quote: header + 8 bytes */ 0x45,
  0x00, 0x00, 0x20, 0x12, 0x34, 0x40, 0x00, 0x40, 0x11, 0x08, 0xa4, 0x0a, 0xf4, 0x01, 0x05, 0x0a, 0xf4, 0x09,
  0x09, 0xd4, 0x31, 0x00, 0x35, 0x00, 0x0c, 0x00, 0x00,
];

function udpPacketAt(at: number): Uint8Array {
  const buf = new Uint8Array(at + UDP_PACKET.length);
  buf.set(UDP_PACKET, at);
  return buf;
}

function refreshChecksum(buf: Uint8Array, off: number): void {
  buf[off + IPV4_OFFSET_CHECKSUM] = 0;
  buf[off + IPV4_OFFSET_CHECKSUM + 1] = 0;
  const checksum = internetChecksum(buf, off, (buf[off] & 0x0f) * 4);
  buf[off + IPV4_OFFSET_CHECKSUM] = checksum >>> 8;
  buf[off + IPV4_OFFSET_CHECKSUM + 1] = checksum;
}

function writeAddr(buf: Uint8Array, at: number, addr: number): void {
  buf[at] = addr >>> 24;
  buf[at + 1] = addr >>> 16;
  buf[at + 2] = addr >>> 8;
  buf[at + 3] = addr;
}

// An ICMP message of `type` from the pod, with 12 bytes after the ICMP type.
function icmpPacket(type: number): Uint8Array {
  const buf = new Uint8Array(20 + 16);
  buildIPv4Header(buf, 0, buf.length, 9, 64, 1, POD_ADDR, REMOTE_POD_ADDR, false);
  buf[20] = type;
  const checksum = internetChecksum(buf, 20, 16);
  buf[22] = checksum >>> 8;
  buf[23] = checksum;
  return buf;
}

function unreachable(orig: Uint8Array, off = 0, len = orig.length - off): number {
  return buildIcmpDestUnreachable(orig, off, len, new Uint8Array(128), 0, NODE_TUN_ADDR, ICMP_NET_UNREACHABLE);
}

test('net unreachable for a UDP packet: exact bytes', () => {
  const orig = udpPacketAt(0);
  const out = new Uint8Array(64);
  const written = buildIcmpDestUnreachable(orig, 0, orig.length, out, 0, NODE_TUN_ADDR, ICMP_NET_UNREACHABLE, 0, 1);
  assert.is(written, 56);
  assert.equal(Array.from(out.subarray(0, written)), EXPECTED_NET_UNREACHABLE);
  assert.is(out[56] | out[57], 0, 'nothing written past the reply');
});

test('the reply is a valid packet to the original source with a valid ICMP checksum', () => {
  const orig = udpPacketAt(7);
  const out = new Uint8Array(200);
  const written = buildIcmpDestUnreachable(orig, 7, UDP_PACKET.length, out, 33, NODE_TUN_ADDR, ICMP_NET_UNREACHABLE);
  assert.is(written, 56);
  assert.is(validateIPv4(out, 33, written), DropReason.None);
  assert.is(ipv4TotalLength(out, 33), written);
  assert.is(ipv4Protocol(out, 33), 1);
  assert.is(ipv4Source(out, 33), NODE_TUN_ADDR);
  assert.is(ipv4Destination(out, 33), POD_ADDR);
  assert.is(out[33 + 20], ICMP_DEST_UNREACH);
  assert.is(internetChecksum(out, 33 + 20, written - 20), 0);
});

test('fragmentation needed carries the next-hop MTU in bytes 6-7', () => {
  const orig = udpPacketAt(0);
  const out = new Uint8Array(64);
  const written = buildIcmpDestUnreachable(orig, 0, orig.length, out, 0, NODE_TUN_ADDR, ICMP_FRAG_NEEDED, 1450);
  assert.is(written, 56);
  // type, code, unused (4-5), MTU 1450 = 0x05aa (6-7)
  assert.equal([out[20], out[21], out[24], out[25], out[26], out[27]], [3, 4, 0, 0, 0x05, 0xaa]);
  assert.is(internetChecksum(out, 20, written - 20), 0);
});

test('the MTU is ignored for other codes', () => {
  const orig = udpPacketAt(0);
  const out = new Uint8Array(64);
  buildIcmpDestUnreachable(orig, 0, orig.length, out, 0, NODE_TUN_ADDR, ICMP_NET_UNREACHABLE, 1450, 1);
  assert.equal(Array.from(out.subarray(0, 56)), EXPECTED_NET_UNREACHABLE);
});

test('short original: quotes fewer than 8 payload bytes', () => {
  const orig = new Uint8Array(23);
  buildIPv4Header(orig, 0, 23, 1, 64, 17, POD_ADDR, REMOTE_POD_ADDR, false);
  orig.set([0xaa, 0xbb, 0xcc], 20);
  const out = new Uint8Array(128);
  const written = buildIcmpDestUnreachable(orig, 0, 23, out, 0, NODE_TUN_ADDR, ICMP_NET_UNREACHABLE);
  assert.is(written, 20 + 8 + 23);
  assert.equal(Array.from(out.subarray(28, written)), Array.from(orig));
  assert.is(internetChecksum(out, 20, written - 20), 0);
});

test('header options are quoted; bytes beyond the total length are not', () => {
  const orig = new Uint8Array(24 + 12 + 10);
  buildIPv4Header(orig, 0, 36, 1, 64, 17, POD_ADDR, REMOTE_POD_ADDR, false);
  orig[0] = 0x46; // one option word of NOPs
  orig.set([1, 1, 1, 1], 20);
  for (let i = 24; i < 36; i++) orig[i] = i;
  orig.fill(0xee, 36); // link padding
  refreshChecksum(orig, 0);
  const out = new Uint8Array(128);
  const written = buildIcmpDestUnreachable(orig, 0, orig.length, out, 0, NODE_TUN_ADDR, ICMP_NET_UNREACHABLE);
  assert.is(written, 20 + 8 + 24 + 8);
  assert.equal(Array.from(out.subarray(28, written)), Array.from(orig.subarray(0, 32)));

  const padded = new Uint8Array(22 + 10).fill(0xee);
  buildIPv4Header(padded, 0, 22, 1, 64, 17, POD_ADDR, REMOTE_POD_ADDR, false);
  padded[20] = 0x11;
  padded[21] = 0x22;
  const writtenPadded = buildIcmpDestUnreachable(padded, 0, padded.length, out, 0, NODE_TUN_ADDR, ICMP_NET_UNREACHABLE);
  assert.is(writtenPadded, 20 + 8 + 22);
});

test('the largest reply fits ICMP_DEST_UNREACH_MAX_LENGTH', () => {
  const orig = new Uint8Array(60 + 100);
  buildIPv4Header(orig, 0, orig.length, 1, 64, 6, POD_ADDR, REMOTE_POD_ADDR, false);
  orig[0] = 0x4f;
  refreshChecksum(orig, 0);
  const out = new Uint8Array(ICMP_DEST_UNREACH_MAX_LENGTH);
  assert.is(buildIcmpDestUnreachable(orig, 0, orig.length, out, 0, NODE_TUN_ADDR, 0), ICMP_DEST_UNREACH_MAX_LENGTH);
});

test('suppressed for ICMP error messages (types 3, 4, 5, 11, 12)', () => {
  for (const type of [3, 4, 5, 11, 12]) assert.is(unreachable(icmpPacket(type)), 0, `type ${type}`);
});

test('produced for informational ICMP: echo request and reply, timestamp', () => {
  for (const type of [ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY, 13]) {
    assert.is(unreachable(icmpPacket(type)), 20 + 8 + 20 + 8, `type ${type}`);
  }
});

test('suppressed for an ICMP packet with no type byte', () => {
  const orig = new Uint8Array(20);
  buildIPv4Header(orig, 0, 20, 1, 64, 1, POD_ADDR, REMOTE_POD_ADDR, false);
  assert.is(unreachable(orig), 0);
});

test('suppressed for later fragments, produced for a first fragment', () => {
  const orig = udpPacketAt(0);
  orig[IPV4_OFFSET_FLAGS_FRAGMENT] = 0x20; // MF, offset 0
  orig[IPV4_OFFSET_FLAGS_FRAGMENT + 1] = 0x00;
  refreshChecksum(orig, 0);
  assert.is(unreachable(orig), 56);
  orig[IPV4_OFFSET_FLAGS_FRAGMENT] = 0x00; // last fragment at offset 185*8
  orig[IPV4_OFFSET_FLAGS_FRAGMENT + 1] = 185;
  refreshChecksum(orig, 0);
  assert.is(unreachable(orig), 0);
});

test('suppressed for sources that are not a single host', () => {
  for (const source of [0x00000000, 0xffffffff, 0xe0000005, 0xefffffff, 0x7f000001, 0xf0000001]) {
    const orig = udpPacketAt(0);
    writeAddr(orig, IPV4_OFFSET_SOURCE, source);
    refreshChecksum(orig, 0);
    assert.is(unreachable(orig), 0, `source ${source.toString(16)}`);
  }
});

test('suppressed for multicast and broadcast destinations', () => {
  for (const destination of [0xe00000fb, 0xffffffff]) {
    const orig = udpPacketAt(0);
    writeAddr(orig, IPV4_OFFSET_DESTINATION, destination);
    refreshChecksum(orig, 0);
    assert.is(unreachable(orig), 0, `destination ${destination.toString(16)}`);
  }
});

test('suppressed for malformed originals', () => {
  const badChecksum = udpPacketAt(0);
  badChecksum[IPV4_OFFSET_CHECKSUM] ^= 1;
  assert.is(unreachable(badChecksum), 0);
  assert.is(unreachable(udpPacketAt(0), 0, 19), 0);
  const longTotal = udpPacketAt(0);
  longTotal[IPV4_OFFSET_TOTAL_LENGTH + 1] = 0x40;
  refreshChecksum(longTotal, 0);
  assert.is(unreachable(longTotal), 0);
});

test('buildIcmpEcho: request and reply with valid checksums and fields', () => {
  const out = new Uint8Array(200);
  const written = buildIcmpEcho(out, 5, POD_ADDR, REMOTE_POD_ADDR, ICMP_ECHO_REQUEST, 0x1234, 0x0102, 56);
  assert.is(written, 20 + 8 + 56);
  assert.is(validateIPv4(out, 5, written), DropReason.None);
  assert.is(ipv4Protocol(out, 5), 1);
  assert.is(ipv4Source(out, 5), POD_ADDR);
  assert.is(ipv4Destination(out, 5), REMOTE_POD_ADDR);
  assert.is(out[25], ICMP_ECHO_REQUEST);
  assert.equal([out[26], out[29], out[30], out[31], out[32]], [0, 0x12, 0x34, 0x01, 0x02]);
  assert.is(out[33 + 55], 55, 'payload pattern');
  assert.is(internetChecksum(out, 25, written - 20), 0);

  const reply = buildIcmpEcho(out, 0, REMOTE_POD_ADDR, POD_ADDR, ICMP_ECHO_REPLY, 0x1234, 0x0102, 0);
  assert.is(reply, 28);
  assert.is(out[20], 0);
  assert.is(internetChecksum(out, 20, 8), 0);
  // 0x0000 + 0 + 0x1234 + 0x0102 = 0x1336, ~ = 0xecc9
  assert.equal([out[22], out[23]], [0xec, 0xc9]);
});

test.run();
