// The forwarding core of one worker: two short paths between a TunDevice
// (tun.ts) and a UdpBind (bind.ts), over batches of packets in pool slots.
//
//   outbound: TUN batch → checks → lease lookup → path MTU → TTL − 1 → encapsulate → send batch
//   inbound:  receive batch → from a leased node? → decapsulate → checks → TTL − 1 → TUN batch
//
// Dual-stack (a node with an IPv6 subnet): the version nibble picks the
// family, and IPv6 packets take the same steps with their own header (hop
// limit, no checksum), lease lookup (lookup6) and ICMPv6 errors. The
// underlay stays IPv4: the UDP payload is the bare IPv6 packet (VXLAN: an
// Ethernet frame with ethertype 0x86dd, vxlan.ts). A node
// without an IPv6 subnet treats version 6 exactly as before (not-ipv4).
//
// IPv6 underlay (a node with a public IPv6; the bind then has IPv6 senders
// after its IPv4 ones, bind.senders6): an IPv6 packet whose lease has a
// PublicIPv6 is queued for an IPv6 sender, with its own path MTU (the outer
// IPv6 header is 20 bytes larger); datagrams received over IPv6 (the
// batch's tail from outer6From) are checked against the leases' PublicIPv6
// and carry IPv6 pods only, as flannel's flannel-v6.1 does. Without IPv6
// senders none of it runs: the IPv4 path is the one it was.
//
// It never makes a syscall: the devices do (kernel-tun.ts, kernel-bind.ts),
// or stand in for the kernel in tests (memory-tun.ts, memory-bind.ts). Per
// packet it allocates nothing: batches are typed arrays refilled in place,
// counters are slots of a shared Float64Array. Observation (trace, captures)
// is one `undefined` test per stage while off; control messages are handled
// between batches. worker-loop.ts waits for work and calls drive().
import { receiveMessageOnPort, type MessagePort } from 'node:worker_threads';
import { getHeapStatistics } from 'node:v8';
import { Counter, DROPS_BASE } from './worker-stats.js';
import { TunReadBatch, DatagramBatch, PacketList, SendBatch } from './batches.js';
import { SendPolicy, GSO_MAX_SEGMENTS } from './send-policy.js';
import { IcmpRateLimiter } from './icmp-rate-limit.js';
import { WallClock } from './libc.js';
import type { TunDevice } from './tun.js';
import type { UdpBind } from './bind.js';
import type { WorkerMemory } from './worker-memory.js';
import type { WorkerControlMessage, WorkerReport, TraceRequest } from './worker-messages.js';
import { ForwarderObserver, type CaptureConfig } from './forwarder-observer.js';
import { DropReason, dropReasonNames } from '../encap/drop-reasons.js';
import type { Encapsulation } from '../encap/encapsulation.js';
import { UdpEncapsulation } from '../encap/encapsulation.js';
import { VxlanEncapsulation } from '../encap/vxlan.js';
import {
  validateIPv4,
  ipv4TotalLength,
  ipv4Destination,
  ipv4Source,
  ipv4DontFragment,
  ipv4Ttl,
  decrementTtl,
  IPV4_OFFSET_SOURCE,
  IPV4_OFFSET_PROTOCOL,
} from '../encap/ipv4.js';
import { buildIcmpDestUnreachable, ICMP_NET_UNREACHABLE, ICMP_FRAG_NEEDED } from '../encap/icmp.js';
import {
  validateIPv6,
  ipv6TotalLength,
  ipv6HopLimit,
  decrementHopLimit,
  IPV6_MIN_MTU,
  IPV6_OFFSET_DESTINATION,
  IPV6_OFFSET_SOURCE,
} from '../encap/ipv6.js';
import { buildIcmpv6Error, ICMPV6_DEST_UNREACH, ICMPV6_NO_ROUTE, ICMPV6_PACKET_TOO_BIG } from '../encap/icmpv6.js';
import { LeaseTable, type LeaseTableSnapshot } from '../control/lease-table.js';

