// The loop one worker thread runs: it owns one TUN queue and one UDP socket
// and moves packets between them until told to stop. Everything here runs
// per packet, so it allocates nothing: buffers are pool slots, syscalls take
// addresses, counters are slots of a shared Float64Array.
import { receiveMessageOnPort, type MessagePort } from 'node:worker_threads';
import { getHeapStatistics } from 'node:v8';
import * as libc from './libc.js';
import { PacketPool } from './packet-pool.js';
import { MessageBatch } from './message-batch.js';
import { Counter, DROPS_BASE } from './worker-stats.js';
import { DropReason } from '../encap/drop-reasons.js';
import type { Encapsulation } from '../encap/encapsulation.js';
import { UdpEncapsulation } from '../encap/encapsulation.js';
import { validateIPv4, ipv4TotalLength, ipv4Destination, decrementTtl } from '../encap/ipv4.js';
import { buildIcmpDestUnreachable, ICMP_NET_UNREACHABLE } from '../encap/icmp.js';
import { LeaseTable, type LeaseTableSnapshot } from '../control/lease-table.js';

/** Messages the main thread sends a worker (through `controlPort`). */
export type WorkerControlMessage =
  | { type: 'leases'; snapshot: LeaseTableSnapshot }
  | { type: 'stop' };

export interface ForwarderConfig {
  workerIndex: number;
  tunFd: number;
  udpFd: number;
  /** eventfd the main thread writes to after posting a control message, to wake poll(). */
  wakeFd: number;
  controlPort: MessagePort;
  /** Shared Int32Array: [0] counts control messages posted, so a busy loop notices them without a syscall. */
  controlSequence: Int32Array;
  counters: Float64Array;
  leases: LeaseTableSnapshot;
  backend: 'udp';
  peerPort: number;
  /** Packets per recvmmsg/sendmmsg. */
  batchSize: number;
  /** Largest inner packet accepted: the TUN MTU. */
  mtu: number;
  /** This node's pod subnet: inbound packets for anything else are not written to the TUN. */
  ownNetwork: number;
  ownMask: number;
}

const POLL_TIMEOUT_MS = 1000;
const SEND_WAIT_MS = 10;
/** Loop turns between looks at the control sequence while traffic keeps the loop busy. */
const CONTROL_CHECK_ROUNDS = 64;

export class Forwarder {
  private readonly pool: PacketPool;
  private readonly bytes: Uint8Array;
  private readonly poolAddress: number;
  private readonly sendBatch: MessageBatch;
  private readonly receiveBatch: MessageBatch;
  private readonly icmpOffset: number;
  private readonly pollFds: libc.NativeMemory;
  private readonly scratch: libc.NativeMemory;
  private readonly encap: Encapsulation;
  private readonly c: Float64Array;
  private leaseTable: LeaseTable;
  private lastControlSequence = 0;
  private lastReceived: number;
  private tunDrained = true;
  private udpDrained = true;
  private stopping = false;
  private nextHeapSampleMs = 0;

  constructor(private readonly cfg: ForwarderConfig) {
    this.encap = new UdpEncapsulation();
    const batch = cfg.batchSize;
    // Slots: [0, batch) for TUN→UDP, [batch, 2·batch) for UDP→TUN, one for ICMP replies.
    // The capacity leaves room past the MTU so an oversized datagram shows up as such (MSG_TRUNC)
    // instead of being cut silently.
    this.pool = new PacketPool(2 * batch + 1, Math.max(cfg.mtu + this.encap.headroom, 2048) + 64, this.encap.headroom);
    this.bytes = this.pool.bytes;
    this.poolAddress = this.pool.memory.address;
    this.sendBatch = new MessageBatch(this.pool, 0, batch);
    this.receiveBatch = new MessageBatch(this.pool, batch, batch);
    this.lastReceived = batch;
    this.icmpOffset = this.pool.packetOffsets[2 * batch];
    this.c = cfg.counters;
    this.c[Counter.PoolSlots] = this.pool.slotCount;
    this.leaseTable = new LeaseTable(cfg.leases);
    this.c[Counter.LeaseTableVersion] = cfg.leases.version;

    this.pollFds = new libc.NativeMemory(3 * libc.SIZEOF_POLLFD);
    const fds = [cfg.tunFd, cfg.udpFd, cfg.wakeFd];
    fds.forEach((fd, i) => {
      this.pollFds.view.setInt32(i * libc.SIZEOF_POLLFD, fd, true);
      this.pollFds.view.setInt16(i * libc.SIZEOF_POLLFD + 4, libc.POLLIN, true);
    });
    this.scratch = new libc.NativeMemory(libc.SIZEOF_POLLFD + 8);
  }

