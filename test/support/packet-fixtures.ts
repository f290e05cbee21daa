// What the offload tests share to build packets: addresses, option bytes and
// reproducible payloads.
export const SRC = 0x0af40105; // 10.244.1.5
export const DST = 0x0af40909; // 10.244.9.9
/** TCP timestamps option, padded (NOP NOP TS). */
export const TIMESTAMPS = [1, 1, 8, 10, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0];
/** IPv4 router-alert option: a header longer than 20 bytes. */
export const ROUTER_ALERT = [0x94, 0x04, 0x00, 0x00];

/** `length` bytes from a small LCG: the same for the same seed, different across seeds. */
export function pattern(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed | 1;
  for (let i = 0; i < length; i++) {
    x = (Math.imul(x, 1103515245) + 12345) | 0;
    out[i] = x >>> 24;
  }
  return out;
}