export interface ForwarderConfig {
  workerIndex: number;
  leases: LeaseTableSnapshot;
  counters: Float64Array;
  /** Control messages from the main thread, and a shared Int32Array whose [0] counts those posted (checked without a syscall). */
  controlPort: MessagePort;
  controlSequence: Int32Array;
  backend: 'udp' | 'vxlan';
  /** VXLAN: our VNI and VTEP MAC. */
  vni: number;
  vtepMac: Uint8Array;
  peerPort: number;
  /** Largest inner packet on the wire: the TUN MTU. */
  mtu: number;
  /**
   * Largest inner packet that fits one underlay datagram (underlay MTU minus
   * the encapsulation). Larger ones get ICMP fragmentation-needed if DF is
   * set, or are sent for the kernel to fragment the outer datagram if not.
   */
  pathMtu: number;
  /** pathMtu for IPv6 packets over the IPv6 underlay (its outer header is 20 bytes larger); used only with IPv6 senders. */
  pathMtu6?: number;
  /** This node's pod subnet: inbound packets for anything else are not written to the TUN. */
  ownNetwork: number;
  ownMask: number;
  /** Dual-stack: this node's IPv6 subnet (16 bytes) and prefix length; absent: IPv6 packets are not-ipv4 drops, as before. */
  ownNetwork6?: Uint8Array;
  ownPrefix6?: number;
  /** For trace events and captures: this node's name (its subnet key), public IP and the send sockets' ports (by send queue: the IPv4 senders', then the IPv6 underlay's). */
  node: string;
  publicIp: number;
  /** This node's public IPv6 (16 bytes) when it has the IPv6 underlay: traces show it as the outer source. */
  publicIpv6?: Uint8Array;
  sendPorts: number[];
  /** --trace from the start (session 0, rendered to the agent's log). */
  trace?: TraceRequest;
  /** --capture DIR. */
  capture?: CaptureConfig;
}

/** Loop turns between looks at the control sequence while traffic keeps the loop busy. */
const CONTROL_CHECK_ROUNDS = 64;
/** poll()'s timeout while the observer keeps time: a capture is flushed, a trace's rate window moves, at least this often. */
export const OBSERVER_TICK_MS = 1000;
/** Most UDP payload bytes in one GSO message (64 KB minus outer IPv4 and UDP headers). */
const GSO_MAX_BYTES = 65507;

export class Forwarder {
  stopping = false;
  private readonly bytes: Uint8Array;
  private readonly c: Float64Array;
  private readonly encap: Encapsulation;
  private readonly vxlan: VxlanEncapsulation | undefined;
  private readonly policy: SendPolicy;
  private readonly readBatch: TunReadBatch;
  private readonly sendBatches: SendBatch[];
  private readonly receiveBatch: DatagramBatch;
  private readonly tunWrites: PacketList;
  private readonly icmpOffset: number;
  private readonly vnet: boolean;
  // The config values the per-packet path reads, as own fields: the config
  // object's shape depends on who built it (worker-build.ts spreads the
  // structured clone of workerData, the rehearsal writes a literal), and
  // optimised code specialised on one shape is thrown away on the other.
  private readonly mtu: number;
  private readonly pathMtu: number;
  private readonly pathMtu6: number;
  /** The bind's IPv4 senders come first (senders4 of them), then its IPv6 underlay's (senders6, 0 without it). */
  private readonly senders4: number;
  private readonly senders6: number;
  private readonly peerPort: number;
  private readonly ownNetwork: number;
  private readonly ownMask: number;
  /** -1 on a node without an IPv6 subnet. */
  private readonly ownPrefix6: number;
  /** This node's IPv6 subnet, as 4 int32 words masked, and the mask words. */
  private readonly own6 = new Int32Array(4);
  private readonly ownMask6 = new Int32Array(4);
  private readonly controlSequence: Int32Array;
  private leaseTable: LeaseTable;
  private lastControlSequence = 0;
  private readonly clock = new WallClock();
  private readonly icmpLimiter = new IcmpRateLimiter();
  private observer: ForwarderObserver | undefined;
  /**
   * poll()'s timeout for the loop. -1 (none) while nothing is due: an idle
   * worker is then never woken, where a 1 s timeout cost every idle worker a
   * wake-up a second (docs/design.md, "Latency after idle"). OBSERVER_TICK_MS
   * while the observer keeps time (a trace's rate, a capture's flushes). A
   * field read by the loop, not a branch in it: set where the observer comes
   * and goes, and by the rehearsal (0).
   */
  pollTimeoutMs = -1;
  private idlePollTimeoutMs = -1;
  private traceSession = -1;
  private readonly cfg: ForwarderConfig;

