import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  checksumAdjust16,
  internetChecksum,
  onesComplementSum,
  onesComplementSumNaive,
  pseudoHeaderSum,
} from '../../src/encap/checksum.js';
import { makeRandom } from '../support/fuzz-kit.js'; // seeded, so a failure reproduces

function fillRandom(bytes: Uint8Array, random: () => number): void {
  for (let i = 0; i < bytes.length; i++) bytes[i] = (random() * 256) | 0;
}

const RFC1071_EXAMPLE = Uint8Array.from([0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]);
// Wireshark's/Wikipedia's example header, checksum field 0xb861 at bytes 10-11.
const IPV4_HEADER_EXAMPLE = Uint8Array.from([
  0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8,
  0x00, 0xc7,
]);

test('RFC 1071 example: sum 0xddf2, checksum 0x220d', () => {
  assert.is(onesComplementSumNaive(RFC1071_EXAMPLE, 0, 8), 0xddf2);
  assert.is(onesComplementSum(RFC1071_EXAMPLE, 0, 8), 0xddf2);
  assert.is(internetChecksum(RFC1071_EXAMPLE, 0, 8), 0x220d);
});

test('RFC 1071 example through the wide-word path at every alignment', () => {
  // Zero padding leaves the sum unchanged and pushes the length past the
  // small-input cutoff, so the 32-bit loop, head and tail all take part.
  const backing = new Uint8Array(128);
  for (let at = 0; at < 8; at++) {
    backing.fill(0);
    backing.set(RFC1071_EXAMPLE, at);
    assert.is(onesComplementSum(backing, at, 64), 0xddf2, `offset ${at}`);
    assert.is(internetChecksum(backing, at, 64), 0x220d, `offset ${at}`);
  }
});

test('IPv4 header example: checksum 0xb861, verifies to 0xffff', () => {
  const header = IPV4_HEADER_EXAMPLE.slice();
  assert.is(onesComplementSum(header, 0, 20), 0xffff);
  header[10] = 0;
  header[11] = 0;
  assert.is(internetChecksum(header, 0, 20), 0xb861);
});

test('fast equals naive for every length 0..1600, offsets 0..7, views at byteOffsets 0..3', () => {
  const random = makeRandom(1);
  const pool = new ArrayBuffer(4096);
  fillRandom(new Uint8Array(pool), random);
  for (let byteOffset = 0; byteOffset < 4; byteOffset++) {
    // Like a Buffer carved out of a pooled ArrayBuffer at an arbitrary offset.
    const view = new Uint8Array(pool, byteOffset, 1700);
    for (let off = 0; off < 8; off++) {
      for (let len = 0; len <= 1600; len++) {
        const fast = onesComplementSum(view, off, len);
        const naive = onesComplementSumNaive(view, off, len);
        if (fast !== naive) {
          assert.unreachable(`byteOffset ${byteOffset} off ${off} len ${len}: fast ${fast} naive ${naive}`);
        }
      }
    }
  }
});

test('fast equals naive with a seed, and seeds chain sums', () => {
  const random = makeRandom(2);
  const bytes = new Uint8Array(2000);
  fillRandom(bytes, random);
  for (let i = 0; i < 500; i++) {
    const off = (random() * 64) | 0;
    const len = (random() * 1800) | 0;
    const seed = (random() * 0x10000) | 0;
    assert.is(onesComplementSum(bytes, off, len, seed), onesComplementSumNaive(bytes, off, len, seed));
  }
  // Sum of a whole = sum of the second part seeded with the first (even split).
  const whole = onesComplementSumNaive(bytes, 3, 1500);
  assert.is(onesComplementSum(bytes, 3 + 600, 900, onesComplementSum(bytes, 3, 600)), whole);
});

test('carry-heavy inputs: all 0xff gives 0xffff, all zero gives 0', () => {
  const ones = new Uint8Array(1600).fill(0xff);
  const zeros = new Uint8Array(1600);
  for (let off = 0; off < 4; off++) {
    assert.is(onesComplementSum(ones, off, 1501), onesComplementSumNaive(ones, off, 1501));
    assert.is(onesComplementSum(ones, off, 1500), 0xffff);
    assert.is(onesComplementSum(zeros, off, 1500), 0);
  }
  // 0xffff + 0xff00 (last byte padded on the right) = 0x1feff, folds to 0xff00.
  assert.is(onesComplementSumNaive(ones, 0, 3), 0xff00);
});

