import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { internetChecksum, onesComplementSumNaive } from '../../src/encap/checksum.js';
import { DropReason } from '../../src/encap/drop-reasons.js';
import {
  IPV4_MIN_HEADER,
  IPV4_OFFSET_CHECKSUM,
  IPV4_OFFSET_FLAGS_FRAGMENT,
  IPV4_OFFSET_ID,
  IPV4_OFFSET_TOTAL_LENGTH,
  IPV4_OFFSET_TTL,
  IP_PROTOCOL_UDP,
  buildIPv4Header,
  decrementTtl,
  ipv4Destination,
  ipv4DontFragment,
  ipv4HeaderLength,
  ipv4IsFragment,
  ipv4IsLaterFragment,
  ipv4Protocol,
  ipv4Source,
  ipv4TotalLength,
  ipv4Ttl,
  nextIPv4Id,
  validateIPv4,
} from '../../src/encap/ipv4.js';
import { makeRandom } from '../support/fuzz-kit.js'; // seeded, so a failure reproduces

// 192.168.0.1 -> 192.168.0.199, UDP, total length 0x73, DF, TTL 64, checksum 0xb861.
const EXAMPLE_HEADER = [
  0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8,
  0x00, 0xc7,
];
const EXAMPLE_TOTAL = 0x73;

// The example header at `at` inside a larger buffer, followed by its payload.
function examplePacket(at = 0, extra = 0): Uint8Array {
  const buf = new Uint8Array(at + EXAMPLE_TOTAL + extra);
  buf.set(EXAMPLE_HEADER, at);
  for (let i = at + IPV4_MIN_HEADER; i < buf.length; i++) buf[i] = i & 0xff;
  return buf;
}

function refreshChecksum(buf: Uint8Array, off: number): void {
  const headerLength = (buf[off] & 0x0f) * 4;
  buf[off + IPV4_OFFSET_CHECKSUM] = 0;
  buf[off + IPV4_OFFSET_CHECKSUM + 1] = 0;
  const checksum = ~onesComplementSumNaive(buf, off, headerLength) & 0xffff;
  buf[off + IPV4_OFFSET_CHECKSUM] = checksum >>> 8;
  buf[off + IPV4_OFFSET_CHECKSUM + 1] = checksum;
}

function readChecksum(buf: Uint8Array, off: number): number {
  return (buf[off + IPV4_OFFSET_CHECKSUM] << 8) | buf[off + IPV4_OFFSET_CHECKSUM + 1];
}

function setWord(buf: Uint8Array, at: number, value: number): void {
  buf[at] = value >>> 8;
  buf[at + 1] = value;
}

test('readers on the example header', () => {
  const buf = examplePacket(3);
  assert.is(ipv4HeaderLength(buf, 3), 20);
  assert.is(ipv4TotalLength(buf, 3), 0x73);
  assert.is(ipv4Protocol(buf, 3), IP_PROTOCOL_UDP);
  assert.is(ipv4Ttl(buf, 3), 64);
  assert.is(ipv4Source(buf, 3), 0xc0a80001);
  assert.is(ipv4Destination(buf, 3), 0xc0a800c7);
  assert.ok(ipv4DontFragment(buf, 3));
  assert.not.ok(ipv4IsFragment(buf, 3));
  assert.not.ok(ipv4IsLaterFragment(buf, 3));
});

test('addresses with the top bit set read as unsigned', () => {
  const buf = new Uint8Array(20);
  buildIPv4Header(buf, 0, 20, 0, 64, 1, 0xfffffffe, 0xe0000005, false);
  assert.is(ipv4Source(buf, 0), 0xfffffffe);
  assert.is(ipv4Destination(buf, 0), 0xe0000005);
});

test('fragment readers: MF only is a first fragment, an offset is a later one', () => {
  const buf = examplePacket();
  setWord(buf, IPV4_OFFSET_FLAGS_FRAGMENT, 0x2000); // MF, offset 0
  assert.ok(ipv4IsFragment(buf, 0));
  assert.not.ok(ipv4IsLaterFragment(buf, 0));
  assert.not.ok(ipv4DontFragment(buf, 0));
  setWord(buf, IPV4_OFFSET_FLAGS_FRAGMENT, 0x0001); // last fragment, offset 8 bytes
  assert.ok(ipv4IsFragment(buf, 0));
  assert.ok(ipv4IsLaterFragment(buf, 0));
});