  constructor(
    cfg: ForwarderConfig,
    private readonly tun: TunDevice,
    private readonly bind: UdpBind,
    memory: WorkerMemory,
    private readonly post: (report: WorkerReport) => void,
  ) {
    this.cfg = cfg = normalizeConfig(cfg);
    this.vxlan = cfg.backend === 'vxlan' ? new VxlanEncapsulation(cfg.vni, cfg.vtepMac, cfg.ownPrefix6 !== undefined && cfg.ownPrefix6 >= 0) : undefined;
    this.encap = this.vxlan ?? new UdpEncapsulation();
    this.bytes = memory.pool.bytes;
    this.c = cfg.counters;
    this.mtu = cfg.mtu;
    this.pathMtu = cfg.pathMtu;
    this.pathMtu6 = cfg.pathMtu6 ?? cfg.pathMtu;
    this.senders6 = bind.senders6;
    this.senders4 = bind.senders - bind.senders6;
    this.peerPort = cfg.peerPort;
    this.ownNetwork = cfg.ownNetwork;
    this.ownMask = cfg.ownMask;
    this.ownPrefix6 = cfg.ownPrefix6 ?? -1;
    if (this.ownPrefix6 >= 0) {
      const n = cfg.ownNetwork6!;
      for (let w = 0; w < 4; w++) {
        const bits = Math.min(32, Math.max(0, this.ownPrefix6 - 32 * w));
        this.ownMask6[w] = bits === 0 ? 0 : (0xffffffff << (32 - bits)) | 0;
        this.own6[w] = ((n[4 * w] << 24) | (n[4 * w + 1] << 16) | (n[4 * w + 2] << 8) | n[4 * w + 3]) & this.ownMask6[w];
      }
    }
    this.controlSequence = cfg.controlSequence;
    this.vnet = memory.vnetHeader;
    this.icmpOffset = memory.icmpOffset;
    const batch = memory.batchSize;
    this.readBatch = new TunReadBatch(batch, memory.txArenaSegments);
    // Per read batch at most one message per segment (GSO refused) plus the single packets.
    const segments = memory.txArenaSegments;
    this.sendBatches = Array.from({ length: bind.senders }, () => new SendBatch(segments + batch, 2 * segments + batch));
    this.receiveBatch = new DatagramBatch(memory.maxDatagrams);
    this.tunWrites = new PacketList(memory.maxDatagrams);
    this.policy = new SendPolicy(bind, this.c, (line) => this.report(line));
    this.c[Counter.PoolSlots] = memory.pool.slotCount;
    this.leaseTable = new LeaseTable(cfg.leases);
    if (this.vxlan) {
      this.vxlan.peerMacs = this.leaseTable.vtepMacs;
      this.vxlan.peerMacs6 = this.leaseTable.vtepMacs6;
    }
    this.c[Counter.LeaseTableVersion] = cfg.leases.version;
    this.heartbeat();
    this.sampleHeap();
    if (cfg.capture) this.observe().startCapture(cfg.capture);
    if (cfg.capture) this.tun.capture = this.observer;
    if (cfg.trace) this.startTrace(cfg.trace);
  }

  /**
   * Forwards in both directions until both sides are drained (or a stop
   * arrives), one batch per side in turn. Returns the rounds taken.
   */
  drive(tunReady: boolean, udpReady: boolean): number {
    let tunDrained = !tunReady;
    let udpDrained = !udpReady;
    let rounds = 0;
    while (!(tunDrained && udpDrained)) {
      if (!tunDrained) tunDrained = this.forwardOutbound();
      if (!udpDrained) udpDrained = this.forwardInbound();
      if (++rounds % CONTROL_CHECK_ROUNDS === 0) {
        this.heartbeat();
        this.checkControl();
        if (this.stopping) break;
      }
    }
    return rounds;
  }

  // ---- outbound: TUN → lease lookup → encapsulate → bind ----

  /**
   * One TUN batch out to the peers. Returns whether the TUN is drained. One
   * read batch, however many of its packets are dropped: the budget is what
   * was read, so a flood of bad packets cannot keep the worker from its
   * socket and its control messages.
   */
  forwardOutbound(): boolean {
    const batch = this.readBatch;
    this.tun.read(batch);
    for (let p = 0; p < batch.count; p++) this.forwardPacket(batch, p);
    this.flushSends();
    return batch.drained;
  }

  private forwardPacket(batch: TunReadBatch, p: number): boolean {
    const bytes = this.bytes;
    const off = batch.offset[p];
    const segments = batch.segmentCount[p];
    // A later run of a super-packet: its first run was checked, counted and traced.
    const firstRun = batch.segmentFirst[p] === 0;
    if (this.ownPrefix6 >= 0 && bytes[off] >>> 4 === 6) return this.forwardPacket6(batch, p);
    const reason = validateIPv4(bytes, off, batch.length[p]);
    if (reason !== DropReason.None) return this.drop(reason);
    const length = ipv4TotalLength(bytes, off);
    if (segments === 0 && length > this.mtu) return this.drop(DropReason.TooBig);
    const o = this.observer;
    const traced = o === undefined || !firstRun ? -1 : o.tunRead(bytes, off, length, segments > 0);
    const lease = this.leaseTable.lookup(ipv4Destination(bytes, off));
    if (lease < 0) {
      if (!firstRun) return false;
      this.answerIcmp(off, length, ICMP_NET_UNREACHABLE, 0);
      if (traced >= 0) {
        o!.leaseLookup(traced, bytes, off, length, this.leaseTable, -1);
        o!.dropped(traced, bytes, off, length, 'no-lease', 'ICMP net unreachable written back into the TUN, from the destination address');
      }
      return this.drop(DropReason.NoLease);
    }
    if (batch.wireSize[p] > this.pathMtu) {
      if (segments > 0 || ipv4DontFragment(bytes, off)) {
        if (!firstRun) return false;
        // The sender asked not to fragment: tell it the size that fits (RFC 1191).
        this.answerIcmp(off, length, ICMP_FRAG_NEEDED, this.pathMtu);
        if (traced >= 0) o!.dropped(traced, bytes, off, length, 'fragmentation-needed', `ICMP fragmentation needed (mtu ${this.pathMtu}) written back into the TUN`);
        return this.drop(DropReason.FragmentationNeeded);
      }
      this.c[Counter.OuterFragmented]++;
    }
    // A super-packet's own header is left as read (a later run copies it again); its segments' are decremented.
    if (segments === 0 ? !decrementTtl(bytes, off) : ipv4Ttl(bytes, off) <= 1) {
      if (!firstRun) return false;
      if (traced >= 0) o!.dropped(traced, bytes, off, length, 'ttl-expired');
      return this.drop(DropReason.TtlExpired);
    }
    return this.sendOut(batch, p, off, length, lease, this.senderFor(off), segments, traced, false);
  }

