// The Internet checksum's payload pass in WebAssembly SIMD: 16 bytes per
// step (i32x4.extadd_pairwise_i16x8_u adds eight 16-bit words into four
// 32-bit lanes), where the JavaScript loop of checksum.ts reads one 32-bit
// word per step. It sums the sending node's every payload byte once (software
// GSO rebuilds each segment's TCP checksum), the largest item of our
// JavaScript in a TCP stream's profile (issue 23: ~16 % of the sending agent).
//
// WebAssembly can only read its own memory, so the packet pools are
// allocated as WebAssembly.Memory (allocateChecksumMemory): the same plain,
// non-moving ArrayBuffer the kernel reads and writes through koffi, with one
// small instance of this module per pool. Any other buffer takes the
// JavaScript path; both agree bit for bit (test/unit/checksum-wasm.test.ts).
//
// The module is written out below as bytes, one instruction per line, so
// building it needs no toolchain. Its one function:
//   sum(ptr: i32, len: i32) -> i32
// is the one's complement sum of memory[ptr, ptr+len) read as little-endian
// 16-bit words paired from ptr (an odd last byte is a low byte), folded to
// 16 bits with end-around carry, not inverted. Like onesComplementSum it is 0
// only for all-zero input. The caller swaps bytes for network order.

const WASM_PAGE = 65536;
// A lane gains < 2^17 per 16-byte step (two 16-bit words), so it is emptied
// into the 64-bit total every 2^15 steps = 2^19 bytes, before it can wrap.
const CHUNK_BYTES = 1 << 19;

function leb128Unsigned(n: number): number[] {
  const out: number[] = [];
  do {
    let byte = n & 0x7f;
    n >>>= 7;
    if (n !== 0) byte |= 0x80;
    out.push(byte);
  } while (n !== 0);
  return out;
}

function section(id: number, contents: number[]): number[] {
  return [id, ...leb128Unsigned(contents.length), ...contents];
}

// Locals: 0 ptr, 1 len (params); 2 acc v128; 3 total i64; 4 blocksEnd, 5 end, 6 chunkEnd (i32).
const P = 0, N = 1, ACC = 2, TOTAL = 3, BLOCKS_END = 4, END = 5, CHUNK_END = 6;
const I32_CONST_CHUNK = [0x41, ...signedLeb32(CHUNK_BYTES)];

function signedLeb32(n: number): number[] {
  const out: number[] = [];
  for (;;) {
    const byte = n & 0x7f;
    n >>= 7;
    if ((n === 0 && (byte & 0x40) === 0) || (n === -1 && (byte & 0x40) !== 0)) {
      out.push(byte);
      return out;
    }
    out.push(byte | 0x80);
  }
}

const FOLD16 = [
  0x20, TOTAL, 0x42, 0xff, 0xff, 0x03, 0x83, // total & 0xffff
  0x20, TOTAL, 0x42, 0x10, 0x88, //              total >> 16
  0x7c, 0x21, TOTAL, //                          add, store
];

