// The loop one worker thread runs: it owns one TUN queue and one UDP socket
// and moves packets between them until told to stop. Everything here runs
// per packet, so it allocates nothing: buffers are pool slots, syscalls take
// addresses, counters are slots of a shared Float64Array.
//
// Two shapes of the same path:
// - plain: one read() per packet from the TUN, sendmmsg() per batch;
//   recvmmsg() per batch, one write() per packet into the TUN.
// - offload (IFF_VNET_HDR): a read() may return a 64 KB TCP super-packet,
//   cut here into wire-sized packets whose headers are built in an arena and
//   whose payloads stay where they are, sent as UDP GSO messages; received
//   datagrams (UDP GRO) of one TCP flow are merged back into one super-packet
//   and written to the TUN with one writev().
import { receiveMessageOnPort, parentPort, type MessagePort } from 'node:worker_threads';
import { getHeapStatistics } from 'node:v8';
import * as libc from './libc.js';
import { PacketPool } from './packet-pool.js';
import { MessageBatch } from './message-batch.js';
import { SendQueue } from './send-queue.js';
import { Counter, DROPS_BASE } from './worker-stats.js';
import { DropReason } from '../encap/drop-reasons.js';
import type { Encapsulation } from '../encap/encapsulation.js';
import { UdpEncapsulation } from '../encap/encapsulation.js';
import { VxlanEncapsulation } from '../encap/vxlan.js';
import {
  validateIPv4,
  ipv4TotalLength,
  ipv4Destination,
  ipv4Source,
  ipv4DontFragment,
  decrementTtl,
  IPV4_OFFSET_SOURCE,
  IPV4_OFFSET_PROTOCOL,
} from '../encap/ipv4.js';
import { buildIcmpDestUnreachable, ICMP_NET_UNREACHABLE, ICMP_FRAG_NEEDED } from '../encap/icmp.js';
import {
  VirtioNetHeader,
  VIRTIO_NET_HDR_LEN,
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_GSO_NONE,
  completePartialChecksum,
} from '../encap/virtio-net-header.js';
import { SegmentList, splitSuperPacket } from '../encap/segmentation.js';
import { CoalesceBatch } from '../encap/coalescing.js';
import { LeaseTable, type LeaseTableSnapshot } from '../control/lease-table.js';
import { formatIPv4 } from '../control/ipv4-address.js';
import { ForwarderObserver, type CaptureConfig } from './forwarder-observer.js';
import { batchSizeBucket } from '../observe/metrics.js';
import type { TraceEvent } from '../observe/trace-event.js';
import { dropReasonNames } from '../encap/drop-reasons.js';

/** Messages the main thread sends a worker (through `controlPort`). */
/** What a trace session asks of every worker; `shared` counts admitted packets across workers. */
export interface TraceRequest {
  session: number;
  filter: string;
  limit: number;
  perSecond: number;
  shared: SharedArrayBuffer;
}

export type WorkerControlMessage =
  | { type: 'leases'; snapshot: LeaseTableSnapshot }
  | { type: 'stop' }
  | { type: 'trace'; request: TraceRequest }
  | { type: 'trace-stop'; session: number }
  /** Fault injection (SIGUSR2 on the agent): the worker throws, as a bug would make it, and is restarted. */
  | { type: 'crash' };

/** Messages a worker sends the main thread (through parentPort). */
export type WorkerReport =
  | { type: 'ready' }
  | { type: 'log'; line: string }
  | { type: 'trace'; session: number; event: TraceEvent };

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
  backend: 'udp' | 'vxlan';
  /** VXLAN: our VNI and VTEP MAC. */
  vni: number;
  vtepMac: Uint8Array;
  /**
   * Sockets to send from. UDP mode: [udpFd] (peers expect the well-known
   * source port). VXLAN: several, bound to different ports, picked by a hash
   * of the inner flow, so the underlay can spread flows as it does for the
   * kernel's vxlan.
   */
  sendFds: number[];
  peerPort: number;
  /** Packets (or super-packets) per recvmmsg/sendmmsg. */
  batchSize: number;
  /** Largest inner packet on the wire: the TUN MTU. */
  mtu: number;
  /**
   * Largest inner packet that fits one underlay datagram (underlay MTU minus
   * the encapsulation). Larger ones get ICMP fragmentation-needed if DF is
   * set, or are sent for the kernel to fragment the outer datagram if not.
   */
  pathMtu: number;
  /** This node's pod subnet: inbound packets for anything else are not written to the TUN. */
  ownNetwork: number;
  ownMask: number;
  /** The TUN carries virtio_net_hdr (opened with IFF_VNET_HDR). */
  vnetHeader: boolean;
  /** The socket has UDP_GRO on. */
  udpGro: boolean;
  /** The TUN accepted USO: same-size UDP datagrams of a flow can be merged into one write. */
  tunUso: boolean;
  /** The kernel takes UDP_SEGMENT sends. */
  udpGso: boolean;
  /** After traffic, keep polling without sleeping for this long (µs) before blocking; 0 = never. */
  busyPollUs: number;
  /** For trace events and captures: this node's name (its subnet key), public IP and the send sockets' ports. */
  node: string;
  publicIp: number;
  sendPorts: number[];
  /** --trace from the start (session 0, rendered to the agent's log). */
  trace?: TraceRequest;
  /** --capture DIR. */
  capture?: CaptureConfig;
}