  /**
   * An IPv6 packet (or super-packet) out to its peer: forwardPacket's steps
   * for the IPv6 header, with the same trace events and captures.
   */
  private forwardPacket6(batch: TunReadBatch, p: number): boolean {
    const bytes = this.bytes;
    const off = batch.offset[p];
    const segments = batch.segmentCount[p];
    const firstRun = batch.segmentFirst[p] === 0;
    if (firstRun) this.c[Counter.Ipv6TunReadPackets]++;
    const reason = validateIPv6(bytes, off, batch.length[p]);
    if (reason !== DropReason.None) return this.drop(reason);
    const length = ipv6TotalLength(bytes, off);
    if (segments === 0 && length > this.mtu) return this.drop(DropReason.TooBig);
    const o = this.observer;
    const traced = o === undefined || !firstRun ? -1 : o.tunRead(bytes, off, length, segments > 0);
    const lease = this.leaseTable.lookup6(bytes, off + IPV6_OFFSET_DESTINATION);
    if (lease < 0) {
      if (!firstRun) return false;
      this.answerIcmp6(off, length, ICMPV6_DEST_UNREACH, ICMPV6_NO_ROUTE, 0);
      if (traced >= 0) {
        o!.leaseLookup(traced, bytes, off, length, this.leaseTable, -1);
        o!.dropped(traced, bytes, off, length, 'no-lease', 'ICMPv6 destination unreachable (no route) written back into the TUN');
      }
      return this.drop(DropReason.NoLease);
    }
    // Over the IPv6 underlay when both ends have a public IPv6 (flannel-v6.1 always uses PublicIPv6).
    const six = this.senders6 > 0 && this.leaseTable.hasPublicIpv6At(lease);
    const pathMtu = six ? this.pathMtu6 : this.pathMtu;
    if (batch.wireSize[p] > pathMtu) {
      // IPv6 routers never fragment: the sender learns the size that fits (RFC 8201). A path below
      // IPv6's 1280 cannot be reported (senders would take 1280 anyway): the outer datagram is fragmented instead.
      if (pathMtu >= IPV6_MIN_MTU || segments > 0) {
        if (!firstRun) return false;
        this.answerIcmp6(off, length, ICMPV6_PACKET_TOO_BIG, 0, Math.max(pathMtu, IPV6_MIN_MTU));
        if (traced >= 0) {
          o!.dropped(traced, bytes, off, length, dropReasonNames[DropReason.Ipv6PacketTooBig], `ICMPv6 packet too big (mtu ${Math.max(pathMtu, IPV6_MIN_MTU)}) written back into the TUN`);
        }
        return this.drop(DropReason.Ipv6PacketTooBig);
      }
      this.c[Counter.OuterFragmented]++;
    }
    // As for IPv4: a super-packet's own header is left as read, its segments' are decremented.
    if (segments === 0 ? !decrementHopLimit(bytes, off) : ipv6HopLimit(bytes, off) <= 1) {
      if (!firstRun) return false;
      if (traced >= 0) o!.dropped(traced, bytes, off, length, 'ttl-expired', 'hop limit exhausted');
      return this.drop(DropReason.TtlExpired);
    }
    const k = six ? this.senders4 + this.senderFor6(off, this.senders6) : this.senderFor6(off, this.senders4);
    return this.sendOut(batch, p, off, length, lease, k, segments, traced, six);
  }

