// Big-endian field access on packet bytes: the one place the encap modules
// read and write 16- and 32-bit network-order fields, so no module loops over
// bytes on its own. Plain index arithmetic: no DataView per call, no allocation.

export function read16(buf: Uint8Array, at: number): number {
  return (buf[at] << 8) | buf[at + 1];
}

export function read32(buf: Uint8Array, at: number): number {
  return ((buf[at] << 24) | (buf[at + 1] << 16) | (buf[at + 2] << 8) | buf[at + 3]) >>> 0;
}

export function write16(buf: Uint8Array, at: number, value: number): void {
  buf[at] = value >>> 8;
  buf[at + 1] = value;
}

export function write32(buf: Uint8Array, at: number, value: number): void {
  buf[at] = value >>> 24;
  buf[at + 1] = value >>> 16;
  buf[at + 2] = value >>> 8;
  buf[at + 3] = value;
}
