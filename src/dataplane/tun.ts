// The TUN side as the forwarder sees it (after wireguard-go's tun.Device):
// read a batch of inner IPv4 packets into pool slots, write a batch. How the
// packets cross the kernel boundary (one read() each, or 64 KB super-packets
// behind a virtio_net_hdr that must be cut up, and merged again on the way
// back) is the implementation's business: kernel-tun.ts for a real device,
// memory-tun.ts for tests.
import type { PacketList, TunReadBatch } from './batches.js';

/** Where a device shows what it writes, for pcap captures (ForwarderObserver implements it). */
export interface TunWriteCapture {
  captureTunOut(buf: Uint8Array, off: number, length: number): void;
  /** A merged write: its header then the payload slices, as one captured packet. */
  captureTunOutBegin(totalLength: number): void;
  captureTunOutAppend(buf: Uint8Array, off: number, length: number): void;
  captureTunOutEnd(): void;
}

export interface TunDevice {
  /**
   * Fills `batch` with what the kernel has: at most batch.capacity reads
   * (every packet read counts, also those the device itself drops), fewer
   * when the segment arena is full. Sets batch.drained when the queue is empty.
   */
  read(batch: TunReadBatch): void;
  /** Writes the packets in order; a failed write is counted as a drop (TunWriteFailed), never thrown. */
  write(packets: PacketList): void;
  /**
   * Writes one packet this node answers with (an ICMP error), not counted as
   * forwarded. Needs VIRTIO_NET_HDR_LEN bytes of headroom in front. False if refused.
   */
  reply(offset: number, length: number): boolean;
  /** Set while a capture runs. */
  capture: TunWriteCapture | undefined;
}
