// UDP sockets as a UdpBind: recvmmsg() into pool slots (with UDP GRO, a
// message may hold many datagrams, cut apart here), sendmmsg() of a
// SendBatch (send-messages.ts lays out the mmsghdrs and GSO cmsgs).
// udp-socket.ts opens the sockets.
//
// The IPv6 underlay (a node with a public IPv6): a second receive socket and
// its senders, in the same bind. receive() takes a batch from the IPv4 socket
// and then one from the IPv6 socket, appended (batch.outer6From), each into
// its own half of the receive slots; senders [senders - senders6, senders)
// are the IPv6 ones, with sockaddr_in6 destinations. Without it every field
// below that ends in 6 is unused and the IPv4 path is the one it was.
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
  /** The IPv6 underlay: its receive socket and senders (absent: none). Its GRO and GSO as the IPv4 socket's. */
  receiveFd6?: number;
  sendFds6?: number[];
  gro6?: boolean;
}

export class KernelBind implements UdpBind {
  readonly senders: number;
  readonly senders6: number;
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
  private readonly receiveFd6: number;
  private readonly receiveBatch6: MessageBatch | undefined;
  private readonly batchSize6: number;
  private readonly firstSlot6: number;
  private lastReceived6: number;
  private readonly messages6: SendMessages | undefined;
  private readonly sendPointers6: libc.Pointers | undefined;
  private loaded6: SendBatch | undefined;

  constructor(opts: KernelBindOptions) {
    const sendFds6 = opts.sendFds6 ?? [];
    this.receiveFd = opts.receiveFd;
    this.sendFds = Int32Array.from([...opts.sendFds, ...sendFds6]);
    this.receiveFd6 = opts.receiveFd6 ?? -1;
    // With the IPv6 socket the receive slots are shared: the first half for IPv4, the rest for IPv6.
    this.batchSize = this.receiveFd6 >= 0 ? Math.ceil(opts.batchSize / 2) : opts.batchSize;
    this.batchSize6 = opts.batchSize - this.batchSize;
    this.firstSlot = opts.firstSlot;
    this.firstSlot6 = opts.firstSlot + this.batchSize;
    this.lastReceived6 = this.batchSize6;
    this.slotOffsets = opts.pool.packetOffsets;
    this.senders = opts.sendFds.length + sendFds6.length;
    this.senders6 = sendFds6.length;
    this.gso = opts.gso;
    this.c = opts.counters;
    this.poolAddress = opts.pool.memory.address;
    this.receiveBatch = new MessageBatch(opts.pool, opts.firstSlot, this.batchSize, opts.gro ? libc.CMSG_SPACE_INT : 0);
    this.lastReceived = this.batchSize;
    this.messages = new SendMessages(opts.maxMessages, opts.maxPieces);
    this.sendPointers = new libc.Pointers(this.messages.memory);
    const six = this.receiveFd6 >= 0;
    this.receiveBatch6 = six ? new MessageBatch(opts.pool, this.firstSlot6, this.batchSize6, opts.gro6 ? libc.CMSG_SPACE_INT : 0, true) : undefined;
    this.messages6 = six ? new SendMessages(opts.maxMessages, opts.maxPieces, true) : undefined;
    this.sendPointers6 = six ? new libc.Pointers(this.messages6!.memory) : undefined;
  }

  disableGso(): void {
    this.gso = false;
  }

  // One function for the IPv4 socket, as before the IPv6 underlay: it is what the rehearsal leaves optimised
  // (a thin wrapper would be inlined, and its body never optimised on its own). The IPv6 socket's batch is
  // appended at its two exits.
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
        if (this.receiveFd6 >= 0) this.receive6(batch);
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
    if (this.receiveFd6 >= 0) this.receive6(batch);
  }

  /**
   * One recvmmsg on the IPv6 underlay's socket, appended to the batch from
   * outer6From on; the batch is drained when both sockets are.
   */
  private receive6(batch: DatagramBatch): void {
    const c = this.c;
    const mb = this.receiveBatch6!;
    const size = this.batchSize6;
    const offsets = this.slotOffsets;
    const first = this.firstSlot6;
    const drained4 = batch.drained;
    batch.outer6From = batch.count;
    mb.prepareReceive(this.lastReceived6);
    let n: number;
    for (;;) {
      n = libc.recvmmsg(this.receiveFd6, mb.memory.pointer, size, libc.MSG_DONTWAIT);
      c[Counter.SyscallsReceive]++;
      if (n > 0) break;
      const e = libc.errno();
      if (n === 0 || e === libc.EAGAIN) {
        this.lastReceived6 = 0;
        return;
      }
      if (e !== libc.EINTR) throw new libc.SyscallError('recvmmsg (IPv6 underlay)', e);
    }
    this.lastReceived6 = n;
    c[Counter.ReceiveBatches]++;
    c[Counter.ReceiveBatchSizeLe1 + batchSizeBucket(n)]++;
    c[Counter.ReceiveBatchSizeSum] += n;
    batch.drained = drained4 && n < size;
    for (let i = 0; i < n; i++) {
      const off = offsets[first + i];
      const length = mb.messageLength(i);
      const port = mb.sourcePort(i);
      const w0 = mb.sourceWord6(i, 0);
      const w1 = mb.sourceWord6(i, 1);
      const w2 = mb.sourceWord6(i, 2);
      const w3 = mb.sourceWord6(i, 3);
      if ((mb.messageFlags(i) & libc.MSG_TRUNC) !== 0) {
        batch.add(off, length, 0, port, true);
        batch.setSource6(batch.count - 1, w0, w1, w2, w3);
        continue;
      }
      const groSize = mb.groSegmentSize(i);
      if (groSize > 0 && groSize < length) {
        c[Counter.GroReceives]++;
        for (let p = 0; p < length; p += groSize) {
          batch.add(off + p, Math.min(groSize, length - p), 0, port, false);
          batch.setSource6(batch.count - 1, w0, w1, w2, w3);
        }
      } else {
        batch.add(off, length, 0, port, false);
        batch.setSource6(batch.count - 1, w0, w1, w2, w3);
      }
    }
  }

  send(sender: number, batch: SendBatch, from: number): number {
    if (sender >= this.senders - this.senders6) return this.send6(sender, batch, from);
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

  /** send() through an IPv6 underlay sender: the same, with sockaddr_in6 destinations. */
  private send6(sender: number, batch: SendBatch, from: number): number {
    const messages = this.messages6!;
    if (from === 0 || this.loaded6 !== batch) {
      messages.load(batch, this.poolAddress);
      this.loaded6 = batch;
    }
    for (;;) {
      const r = libc.sendmmsg(this.sendFds[sender], this.sendPointers6!.at(messages.offsetOf(from)), batch.messages - from, 0);
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
