// A UdpBind in memory, for tests and the microbenchmark. Received datagrams
// are queued by the test (a GRO message as one buffer with its datagram
// size, cut apart as the kernel bind does); sent messages are recorded as the
// datagrams the kernel would put on the wire (a GSO message cut at its
// segment size). Refusals can be scripted: EAGAIN/ENOBUFS for the next sends,
// a kernel that refuses GSO, a socket that takes only part of a batch.
import type { PacketPool } from './packet-pool.js';
import type { DatagramBatch, SendBatch } from './batches.js';
import type { UdpBind } from './bind.js';

export interface SentDatagram {
  sender: number;
  peer: number; // uint32
  port: number;
  bytes: Uint8Array;
}

interface Incoming {
  bytes: Uint8Array;
  sourceIp: number;
  sourcePort: number;
  groSize: number;
}

const EIO = 5;

export class MemoryBind implements UdpBind {
  gso: boolean;
  /** No IPv6 underlay in memory. */
  readonly senders6 = 0;
  private readonly queue: Incoming[] = [];
  private queueHead = 0;
  private floodItem: Incoming | undefined;
  private floodLeft = 0;
  readonly sent: SentDatagram[] = [];
  /** Send calls made (each a sendmmsg on a kernel bind). */
  sendCalls = 0;
  /** The next this-many send calls fail with -failErrno. */
  failSends = 0;
  failErrno = 11;
  /** Whether waitWritable reports room (after a wait). */
  writableAfterWait = true;
  waits = 0;
  /** The kernel refuses GSO messages with EIO. */
  refuseGso = false;
  /** At most this many messages per send call (0: all). */
  maxPerCall = 0;

  constructor(
    private readonly pool: PacketPool,
    /** Pool offsets of the receive slots. */
    private readonly slots: Int32Array,
    readonly senders = 1,
    gso = true,
  ) {
    this.gso = gso;
  }

  disableGso(): void {
    this.gso = false;
  }

  /** Queues a datagram from sourceIp:sourcePort; groSize > 0 makes it a GRO message of datagrams that size. */
  inject(bytes: Uint8Array, sourceIp: number, sourcePort: number, groSize = 0): void {
    this.queue.push({ bytes, sourceIp: sourceIp | 0, sourcePort, groSize });
  }

  flood(bytes: Uint8Array, sourceIp: number, sourcePort: number, count: number): void {
    this.floodItem = { bytes, sourceIp: sourceIp | 0, sourcePort, groSize: 0 };
    this.floodLeft = count;
  }

  get pending(): number {
    return this.queue.length - this.queueHead + this.floodLeft;
  }

  receive(batch: DatagramBatch): void {
    batch.reset();
    const capacity = this.pool.capacity;
    let messages = 0;
    while (messages < this.slots.length) {
      let item: Incoming;
      if (this.queueHead < this.queue.length) item = this.queue[this.queueHead++];
      else if (this.floodLeft > 0) {
        item = this.floodItem!;
        this.floodLeft--;
      } else break;
      const off = this.slots[messages++];
      const n = Math.min(item.bytes.length, capacity);
      this.pool.bytes.set(item.bytes.subarray(0, n), off);
      if (item.bytes.length > capacity) {
        batch.add(off, n, item.sourceIp, item.sourcePort, true);
      } else if (item.groSize > 0 && item.groSize < n) {
        for (let p = 0; p < n; p += item.groSize) batch.add(off + p, Math.min(item.groSize, n - p), item.sourceIp, item.sourcePort, false);
      } else {
        batch.add(off, n, item.sourceIp, item.sourcePort, false);
      }
    }
    if (messages < this.slots.length) batch.drained = true;
  }

  send(sender: number, batch: SendBatch, from: number): number {
    this.sendCalls++;
    if (this.failSends > 0) {
      this.failSends--;
      return -this.failErrno;
    }
    const end = this.maxPerCall > 0 ? Math.min(batch.messages, from + this.maxPerCall) : batch.messages;
    for (let m = from; m < end; m++) {
      if (batch.segmentSize[m] > 0 && this.refuseGso) return m === from ? -EIO : m - from;
      const whole = new Uint8Array(batch.bytes[m]);
      let at = 0;
      for (let p = batch.firstPiece[m]; p < batch.firstPiece[m] + batch.pieceCount[m]; p++) {
        whole.set(this.pool.bytes.subarray(batch.pieceOffset[p], batch.pieceOffset[p] + batch.pieceLength[p]), at);
        at += batch.pieceLength[p];
      }
      const size = batch.segmentSize[m] > 0 ? batch.segmentSize[m] : whole.length;
      for (let p = 0; p < whole.length || p === 0; p += size) {
        this.sent.push({ sender, peer: batch.peer[m] >>> 0, port: batch.port[m], bytes: whole.slice(p, Math.min(whole.length, p + size)) });
        if (whole.length === 0) break;
      }
    }
    return end - from;
  }

  waitWritable(_sender: number, _timeoutMs: number): boolean {
    this.waits++;
    return this.writableAfterWait;
  }
}
