// Fixed packet slots allocated once at start. Each slot reserves `headroom`
// bytes in front of the packet so an encapsulation can write its outer
// headers in place (VXLAN + Ethernet: 22 bytes) and the kernel sends straight
// from the same memory: a packet is never copied between the TUN read and the
// UDP send, and nothing is allocated per packet.
import { allocateChecksumMemory } from '../encap/checksum-wasm.js';
import { NativeMemory } from './libc.js';

export class PacketPool {
  readonly memory: NativeMemory;
  /** Where each slot's packet starts, relative to memory.bytes: slot * slotSize + headroom. */
  readonly packetOffsets: Int32Array;

  readonly slotSize: number;
  /** Start of the extra region after the slots (header arenas), relative to memory.bytes. */
  readonly extraOffset: number;

  constructor(
    readonly slotCount: number,
    /** Bytes a packet may occupy after the headroom. */
    readonly capacity: number,
    readonly headroom: number,
    /** Kernel-visible bytes after the slots, for headers built per segment (offloads). */
    readonly extraBytes = 0,
    /**
     * Allocate the pool as a WebAssembly.Memory, so the inner checksum runs in
     * wasm SIMD (encap/checksum-wasm.ts). Off for the agent: in a side-by-side
     * run it cost ping p99 spikes of 3-6 ms after 0.2 s of idle that the plain
     * pool did not show (docs/design.md, "CPU per byte"); the cause is not found.
     */
    readonly wasmChecksumMemory = false,
  ) {
    // 64-byte aligned slots: headers stay cache-line aligned, and 4-byte
    // aligned packets let the checksum read whole words.
    this.slotSize = (headroom + capacity + 63) & ~63;
    this.extraOffset = this.slotSize * slotCount;
    this.memory = new NativeMemory(this.extraOffset + extraBytes, wasmChecksumMemory ? allocateChecksumMemory : undefined);
    this.packetOffsets = new Int32Array(slotCount);
    for (let i = 0; i < slotCount; i++) this.packetOffsets[i] = i * this.slotSize + headroom;
  }

  get bytes(): Uint8Array {
    return this.memory.bytes;
  }
}
