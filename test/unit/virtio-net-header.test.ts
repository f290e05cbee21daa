import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { onesComplementSumNaive, pseudoHeaderSum } from '../../src/encap/checksum.js';
import { IP_PROTOCOL_TCP, IP_PROTOCOL_UDP } from '../../src/encap/ipv4.js';
import {
  VIRTIO_NET_HDR_F_DATA_VALID,
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_GSO_ECN,
  VIRTIO_NET_HDR_GSO_NONE,
  VIRTIO_NET_HDR_GSO_TCPV4,
  VIRTIO_NET_HDR_GSO_TCPV6,
  VIRTIO_NET_HDR_GSO_UDP,
  VIRTIO_NET_HDR_GSO_UDP_L4,
  VIRTIO_NET_HDR_LEN,
  VirtioNetHeader,
  completePartialChecksum,
} from '../../src/encap/virtio-net-header.js';

const SRC = 0x0af40105;
const DST = 0x0af40909;

function write16(buf: Uint8Array, at: number, value: number): void {
  buf[at] = value >>> 8;
  buf[at + 1] = value;
}

function read16(buf: Uint8Array, at: number): number {
  return (buf[at] << 8) | buf[at + 1];
}

function write32(buf: Uint8Array, at: number, value: number): void {
  buf[at] = value >>> 24;
  buf[at + 1] = value >>> 16;
  buf[at + 2] = value >>> 8;
  buf[at + 3] = value;
}

// A 20-byte IPv4 header then an L4 header + payload of `l4Length` bytes, with
// the L4 checksum field holding the partial pseudo-header sum, as a TUN read
// with NEEDS_CSUM delivers it. Returns the checksum field's offset from `off`.
function partialPacket(buf: Uint8Array, off: number, protocol: number, l4Length: number, fill: number): number {
  buf[off] = 0x45;
  write16(buf, off + 2, 20 + l4Length);
  buf[off + 8] = 64;
  buf[off + 9] = protocol;
  write32(buf, off + 12, SRC);
  write32(buf, off + 16, DST);
  const l4 = off + 20;
  for (let i = 0; i < l4Length; i++) buf[l4 + i] = (i * 7 + fill) & 0xff;
  const field = protocol === IP_PROTOCOL_TCP ? 16 : 6;
  if (protocol === IP_PROTOCOL_UDP) write16(buf, l4 + 4, l4Length);
  if (protocol === IP_PROTOCOL_TCP) buf[l4 + 12] = 0x50;
  write16(buf, l4 + field, pseudoHeaderSum(SRC, DST, protocol, l4Length));
  return 20 + field;
}

function l4Verifies(buf: Uint8Array, off: number, protocol: number, l4Length: number): boolean {
  return onesComplementSumNaive(buf, off + 20, l4Length, pseudoHeaderSum(SRC, DST, protocol, l4Length)) === 0xffff;
}

test('constants match include/uapi/linux/virtio_net.h', () => {
  assert.is(VIRTIO_NET_HDR_LEN, 10);
  assert.is(VIRTIO_NET_HDR_F_NEEDS_CSUM, 1);
  assert.is(VIRTIO_NET_HDR_F_DATA_VALID, 2);
  assert.equal(
    [VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_UDP, VIRTIO_NET_HDR_GSO_TCPV6],
    [0, 1, 3, 4],
  );
  assert.is(VIRTIO_NET_HDR_GSO_UDP_L4, 5);
  assert.is(VIRTIO_NET_HDR_GSO_ECN, 0x80);
});

test('read: little-endian fields at their C offsets', () => {
  const buf = Uint8Array.from([0xee, 0x01, 0x81, 0x34, 0x12, 0x8c, 0x05, 0x14, 0x00, 0x10, 0x00, 0xee]);
  const hdr = new VirtioNetHeader();
  hdr.read(buf, 1);
  assert.is(hdr.flags, VIRTIO_NET_HDR_F_NEEDS_CSUM);
  assert.is(hdr.gsoType, VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_ECN);
  assert.is(hdr.hdrLen, 0x1234);
  assert.is(hdr.gsoSize, 0x058c);
  assert.is(hdr.csumStart, 0x0014);
  assert.is(hdr.csumOffset, 0x0010);
});