  /** Runs until a stop message arrives. Throws on an unexpected syscall failure (the main thread restarts the worker). */
  run(): void {
    const c = this.c;
    const view = this.pollFds.view;
    while (!this.stopping) {
      this.heartbeat();
      const ready = libc.poll(this.pollFds.address, 3, POLL_TIMEOUT_MS);
      c[Counter.SyscallsPoll]++;
      if (ready < 0) {
        const e = libc.errno();
        if (e === libc.EINTR) continue;
        throw new libc.SyscallError('poll', e);
      }
      if (view.getInt16(2 * libc.SIZEOF_POLLFD + 6, true) !== 0) this.drainWakeFd();
      if (this.lastControlSequence !== Atomics.load(this.cfg.controlSequence, 0)) this.handleControl();
      this.tunDrained = view.getInt16(6, true) === 0;
      this.udpDrained = view.getInt16(libc.SIZEOF_POLLFD + 6, true) === 0;
      // While either side has work, bypass poll() (flannel's trick): a read that
      // finds nothing costs less than the poll() that would have told us so.
      let rounds = 0;
      while (!(this.tunDrained && this.udpDrained)) {
        if (!this.tunDrained) this.forwardFromTun();
        if (!this.udpDrained) this.forwardFromUdp();
        if (++rounds % CONTROL_CHECK_ROUNDS === 0) {
          this.heartbeat();
          if (this.lastControlSequence !== Atomics.load(this.cfg.controlSequence, 0)) this.handleControl();
          if (this.stopping) break;
        }
      }
    }
  }

  private heartbeat(): void {
    const now = Date.now();
    this.c[Counter.HeartbeatMs] = now;
    if (now >= this.nextHeapSampleMs) {
      // Allocates one object, once a second: off the per-packet path.
      this.c[Counter.HeapUsedBytes] = getHeapStatistics().used_heap_size;
      this.nextHeapSampleMs = now + 1000;
    }
  }

  private drop(reason: number): void {
    this.c[DROPS_BASE + reason]++;
  }

  /** TUN → lease lookup → UDP, for up to one batch of packets. */
  private forwardFromTun(): void {
    const c = this.c;
    const bytes = this.bytes;
    const offsets = this.pool.packetOffsets;
    const batch = this.sendBatch;
    const capacity = this.pool.capacity - this.encap.headroom;
    const table = this.leaseTable;
    const port = this.cfg.peerPort;
    let count = 0;
    while (count < this.cfg.batchSize) {
      const off = offsets[count];
      const n = libc.read(this.cfg.tunFd, this.poolAddress + off, capacity);
      c[Counter.SyscallsTunRead]++;
      if (n < 0) {
        const e = libc.errno();
        if (e === libc.EAGAIN) {
          this.tunDrained = true;
          break;
        }
        if (e === libc.EINTR) continue;
        throw new libc.SyscallError('read', e, 'TUN');
      }
      c[Counter.TunReadPackets]++;
      c[Counter.TunReadBytes] += n;
      const reason = validateIPv4(bytes, off, n);
      if (reason !== DropReason.None) {
        this.drop(reason);
        continue;
      }
      const length = ipv4TotalLength(bytes, off);
      if (length > this.cfg.mtu) {
        this.drop(DropReason.TooBig);
        continue;
      }
      const lease = table.lookup(ipv4Destination(bytes, off));
      if (lease < 0) {
        this.answerNoLease(off, length);
        continue;
      }
      if (!decrementTtl(bytes, off)) {
        this.drop(DropReason.TtlExpired);
        continue;
      }
      const start = this.encap.encapsulate(bytes, off, length, lease);
      batch.setBuffer(count, start, off + length - start);
      batch.setDestination(count, table.publicIpAt(lease), port);
      count++;
    }
    if (count > 0) this.send(count);
  }

  /** sendmmsg the first `count` messages, resuming after partial sends. */
  private send(count: number): void {
    const c = this.c;
    const batch = this.sendBatch;
    let sent = 0;
    c[Counter.SendBatches]++;
    while (sent < count) {
      const r = libc.sendmmsg(this.cfg.udpFd, batch.addressOfMessage(sent), count - sent, 0);
      c[Counter.SyscallsSend]++;
      if (r > 0) {
        for (let i = sent; i < sent + r; i++) c[Counter.UdpSentBytes] += batch.messageLength(i);
        c[Counter.UdpSentPackets] += r;
        sent += r;
        continue;
      }
      const e = libc.errno();
      if (e === libc.EINTR) continue;
      if (e === libc.EAGAIN || e === libc.ENOBUFS) {
        if (this.waitWritable()) continue;
        c[DROPS_BASE + DropReason.SendFailed] += count - sent;
        return;
      }
      // The message at `sent` itself was refused (e.g. no route to that peer's
      // public IP): count it and carry on with the rest of the batch.
      this.drop(DropReason.SendFailed);
      sent++;
    }
  }

