// The wasm SIMD checksum (src/encap/checksum-wasm.ts) and onesComplementSum's
// use of it for packet-pool memory, against an independent reference: the
// RFC 1071 sum as the remainder modulo 0xffff of the big-endian 16-bit words
// (arithmetic on BigInt, no folding loop), which a folded one's complement
// sum equals except that a nonzero multiple of 0xffff reads 0xffff.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { onesComplementSum } from '../../src/encap/checksum.js';
import { allocateChecksumMemory, checksumModule, wasmSumFor } from '../../src/encap/checksum-wasm.js';
import { PacketPool } from '../../src/dataplane/packet-pool.js';
import { makeRandom } from '../support/fuzz-kit.js'; // seeded, so a failure reproduces

function referenceSum(bytes: Uint8Array, off: number, len: number): number {
  let total = 0n;
  for (let i = 0; i < len; i += 2) {
    const hi = bytes[off + i]!;
    const lo = i + 1 < len ? bytes[off + i + 1]! : 0;
    total += BigInt((hi << 8) | lo);
  }
  if (total === 0n) return 0;
  const r = Number(total % 0xffffn);
  return r === 0 ? 0xffff : r;
}

function swap(word: number): number {
  return ((word & 0xff) << 8) | (word >>> 8);
}

function wasmBytes(length: number): { bytes: Uint8Array; sum: (p: number, n: number) => number } {
  const buffer = allocateChecksumMemory(length);
  const sum = wasmSumFor(buffer);
  assert.ok(sum, 'a buffer from allocateChecksumMemory has a wasm sum');
  return { bytes: new Uint8Array(buffer, 0, length), sum: sum! };
}

test('the module compiles here: Node has WebAssembly SIMD (else the JavaScript path would silently serve)', () => {
  assert.ok(checksumModule() instanceof WebAssembly.Module);
});

test('a plain ArrayBuffer and the default pool have no wasm sum; a pool made with wasm checksum memory has, and its buffer never detaches', () => {
  assert.is(wasmSumFor(new ArrayBuffer(1024)), undefined);
  const pool = new PacketPool(4, 2048, 64, 4096, true);
  assert.not.ok(wasmSumFor(new PacketPool(4, 2048, 64, 4096).bytes.buffer), 'the default pool is plain memory');
  assert.ok(wasmSumFor(pool.bytes.buffer));
  assert.is(pool.bytes.length, pool.memory.size + ((64 - (pool.memory.size % 64)) % 64));
  assert.ok(pool.memory.address > 0);
});

test('wasm sum = reference at random offsets (every alignment mod 16) and lengths, odd ones included', () => {
  const random = makeRandom(23);
  const { bytes, sum } = wasmBytes(1 << 16);
  for (let i = 0; i < bytes.length; i++) bytes[i] = (random() * 256) | 0;
  for (let t = 0; t < 3000; t++) {
    const off = (random() * 64) | 0;
    const len = t < 600 ? t % 300 : (random() * 9000) | 0;
    assert.is(swap(sum(off, len)), referenceSum(bytes, off, len), `offset ${off} length ${len}`);
  }
});

test('wasm sum wraps around: all-0xff input gives 0xffff, never 0, across the 512 KiB lane-emptying chunk', () => {
  const length = (1 << 20) + 37;
  const { bytes, sum } = wasmBytes(length);
  bytes.fill(0xff);
  for (const len of [16, 17, 4096, (1 << 19) - 16, 1 << 19, (1 << 19) + 16, (1 << 19) + 3, length - 5]) {
    // An odd length ends in a lone 0xff high byte: 0xff00 is added to a sum that is otherwise 0xffff.
    assert.is(swap(sum(5, len)), len % 2 ? 0xff00 : 0xffff, `length ${len}`);
    assert.is(swap(sum(5, len)), referenceSum(bytes, 5, len), `length ${len} vs reference`);
  }
  // Lanes hold their largest values (0xfffe + 0xffff per step) for a whole chunk, then spill.
  for (let i = 0; i < length; i += 2) { bytes[i] = 0xff; bytes[i + 1] = 0xfe; }
  for (const len of [(1 << 19), (1 << 19) + 2, length - 1]) {
    assert.is(swap(sum(0, len)), referenceSum(bytes, 0, len), `length ${len}`);
  }
});

test('wasm sum: zero length and all-zero input give 0', () => {
  const { sum } = wasmBytes(4096);
  assert.is(sum(0, 0), 0);
  assert.is(sum(3, 1000), 0);
});

test('onesComplementSum on pool memory = on a plain copy = reference, with seeds chained', () => {
  const random = makeRandom(2323);
  const pool = new PacketPool(8, 9000, 64, 0, true);
  const wasmView = pool.bytes;
  const plainView = new Uint8Array(wasmView.length);
  for (let i = 0; i < wasmView.length; i++) plainView[i] = wasmView[i] = (random() * 256) | 0;
  for (let t = 0; t < 2000; t++) {
    const off = (random() * (wasmView.length - 9000)) | 0;
    const len = (random() * 9000) | 0;
    const seed = (random() * 0x10000) | 0;
    const got = onesComplementSum(wasmView, off, len, seed);
    assert.is(got, onesComplementSum(plainView, off, len, seed), `offset ${off} length ${len} seed ${seed}`);
    const ref = referenceSum(wasmView, off, len) + seed;
    assert.is(got === 0 ? 0 : got % 0xffff, ref === 0 ? 0 : ref % 0xffff, `offset ${off} length ${len} vs reference`);
  }
});

test('onesComplementSum on a sub-view of pool memory and out-of-range requests: no wasm trap', () => {
  const { bytes } = wasmBytes(8192);
  bytes.fill(0x12);
  const sub = bytes.subarray(1001, 5001);
  assert.is(onesComplementSum(sub, 3, 3000), referenceSum(sub, 3, 3000));
  // Beyond the view: the wasm sum is not called (it would trap); the JavaScript path answers as it always did.
  assert.not.throws(() => onesComplementSum(sub, 3990, 500));
});

test.run();