test('write then read round-trips and touches exactly 10 bytes', () => {
  const hdr = new VirtioNetHeader();
  hdr.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
  hdr.gsoType = VIRTIO_NET_HDR_GSO_UDP_L4;
  hdr.hdrLen = 28;
  hdr.gsoSize = 1472;
  hdr.csumStart = 20;
  hdr.csumOffset = 6;
  const buf = new Uint8Array(14).fill(0xaa);
  hdr.write(buf, 2);
  assert.equal(Array.from(buf), [0xaa, 0xaa, 1, 5, 28, 0, 0xc0, 0x05, 20, 0, 6, 0, 0xaa, 0xaa]);
  const back = new VirtioNetHeader();
  back.read(buf, 2);
  assert.equal({ ...back }, { ...hdr });
  back.clear();
  assert.equal({ ...back }, { flags: 0, gsoType: 0, hdrLen: 0, gsoSize: 0, csumStart: 0, csumOffset: 0 });
});

const completeCases = [
  { name: 'TCP, even length', protocol: IP_PROTOCOL_TCP, l4Length: 1480, off: 0 },
  { name: 'TCP, odd length, odd offset', protocol: IP_PROTOCOL_TCP, l4Length: 1001, off: 3 },
  { name: 'TCP, header only', protocol: IP_PROTOCOL_TCP, l4Length: 20, off: 2 },
  { name: 'UDP, 1472 payload', protocol: IP_PROTOCOL_UDP, l4Length: 1480, off: 14 },
  { name: 'UDP, tiny', protocol: IP_PROTOCOL_UDP, l4Length: 9, off: 1 },
];

for (const c of completeCases) {
  test(`completePartialChecksum: ${c.name} verifies and equals a full computation`, () => {
    const buf = new Uint8Array(c.off + 20 + c.l4Length + 8);
    const field = partialPacket(buf, c.off, c.protocol, c.l4Length, 3);
    assert.not.ok(l4Verifies(buf, c.off, c.protocol, c.l4Length));
    const start = 20;
    assert.ok(completePartialChecksum(buf, c.off, 20 + c.l4Length, start, field - start));
    assert.ok(l4Verifies(buf, c.off, c.protocol, c.l4Length));
    // Same as computing from scratch with a zero field.
    const stored = read16(buf, c.off + field);
    write16(buf, c.off + field, 0);
    const full = ~onesComplementSumNaive(buf, c.off + 20, c.l4Length, pseudoHeaderSum(SRC, DST, c.protocol, c.l4Length)) & 0xffff;
    assert.is(stored, full === 0 ? 0xffff : full);
  });
}

for (const protocol of [IP_PROTOCOL_UDP, IP_PROTOCOL_TCP]) {
  test(`completePartialChecksum: a computed 0 is stored as 0xFFFF (protocol ${protocol})`, () => {
    const l4Length = 100;
    const buf = new Uint8Array(20 + l4Length);
    const field = partialPacket(buf, 0, protocol, l4Length, 9);
    // Choose the last payload word so the whole L4 sum is 0xffff: checksum 0.
    write16(buf, 20 + l4Length - 2, 0);
    const sum = onesComplementSumNaive(buf, 20, l4Length);
    write16(buf, 20 + l4Length - 2, ~sum & 0xffff);
    assert.is(onesComplementSumNaive(buf, 20, l4Length), 0xffff);
    assert.ok(completePartialChecksum(buf, 0, 20 + l4Length, 20, field - 20));
    assert.is(read16(buf, field), 0xffff);
    assert.ok(l4Verifies(buf, 0, protocol, l4Length));
  });
}

test('completePartialChecksum: offsets outside the packet are refused, packet untouched', () => {
  const buf = new Uint8Array(60);
  partialPacket(buf, 0, IP_PROTOCOL_TCP, 40, 1);
  const before = buf.slice();
  const cases: Array<[number, number]> = [
    [60, 0], // csum_start at the end
    [20, 39], // field would end past the packet
    [58, 1],
    [100, 16],
  ];
  for (const [start, offset] of cases) {
    assert.not.ok(completePartialChecksum(buf, 0, 60, start, offset), `${start}/${offset}`);
    assert.equal(buf, before);
  }
  // The last possible field position is accepted.
  assert.ok(completePartialChecksum(buf, 0, 60, 20, 38));
});

test.run();