  private waitWritable(): boolean {
    const v = this.scratch.view;
    v.setInt32(0, this.cfg.udpFd, true);
    v.setInt16(4, libc.POLLOUT, true);
    v.setInt16(6, 0, true);
    const r = libc.poll(this.scratch.address, 1, SEND_WAIT_MS);
    this.c[Counter.SyscallsPoll]++;
    return r > 0;
  }

  /**
   * No lease covers the destination: write ICMP net unreachable back into the
   * TUN, as flannel's proxy does, but from the unreachable destination's
   * address. flannel uses flannel0's own address as the source, and the
   * kernel drops a packet that arrives from a local address as a martian, so
   * the pod never sees flannel's error; a non-local source routed via flannel0
   * passes martian and reverse-path checks and reaches the pod.
   */
  private answerNoLease(off: number, length: number): void {
    this.drop(DropReason.NoLease);
    const bytes = this.bytes;
    const n = buildIcmpDestUnreachable(
      bytes,
      off,
      length,
      bytes,
      this.icmpOffset,
      ipv4Destination(bytes, off),
      ICMP_NET_UNREACHABLE,
    );
    if (n === 0) return; // RFC 792: never an ICMP error about an ICMP error or a later fragment
    const w = libc.write(this.cfg.tunFd, this.poolAddress + this.icmpOffset, n);
    this.c[Counter.SyscallsTunWrite]++;
    if (w === n) this.c[Counter.IcmpSent]++;
  }

  /** UDP → validate → TUN, for one recvmmsg batch. */
  private forwardFromUdp(): void {
    const c = this.c;
    const bytes = this.bytes;
    const batch = this.receiveBatch;
    const offsets = this.pool.packetOffsets;
    const first = this.cfg.batchSize;
    batch.prepareReceive(this.lastReceived);
    const n = libc.recvmmsg(this.cfg.udpFd, batch.address, this.cfg.batchSize, libc.MSG_DONTWAIT);
    c[Counter.SyscallsReceive]++;
    if (n <= 0) {
      const e = libc.errno();
      if (n === 0 || e === libc.EAGAIN) this.udpDrained = true;
      else if (e !== libc.EINTR) throw new libc.SyscallError('recvmmsg', e);
      this.lastReceived = 0;
      return;
    }
    this.lastReceived = n;
    c[Counter.ReceiveBatches]++;
    if (n < this.cfg.batchSize) this.udpDrained = true;
    for (let i = 0; i < n; i++) {
      const off = offsets[first + i];
      const length = batch.messageLength(i);
      c[Counter.UdpReceivedPackets]++;
      c[Counter.UdpReceivedBytes] += length;
      if ((batch.messageFlags(i) & libc.MSG_TRUNC) !== 0) {
        this.drop(DropReason.TooBig);
        continue;
      }
      const inner = this.encap.decapsulate(bytes, off, length);
      if (inner < 0) {
        this.drop(-inner);
        continue;
      }
      const innerLength = length - (inner - off);
      const reason = validateIPv4(bytes, inner, innerLength);
      if (reason !== DropReason.None) {
        this.drop(reason);
        continue;
      }
      if (((ipv4Destination(bytes, inner) & this.cfg.ownMask) >>> 0) !== this.cfg.ownNetwork) {
        this.drop(DropReason.NotForThisNode);
        continue;
      }
      if (!decrementTtl(bytes, inner)) {
        this.drop(DropReason.TtlExpired);
        continue;
      }
      // Trailing bytes past the IPv4 total length are not part of the packet.
      this.writeToTun(inner, ipv4TotalLength(bytes, inner));
    }
  }

  private writeToTun(off: number, length: number): void {
    const c = this.c;
    for (;;) {
      const w = libc.write(this.cfg.tunFd, this.poolAddress + off, length);
      c[Counter.SyscallsTunWrite]++;
      if (w === length) {
        c[Counter.TunWrittenPackets]++;
        c[Counter.TunWrittenBytes] += length;
        return;
      }
      if (w < 0 && libc.errno() === libc.EINTR) continue;
      this.drop(DropReason.TunWriteFailed);
      return;
    }
  }

  private drainWakeFd(): void {
    libc.read(this.cfg.wakeFd, this.scratch.address + libc.SIZEOF_POLLFD, 8);
  }

  private handleControl(): void {
    this.lastControlSequence = Atomics.load(this.cfg.controlSequence, 0);
    for (;;) {
      const received = receiveMessageOnPort(this.cfg.controlPort);
      if (received === undefined) return;
      const msg = received.message as WorkerControlMessage;
      if (msg.type === 'leases') {
        // The new table replaces the old one between two packets: in-flight
        // packets were already sent, the next one sees the new leases.
        this.leaseTable = new LeaseTable(msg.snapshot);
        this.c[Counter.LeaseTableVersion] = msg.snapshot.version;
      } else if (msg.type === 'stop') {
        this.stopping = true;
      }
    }
  }
}
