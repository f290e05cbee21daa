import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { internetChecksum, onesComplementSumNaive } from '../../src/encap/checksum.js';
import { DropReason } from '../../src/encap/drop-reasons.js';
import { ICMP_ECHO_REQUEST, buildIcmpEcho } from '../../src/encap/icmp.js';
import { IPV4_OFFSET_CHECKSUM, IPV4_OFFSET_FLAGS_FRAGMENT, IPV4_OFFSET_PROTOCOL, validateIPv4 } from '../../src/encap/ipv4.js';
import {
  OUTER_IPV4_UDP_HEADERS,
  UDP_HEADER,
  buildOuterIPv4Udp,
  createOuterUdpFields,
  parseOuterIPv4Udp,
} from '../../src/encap/udp-frame.js';

const NODE_A = 0xc0a8010a; // 192.168.1.10
const NODE_B = 0xc0a80114; // 192.168.1.20
const FLANNEL_UDP_PORT = 8285;

// 192.168.1.10:8285 -> 192.168.1.20:8285, ID 0x0abc, DF, payload "hi!" (odd
// length). IP checksum 0xaca3 and UDP checksum 0xb245 computed independently (Python).
const OUTER_EXAMPLE = [
  0x45, 0x00, 0x00, 0x1f, 0x0a, 0xbc, 0x40, 0x00, 0x40, 0x11, 0xac, 0xa3, 0xc0, 0xa8, 0x01, 0x0a, 0xc0, 0xa8,
  0x01, 0x14, /* UDP */ 0x20, 0x5d, 0x20, 0x5d, 0x00, 0x0b, 0xb2, 0x45, /* payload */ 0x68, 0x69, 0x21,
];

function refreshIpChecksum(buf: Uint8Array, off: number): void {
  buf[off + IPV4_OFFSET_CHECKSUM] = 0;
  buf[off + IPV4_OFFSET_CHECKSUM + 1] = 0;
  const checksum = internetChecksum(buf, off, 20);
  buf[off + IPV4_OFFSET_CHECKSUM] = checksum >>> 8;
  buf[off + IPV4_OFFSET_CHECKSUM + 1] = checksum;
}

// An outer datagram at `off` carrying an inner ICMP echo packet.
function framedEcho(off: number, withUdpChecksum: boolean, innerPayload = 56): { buf: Uint8Array; length: number } {
  const buf = new Uint8Array(off + OUTER_IPV4_UDP_HEADERS + 20 + 8 + innerPayload + 16);
  const innerLength = buildIcmpEcho(buf, off + OUTER_IPV4_UDP_HEADERS, 0x0af40105, 0x0af40909, ICMP_ECHO_REQUEST, 7, 1, innerPayload);
  const headers = buildOuterIPv4Udp(buf, off, NODE_A, NODE_B, 40000, FLANNEL_UDP_PORT, innerLength, 0x4242, withUdpChecksum);
  return { buf, length: headers + innerLength };
}

test('builds the example datagram byte for byte', () => {
  const buf = new Uint8Array(2 + 31);
  buf.set([0x68, 0x69, 0x21], 2 + OUTER_IPV4_UDP_HEADERS);
  const headers = buildOuterIPv4Udp(buf, 2, NODE_A, NODE_B, FLANNEL_UDP_PORT, FLANNEL_UDP_PORT, 3, 0x0abc, true);
  assert.is(headers, 28);
  assert.equal(Array.from(buf.subarray(2)), OUTER_EXAMPLE);
});

test('UDP checksum agrees with the naive sum over pseudo-header, header and payload', () => {
  const { buf, length } = framedEcho(3, true);
  const udpLength = length - 20;
  const pseudoAndSegment = new Uint8Array(12 + udpLength);
  pseudoAndSegment.set(buf.subarray(3 + 12, 3 + 20), 0); // source, destination
  pseudoAndSegment.set([0, 17, udpLength >>> 8, udpLength], 8);
  pseudoAndSegment.set(buf.subarray(3 + 20, 3 + length), 12);
  assert.is(onesComplementSumNaive(pseudoAndSegment, 0, pseudoAndSegment.length), 0xffff);
  const stored = (pseudoAndSegment[12 + 6] << 8) | pseudoAndSegment[12 + 7];
  pseudoAndSegment[12 + 6] = 0;
  pseudoAndSegment[12 + 7] = 0;
  assert.is(stored, ~onesComplementSumNaive(pseudoAndSegment, 0, pseudoAndSegment.length) & 0xffff);
});