const BODY: number[] = [
  0x03, 0x01, 0x7b, 0x01, 0x7e, 0x03, 0x7f, // locals: 1 v128, 1 i64, 3 i32
  0x20, P, 0x20, N, 0x6a, 0x21, END, // end = ptr + len
  0x20, P, 0x20, N, 0x41, 0x70, 0x71, 0x6a, 0x21, BLOCKS_END, // blocksEnd = ptr + (len & -16)
  // 16-byte blocks
  0x02, 0x40, // block
  0x20, P, 0x20, BLOCKS_END, 0x4f, 0x0d, 0x00, //   br_if out (ptr >= blocksEnd)
  0x03, 0x40, //   loop (chunks)
  0x20, P, ...I32_CONST_CHUNK, 0x6a, 0x21, CHUNK_END, //     chunkEnd = ptr + CHUNK_BYTES
  0x20, CHUNK_END, 0x20, BLOCKS_END, 0x20, CHUNK_END, 0x20, BLOCKS_END, 0x49, 0x1b, 0x21, CHUNK_END, // chunkEnd = min(chunkEnd, blocksEnd)
  0xfd, 0x0c, ...new Array<number>(16).fill(0), 0x21, ACC, //     acc = 0
  0x03, 0x40, //     loop (blocks)
  0x20, ACC, //       acc
  0x20, P, 0xfd, 0x00, 0x00, 0x00, //       v128.load ptr (unaligned)
  0xfd, 0x7f, //       i32x4.extadd_pairwise_i16x8_u
  0xfd, 0xae, 0x01, //       i32x4.add
  0x21, ACC, //       acc = ...
  0x20, P, 0x41, 0x10, 0x6a, 0x22, P, //       ptr += 16
  0x20, CHUNK_END, 0x49, 0x0d, 0x00, //       br_if blocks (ptr < chunkEnd)
  0x0b, //     end
  0x20, TOTAL, //     total += each lane
  0x20, ACC, 0xfd, 0x1b, 0x00, 0xad, 0x7c,
  0x20, ACC, 0xfd, 0x1b, 0x01, 0xad, 0x7c,
  0x20, ACC, 0xfd, 0x1b, 0x02, 0xad, 0x7c,
  0x20, ACC, 0xfd, 0x1b, 0x03, 0xad, 0x7c,
  0x21, TOTAL,
  0x20, P, 0x20, BLOCKS_END, 0x49, 0x0d, 0x00, //     br_if chunks (ptr < blocksEnd)
  0x0b, //   end
  0x0b, // end
  // the last 0..15 bytes, a 16-bit word at a time
  0x02, 0x40, // block
  0x03, 0x40, //   loop
  0x20, P, 0x41, 0x02, 0x6a, 0x20, END, 0x4b, 0x0d, 0x01, //     br_if out (ptr + 2 > end)
  0x20, TOTAL, 0x20, P, 0x2f, 0x01, 0x00, 0xad, 0x7c, 0x21, TOTAL, //     total += load16_u ptr
  0x20, P, 0x41, 0x02, 0x6a, 0x21, P, //     ptr += 2
  0x0c, 0x00, //     br loop
  0x0b, //   end
  0x0b, // end
  0x20, P, 0x20, END, 0x49, 0x04, 0x40, // if (ptr < end): the odd last byte, a low byte
  0x20, TOTAL, 0x20, P, 0x2d, 0x00, 0x00, 0xad, 0x7c, 0x21, TOTAL,
  0x0b,
  // fold: 32 bits once, then 16 bits four times
  0x20, TOTAL, 0x42, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x83, 0x20, TOTAL, 0x42, 0x20, 0x88, 0x7c, 0x21, TOTAL,
  ...FOLD16, ...FOLD16, ...FOLD16, ...FOLD16,
  0x20, TOTAL, 0xa7, // i32.wrap_i64
  0x0b,
];

const MODULE_BYTES = new Uint8Array([
  0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // \0asm, version 1
  ...section(1, [0x01, 0x60, 0x02, 0x7f, 0x7f, 0x01, 0x7f]), // type 0: (i32, i32) -> i32
  ...section(2, [0x01, 0x01, 0x6d, 0x03, 0x6d, 0x65, 0x6d, 0x02, 0x00, 0x00]), // imports one memory, module m, field mem, min 0 pages
  ...section(3, [0x01, 0x00]), // function 0 has type 0
  ...section(7, [0x01, 0x03, 0x73, 0x75, 0x6d, 0x00, 0x00]), // export "sum" = function 0
  ...section(10, [0x01, ...leb128Unsigned(BODY.length), ...BODY]),
]);

export type WasmSum = (ptr: number, len: number) => number;

let compiled: WebAssembly.Module | null | undefined;

/** The compiled module, or null where WebAssembly SIMD is not available (the JavaScript path then serves). */
export function checksumModule(): WebAssembly.Module | null {
  if (compiled === undefined) {
    try {
      compiled = new WebAssembly.Module(MODULE_BYTES);
    } catch {
      compiled = null;
    }
  }
  return compiled;
}

// Which buffers the module can read, and its sum function for each.
const sums = new WeakMap<ArrayBufferLike, WasmSum>();

/**
 * A zero-filled ArrayBuffer of at least `byteLength` bytes (whole 64 KiB
 * pages) that the wasm sum can read: a fixed-size WebAssembly.Memory's
 * buffer, which never moves or detaches since the memory cannot grow. A plain
 * ArrayBuffer where WebAssembly SIMD is missing.
 */
export function allocateChecksumMemory(byteLength: number): ArrayBuffer {
  const module = checksumModule();
  if (module === null) return new ArrayBuffer(byteLength);
  const pages = Math.max(1, Math.ceil(byteLength / WASM_PAGE));
  const memory = new WebAssembly.Memory({ initial: pages, maximum: pages });
  const instance = new WebAssembly.Instance(module, { m: { mem: memory } });
  sums.set(memory.buffer, instance.exports.sum as WasmSum);
  return memory.buffer;
}

/** The wasm sum over `buffer`, if it came from allocateChecksumMemory. */
export function wasmSumFor(buffer: ArrayBufferLike): WasmSum | undefined {
  return sums.get(buffer);
}
