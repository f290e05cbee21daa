// What a backend's wire format must provide to the forwarding loop. The loop
// owns buffers and syscalls; an Encapsulation only writes or checks bytes in
// place, in front of the inner packet (headroom) or at an offset on receive.

export interface Encapsulation {
  readonly name: string;
  /** Bytes this format writes in front of the inner IPv4 packet. */
  readonly headroom: number;
  /**
   * Writes the outer header for the lease at `leaseIndex` in front of the
   * inner packet at `innerOffset` and returns where the datagram payload
   * starts (innerOffset - headroom).
   */
  encapsulate(buf: Uint8Array, innerOffset: number, innerLength: number, leaseIndex: number): number;
  /**
   * Checks the datagram payload at `offset` and returns the offset of the
   * inner IPv4 packet, or a negative DropReasonCode.
   */
  decapsulate(buf: Uint8Array, offset: number, length: number): number;
}

/**
 * flannel's udp backend: the UDP payload is the bare inner IPv4 packet, so
 * encapsulation writes nothing and the kernel's UDP socket adds the outer
 * IPv4 and UDP headers. Byte-compatible with flannel's C proxy.
 */
export class UdpEncapsulation implements Encapsulation {
  readonly name = 'udp';
  readonly headroom = 0;

  encapsulate(_buf: Uint8Array, innerOffset: number): number {
    return innerOffset;
  }

  decapsulate(_buf: Uint8Array, offset: number): number {
    return offset;
  }
}