test('inputs past the 2^21-word exactness limit are still exact', () => {
  const random = makeRandom(3);
  const big = new Uint8Array(9 * 1024 * 1024 + 5);
  assert.is(onesComplementSum(big.fill(0xff), 1, 9 * 1024 * 1024), 0xffff);
  fillRandom(big, random);
  assert.is(onesComplementSum(big, 1, big.length - 1), onesComplementSumNaive(big, 1, big.length - 1));
  assert.is(onesComplementSum(big, 0, big.length), onesComplementSumNaive(big, 0, big.length));
});

// Resizable ArrayBuffers are ES2024; our lib setting is ES2022, Node 20 has them.
type ResizableArrayBuffer = ArrayBuffer & { resize(byteLength: number): void };
const ResizableArrayBufferCtor = ArrayBuffer as unknown as new (
  byteLength: number,
  options: { maxByteLength: number },
) => ResizableArrayBuffer;

test('a resized buffer gets a fresh word view', () => {
  const random = makeRandom(4);
  const resizable = new ResizableArrayBufferCtor(256, { maxByteLength: 8192 });
  fillRandom(new Uint8Array(resizable), random);
  const small = new Uint8Array(resizable);
  assert.is(onesComplementSum(small, 4, 200), onesComplementSumNaive(small, 4, 200));
  resizable.resize(8192);
  const large = new Uint8Array(resizable);
  fillRandom(large, random);
  assert.is(onesComplementSum(large, 5, 8000), onesComplementSumNaive(large, 5, 8000));
});

test('internetChecksum is the inverted sum', () => {
  const random = makeRandom(5);
  const bytes = new Uint8Array(300);
  fillRandom(bytes, random);
  assert.is(internetChecksum(bytes, 1, 299), ~onesComplementSumNaive(bytes, 1, 299) & 0xffff);
});

test('pseudoHeaderSum equals the sum over the 12 pseudo-header bytes', () => {
  // 192.168.0.1 -> 192.168.0.199, UDP, length 0x5f.
  assert.is(pseudoHeaderSum(0xc0a80001, 0xc0a800c7, 17, 0x5f), 0x8289);
  const random = makeRandom(6);
  const pseudo = new Uint8Array(12);
  for (let i = 0; i < 1000; i++) {
    const src = (random() * 0x100000000) >>> 0;
    const dst = (random() * 0x100000000) >>> 0;
    const length = (random() * 0x10000) | 0;
    pseudo.set([src >>> 24, src >>> 16, src >>> 8, src, dst >>> 24, dst >>> 16, dst >>> 8, dst, 0, 17, length >>> 8, length]);
    assert.is(pseudoHeaderSum(src, dst, 17, length), onesComplementSumNaive(pseudo, 0, 12));
  }
});

test('checksumAdjust16: RFC 1624 section 4 example gives 0x0000 (RFC 1141 would give 0xFFFF)', () => {
  assert.is(checksumAdjust16(0xdd2f, 0x5555, 0x3285), 0x0000);
});

test('checksumAdjust16 equals full recomputation for random word changes', () => {
  const random = makeRandom(7);
  const bytes = new Uint8Array(40);
  for (let i = 0; i < 10000; i++) {
    fillRandom(bytes, random);
    bytes[0] |= 1; // keep the data non-zero, as every real header is
    const at = 2 + 2 * ((random() * 19) | 0); // any word but the first

    const before = internetChecksum(bytes, 0, 40);
    const oldWord = (bytes[at] << 8) | bytes[at + 1];
    const newWord = (random() * 0x10000) | 0;
    bytes[at] = newWord >>> 8;
    bytes[at + 1] = newWord;
    assert.is(checksumAdjust16(before, oldWord, newWord), internetChecksum(bytes, 0, 40));
  }
});

test.run();
