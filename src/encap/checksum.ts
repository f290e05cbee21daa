// The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//
// Sums returned here are folded to 16 bits but NOT inverted, so they can be
// chained through `seed` (pseudo-header, then header, then payload). A folded
// sum is 0 only when every input word was 0; otherwise it lies in 1..0xffff.
// Both implementations keep that representation, so they agree bit for bit.

import { wasmSumFor, type WasmSum } from './checksum-wasm.js';

// Folds any non-negative integer below 2^53 to 16 bits with end-around carry.
// Bitwise operators only see 32 bits, so the part above 2^32 is carried in
// arithmetically first (2^32 ≡ 1 modulo 0xffff, so the value is preserved).
function foldTo16(sum: number): number {
  while (sum > 0xffffffff) sum = (sum >>> 0) + Math.floor(sum / 0x100000000);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

function swapBytes16(word: number): number {
  return ((word & 0xff) << 8) | (word >>> 8);
}

// The obvious RFC 1071 loop: big-endian 16-bit words, an odd last byte padded
// with a zero byte on the right. Kept as the reference for tests and benchmarks.
export function onesComplementSumNaive(buf: Uint8Array, off: number, len: number, seed = 0): number {
  let sum = seed;
  const end = off + len;
  let i = off;
  for (; i + 1 < end; i += 2) sum += (buf[i] << 8) | buf[i + 1];
  if (i < end) sum += buf[i] << 8;
  return foldTo16(sum);
}

// --- the fast path: 32-bit words read through a cached view -------------------

const HOST_IS_LITTLE_ENDIAN = new Uint8Array(Uint16Array.of(1).buffer)[0] === 1;
// In "word order" (the byte order a Uint32Array reads in), a byte at an even
// absolute address is the low byte of its 16-bit half on little-endian hosts.
const EVEN_ADDRESS_SHIFT = HOST_IS_LITTLE_ENDIAN ? 0 : 8;
const ODD_ADDRESS_SHIFT = 8 - EVEN_ADDRESS_SHIFT;
const HOST_LITTLE_ENDIAN_BIT = HOST_IS_LITTLE_ENDIAN ? 1 : 0;

// Below this the plain loop wins (measured crossover ~40-48 bytes): the
// 20-byte IPv4 header check on every packet never pays for the fast path.
const FAST_PATH_MIN_LENGTH = 48;
// Each word adds < 2^32, so a JS number stays exact for 2^21 words; fold
// every 2^20 to keep a wide margin.
const MAX_WORDS_BETWEEN_FOLDS = 1 << 20;
// Word indices must stay small integers: computed with Math.floor/ceil they
// are doubles and the loop runs ~3x slower (measured). Integer shifts need
// addresses below 2^31, far beyond any packet pool; beyond it, the plain loop.
const MAX_FAST_PATH_ADDRESS = 0x7fffffff;

// Packet buffers are views into a few large pooled ArrayBuffers, so one
// Uint32Array per ArrayBuffer, created once, serves every packet. The getters
// `.buffer` and `.byteOffset` are calls in V8 (~6-10 ns each, a third of a
// short sum), so the last byte view summed is remembered with its byteOffset
// and word view, and the last ArrayBuffer skips the WeakMap in the common
// one-pool case.
const wordViews = new WeakMap<ArrayBufferLike, Uint32Array<ArrayBufferLike>>();
let lastView: Uint8Array | null = null;
let lastViewOffset = 0;
let lastBuffer: ArrayBufferLike | null = null;
let lastWords: Uint32Array<ArrayBufferLike> = new Uint32Array(0);
// The wasm SIMD sum when the remembered view lies in a packet pool's
// WebAssembly.Memory (checksum-wasm.ts), else undefined.
let lastWasmSum: WasmSum | undefined;
// Below this the call into wasm costs more than the JavaScript loop saves
// (measured crossover between 64 and 128 bytes on this VM).
const WASM_MIN_LENGTH = 128;

// Makes `view` the remembered one. Also called when the remembered word view
// is too short, which means a resizable buffer has grown.
function rememberView(view: Uint8Array, wordsNeeded: number): void {
  const buffer = view.buffer;
  let words = buffer === lastBuffer ? lastWords : wordViews.get(buffer);
  if (words === undefined || words.length < wordsNeeded) {
    words = new Uint32Array(buffer, 0, Math.floor(buffer.byteLength / 4));
    wordViews.set(buffer, words);
  }
  lastView = view;
  lastViewOffset = view.byteOffset;
  lastBuffer = buffer;
  lastWords = words;
  lastWasmSum = wasmSumFor(buffer);
}

// Unrolled by 8: per-iteration loop overhead dominates a plain loop here;
// measured on 1500 B, ~2.5x faster than no unrolling, ~10% faster than by 4.
function sumWords(words: Uint32Array<ArrayBufferLike>, from: number, to: number): number {
  let sum = 0;
  let w = from;
  for (; w + 8 <= to; w += 8) {
    sum +=
      words[w] + words[w + 1] + words[w + 2] + words[w + 3] +
      words[w + 4] + words[w + 5] + words[w + 6] + words[w + 7];
  }
  for (; w < to; w++) sum += words[w];
  return sum;
}

// Same result as onesComplementSumNaive for every offset and length.
//
// Works in "word order": 32-bit native words aligned to absolute addresses in
// the ArrayBuffer, with the 1..3 unaligned bytes at each end added by hand in
// the same order. One's complement addition is byte-order independent
// (RFC 1071 §2(B)), so the folded word-order sum only needs one byte swap at
// the end when word order differs from the packet's big-endian pairing: on a
// little-endian host that is when the data starts at an even absolute address
// (on an odd one the two swaps — host order and pairing shift — cancel).
export function onesComplementSum(buf: Uint8Array, off: number, len: number, seed = 0): number {
  if (len < FAST_PATH_MIN_LENGTH) return onesComplementSumNaive(buf, off, len, seed);
  if (buf !== lastView) rememberView(buf, 0);
  const base = lastViewOffset;
  // Whole 16-byte steps in wasm; its pairing starts at the first byte, little-endian, so one swap
  // gives network order. In bounds only: wasm would trap where the loop below reads undefined.
  if (lastWasmSum !== undefined && len >= WASM_MIN_LENGTH && off >= 0 && off + len <= buf.length) {
    return foldTo16(swapBytes16(lastWasmSum(base + off, len)) + seed);
  }
  const start = base + off;
  const end = start + len;
  if (end > MAX_FAST_PATH_ADDRESS) return onesComplementSumNaive(buf, off, len, seed);
  const firstWord = (start + 3) >> 2;
  const endWord = end >> 2;
  if (endWord > lastWords.length) rememberView(buf, endWord);
  const words = lastWords;

  // Unaligned head and tail bytes; `i` is relative to buf, parity is absolute.
  let sum = 0;
  const headEnd = (firstWord << 2) - base;
  for (let i = off; i < headEnd; i++) {
    sum += buf[i] << ((base + i) & 1 ? ODD_ADDRESS_SHIFT : EVEN_ADDRESS_SHIFT);
  }
  const tailEnd = off + len;
  for (let i = (endWord << 2) - base; i < tailEnd; i++) {
    sum += buf[i] << ((base + i) & 1 ? ODD_ADDRESS_SHIFT : EVEN_ADDRESS_SHIFT);
  }

  for (let w = firstWord; w < endWord; ) {
    const chunkEnd = Math.min(endWord, w + MAX_WORDS_BETWEEN_FOLDS);
    sum = foldTo16(sum + sumWords(words, w, chunkEnd));
    w = chunkEnd;
  }

  sum = foldTo16(sum);
  if (((start & 1) ^ HOST_LITTLE_ENDIAN_BIT) === 1) sum = swapBytes16(sum);
  return foldTo16(sum + seed);
}

// The value to store in a checksum field (RFC 1071): the inverted sum.
export function internetChecksum(buf: Uint8Array, off: number, len: number, seed = 0): number {
  return ~onesComplementSum(buf, off, len, seed) & 0xffff;
}

// Partial sum of the IPv4 pseudo-header (RFC 768, RFC 793), to pass as `seed`
// when checksumming a UDP or TCP header plus payload. Addresses are uint32 in
// host order as read big-endian from the packet.
export function pseudoHeaderSum(srcAddr: number, dstAddr: number, protocol: number, l4Length: number): number {
  return foldTo16(
    (srcAddr >>> 16) + (srcAddr & 0xffff) +
    (dstAddr >>> 16) + (dstAddr & 0xffff) +
    protocol + l4Length,
  );
}

// Incremental update after one 16-bit word changes from oldWord to newWord,
// RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m').
// Not RFC 1141's HC' = HC + m + ~m': that form can yield 0x0000 where a full
// recomputation gives 0xFFFF (one's complement -0 vs +0), and receivers that
// recompute instead of verifying would then see a mismatch. Eqn. 3 always
// matches a full recomputation as long as the covered data is not all zeros
// (true of every IPv4 header: the version nibble is 4).
// Note for UDP: a result of 0 must be sent as 0xFFFF (0 means "no checksum").
export function checksumAdjust16(checksum: number, oldWord: number, newWord: number): number {
  let sum = (~checksum & 0xffff) + (~oldWord & 0xffff) + (newWord & 0xffff);
  sum = (sum & 0xffff) + (sum >>> 16);
  sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}