  /**
   * Either family, checked and decremented: to the lease's node, as one
   * datagram or as the super-packet's segments. `six`: sender k is one of the
   * IPv6 underlay's, the destination the lease's PublicIPv6 (peer is 0 then).
   */
  private sendOut(batch: TunReadBatch, p: number, off: number, length: number, lease: number, k: number, segments: number, traced: number, six: boolean): boolean {
    const bytes = this.bytes;
    const o = this.observer;
    if (traced >= 0) o!.leaseLookup(traced, bytes, off, length, this.leaseTable, lease);
    const peer = six ? 0 : this.leaseTable.publicIpAt(lease);
    if (segments > 0) {
      this.queueSegments(batch, p, lease, peer, k, traced, six);
      return true;
    }
    const start = this.encap.encapsulate(bytes, off, length, lease);
    const queue = this.sendBatches[k];
    queue.begin(peer, this.peerPort, 0, 1);
    if (six) {
      queue.setPeer6(this.leaseTable.publicIpv6Words, lease);
      this.c[Counter.UnderlayIpv6SentPackets]++;
    }
    queue.add(start, off + length - start);
    queue.end();
    if (o !== undefined) {
      if (six) o.captureUdpOut6(bytes, 0, 0, start, off + length - start, this.leaseTable.publicIpv6Words, 4 * lease, k);
      else o.captureUdpOut(bytes, 0, 0, start, off + length - start, peer, k);
      if (traced >= 0) {
        o.encapsulated(traced, bytes, start, off + length - start, 1);
        o.queuedSend(traced, k, bytes, start, off + length - start, peer, 1, six ? this.publicIpv6Of(lease) : undefined);
      }
    }
    return true;
  }

  /** senderFor for an IPv6 header: the addresses' low words (interface identifiers) and the flow label. */
  private senderFor6(off: number, n: number): number {
    if (n === 1) return 0;
    const b = this.bytes;
    const s = off + IPV6_OFFSET_SOURCE + 12;
    const d = off + IPV6_OFFSET_DESTINATION + 12;
    let h = Math.imul((b[s] << 24) | (b[s + 1] << 16) | (b[s + 2] << 8) | b[s + 3], 0x9e3779b1);
    h = Math.imul(h ^ ((b[d] << 24) | (b[d + 1] << 16) | (b[d + 2] << 8) | b[d + 3]), 0x85ebca6b);
    h = Math.imul(h ^ (((b[off + 1] & 0x0f) << 16) | (b[off + 2] << 8) | b[off + 3]) ^ (h >>> 15), 0xc2b2ae35);
    return ((h ^ (h >>> 13)) >>> 0) % n;
  }

  /** The segments the device cut from a super-packet: TTL − 1 each, encapsulated, queued as GSO messages of up to 64. */
  private queueSegments(batch: TunReadBatch, p: number, lease: number, peer: number, k: number, traced: number, six: boolean): void {
    const bytes = this.bytes;
    const v6 = bytes[batch.offset[p]] >>> 4 === 6;
    const seg = batch.segments;
    const first = batch.segmentStart[p];
    const end = first + batch.segmentCount[p];
    const headroom = this.encap.headroom;
    const datagramSize = headroom + seg.headerLength[first] + seg.payloadLength[first];
    const perMessage = this.bind.gso ? Math.min(GSO_MAX_SEGMENTS, Math.floor(GSO_MAX_BYTES / datagramSize)) : 1;
    const queue = this.sendBatches[k];
    const o = this.observer;
    for (let from = first; from < end; from += perMessage) {
      const last = Math.min(end, from + perMessage);
      queue.begin(peer, this.peerPort, last - from > 1 ? datagramSize : 0, last - from);
      if (six) {
        queue.setPeer6(this.leaseTable.publicIpv6Words, lease);
        this.c[Counter.UnderlayIpv6SentPackets] += last - from;
      }
      for (let i = from; i < last; i++) {
        const header = seg.headerOffset[i];
        if (v6) decrementHopLimit(bytes, header);
        else decrementTtl(bytes, header);
        const start = this.encap.encapsulate(bytes, header, seg.headerLength[i] + seg.payloadLength[i], lease);
        queue.add(start, header + seg.headerLength[i] - start);
        queue.add(seg.payloadOffset[i], seg.payloadLength[i]);
        if (o !== undefined) {
          const headerLength = header + seg.headerLength[i] - start;
          if (six) o.captureUdpOut6(bytes, start, headerLength, seg.payloadOffset[i], seg.payloadLength[i], this.leaseTable.publicIpv6Words, 4 * lease, k);
          else o.captureUdpOut(bytes, start, headerLength, seg.payloadOffset[i], seg.payloadLength[i], peer, k);
        }
      }
      queue.end();
    }
    if (traced >= 0 && o !== undefined) {
      // The first segment as it goes on the wire, copied for display (a traced packet may allocate).
      const start = seg.headerOffset[first] - headroom;
      const headerBytes = headroom + seg.headerLength[first];
      const shown = new Uint8Array(headerBytes + seg.payloadLength[first]);
      shown.set(bytes.subarray(start, start + headerBytes), 0);
      shown.set(bytes.subarray(seg.payloadOffset[first], seg.payloadOffset[first] + seg.payloadLength[first]), headerBytes);
      o.encapsulated(traced, shown, 0, shown.length, seg.total);
      o.queuedSend(traced, k, shown, 0, shown.length, peer, seg.total, six ? this.publicIpv6Of(lease) : undefined);
    }
  }

