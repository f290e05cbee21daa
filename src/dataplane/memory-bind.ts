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
  /** Sent by an IPv6 underlay sender: its destination, 16 bytes (undefined for an IPv4 sender). */
  peer6?: Uint8Array;
  port: number;
  bytes: Uint8Array;
}

interface Incoming {
  bytes: Uint8Array;
  sourceIp: number;
  sourcePort: number;
  groSize: number;
  /** Came over the IPv6 underlay from this address (16 bytes). */
  source6?: Uint8Array;
}

const EIO = 5;

export class MemoryBind implements UdpBind {
  gso: boolean;
  private readonly queue6: Incoming[] = [];
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
    /** The last senders6 senders are the IPv6 underlay's (0: none), as in KernelBind. */
    readonly senders6 = 0,
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

  /** Queues a datagram that came over the IPv6 underlay from source6 (16 bytes). */
  inject6(bytes: Uint8Array, source6: Uint8Array, sourcePort: number): void {
    this.queue6.push({ bytes, sourceIp: 0, sourcePort, groSize: 0, source6 });
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
    if (this.senders6 === 0 || this.queue6.length === 0) return;
    // As KernelBind: the IPv6 socket's datagrams after the IPv4 ones (into slots the IPv4 ones left).
    batch.outer6From = batch.count;
    while (messages < this.slots.length && this.queue6.length > 0) {
      const item = this.queue6.shift()!;
      const off = this.slots[messages++];
      const n = Math.min(item.bytes.length, this.pool.capacity);
      this.pool.bytes.set(item.bytes.subarray(0, n), off);
      batch.add(off, n, 0, item.sourcePort, item.bytes.length > n);
      const a = item.source6!;
      const w = (i: number) => (a[i] << 24) | (a[i + 1] << 16) | (a[i + 2] << 8) | a[i + 3];
      batch.setSource6(batch.count - 1, w(0), w(4), w(8), w(12));
    }
    batch.drained = this.queue6.length === 0 && batch.drained;
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
        const six = sender >= this.senders - this.senders6;
        const peer6 = six ? Uint8Array.from({ length: 16 }, (_, i) => (batch.peer6[4 * m + (i >> 2)] >>> (24 - 8 * (i & 3))) & 255) : undefined;
        this.sent.push({ sender, peer: batch.peer[m] >>> 0, ...(six ? { peer6 } : {}), port: batch.port[m], bytes: whole.slice(p, Math.min(whole.length, p + size)) });
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