const POLL_TIMEOUT_MS = 1000;
const SEND_WAIT_MS = 10;
/** Loop turns between looks at the control sequence while traffic keeps the loop busy. */
const CONTROL_CHECK_ROUNDS = 64;
/** Largest IPv4 packet, and so the largest TUN super-packet or GRO message. */
const MAX_PACKET = 65535;
/** Room in front of every packet: the virtio header on TUN reads, the encapsulation's header on sends. */
const HEADROOM = 32;
/** Most segments one super-packet may be cut into (64 KB at the smallest sensible MSS, 512). */
const MAX_SEGMENTS_PER_PACKET = 130;
/** Segment headers the arena holds before the send queue must be flushed. */
const TX_ARENA_SEGMENTS = 1024;
/** Per segment: encapsulation headroom + IPv4 (≤ 60) + TCP (≤ 60), rounded up. */
const TX_ARENA_STRIDE = 160;
/** Per coalesced write: virtio header + IPv4 + TCP headers. */
const RX_ARENA_STRIDE = 144;
/** UDP_MAX_SEGMENTS: the kernel refuses a GSO send of more datagrams. */
const GSO_MAX_SEGMENTS = 64;
/** Most UDP payload bytes in one GSO message (64 KB minus outer IPv4 and UDP headers). */
const GSO_MAX_BYTES = 65507;

export class Forwarder {
  private readonly pool: PacketPool;
  private readonly bytes: Uint8Array;
  private readonly poolAddress: number;
  private readonly sendQueues: SendQueue[];
  private readonly vxlan: VxlanEncapsulation | undefined;
  private readonly receiveBatch: MessageBatch;
  private readonly icmpOffset: number;
  private readonly pollFds: libc.NativeMemory;
  private readonly scratch: libc.NativeMemory;
  private readonly encap: Encapsulation;
  private readonly c: Float64Array;
  private readonly vnet: boolean;
  private readonly readLength: number;
  private readonly virtioHeader = new VirtioNetHeader();
  private readonly segments: SegmentList;
  private readonly txArenaOffset: number;
  private txArenaUsed = 0;
  private readonly coalescer: CoalesceBatch;
  private readonly rxArenaOffset: number;
  private readonly tunIov: libc.NativeMemory;
  private readonly maxWriteIovecs: number;
  private gsoEnabled: boolean;
  private leaseTable: LeaseTable;
  private lastControlSequence = 0;
  private lastReceived: number;
  private tunDrained = true;
  private udpDrained = true;
  private stopping = false;
  private nextHeapSampleMs = 0;
  private observer: ForwarderObserver | undefined;
  private traceSession = -1;