  private flushSends(): void {
    const batches = this.sendBatches;
    for (let k = 0; k < batches.length; k++) {
      const messages = batches[k].messages;
      if (messages === 0) continue;
      this.policy.flush(k, batches[k]);
      this.observer?.sent(k, messages);
    }
  }

  /** A lease's PublicIPv6, copied: for traces only (a traced packet may allocate). */
  private publicIpv6Of(lease: number): Uint8Array {
    return this.leaseTable.publicIpv6Bytes.slice(16 * lease, 16 * lease + 16);
  }

  /** Which send socket a packet leaves from: always the one in UDP mode, a flow hash in VXLAN. */
  private senderFor(off: number): number {
    const n = this.senders4;
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
    if (!this.icmpLimiter.allow(ipv4Source(bytes, off), this.icmpNow(), code === ICMP_FRAG_NEEDED)) {
      this.c[Counter.IcmpSuppressed]++;
      return;
    }
    if (this.tun.reply(at, n)) this.c[Counter.IcmpSent]++;
  }

  /**
   * answerIcmp for IPv6: an ICMPv6 error about the packet at off written back
   * into the TUN, from the packet's destination (the same reasoning), limited
   * by the same limiter, keyed by a hash of the source address.
   */
  private answerIcmp6(off: number, length: number, type: number, code: number, mtu: number): void {
    const bytes = this.bytes;
    const at = this.icmpOffset;
    const n = buildIcmpv6Error(bytes, off, length, bytes, at, bytes, off + IPV6_OFFSET_DESTINATION, type, code, mtu);
    if (n === 0) return;
    const s = off + IPV6_OFFSET_SOURCE;
    let key = 0;
    for (let i = 0; i < 16; i += 4) key = Math.imul(key ^ ((bytes[s + i] << 24) | (bytes[s + i + 1] << 16) | (bytes[s + i + 2] << 8) | bytes[s + i + 3]), 0x9e3779b1);
    if (!this.icmpLimiter.allow(key, this.icmpNow(), type === ICMPV6_PACKET_TOO_BIG)) {
      this.c[Counter.IcmpSuppressed]++;
      return;
    }
    if (this.tun.reply(at, n)) this.c[Counter.IcmpSent]++;
  }

  // ---- inbound: bind → checks → decapsulate → TUN ----

  /** One receive batch into the TUN. Returns whether the socket is drained. */
  forwardInbound(): boolean {
    const batch = this.receiveBatch;
    this.bind.receive(batch);
    for (let i = 0; i < batch.count; i++) this.receiveDatagram(batch, i);
    if (this.tunWrites.count > 0) this.tun.write(this.tunWrites);
    this.observer?.written(this.bytes, this.vnet ? 'writev' : 'write', this.vnet);
    return batch.drained;
  }

  /**
   * A datagram over the IPv6 underlay: from a lease's PublicIPv6, carrying an
   * IPv6 pod packet (flannel-v6.1 carries nothing else), then receive6's checks.
   */
  private receiveDatagram6(batch: DatagramBatch, i: number): void {
    const c = this.c;
    const bytes = this.bytes;
    const off = batch.offset[i];
    const length = batch.length[i];
    c[Counter.UdpReceivedPackets]++;
    c[Counter.UnderlayIpv6ReceivedPackets]++;
    if (batch.truncated[i] !== 0) {
      this.drop(DropReason.TooBig);
      return;
    }
    c[Counter.UdpReceivedBytes] += length;
    const s = batch.sourceIp6;
    this.observer?.captureUdpIn6(bytes, off, length, s, 4 * i, batch.sourcePort[i]);
    const peer = this.leaseTable.findByPublicIpv6(s[4 * i], s[4 * i + 1], s[4 * i + 2], s[4 * i + 3]);
    if (peer < 0) {
      this.drop(DropReason.UnknownPeer);
      return;
    }
    const inner = this.encap.decapsulate(bytes, off, length);
    if (inner < 0) {
      this.drop(-inner);
      return;
    }
    if (this.ownPrefix6 < 0 || bytes[inner] >>> 4 !== 6) {
      this.drop(DropReason.Ipv4OverIpv6Underlay);
      return;
    }
    this.receive6(off, length, inner, length - (inner - off), 0, batch.sourcePort[i], peer, true);
  }