test('validateIPv4 accepts the example, also with trailing bytes', () => {
  assert.is(validateIPv4(examplePacket(), 0, EXAMPLE_TOTAL), DropReason.None);
  assert.is(validateIPv4(examplePacket(5, 30), 5, EXAMPLE_TOTAL + 30), DropReason.None);
});

test('validateIPv4: TooShort below 20 bytes', () => {
  const buf = examplePacket();
  assert.is(validateIPv4(buf, 0, 19), DropReason.TooShort);
  assert.is(validateIPv4(buf, 0, 0), DropReason.TooShort);
});

test('validateIPv4: NotIPv4 for version 6 and 0', () => {
  const buf = examplePacket();
  buf[0] = 0x65;
  assert.is(validateIPv4(buf, 0, EXAMPLE_TOTAL), DropReason.NotIPv4);
  buf[0] = 0x05;
  assert.is(validateIPv4(buf, 0, EXAMPLE_TOTAL), DropReason.NotIPv4);
});

test('validateIPv4: BadHeaderLength for IHL < 5 or a header longer than the bytes', () => {
  const buf = examplePacket();
  buf[0] = 0x44;
  assert.is(validateIPv4(buf, 0, EXAMPLE_TOTAL), DropReason.BadHeaderLength);
  buf[0] = 0x4f; // 60-byte header, only 40 bytes given
  assert.is(validateIPv4(buf, 0, 40), DropReason.BadHeaderLength);
});

test('validateIPv4: BadTotalLength below the header or beyond the bytes', () => {
  const buf = examplePacket();
  setWord(buf, IPV4_OFFSET_TOTAL_LENGTH, 19);
  refreshChecksum(buf, 0);
  assert.is(validateIPv4(buf, 0, EXAMPLE_TOTAL), DropReason.BadTotalLength);
  setWord(buf, IPV4_OFFSET_TOTAL_LENGTH, EXAMPLE_TOTAL + 1);
  refreshChecksum(buf, 0);
  assert.is(validateIPv4(buf, 0, EXAMPLE_TOTAL), DropReason.BadTotalLength);
  // Exactly the header is fine.
  setWord(buf, IPV4_OFFSET_TOTAL_LENGTH, 20);
  refreshChecksum(buf, 0);
  assert.is(validateIPv4(buf, 0, EXAMPLE_TOTAL), DropReason.None);
});

test('validateIPv4: BadHeaderChecksum for any single flipped header bit', () => {
  for (let bit = 0; bit < 160; bit++) {
    const buf = examplePacket();
    const byte = bit >>> 3;
    // Bits whose flip trips an earlier check are covered above.
    if (byte === 0 || byte === 2 || byte === 3) continue;
    buf[byte] ^= 1 << (bit & 7);
    assert.is(validateIPv4(buf, 0, EXAMPLE_TOTAL), DropReason.BadHeaderChecksum, `bit ${bit}`);
  }
});

test('validateIPv4 covers options: a corrupted option byte is caught', () => {
  const buf = new Uint8Array(24 + 8);
  buildIPv4Header(buf, 0, 32, 7, 64, 17, 0x0a000001, 0x0a000002, false);
  buf[0] = 0x46;
  buf[20] = 0x01; // NOP option padding
  buf[21] = 0x01;
  buf[22] = 0x01;
  buf[23] = 0x00; // end of options
  refreshChecksum(buf, 0);
  assert.is(validateIPv4(buf, 0, 32), DropReason.None);
  buf[22] = 0x07;
  assert.is(validateIPv4(buf, 0, 32), DropReason.BadHeaderChecksum);
});

test('decrementTtl on the example: TTL 64 -> 63, checksum 0xb861 -> 0xb961', () => {
  const buf = examplePacket(1);
  assert.ok(decrementTtl(buf, 1));
  assert.is(ipv4Ttl(buf, 1), 63);
  assert.is(readChecksum(buf, 1), 0xb961);
  assert.is(validateIPv4(buf, 1, EXAMPLE_TOTAL), DropReason.None);
});