  constructor(private readonly cfg: ForwarderConfig) {
    this.vxlan = cfg.backend === 'vxlan' ? new VxlanEncapsulation(cfg.vni, cfg.vtepMac) : undefined;
    this.encap = this.vxlan ?? new UdpEncapsulation();
    this.vnet = cfg.vnetHeader;
    this.gsoEnabled = cfg.udpGso;
    const batch = cfg.batchSize;
    // Plain slots hold one packet; with offloads one super-packet or GRO message.
    // Either way the capacity leaves room past the largest legal packet, so an
    // oversized datagram shows up as such (MSG_TRUNC) instead of being cut silently.
    const capacity = this.vnet ? MAX_PACKET + 1 : Math.max(cfg.mtu, 2048) + 64;
    const maxGroups = this.vnet ? batch * GSO_MAX_SEGMENTS : 0;
    const txArenaBytes = this.vnet ? TX_ARENA_SEGMENTS * TX_ARENA_STRIDE : 0;
    const rxArenaBytes = maxGroups * RX_ARENA_STRIDE;
    // Slots: [0, batch) for TUN→UDP, [batch, 2·batch) for UDP→TUN, one for ICMP replies.
    this.pool = new PacketPool(2 * batch + 1, capacity, HEADROOM, txArenaBytes + rxArenaBytes);
    this.bytes = this.pool.bytes;
    this.poolAddress = this.pool.memory.address;
    this.txArenaOffset = this.pool.extraOffset;
    this.rxArenaOffset = this.pool.extraOffset + txArenaBytes;
    this.readLength = capacity + (this.vnet ? VIRTIO_NET_HDR_LEN : 0);
    // Plain: one message per packet. Offload: up to a message per segment when GSO is refused.
    this.sendQueues = cfg.sendFds.map(() =>
      this.vnet ? new SendQueue(TX_ARENA_SEGMENTS + batch, 2 * TX_ARENA_SEGMENTS + batch) : new SendQueue(batch, batch),
    );
    this.receiveBatch = new MessageBatch(this.pool, batch, batch, cfg.udpGro ? libc.CMSG_SPACE_INT : 0);
    this.lastReceived = batch;
    this.icmpOffset = this.pool.packetOffsets[2 * batch];
    this.segments = new SegmentList(MAX_SEGMENTS_PER_PACKET);
    // Without an outer checksum nothing vouches for the inner bytes, so a VXLAN
    // receiver verifies each TCP segment before merging (a bad one is written
    // alone, and the kernel drops it as it would have).
    this.coalescer = new CoalesceBatch(Math.max(maxGroups, 1), Math.max(maxGroups, 1), cfg.backend === 'vxlan', this.vnet && cfg.tunUso);
    this.maxWriteIovecs = 1 + Math.ceil(MAX_PACKET / 64);
    this.tunIov = new libc.NativeMemory(this.maxWriteIovecs * libc.SIZEOF_IOVEC);
    this.c = cfg.counters;
    this.c[Counter.PoolSlots] = this.pool.slotCount;
    this.leaseTable = new LeaseTable(cfg.leases);
    if (this.vxlan) this.vxlan.peerMacs = this.leaseTable.vtepMacs;
    this.c[Counter.LeaseTableVersion] = cfg.leases.version;

    this.pollFds = new libc.NativeMemory(3 * libc.SIZEOF_POLLFD);
    const fds = [cfg.tunFd, cfg.udpFd, cfg.wakeFd];
    fds.forEach((fd, i) => {
      this.pollFds.view.setInt32(i * libc.SIZEOF_POLLFD, fd, true);
      this.pollFds.view.setInt16(i * libc.SIZEOF_POLLFD + 4, libc.POLLIN, true);
    });
    this.scratch = new libc.NativeMemory(libc.SIZEOF_POLLFD + 8);
    if (cfg.capture) this.observe().startCapture(cfg.capture);
    if (cfg.trace) this.startTrace(cfg.trace);
  }

  private observe(): ForwarderObserver {
    this.observer ??= new ForwarderObserver(
      this.cfg.workerIndex,
      this.cfg.publicIp,
      this.cfg.peerPort,
      this.cfg.peerPort,
      this.cfg.sendPorts,
      this.vxlan ? 'vxlan-payload' : 'udp-payload',
    );
    return this.observer;
  }

  private startTrace(request: TraceRequest): void {
    const session = request.session;
    this.traceSession = session;
    this.observe().startTrace(
      {
        node: this.cfg.node,
        worker: this.cfg.workerIndex,
        filter: request.filter,
        limit: request.limit,
        perSecond: request.perSecond,
        sharedCount: new Int32Array(request.shared),
      },
      (event) => parentPort?.postMessage({ type: 'trace', session, event } satisfies WorkerReport),
    );
  }

  private stopTrace(session: number): void {
    if (session !== this.traceSession || !this.observer) return;
    this.observer.stopTrace();
    this.traceSession = -1;
    if (this.observer.idle) this.observer = undefined;
  }

