// Test data for TCP transfers: one random megabyte (a fresh seed per run, so
// no cache or dedup can fake a match), then every chunk is it XORed with a
// running counter: cheap to generate at gigabit rates, never repeating
// within a transfer.
import { randomBytes } from 'node:crypto';

export const CHUNK = 1 << 20;

export class PseudoRandomChunks {
  private readonly base = randomBytes(CHUNK);
  private counter = 0;

  /** The next chunk of `size` bytes (at most CHUNK). */
  next(size = CHUNK): Buffer {
    const chunk = Buffer.allocUnsafe(size);
    const words = size >>> 2;
    const src = new Uint32Array(this.base.buffer, this.base.byteOffset, CHUNK >>> 2);
    const dst = new Uint32Array(chunk.buffer, chunk.byteOffset, words);
    this.counter++;
    for (let i = 0; i < words; i++) dst[i] = src[i] ^ (this.counter * 2654435761 + i);
    for (let i = words << 2; i < size; i++) chunk[i] = this.base[i];
    return chunk;
  }
}
