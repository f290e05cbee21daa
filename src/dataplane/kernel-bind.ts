// UDP sockets as a UdpBind: recvmmsg() into pool slots (with UDP GRO, a
// message may hold many datagrams, cut apart here), sendmmsg() of a
// SendBatch (send-messages.ts lays out the mmsghdrs and GSO cmsgs).
// udp-socket.ts opens the sockets.
import * as libc from './libc.js';
import { Counter } from './worker-stats.js';
import { MessageBatch } from './message-batch.js';
import { SendMessages } from './send-messages.js';
import { batchSizeBucket } from '../observe/metrics.js';
import type { PacketPool } from './packet-pool.js';
import type { DatagramBatch, SendBatch } from './batches.js';
import type { UdpBind } from './bind.js';

export interface KernelBindOptions {
  receiveFd: number;
  sendFds: number[];
  pool: PacketPool;
  /** Receives go into pool slots [firstSlot, firstSlot + batchSize). */
  firstSlot: number;
  batchSize: number;
  /** UDP_GRO is on for receiveFd. */
  gro: boolean;
  /** The kernel takes UDP_SEGMENT sends. */
  gso: boolean;
  /** The largest SendBatch sent. */
  maxMessages: number;
  maxPieces: number;
  counters: Float64Array;
}

export class KernelBind implements UdpBind {
  readonly senders: number;
  gso: boolean;
  private readonly receiveBatch: MessageBatch;
  private readonly messages: SendMessages;
  private readonly pollFd = new libc.NativeMemory(libc.SIZEOF_POLLFD);
  private readonly sendPointers: libc.Pointers;
  private readonly poolAddress: number;
  private readonly c: Float64Array;
  private lastReceived: number;
  private loaded: SendBatch | undefined;
  // What the hot path reads, copied out of the options: the options object is
  // shaped by whoever built it (a structured clone from the main thread, a
  // literal in the rehearsal), and V8's optimised code is specialised on the
  // shape it saw. Own fields have one shape for every instance.
  private readonly receiveFd: number;
  private readonly sendFds: Int32Array;
  private readonly batchSize: number;
  private readonly firstSlot: number;
  private readonly slotOffsets: Int32Array;

  constructor(opts: KernelBindOptions) {
    this.receiveFd = opts.receiveFd;
    this.sendFds = Int32Array.from(opts.sendFds);
    this.batchSize = opts.batchSize;
    this.firstSlot = opts.firstSlot;
    this.slotOffsets = opts.pool.packetOffsets;
    this.senders = opts.sendFds.length;
    this.gso = opts.gso;
    this.c = opts.counters;
    this.poolAddress = opts.pool.memory.address;
    this.receiveBatch = new MessageBatch(opts.pool, opts.firstSlot, opts.batchSize, opts.gro ? libc.CMSG_SPACE_INT : 0);
    this.lastReceived = opts.batchSize;
    this.messages = new SendMessages(opts.maxMessages, opts.maxPieces);
    this.sendPointers = new libc.Pointers(this.messages.memory);
  }

  disableGso(): void {
    this.gso = false;
  }

  receive(batch: DatagramBatch): void {
    const c = this.c;
    const mb = this.receiveBatch;
    const size = this.batchSize;
    const offsets = this.slotOffsets;
    const first = this.firstSlot;
    batch.reset();
    mb.prepareReceive(this.lastReceived);
    let n: number;
    for (;;) {
      n = libc.recvmmsg(this.receiveFd, mb.memory.pointer, size, libc.MSG_DONTWAIT);
      c[Counter.SyscallsReceive]++;
      if (n > 0) break;
      const e = libc.errno();
      if (n === 0 || e === libc.EAGAIN) {
        batch.drained = true;
        this.lastReceived = 0;
        return;
      }
      if (e !== libc.EINTR) throw new libc.SyscallError('recvmmsg', e);
    }
    this.lastReceived = n;
    c[Counter.ReceiveBatches]++;
    c[Counter.ReceiveBatchSizeLe1 + batchSizeBucket(n)]++;
    c[Counter.ReceiveBatchSizeSum] += n;
    if (n < size) batch.drained = true;
    for (let i = 0; i < n; i++) {
      const off = offsets[first + i];
      const length = mb.messageLength(i);
      const ip = mb.sourceAddress(i);
      const port = mb.sourcePort(i);
      if ((mb.messageFlags(i) & libc.MSG_TRUNC) !== 0) {
        batch.add(off, length, ip, port, true);
        continue;
      }
      // With UDP GRO one message may hold several datagrams of groSize bytes each (the last may be shorter).
      const groSize = mb.groSegmentSize(i);
      if (groSize > 0 && groSize < length) {
        c[Counter.GroReceives]++;
        for (let p = 0; p < length; p += groSize) batch.add(off + p, Math.min(groSize, length - p), ip, port, false);
      } else {
        batch.add(off, length, ip, port, false);
      }
    }
  }

  send(sender: number, batch: SendBatch, from: number): number {
    if (from === 0 || this.loaded !== batch) {
      this.messages.load(batch, this.poolAddress);
      this.loaded = batch;
    }
    for (;;) {
      const r = libc.sendmmsg(this.sendFds[sender], this.sendPointers.at(this.messages.offsetOf(from)), batch.messages - from, 0);
      this.c[Counter.SyscallsSend]++;
      if (r > 0) return r;
      if (r === 0) return -libc.EAGAIN;
      const e = libc.errno();
      if (e !== libc.EINTR) return -e;
    }
  }

  waitWritable(sender: number, timeoutMs: number): boolean {
    const v = this.pollFd.view;
    v.setInt32(0, this.sendFds[sender], true);
    v.setInt16(4, libc.POLLOUT, true);
    v.setInt16(6, 0, true);
    const r = libc.poll(this.pollFd.pointer, 1, timeoutMs);
    this.c[Counter.SyscallsPoll]++;
    return r > 0;
  }
}