test('build -> parse round trip, with and without UDP checksum', () => {
  for (const withUdpChecksum of [true, false]) {
    for (const off of [0, 1, 2, 3]) {
      const { buf, length } = framedEcho(off, withUdpChecksum);
      assert.is(validateIPv4(buf, off, length), DropReason.None);
      if (!withUdpChecksum) assert.is(buf[off + 26] | buf[off + 27], 0);
      const fields = createOuterUdpFields();
      assert.is(parseOuterIPv4Udp(buf, off, length, fields), DropReason.None);
      assert.equal(fields, {
        srcAddr: NODE_A,
        dstAddr: NODE_B,
        srcPort: 40000,
        dstPort: FLANNEL_UDP_PORT,
        payloadOffset: off + OUTER_IPV4_UDP_HEADERS,
        payloadLength: length - OUTER_IPV4_UDP_HEADERS,
      });
      // The inner packet is intact where the parser says it is.
      assert.is(validateIPv4(buf, fields.payloadOffset, fields.payloadLength), DropReason.None);
    }
  }
});

test('a computed UDP checksum of 0 is sent as 0xffff and still verifies', () => {
  const buf = new Uint8Array(28 + 4);
  // Pick the last payload word so the datagram sums to 0xffff without a checksum.
  buildOuterIPv4Udp(buf, 0, NODE_A, NODE_B, 1, 2, 4, 0, true);
  const checksumWithZeroLastWord = (buf[26] << 8) | buf[27];
  buf[30] = checksumWithZeroLastWord >>> 8;
  buf[31] = checksumWithZeroLastWord;
  buildOuterIPv4Udp(buf, 0, NODE_A, NODE_B, 1, 2, 4, 0, true);
  assert.equal([buf[26], buf[27]], [0xff, 0xff]);
  assert.is(parseOuterIPv4Udp(buf, 0, 32, createOuterUdpFields()), DropReason.None);
});

test('parse: a corrupted payload fails the UDP checksum, unless there is none', () => {
  const fields = createOuterUdpFields();
  const checked = framedEcho(0, true);
  checked.buf[60] ^= 0x10;
  assert.is(parseOuterIPv4Udp(checked.buf, 0, checked.length, fields), DropReason.BadUdpChecksum);
  const unchecked = framedEcho(0, false);
  unchecked.buf[60] ^= 0x10;
  assert.is(parseOuterIPv4Udp(unchecked.buf, 0, unchecked.length, fields), DropReason.None);
});

test('parse: IPv4 problems come back as their IPv4 reason', () => {
  const fields = createOuterUdpFields();
  const { buf, length } = framedEcho(0, true);
  assert.is(parseOuterIPv4Udp(buf, 0, 10, fields), DropReason.TooShort);
  assert.is(parseOuterIPv4Udp(buf, 0, length - 1, fields), DropReason.BadTotalLength);
  buf[IPV4_OFFSET_CHECKSUM] ^= 0x80;
  assert.is(parseOuterIPv4Udp(buf, 0, length, fields), DropReason.BadHeaderChecksum);
});

test('parse: NotUdp for another protocol', () => {
  const { buf, length } = framedEcho(0, true);
  buf[IPV4_OFFSET_PROTOCOL] = 6;
  refreshIpChecksum(buf, 0);
  assert.is(parseOuterIPv4Udp(buf, 0, length, createOuterUdpFields()), DropReason.NotUdp);
});

test('parse: BadUdpLength for a short, overlong or fragmented datagram', () => {
  const fields = createOuterUdpFields();
  for (const udpLength of [0, 7]) {
    const { buf, length } = framedEcho(0, false);
    buf[24] = 0;
    buf[25] = udpLength;
    assert.is(parseOuterIPv4Udp(buf, 0, length, fields), DropReason.BadUdpLength, `udp length ${udpLength}`);
  }
  const overlong = framedEcho(0, false);
  const udpLength = overlong.length - 20 + 1;
  overlong.buf[24] = udpLength >>> 8;
  overlong.buf[25] = udpLength;
  assert.is(parseOuterIPv4Udp(overlong.buf, 0, overlong.length, fields), DropReason.BadUdpLength);

  const headerOnly = new Uint8Array(24);
  buildOuterIPv4Udp(headerOnly, 0, NODE_A, NODE_B, 1, 2, 0, 0, false);
  headerOnly[3] = 24; // IP payload of 4 bytes: no room for a UDP header
  refreshIpChecksum(headerOnly, 0);
  assert.is(parseOuterIPv4Udp(headerOnly, 0, 24, fields), DropReason.BadUdpLength);

  const fragment = framedEcho(0, true);
  fragment.buf[IPV4_OFFSET_FLAGS_FRAGMENT] = 0x20; // MF
  refreshIpChecksum(fragment.buf, 0);
  assert.is(parseOuterIPv4Udp(fragment.buf, 0, fragment.length, fields), DropReason.BadUdpLength);
});

test('parse: a UDP length below the IP payload trims the payload', () => {
  const { buf, length } = framedEcho(0, false);
  const udpLength = UDP_HEADER + 10;
  buf[24] = 0;
  buf[25] = udpLength;
  const fields = createOuterUdpFields();
  assert.is(parseOuterIPv4Udp(buf, 0, length, fields), DropReason.None);
  assert.is(fields.payloadLength, 10);
});

test.run();