test('decrementTtl refuses TTL 1 and 0 and leaves the packet unchanged', () => {
  for (const ttl of [1, 0]) {
    const buf = examplePacket();
    buf[IPV4_OFFSET_TTL] = ttl;
    refreshChecksum(buf, 0);
    const before = buf.slice();
    assert.not.ok(decrementTtl(buf, 0), `ttl ${ttl}`);
    assert.equal(buf, before);
  }
  const buf = examplePacket();
  buf[IPV4_OFFSET_TTL] = 2;
  refreshChecksum(buf, 0);
  assert.ok(decrementTtl(buf, 0));
  assert.is(ipv4Ttl(buf, 0), 1);
  assert.not.ok(decrementTtl(buf, 0));
});

test('decrementTtl equals a full recomputation on 10 000 random valid headers', () => {
  const random = makeRandom(11);
  const buf = new Uint8Array(8 + 60);
  const expected = new Uint8Array(60);
  for (let i = 0; i < 10000; i++) {
    const off = (random() * 8) | 0;
    const ihl = 5 + ((random() * 11) | 0);
    const headerLength = ihl * 4;
    for (let b = 0; b < headerLength; b++) buf[off + b] = (random() * 256) | 0;
    buf[off] = 0x40 | ihl;
    setWord(buf, off + IPV4_OFFSET_TOTAL_LENGTH, headerLength);
    buf[off + IPV4_OFFSET_TTL] = 2 + ((random() * 254) | 0);
    refreshChecksum(buf, off);
    assert.is(validateIPv4(buf, off, headerLength), DropReason.None);

    expected.set(buf.subarray(off, off + headerLength));
    expected[IPV4_OFFSET_TTL]--;
    refreshChecksum(expected, 0);

    assert.ok(decrementTtl(buf, off));
    for (let b = 0; b < headerLength; b++) {
      if (buf[off + b] !== expected[b]) assert.unreachable(`header ${i}, byte ${b}: ${buf[off + b]} != ${expected[b]}`);
    }
  }
});

test('decrementTtl matches recomputation when the checksum becomes or was 0x0000', () => {
  // Choose the ID so the post-decrement header sums to 0xffff: checksum 0x0000,
  // the case where RFC 1141's update yields 0xffff instead.
  const random = makeRandom(12);
  for (let i = 0; i < 200; i++) {
    const buf = new Uint8Array(20);
    const ttl = 3 + ((random() * 253) | 0); // decremented twice below
    buildIPv4Header(buf, 0, 20, 0, ttl - 1, (random() * 256) | 0, (random() * 2 ** 32) >>> 0, (random() * 2 ** 32) >>> 0, random() < 0.5);
    setWord(buf, IPV4_OFFSET_CHECKSUM, 0);
    setWord(buf, IPV4_OFFSET_ID, ~onesComplementSumNaive(buf, 0, 20) & 0xffff);
    buf[IPV4_OFFSET_TTL] = ttl;
    refreshChecksum(buf, 0);
    assert.ok(decrementTtl(buf, 0));
    assert.is(readChecksum(buf, 0), 0x0000);
    assert.is(onesComplementSumNaive(buf, 0, 20), 0xffff);
    // And from a checksum of 0x0000 onwards.
    assert.ok(decrementTtl(buf, 0));
    const afterTwo = readChecksum(buf, 0);
    refreshChecksum(buf, 0);
    assert.is(afterTwo, readChecksum(buf, 0));
  }
});

test('buildIPv4Header reproduces the example header byte for byte', () => {
  const buf = new Uint8Array(24);
  buildIPv4Header(buf, 2, 0x73, 0, 64, IP_PROTOCOL_UDP, 0xc0a80001, 0xc0a800c7, true);
  assert.equal(Array.from(buf.subarray(2, 22)), EXAMPLE_HEADER);
  assert.is(buf[0] | buf[1] | buf[22] | buf[23], 0, 'nothing written outside the header');
  assert.is(internetChecksum(buf, 2, 20), 0);
});

test('nextIPv4Id counts up and wraps at 16 bits', () => {
  const first = nextIPv4Id();
  assert.ok(first >= 0 && first <= 0xffff);
  let previous = first;
  for (let i = 0; i < 70000; i++) {
    const id = nextIPv4Id();
    assert.is(id, (previous + 1) & 0xffff);
    previous = id;
  }
});

test.run();
