// A TunDevice in memory, for tests and the microbenchmark: frames queued by
// the test are "read", written frames are kept. Everything between frames
// and packets (virtio headers, the super-packet split, the merge of a flow's
// segments) is frame-tun.ts, the code the agent runs on a real device.
import { FrameTun, FRAME_EMPTY, type FrameTunOptions } from './frame-tun.js';
import { VIRTIO_NET_HDR_LEN } from '../encap/virtio-net-header.js';

export class MemoryTun extends FrameTun {
  private readonly queue: Uint8Array[] = [];
  private queueHead = 0;
  /** The same frame delivered this many more times, after the queue (a flood, without a copy each). */
  private floodFrame: Uint8Array | undefined;
  private floodLeft = 0;
  /** Frames written, vnet header included when the device has one. */
  readonly written: Uint8Array[] = [];
  /** Frames read so far. */
  framesRead = 0;
  /** The next this-many writes fail (as a full or gone device would make them). */
  failWrites = 0;

  constructor(opts: FrameTunOptions) {
    super(opts);
  }

  /** Queues one frame (with its virtio_net_hdr in front when the device has vnet headers). */
  inject(frame: Uint8Array): void {
    this.queue.push(frame);
  }

  flood(frame: Uint8Array, count: number): void {
    this.floodFrame = frame;
    this.floodLeft = count;
  }

  get pending(): number {
    return this.queue.length - this.queueHead + this.floodLeft;
  }

  /** The IPv4 packets written, without their vnet headers. */
  writtenPackets(): Uint8Array[] {
    const skip = this.opts.vnetHeader ? VIRTIO_NET_HDR_LEN : 0;
    return this.written.map((f) => f.subarray(skip));
  }

  protected readFrame(offset: number, maxLength: number): number {
    let frame: Uint8Array;
    if (this.queueHead < this.queue.length) {
      frame = this.queue[this.queueHead++];
    } else if (this.floodLeft > 0) {
      frame = this.floodFrame!;
      this.floodLeft--;
    } else {
      return FRAME_EMPTY;
    }
    this.framesRead++;
    const n = Math.min(frame.length, maxLength);
    this.bytes.set(frame.subarray(0, n), offset);
    return n;
  }

  protected writeFrame(pieces: number, total: number): number {
    if (this.failWrites > 0) {
      this.failWrites--;
      return -5; // -EIO
    }
    const frame = new Uint8Array(total);
    let at = 0;
    for (let i = 0; i < pieces; i++) {
      frame.set(this.bytes.subarray(this.pieceOffset[i], this.pieceOffset[i] + this.pieceLength[i]), at);
      at += this.pieceLength[i];
    }
    this.written.push(frame);
    return total;
  }
}