  /** Runs until a stop message arrives. Throws on an unexpected syscall failure (the main thread restarts the worker). */
  run(): void {
    const c = this.c;
    const view = this.pollFds.view;
    let busyUntil = 0;
    while (!this.stopping) {
      this.heartbeat();
      // Right after traffic, look again without sleeping: the reply to what we
      // just forwarded usually comes within microseconds, and waking a sleeping
      // thread costs far more than that (a vCPU halt and an IPI on a VM).
      let ready = 0;
      if (busyUntil > 0) {
        do {
          ready = libc.poll(this.pollFds.address, 3, 0);
          c[Counter.SyscallsPoll]++;
        } while (ready === 0 && performance.now() < busyUntil);
        busyUntil = 0;
      }
      if (ready === 0) {
        ready = libc.poll(this.pollFds.address, 3, POLL_TIMEOUT_MS);
        c[Counter.SyscallsPoll]++;
      }
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
      if (rounds > 0 && this.cfg.busyPollUs > 0) busyUntil = performance.now() + this.cfg.busyPollUs / 1000;
    }
    this.observer?.close();
  }

  private heartbeat(): void {
    const now = Date.now();
    this.c[Counter.HeartbeatMs] = now;
    this.observer?.tick(now);
    if (now >= this.nextHeapSampleMs) {
      // Allocates one object, once a second: off the per-packet path.
      this.c[Counter.HeapUsedBytes] = getHeapStatistics().used_heap_size;
      this.nextHeapSampleMs = now + 1000;
    }
  }

  private drop(reason: number): void {
    this.c[DROPS_BASE + reason]++;
  }

  // ---- TUN → UDP ----