  private receiveDatagram(batch: DatagramBatch, i: number): void {
    if (i >= batch.outer6From) return this.receiveDatagram6(batch, i);
    const c = this.c;
    const bytes = this.bytes;
    const off = batch.offset[i];
    const length = batch.length[i];
    c[Counter.UdpReceivedPackets]++;
    if (batch.truncated[i] !== 0) {
      this.drop(DropReason.TooBig);
      return;
    }
    c[Counter.UdpReceivedBytes] += length;
    const peerIp = batch.sourceIp[i];
    const peerPort = batch.sourcePort[i];
    const o = this.observer;
    o?.captureUdpIn(bytes, off, length, peerIp, peerPort);
    // Who may send: only a node that holds a current lease, from its PublicIP.
    const peer = this.leaseTable.findByPublicIp(peerIp);
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
    if (this.ownPrefix6 >= 0 && bytes[inner] >>> 4 === 6) {
      this.receive6(off, length, inner, innerLength, peerIp, peerPort, peer, false);
      return;
    }
    const reason = validateIPv4(bytes, inner, innerLength);
    if (reason !== DropReason.None) {
      this.drop(reason);
      return;
    }
    const traced = o === undefined ? -1 : o.received(bytes, off, length, inner, innerLength, peerIp, peerPort, this.leaseTable, peer);
    // A leased node may only send packets from its own pods: the lease that
    // holds the inner source must be one of the sender's (a node may hold
    // several: a stale lease beside its current one).
    const owner = this.leaseTable.lookup(ipv4Source(bytes, inner));
    if (owner < 0 || this.leaseTable.publicIpAt(owner) !== peerIp) {
      this.dropTraced(DropReason.SpoofedSource, traced, inner, innerLength);
      return;
    }
    // No reflection: only packets for this node's own pods go into the TUN.
    if (((ipv4Destination(bytes, inner) & this.ownMask) >>> 0) !== this.ownNetwork) {
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
    this.tunWrites.add(inner, total);
  }

  /** receiveDatagram's checks for an IPv6 inner packet (the datagram at off, its inner packet at inner). */
  private receive6(off: number, length: number, inner: number, innerLength: number, peerIp: number, peerPort: number, peer: number, outer6: boolean): void {
    const bytes = this.bytes;
    this.c[Counter.Ipv6UdpReceivedPackets]++;
    const reason = validateIPv6(bytes, inner, innerLength);
    if (reason !== DropReason.None) {
      this.drop(reason);
      return;
    }
    const o = this.observer;
    const traced = o === undefined ? -1 : o.received(bytes, off, length, inner, innerLength, peerIp, peerPort, this.leaseTable, peer, outer6);
    // The inner source's lease must be the sender's: by PublicIPv6 over the IPv6 underlay, by PublicIP over IPv4.
    const owner = this.leaseTable.lookup6(bytes, inner + IPV6_OFFSET_SOURCE);
    if (owner < 0 || (outer6 ? !this.leaseTable.samePublicIpv6(owner, peer) : this.leaseTable.publicIpAt(owner) !== peerIp)) {
      this.dropTraced(DropReason.SpoofedSource, traced, inner, innerLength);
      return;
    }
    const d = inner + IPV6_OFFSET_DESTINATION;
    const own = this.own6;
    const mask = this.ownMask6;
    for (let w = 0; w < 4; w++) {
      const word = (bytes[d + 4 * w] << 24) | (bytes[d + 4 * w + 1] << 16) | (bytes[d + 4 * w + 2] << 8) | bytes[d + 4 * w + 3];
      if ((word & mask[w]) !== own[w]) {
        this.dropTraced(DropReason.NotForThisNode, traced, inner, innerLength);
        return;
      }
    }
    if (!decrementHopLimit(bytes, inner)) {
      this.dropTraced(DropReason.TtlExpired, traced, inner, innerLength);
      return;
    }
    const total = ipv6TotalLength(bytes, inner);
    if (traced >= 0) o!.willWrite(traced, inner, total);
    this.tunWrites.add(inner, total);
  }

  private drop(reason: number): false {
    this.c[DROPS_BASE + reason]++;
    return false;
  }

  private dropTraced(reason: number, traced: number, off: number, length: number): void {
    this.drop(reason);
    if (traced >= 0) this.observer?.dropped(traced, this.bytes, off, length, dropReasonNames[reason]);
  }

  // ---- control and observation: between batches, never per packet ----

  /**
   * Once per loop turn, after its forwarding: the time (without allocating,
   * see WallClock) and the observer's timers. Nothing here allocates: a worker
   * that allocates nothing in the steady state never collects garbage
   * (docs/design.md, "Latency after idle").
   */
  heartbeat(): void {
    this.clock.readInto(this.c, Counter.HeartbeatMs);
    this.observer?.tick(this.c[Counter.HeartbeatMs]);
  }

  /**
   * The time for the ICMP rate limiter, read now: the last heartbeat may be
   * from before a long sleep (poll() has no timeout when idle), and a stale
   * clock would refill no tokens. The ICMP path is rare, so the clock call is too.
   */
  private icmpNow(): number {
    this.clock.readInto(this.c, Counter.HeartbeatMs);
    return this.c[Counter.HeartbeatMs];
  }

  /** The loop's poll() timeout when nothing is due: -1 (none) for a real worker, 0 in the rehearsal. */
  setIdlePollTimeout(ms: number): void {
    this.idlePollTimeoutMs = ms;
    this.updatePollTimeout();
  }

  private updatePollTimeout(): void {
    this.pollTimeoutMs = this.observer === undefined || this.idlePollTimeoutMs === 0 ? this.idlePollTimeoutMs : OBSERVER_TICK_MS;
  }

  /**
   * The worker's V8 heap into its counter. getHeapStatistics() allocates its
   * result, so it runs only where the worker allocates anyway: at start and
   * after handling control messages. In between the heap cannot change, as
   * nothing in the steady state allocates (test/unit/worker-no-gc.test.ts).
   */
  sampleHeap(): void {
    this.c[Counter.HeapUsedBytes] = getHeapStatistics().used_heap_size;
  }

  /** Handles the control messages posted since the last look, if any (one shared-memory read when none). */
  checkControl(): void {
    const sequence = Atomics.load(this.controlSequence, 0);
    if (sequence !== this.lastControlSequence) this.handleControl(sequence);
  }

  /**
   * Its own function, called rarely: V8 then does not inline it into the
   * loop, so a message of a shape it has not seen (or the first stop) throws
   * away this function's optimised code only, never the loop's.
   */
  private handleControl(sequence: number): void {
    this.lastControlSequence = sequence;
    for (;;) {
      const received = receiveMessageOnPort(this.cfg.controlPort);
      if (received === undefined) return this.sampleHeap();
      const msg = received.message as WorkerControlMessage;
      if (msg.type === 'leases') {
        // The new table replaces the old one between two batches: packets
        // already queued were sent, the next batch sees the new leases.
        this.leaseTable = new LeaseTable(msg.snapshot);
        if (this.vxlan) {
          this.vxlan.peerMacs = this.leaseTable.vtepMacs;
          this.vxlan.peerMacs6 = this.leaseTable.vtepMacs6;
        }
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

  close(): void {
    this.observer?.close();
  }

  private report(line: string): void {
    this.post({ type: 'log', line: `worker ${this.cfg.workerIndex}: ${line}` });
  }

  private observe(): ForwarderObserver {
    this.observer ??= new ForwarderObserver(
      this.cfg.workerIndex,
      this.cfg.publicIp,
      this.cfg.peerPort,
      this.cfg.peerPort,
      this.cfg.sendPorts,
      this.vxlan ? 'vxlan-payload' : 'udp-payload',
      this.cfg.publicIpv6,
    );
    this.updatePollTimeout();
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
      (event) => this.post({ type: 'trace', session, event }),
    );
  }

  private stopTrace(session: number): void {
    if (session !== this.traceSession || !this.observer) return;
    this.observer.stopTrace();
    this.traceSession = -1;
    if (this.observer.idle) {
      this.observer = undefined;
      this.tun.capture = undefined;
      this.updatePollTimeout();
    }
  }
}

/**
 * The config as an object of one shape, whatever shape the caller's had (a
 * spread of a structured clone in worker-build.ts, a literal in the
 * rehearsal): V8 tracks the shape of what a field holds, and a Forwarder whose
 * `cfg` had a new shape would throw away code optimised for the old one.
 */
function normalizeConfig(c: ForwarderConfig): ForwarderConfig {
  return {
    workerIndex: c.workerIndex,
    leases: c.leases,
    counters: c.counters,
    controlPort: c.controlPort,
    controlSequence: c.controlSequence,
    backend: c.backend,
    vni: c.vni,
    vtepMac: c.vtepMac,
    peerPort: c.peerPort,
    mtu: c.mtu,
    pathMtu: c.pathMtu,
    pathMtu6: c.pathMtu6,
    ownNetwork: c.ownNetwork,
    ownMask: c.ownMask,
    ownNetwork6: c.ownNetwork6 !== undefined ? Uint8Array.from(c.ownNetwork6) : undefined,
    ownPrefix6: c.ownPrefix6,
    node: c.node,
    publicIp: c.publicIp,
    publicIpv6: c.publicIpv6 !== undefined ? Uint8Array.from(c.publicIpv6) : undefined,
    sendPorts: Array.from(c.sendPorts),
    trace: c.trace,
    capture: c.capture,
  };
}