  /** Reads up to one batch of packets (or super-packets) from the TUN and sends them. */
  private forwardFromTun(): void {
    const c = this.c;
    const bytes = this.bytes;
    const offsets = this.pool.packetOffsets;
    const vnet = this.vnet;
    const vh = this.virtioHeader;
    const headerLength = vnet ? VIRTIO_NET_HDR_LEN : 0;
    let count = 0;
    while (count < this.cfg.batchSize) {
      const off = offsets[count];
      const n = libc.read(this.cfg.tunFd, this.poolAddress + off - headerLength, this.readLength);
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
      if (n < headerLength) {
        this.drop(DropReason.TooShort);
        continue;
      }
      if (vnet) vh.read(bytes, off - headerLength);
      const reason = validateIPv4(bytes, off, n - headerLength);
      if (reason !== DropReason.None) {
        this.drop(reason);
        continue;
      }
      const length = ipv4TotalLength(bytes, off);
      const superPacket = vnet && (vh.gsoType & 0x7f) !== VIRTIO_NET_HDR_GSO_NONE;
      if (!superPacket && length > this.cfg.mtu) {
        this.drop(DropReason.TooBig);
        continue;
      }
      const o = this.observer;
      const traced = o === undefined ? -1 : o.tunRead(bytes, off, length, superPacket);
      const lease = this.leaseTable.lookup(ipv4Destination(bytes, off));
      if (lease < 0) {
        this.answerIcmp(off, length, ICMP_NET_UNREACHABLE, 0);
        this.drop(DropReason.NoLease);
        if (traced >= 0) {
          o!.leaseLookup(traced, bytes, off, length, this.leaseTable, -1);
          o!.dropped(traced, bytes, off, length, 'no-lease', 'ICMP net unreachable written back into the TUN (write), from the destination address');
        }
        continue;
      }
      const wireLength = superPacket ? this.segmentWireLength(off) : length;
      if (wireLength > this.cfg.pathMtu) {
        if (superPacket || ipv4DontFragment(bytes, off)) {
          // The sender asked not to fragment: tell it the size that fits (RFC 1191).
          this.answerIcmp(off, length, ICMP_FRAG_NEEDED, this.cfg.pathMtu);
          this.drop(DropReason.FragmentationNeeded);
          if (traced >= 0) o!.dropped(traced, bytes, off, length, 'fragmentation-needed', `ICMP fragmentation needed (mtu ${this.cfg.pathMtu}) written back into the TUN`);
          continue;
        }
        c[Counter.OuterFragmented]++;
      }
      if (!decrementTtl(bytes, off)) {
        this.drop(DropReason.TtlExpired);
        if (traced >= 0) o!.dropped(traced, bytes, off, length, 'ttl-expired');
        continue;
      }
      if (traced >= 0) o!.leaseLookup(traced, bytes, off, length, this.leaseTable, lease);
      const peer = this.leaseTable.publicIpAt(lease);
      if (superPacket) {
        this.queueSegments(off, length, lease, peer, traced);
      } else {
        // A single packet whose L4 checksum the kernel left for the "hardware":
        // finish it, since the wire packet must be valid on its own.
        if (vnet && (vh.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0) {
          if (!completePartialChecksum(bytes, off, length, vh.csumStart, vh.csumOffset)) {
            this.drop(DropReason.BadVirtioNetHeader);
            continue;
          }
        }
        const k = this.senderFor(off);
        const queue = this.sendQueues[k];
        if (!queue.hasRoom(1, 1)) this.flushSend();
        const start = this.encap.encapsulate(bytes, off, length, lease);
        queue.begin(peer, this.cfg.peerPort, 0, 1);
        queue.add(this.poolAddress + start, off + length - start);
        queue.end();
        if (o !== undefined) {
          o.captureUdpOut(bytes, 0, 0, start, off + length - start, peer, k);
          if (traced >= 0) {
            o.encapsulated(traced, bytes, start, off + length - start, 1);
            o.queuedSend(traced, k, bytes, start, off + length - start, peer, 1);
          }
        }
      }
      count++;
    }
    this.flushSend();
  }

  /** The size of one segment of the super-packet at off: IPv4 + L4 header + gso_size. */
  private segmentWireLength(off: number): number {
    const b = this.bytes;
    const ihl = (b[off] & 0x0f) << 2;
    const l4 = b[off + IPV4_OFFSET_PROTOCOL] === 6 ? (b[off + ihl + 12] >>> 4) << 2 : 8;
    return ihl + l4 + this.virtioHeader.gsoSize;
  }

  /** Which send socket a packet leaves from: always the one in UDP mode, a flow hash in VXLAN. */
  private senderFor(off: number): number {
    const n = this.sendQueues.length;
    if (n === 1) return 0;
    const b = this.bytes;
    const ihl = (b[off] & 0x0f) << 2;
    const src = off + IPV4_OFFSET_SOURCE;
    // Addresses, protocol and (for TCP/UDP) both ports: one flow, one socket, one source port.
    let h = (b[src] << 24) ^ (b[src + 1] << 16) ^ (b[src + 2] << 8) ^ b[src + 3];
    h = Math.imul(h ^ ((b[src + 4] << 24) | (b[src + 5] << 16) | (b[src + 6] << 8) | b[src + 7]), 0x9e3779b1);
    const proto = b[off + IPV4_OFFSET_PROTOCOL];
    if (proto === 6 || proto === 17) h = Math.imul(h ^ ((b[off + ihl] << 24) | (b[off + ihl + 1] << 16) | (b[off + ihl + 2] << 8) | b[off + ihl + 3]), 0x85ebca6b);
    h = Math.imul(h ^ proto ^ (h >>> 15), 0xc2b2ae35);
    return ((h ^ (h >>> 13)) >>> 0) % n;
  }

  /**
   * Cuts a super-packet into wire-sized packets: headers rebuilt in the arena,
   * payloads left in the slot, queued as GSO messages of up to 64 segments.
   */
  private queueSegments(off: number, length: number, lease: number, peer: number, traced: number): void {
    const c = this.c;
    const seg = this.segments;
    const headroom = this.encap.headroom;
    // Make room for the worst case before cutting: a flush between two of this
    // packet's segments would free arena headers that are still queued. The
    // queues hold as many messages as the arena holds headers (plus a batch of
    // single packets), so room in the arena is room in every queue.
    if (this.txArenaUsed + MAX_SEGMENTS_PER_PACKET > TX_ARENA_SEGMENTS) this.flushSend();
    const arena = this.txArenaOffset + this.txArenaUsed * TX_ARENA_STRIDE;
    const n = splitSuperPacket(this.bytes, off, length, this.virtioHeader, arena, TX_ARENA_STRIDE, headroom, seg);
    if (n < 0) {
      this.drop(-n);
      return;
    }
    this.txArenaUsed += n;
    c[Counter.SuperPacketsSplit]++;
    c[Counter.SegmentsFromSplit] += n;
    const datagramSize = headroom + seg.headerLength[0] + seg.payloadLength[0];
    const perMessage = this.gsoEnabled ? Math.min(GSO_MAX_SEGMENTS, Math.floor(GSO_MAX_BYTES / datagramSize)) : 1;
    const k = this.senderFor(off);
    const queue = this.sendQueues[k];
    const o = this.observer;
    for (let first = 0; first < n; first += perMessage) {
      const last = Math.min(n, first + perMessage);
      queue.begin(peer, this.cfg.peerPort, last - first > 1 ? datagramSize : 0, last - first);
      for (let i = first; i < last; i++) {
        const header = seg.headerOffset[i];
        const start = this.encap.encapsulate(this.bytes, header, seg.headerLength[i] + seg.payloadLength[i], lease);
        queue.add(this.poolAddress + start, header + seg.headerLength[i] - start);
        queue.add(this.poolAddress + seg.payloadOffset[i], seg.payloadLength[i]);
        o?.captureUdpOut(this.bytes, start, header + seg.headerLength[i] - start, seg.payloadOffset[i], seg.payloadLength[i], peer, k);
      }
      queue.end();
    }
    if (traced >= 0 && o !== undefined) {
      // The first segment as it goes on the wire, copied for display (a traced packet may allocate).
      const start = seg.headerOffset[0] - headroom;
      const headerBytes = headroom + seg.headerLength[0];
      const shown = new Uint8Array(headerBytes + seg.payloadLength[0]);
      shown.set(this.bytes.subarray(start, start + headerBytes), 0);
      shown.set(this.bytes.subarray(seg.payloadOffset[0], seg.payloadOffset[0] + seg.payloadLength[0]), headerBytes);
      o.encapsulated(traced, shown, 0, shown.length, n);
      o.queuedSend(traced, k, shown, 0, shown.length, peer, n);
    }
  }

  /** sendmmsg every queue's messages, resuming after partial sends; then the arena is free again. */
  private flushSend(): void {
    const queues = this.sendQueues;
    for (let k = 0; k < queues.length; k++) if (queues[k].messages > 0) this.flushQueue(queues[k], this.cfg.sendFds[k], k);
    this.txArenaUsed = 0;
  }

  private flushQueue(queue: SendQueue, fd: number, k: number): void {
    const c = this.c;
    const count = queue.messages;
    let sent = 0;
    c[Counter.SendBatches]++;
    while (sent < count) {
      const r = libc.sendmmsg(fd, queue.addressOfMessage(sent), count - sent, 0);
      c[Counter.SyscallsSend]++;
      if (r > 0) {
        c[Counter.SendBatchSizeLe1 + batchSizeBucket(r)]++;
        c[Counter.SendBatchSizeSum] += r;
        for (let m = sent; m < sent + r; m++) {
          c[Counter.UdpSentPackets] += queue.datagrams[m];
          c[Counter.UdpSentBytes] += queue.bytes[m];
          if (queue.datagrams[m] > 1) c[Counter.GsoSends]++;
        }
        sent += r;
        continue;
      }
      const e = libc.errno();
      if (e === libc.EINTR) continue;
      if (e === libc.EAGAIN || e === libc.ENOBUFS) {
        if (this.waitWritable(fd)) continue;
        for (let m = sent; m < count; m++) c[DROPS_BASE + DropReason.SendFailed] += queue.datagrams[m];
        break;
      }
      // The message at `sent` itself was refused: count it and carry on with the rest.
      if (queue.datagrams[sent] > 1 && this.gsoEnabled && (e === libc.EIO || e === libc.EINVAL)) {
        // The underlay device cannot do UDP GSO (it needs checksum offload): stop asking.
        this.gsoEnabled = false;
        this.report(`UDP GSO refused by the kernel (${libc.strerror(e)}); sending one datagram per segment from now on`);
      }
      c[DROPS_BASE + DropReason.SendFailed] += queue.datagrams[sent];
      sent++;
    }
    queue.reset();
    this.observer?.sent(k, count);
  }

  private waitWritable(fd: number): boolean {
    const v = this.scratch.view;
    v.setInt32(0, fd, true);
    v.setInt16(4, libc.POLLOUT, true);
    v.setInt16(6, 0, true);
    const r = libc.poll(this.scratch.address, 1, SEND_WAIT_MS);
    this.c[Counter.SyscallsPoll]++;
    return r > 0;
  }

  /**
   * Writes an ICMP destination-unreachable about the packet at off back into
   * the TUN: net unreachable when no lease covers the destination (as
   * flannel's proxy does), fragmentation needed when it is too big for the
   * underlay. It comes from the packet's destination address. flannel uses
   * flannel0's own address as the source, and the kernel drops a packet that
   * arrives from a local address as a martian, so the pod never sees
   * flannel's error; a non-local source routed via flannel0 passes martian and
   * reverse-path checks and reaches the pod.
   */
  private answerIcmp(off: number, length: number, code: number, nextHopMtu: number): void {
    const bytes = this.bytes;
    const at = this.icmpOffset;
    const n = buildIcmpDestUnreachable(bytes, off, length, bytes, at, ipv4Destination(bytes, off), code, nextHopMtu);
    if (n === 0) return; // RFC 792: never an ICMP error about an ICMP error or a later fragment
    const headerLength = this.vnet ? VIRTIO_NET_HDR_LEN : 0;
    if (this.vnet) bytes.fill(0, at - headerLength, at); // a plain packet: no offload requested
    this.observer?.captureTunOut(bytes, at, n);
    const w = libc.write(this.cfg.tunFd, this.poolAddress + at - headerLength, n + headerLength);
    this.c[Counter.SyscallsTunWrite]++;
    if (w === n + headerLength) this.c[Counter.IcmpSent]++;
  }

  // ---- UDP → TUN ----

  /** Receives one recvmmsg batch and writes what passes validation to the TUN. */
  private forwardFromUdp(): void {
    const c = this.c;
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
    c[Counter.ReceiveBatchSizeLe1 + batchSizeBucket(n)]++;
    c[Counter.ReceiveBatchSizeSum] += n;
    if (n < this.cfg.batchSize) this.udpDrained = true;
    for (let i = 0; i < n; i++) {
      const off = offsets[first + i];
      const length = batch.messageLength(i);
      if ((batch.messageFlags(i) & libc.MSG_TRUNC) !== 0) {
        c[Counter.UdpReceivedPackets]++;
        this.drop(DropReason.TooBig);
        continue;
      }
      // Who may send: only a node that holds a current lease, from its PublicIP.
      const peerIp = batch.sourceAddress(i);
      const peerPort = batch.sourcePort(i);
      const peer = this.leaseTable.findByPublicIp(peerIp);
      // With UDP GRO one message may hold several datagrams of groSize bytes each (the last may be shorter).
      const groSize = batch.groSegmentSize(i);
      if (groSize > 0 && groSize < length) {
        c[Counter.GroReceives]++;
        for (let p = 0; p < length; p += groSize) this.receiveDatagram(off + p, Math.min(groSize, length - p), peer, peerIp, peerPort);
      } else {
        this.receiveDatagram(off, length, peer, peerIp, peerPort);
      }
    }
    if (this.vnet) {
      this.writeCoalesced();
      this.observer?.written(this.bytes, 'writev', true);
    }
  }

  /**
   * One datagram from the lease at `peer` (-1: from an address no lease has):
   * unwrap, check, and write (plain) or hand to the coalescer (offload).
   */
  private receiveDatagram(off: number, length: number, peer: number, peerIp: number, peerPort: number): void {
    const c = this.c;
    const bytes = this.bytes;
    c[Counter.UdpReceivedPackets]++;
    c[Counter.UdpReceivedBytes] += length;
    const o = this.observer;
    o?.captureUdpIn(bytes, off, length, peerIp, peerPort);
    if (peer < 0) {
      this.drop(DropReason.UnknownPeer);
      return;
    }
    const inner = this.encap.decapsulate(bytes, off, length);
    if (inner < 0) {
      this.drop(-inner);
      return;
    }
    const innerLength = length - (inner - off);
    const reason = validateIPv4(bytes, inner, innerLength);
    if (reason !== DropReason.None) {
      this.drop(reason);
      return;
    }
    const traced = o === undefined ? -1 : o.received(bytes, off, length, inner, innerLength, peerIp, peerPort, this.leaseTable, peer);
    // A leased node may only send packets from its own pods' subnet.
    if (!this.leaseTable.subnetContains(peer, ipv4Source(bytes, inner))) {
      this.dropTraced(DropReason.SpoofedSource, traced, inner, innerLength);
      return;
    }
    // No reflection: only packets for this node's own pods go into the TUN.
    if (((ipv4Destination(bytes, inner) & this.cfg.ownMask) >>> 0) !== this.cfg.ownNetwork) {
      this.dropTraced(DropReason.NotForThisNode, traced, inner, innerLength);
      return;
    }
    if (!decrementTtl(bytes, inner)) {
      this.dropTraced(DropReason.TtlExpired, traced, inner, innerLength);
      return;
    }
    // Trailing bytes past the IPv4 total length are not part of the packet.
    const total = ipv4TotalLength(bytes, inner);
    if (traced >= 0) o!.willWrite(traced, inner, total);
    if (this.vnet) {
      this.coalescer.add(bytes, inner, total);
    } else {
      this.writeToTun(inner, total);
      if (traced >= 0) o!.written(bytes, 'write', false);
    }
  }

  private dropTraced(reason: number, traced: number, off: number, length: number): void {
    this.drop(reason);
    if (traced >= 0) this.observer?.dropped(traced, this.bytes, off, length, dropReasonNames[reason]);
  }


  private writeToTun(off: number, length: number): void {
    const c = this.c;
    this.observer?.captureTunOut(this.bytes, off, length);
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

  /** Writes the batch's packets to the TUN, consecutive TCP segments of a flow merged into one super-packet each. */
  private writeCoalesced(): void {
    const c = this.c;
    const co = this.coalescer;
    const writes = co.finish(this.bytes, this.rxArenaOffset, RX_ARENA_STRIDE);
    const iov = this.tunIov;
    for (let w = 0; w < writes; w++) {
      const firstSegment = co.writeSegmentStart[w];
      const segmentCount = co.writeSegmentEnd[w] - firstSegment;
      if (segmentCount + 1 > this.maxWriteIovecs) {
        // Only a flow with a tiny MSS gets here (64 KB in > 1024 pieces).
        c[DROPS_BASE + DropReason.TooManySegments] += segmentCount;
        continue;
      }
      let pieces = 0;
      let total = co.writeHeaderLength[w];
      iov.setU64(0, this.poolAddress + co.writeHeaderOffset[w]);
      iov.setU64(8, co.writeHeaderLength[w]);
      pieces = 1;
      for (let s = firstSegment; s < firstSegment + segmentCount; s++) {
        const at = pieces * libc.SIZEOF_IOVEC;
        iov.setU64(at, this.poolAddress + co.segmentOffset[s]);
        iov.setU64(at + 8, co.segmentLength[s]);
        total += co.segmentLength[s];
        pieces++;
      }
      const o = this.observer;
      if (o !== undefined && o.captures !== undefined) {
        // The capture shows the IPv4 packet the kernel receives: without the virtio header.
        const headerOffset = co.writeHeaderOffset[w];
        o.captureTunOutBegin(total - VIRTIO_NET_HDR_LEN);
        o.captureTunOutAppend(this.bytes, headerOffset + VIRTIO_NET_HDR_LEN, co.writeHeaderLength[w] - VIRTIO_NET_HDR_LEN);
        for (let s = firstSegment; s < firstSegment + segmentCount; s++) o.captureTunOutAppend(this.bytes, co.segmentOffset[s], co.segmentLength[s]);
        o.captureTunOutEnd();
      }
      let r = libc.writev(this.cfg.tunFd, iov.address, pieces);
      while (r < 0 && libc.errno() === libc.EINTR) r = libc.writev(this.cfg.tunFd, iov.address, pieces);
      c[Counter.SyscallsTunWritev]++;
      if (r !== total) {
        this.drop(DropReason.TunWriteFailed);
        continue;
      }
      c[Counter.TunWrittenPackets]++;
      c[Counter.TunWrittenBytes] += total - VIRTIO_NET_HDR_LEN;
      if (co.writeHeaderLength[w] > VIRTIO_NET_HDR_LEN) {
        c[Counter.CoalescedWrites]++;
        c[Counter.SegmentsCoalesced] += segmentCount;
      }
    }
    co.reset();
  }

  // ---- control ----

  private report(line: string): void {
    parentPort?.postMessage({ type: 'log', line: `worker ${this.cfg.workerIndex}: ${line}` } satisfies WorkerReport);
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
        if (this.vxlan) this.vxlan.peerMacs = this.leaseTable.vtepMacs;
        this.c[Counter.LeaseTableVersion] = msg.snapshot.version;
      } else if (msg.type === 'stop') {
        this.stopping = true;
      } else if (msg.type === 'trace') {
        this.startTrace(msg.request);
      } else if (msg.type === 'trace-stop') {
        this.stopTrace(msg.session);
      } else if (msg.type === 'crash') {
        throw new Error('fault injected (SIGUSR2): this worker stops as if it had hit a bug');
      }
    }
  }
}
