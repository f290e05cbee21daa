// The rehearsal: before a worker says it is ready, it forwards a few thousand
// made-up packets each way through the very classes it is about to run
// (Forwarder, KernelTun, KernelBind, the encapsulation, WorkerLoop.run), on
// private descriptors: an AF_UNIX datagram socketpair stands in for the TUN
// queue (read() and write() keep packet boundaries as a TUN does) and
// loopback UDP sockets for the underlay. Nothing reaches flannel0 or the
// network.
//
// Why: V8 runs new code in its interpreter and optimises a function only
// after it has run for a while. A fresh worker's first thousands of packets
// therefore crossed the forwarding path in the interpreter, several times
// slower per packet, and a ping right after start paid for it on every hop
// (docs/design.md, "Latency: what the agent added"). The rehearsal pays that
// once, at start, with the same receivers, hidden classes and options as the
// real devices, so the code it leaves optimised is the code real traffic
// takes. It shares the worker's packet memory (the real devices start after
// it), so it costs no memory beyond its few sockets.
//
// A dual-stack worker (an IPv6 subnet in its config) rehearses IPv6 too:
// ICMPv6, TCP and UDP over IPv6 each way, interleaved with the IPv4 packets,
// so its IPv6 branches (forwardPacket6, receive6, the IPv6 lease lookup) are
// warm as well; in VXLAN mode the peers' datagrams carry them in Ethernet
// frames of ethertype 0x86dd to the peers' IPv6 VTEP MACs, as flannel-v6.1
// sends them, so the encapsulation's IPv6 branches are warm too.
//
// The IPv4 rehearsal has no expired or unleased packets (every packet must
// come out: drops are reported as a partial rehearsal). The IPv6 one has one
// kind: the MLDv2 report the kernel sends into flannel0 whenever a dual-stack
// agent brings it up (from ::, to ff02::16, joining ff02::2 because the node
// forwards), twice, on whichever worker's queue. No lease covers ff02::16, so
// the real worker's first IPv6 packets took the no-lease branch of
// forwardPacket6 and lookup6's miss, which a rehearsal of leased packets only
// never ran: V8 threw their optimised code away there ("insufficient type
// feedback") and real pings then ran baseline code until it re-optimised
// (docs/design.md, "IPv6 (dual-stack) in UDP mode"). So the rehearsal sends
// that report too; its no-lease drops are expected and not counted in `drops`.
import { MessageChannel } from 'node:worker_threads';
import * as libc from './libc.js';
import { Forwarder } from './forwarder.js';
import { WorkerLoop } from './worker-loop.js';
import { KernelBind } from './kernel-bind.js';
import { PacketPool } from './packet-pool.js';
import type { WorkerMemory } from './worker-memory.js';
import { SendBatch } from './batches.js';
import { buildKernelDevices, type DeviceOptions } from './worker-devices.js';
import { openWorkerSockets, closeWorkerSockets } from './worker-sockets.js';
import { openUdpSocket } from './udp-socket.js';
import { COUNTERS_PER_WORKER, Counter, DROPS_BASE } from './worker-stats.js';
import { buildLeaseTableSnapshot, LeaseTable } from '../control/lease-table.js';
import { makeCidr, parseIPv4 } from '../control/ipv4-address.js';
import { formatSubnetKey, type Lease } from '../control/lease.js';
import { buildIcmpEcho, ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY } from '../encap/icmp.js';
import { buildIcmpv6Echo, ICMPV6_ECHO_REPLY, ICMPV6_ECHO_REQUEST } from '../encap/icmpv6.js';
import { buildIPv6Header, ipv6PseudoHeaderSum, IPV6_DEFAULT_HOP_LIMIT, IPV6_HEADER, IP_PROTOCOL_ICMPV6 } from '../encap/ipv6.js';
import { DropReason } from '../encap/drop-reasons.js';
import { makeCidr6, type Cidr6 } from '../control/ipv6-address.js';
import { buildIPv4Header, IP_PROTOCOL_TCP, IP_PROTOCOL_UDP, IPV4_DEFAULT_TTL, IPV4_MIN_HEADER } from '../encap/ipv4.js';
import { internetChecksum, pseudoHeaderSum } from '../encap/checksum.js';
import { write16, write32 } from '../encap/bytes.js';
import { VIRTIO_NET_HDR_LEN } from '../encap/virtio-net-header.js';
import { VXLAN_FLAG_VNI, VXLAN_HEADER, VXLAN_HEADROOM, ETHERTYPE_IPV4, ETHERTYPE_IPV6, formatMac } from '../encap/vxlan.js';

export interface RehearsalOptions extends DeviceOptions {
  vni: number;
  vtepMac: Uint8Array;
  mtu: number;
  pathMtu: number;
  /** The worker's send sockets: how many, and the socket options they were opened with. */
  sendSockets: number;
  offload: boolean;
  udpChecksum: boolean;
  /** Loop turns; each moves a few packets each way. */
  turns?: number;
  /** Dual-stack: the worker's IPv6 subnet (its prefix length here); present, the rehearsal sends IPv6 as well (both modes). */
  ownPrefix6?: number;
  /**
   * The worker has the IPv6 underlay's socket: the rehearsal's bind gets one
   * too (on ::1), so the bind's and the loop's branches for it are the ones
   * optimised. A dual-stack worker also rehearses the IPv6 underlay's
   * traffic: every peer's lease but the last has PublicIPv6 ::1 (all of them
   * one node's leases to the lease table), so their IPv6 packets go out and
   * come in over IPv6; the last peer's go over IPv4, as to a node without a
   * public IPv6. Enough calls for V8 to optimise the IPv6 underlay's own
   * functions (receiveDatagram6, the bind's send6 and receive6): with one
   * peer of 16 they stayed in the baseline tier.
   */
  underlay6?: boolean;
}

export interface RehearsalResult {
  /** Packets the rehearsal sent each way, and what came out the other side. */
  outboundSent: number;
  outboundForwarded: number;
  inboundSent: number;
  inboundForwarded: number;
  /** Counted drops of the rehearsal forwarder (none expected), the unleased packets' expected no-lease drops left out. */
  drops: number;
  /** Dual-stack: the kernel's MLD reports sent into the TUN stand-in (no lease covers them), and the no-lease drops counted. */
  unleasedSent: number;
  noLeaseDrops: number;
  /** Of the packets each way, those that went over the IPv6 underlay (underlay6 with a dual-stack worker). */
  underlay6Sent: number;
  underlay6Received: number;
  ms: number;
}

/** Enough turns for V8 to optimise every step of both paths (measured: docs/design.md). */
export const REHEARSAL_TURNS = 2500;
const LOOPBACK = 0x7f000001;
// Pod addresses from the shared address space (100.64.0.0/10): they never
// leave the socketpair and loopback. Below 2^31 on purpose: V8 stores such a
// number as a small integer, and a config field that held a small integer in
// the real worker and then a larger number here would change the field's
// representation and throw away optimised code (a value of the real
// cluster's that is larger than ours is harmless).
const OWN_SUBNET = parseIPv4('100.64.0.0');
const OWN_POD = OWN_SUBNET + 5;
/** Peer nodes, each on its own loopback address with its own subnet (pickPeers). */
const PEERS = 16;
const peerMac = (k: number) => new Uint8Array([0x02, 0x52, 0x45, 0x48, 0x52, k]);
/** A peer's IPv6 VTEP MAC (BackendV6Data): not its IPv4 one, as flanneld's two devices have two MACs. */
const peerMac6 = (k: number) => new Uint8Array([0x02, 0x52, 0x45, 0x48, 0x36, k]);
// IPv6 pod subnets, ULA (fd00::/8) with a made-up global id: they never leave the socketpair and loopback either.
const OWN_SUBNET6 = Uint8Array.of(0xfd, 0x52, 0x45, 0x48, 0x52, 0x53, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
const subnet6 = (c: number): Uint8Array => {
  const a = Uint8Array.from(OWN_SUBNET6);
  a[6] = c >>> 8;
  a[7] = c & 0xff;
  return a;
};
const pod6 = (subnet: Uint8Array, host: number): Uint8Array => {
  const a = Uint8Array.from(subnet);
  a[15] = host;
  return a;
};
const OWN_POD6 = pod6(OWN_SUBNET6, 5);

interface Peer {
  address: number;
  subnet: number;
  pod: number;
  mac: Uint8Array;
  /** Dual-stack: the peer's IPv6 VTEP MAC, IPv6 subnet (/64) and a pod in it. */
  mac6: Uint8Array;
  subnet6: Cidr6;
  pod6: Uint8Array;
}

/**
 * Loopback addresses (127.0.1.x and up) and subnets (100.64.x.0/24) for the
 * peers, chosen so that the lease table has collisions in both its hash
 * regions: the rehearsal's lookups then also take the probe paths, which a
 * real cluster's take for some nodes and V8 would otherwise meet first on
 * real traffic (and throw the optimised code away there).
 */
function pickPeers(ownMac: Uint8Array, dualStack: boolean, underlay6: boolean): { peers: Peer[]; leases: Lease[] } {
  const address = (c: number) => LOOPBACK + 0x100 + c + 1;
  const subnet = (c: number) => OWN_SUBNET + ((c + 1) << 8);
  const addressChoice = Array.from({ length: PEERS }, (_, k) => k);
  const subnetChoice = Array.from({ length: PEERS }, (_, k) => k);
  const build = () => {
    const peers = addressChoice.map((a, k) => ({
      address: address(a),
      subnet: subnet(subnetChoice[k]),
      pod: subnet(subnetChoice[k]) + 7,
      mac: peerMac(k),
      mac6: peerMac6(k),
      subnet6: makeCidr6(subnet6(subnetChoice[k] + 1), 64),
      pod6: pod6(subnet6(subnetChoice[k] + 1), 7),
    }));
    const own6 = dualStack ? makeCidr6(OWN_SUBNET6, 64) : undefined;
    const leases = [
      lease(OWN_SUBNET, LOOPBACK, ownMac, ownMac, own6),
      ...peers.map((p, k) => lease(p.subnet, p.address, p.mac, p.mac6, dualStack ? p.subnet6 : undefined, underlay6 && overIpv6Underlay(k) ? IPV6_LOOPBACK : undefined)),
    ];
    return { peers, leases, displaced: new LeaseTable(buildLeaseTableSnapshot(leases, 0)).displaced() };
  };
  let built = build();
  // The last peer moves until it collides; a few tries suffice (16 of 64 slots are taken).
  for (let tries = 0; tries < 400 && built.displaced.publicIp === 0; tries++) {
    addressChoice[PEERS - 1]++;
    built = build();
  }
  for (let tries = 0; tries < 400 && built.displaced.prefix === 0; tries++) {
    subnetChoice[PEERS - 1]++;
    built = build();
  }
  return built;
}
/** Packets per turn, in a repeating pattern: mostly single packets, as latency-bound traffic is, and some bursts. */
const BURSTS = [1, 1, 2, 1, 8, 1, 1, 16];
/** Every this many turns, a lease update arrives as from the main thread (the control path is warmed too). */
const CONTROL_EVERY = 50;

/** The worker's sockets on loopback; with the IPv6 underlay's on ::1 too, or without it where ::1 is missing. */
function openRehearsalSockets(o: Parameters<typeof openWorkerSockets>[0], underlay6: boolean): ReturnType<typeof openWorkerSockets> {
  if (!underlay6) return openWorkerSockets(o);
  try {
    return openWorkerSockets({ ...o, bindAddress6: IPV6_LOOPBACK });
  } catch {
    return openWorkerSockets(o);
  }
}
const IPV6_LOOPBACK = Uint8Array.of(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1);
/** ::1 as a lease table's PublicIPv6 words (big-endian 32-bit), what SendBatch.setPeer6 reads. */
const IPV6_LOOPBACK_WORDS = Int32Array.of(0, 0, 0, 1);

/**
 * Forwards `turns` rounds of packets each way through a private copy of the
 * worker's path on `memory`, then closes what it opened. Throws only if a
 * socket cannot be opened; what it forwarded is in the result.
 */
export function rehearse(opts: RehearsalOptions, memory: WorkerMemory): RehearsalResult {
  const t0 = performance.now();
  const turns = opts.turns ?? REHEARSAL_TURNS;
  // Shared memory, as the worker's real counters are (same typed-array kind, same optimised code).
  const counters = new Float64Array(new SharedArrayBuffer(COUNTERS_PER_WORKER * 8));
  const [tunFd, testFd] = libc.socketpair(libc.AF_UNIX, libc.SOCK_DGRAM | libc.SOCK_NONBLOCK | libc.SOCK_CLOEXEC);
  const opened: Array<() => void> = [() => libc.close(tunFd), () => libc.close(testFd)];
  const channel = new MessageChannel();
  opened.push(() => channel.port1.close());
  try {
    const socketOptions = {
      bindAddress: LOOPBACK,
      port: 0,
      socketBufferBytes: 4 << 20,
      offload: opts.offload,
      vxlan: opts.backend === 'vxlan' ? { sourcePorts: opts.sendSockets, udpChecksum: opts.udpChecksum } : undefined,
    };
    const agent = openRehearsalSockets(socketOptions, opts.underlay6 === true);
    opened.push(() => closeWorkerSockets(agent));
    const dualStack = opts.ownPrefix6 !== undefined && opts.ownPrefix6 >= 0;
    // Every peer listens on the same port, as flannel's nodes do.
    const peers = [];
    const first = openUdpSocket({ bindAddress: LOOPBACK + 0x101, port: 0, bufferBytes: 1 << 20, gro: false });
    opened.push(() => libc.close(first.fd));
    // The IPv6 underlay's peers share one socket on [::1] at that port (where ::1 is missing, no IPv6-underlay traffic).
    const peer6Fd = dualStack && agent.udp6Fd >= 0 ? openPeer6(first.port, opened) : -1;
    const { peers: peerNodes, leases } = pickPeers(opts.vtepMac, dualStack, peer6Fd >= 0);
    for (const p of peerNodes) {
      const peer = p.address === LOOPBACK + 0x101 ? first : openUdpSocket({ bindAddress: p.address, port: first.port, bufferBytes: 1 << 20, gro: false });
      if (peer !== first) opened.push(() => libc.close(peer.fd));
      peers.push(peer);
    }
    const { tun, bind } = buildKernelDevices(
      { ...opts, udpGro: agent.udpGro, udpGso: opts.udpGso && agent.udpGso },
      { tunFd, udpFd: agent.udpFd, sendFds: agent.sendFds, udp6Fd: agent.udp6Fd, send6Fds: agent.send6Fds },
      memory,
      counters,
    );
    // Lease tables reach a worker as structured clones (workerData, postMessage): so do these.
    const snapshot = () => structuredClone(buildLeaseTableSnapshot(leases, 0));
    const controlSequence = new Int32Array(new SharedArrayBuffer(4));
    const forwarder = new Forwarder(
      {
        workerIndex: 0,
        leases: snapshot(),
        counters,
        controlPort: channel.port2,
        controlSequence,
        backend: opts.backend,
        vni: opts.vni,
        vtepMac: opts.vtepMac,
        peerPort: peers[0].port,
        mtu: opts.mtu,
        pathMtu: opts.pathMtu,
        ownNetwork: OWN_SUBNET,
        ownMask: 0xffffff00,
        ...(dualStack ? { ownNetwork6: OWN_SUBNET6, ownPrefix6: 64 } : {}),
        node: 'rehearsal',
        publicIp: LOOPBACK,
        sendPorts: agent.sendPorts,
      },
      tun,
      bind,
      memory,
      () => {},
    );
    const loop = new WorkerLoop(forwarder, { tunFd, udpFd: agent.udpPollFd >= 0 ? agent.udpPollFd : agent.udpFd, wakeFd: agent.wakeFd, busyPollUs: 0, counters, idlePollTimeoutMs: 0 });
    const driver = new Driver(opts, testFd, peers.map((p) => p.fd), peerNodes, dualStack, peer6Fd, peer6Fd >= 0 ? portOf(agent.udp6Fd) : 0);
    const agentPort = portOf(agent.udpFd);
    const wakeValue = new libc.NativeMemory(8);
    wakeValue.view.setUint32(0, 1, true);
    let outboundSent = 0;
    let inboundSent = 0;
    for (let t = 0; t < turns; t++) {
      // In the first half only: the second leaves V8 time to re-optimise what a first message threw away.
      if (t % CONTROL_EVERY === CONTROL_EVERY - 1 && t < turns / 2) {
        // A lease update as the main thread posts one: message, sequence, eventfd.
        channel.port1.postMessage({ type: 'leases', snapshot: snapshot() });
        // Once, a stop too: the loop's way out (the stop branch, the loop's
        // exit) then has V8 feedback, and a real stop later does not throw
        // the optimised loop away on its way out.
        if (t === CONTROL_EVERY - 1) channel.port1.postMessage({ type: 'stop' });
        Atomics.add(controlSequence, 0, 1);
        libc.write(agent.wakeFd, wakeValue.address, 8);
      }
      if (t === BURSTS.length && counters[Counter.UdpSentPackets] === 0 && counters[Counter.TunWrittenPackets] === 0) {
        // Loopback carries nothing here (it is down in this network namespace, say): warming failure paths is no rehearsal.
        throw new Error(`nothing was forwarded in the first ${BURSTS.length} turns (${drops(counters)} dropped): is loopback up?`);
      }
      const n = BURSTS[t % BURSTS.length];
      outboundSent += driver.writeToTun(n, t);
      inboundSent += driver.sendToAgent(n, t, agentPort);
      // Both are queued in the kernel before the turn: poll() returns at once.
      // Two turns: the second finds nothing (poll() times out at once), so the
      // loop's way back to poll() and its idle branch are rehearsed too.
      loop.run(2);
      forwarder.stopping = false; // after the rehearsed stop
      driver.drain();
    }
    const noLeaseDrops = counters[DROPS_BASE + DropReason.NoLease];
    return {
      outboundSent,
      outboundForwarded: counters[Counter.UdpSentPackets],
      inboundSent,
      // A merged write (GRO) carries several of them.
      inboundForwarded: counters[Counter.TunWrittenPackets] - counters[Counter.CoalescedWrites] + counters[Counter.SegmentsCoalesced],
      drops: drops(counters) - Math.min(noLeaseDrops, driver.unleasedSent),
      unleasedSent: driver.unleasedSent,
      noLeaseDrops,
      underlay6Sent: counters[Counter.UnderlayIpv6SentPackets],
      underlay6Received: counters[Counter.UnderlayIpv6ReceivedPackets],
      ms: Math.round(performance.now() - t0),
    };
  } finally {
    for (const close of opened.reverse()) close();
  }
}

function drops(counters: Float64Array): number {
  let n = 0;
  for (let r = 1; r < COUNTERS_PER_WORKER - DROPS_BASE; r++) n += counters[DROPS_BASE + r];
  return n;
}

function lease(network: number, publicIp: number, mac: Uint8Array, mac6: Uint8Array, ipv6Subnet?: Cidr6, publicIpv6?: Uint8Array): Lease {
  const subnet = makeCidr(network, 24);
  const backendData = { VNI: 1, VtepMAC: formatMac(mac) };
  if (ipv6Subnet === undefined) return { subnet, publicIp, backendType: 'rehearsal', backendData, key: formatSubnetKey(subnet) };
  const backendV6Data = { VNI: 1, VtepMAC: formatMac(mac6) };
  const lease: Lease = { subnet, publicIp, backendType: 'rehearsal', backendData, ipv6Subnet, backendV6Data, key: formatSubnetKey(subnet, ipv6Subnet) };
  if (publicIpv6 !== undefined) lease.publicIpv6 = publicIpv6;
  return lease;
}

/** With the IPv6 underlay: whether peer k's IPv6 packets go over it (all but the last peer, see RehearsalOptions.underlay6). */
const overIpv6Underlay = (k: number) => k < PEERS - 1;

/** The IPv6 underlay's peer socket on [::1]:port, or -1 where it cannot be opened (no ::1 in this namespace). */
function openPeer6(port: number, opened: Array<() => void>): number {
  try {
    const s = openUdpSocket({ bindAddress: 0, bindAddress6: IPV6_LOOPBACK, port, bufferBytes: 1 << 20, gro: false });
    opened.push(() => libc.close(s.fd));
    return s.fd;
  } catch {
    return -1;
  }
}

function portOf(fd: number): number {
  const m = new libc.NativeMemory(32);
  m.view.setUint32(16, libc.SIZEOF_SOCKADDR_IN, true);
  libc.getsockname(fd, m.address, m.address + 16);
  return m.view.getUint16(2, false);
}

/**
 * The other ends: writes frames into the TUN stand-in as the kernel would
 * (with a plain virtio header when the TUN has them), sends datagrams to the
 * agent's socket as the peer nodes would, and drains what the agent forwarded.
 */
class Driver {
  private readonly pool: PacketPool;
  /** Per shape and peer: a frame from our pod to the peer's, a datagram from the peer's pod to ours. */
  private readonly frames: { offset: number; length: number }[] = [];
  /** v6: sent by the IPv6 underlay's peer from [::1] (its IPv6 packets), else from the peer's IPv4 address. */
  private readonly datagrams: { offset: number; length: number; peer: number; v6: boolean }[] = [];
  /** Dual-stack: which entry of `frames` is the kernel's MLD report (-1: none), and how many were written. */
  private readonly unleasedFrame: number = -1;
  unleasedSent = 0;
  private readonly bind: KernelBind;
  private readonly batch = new SendBatch(1, 1);
  private readonly scratch = new libc.NativeMemory(70000);

  constructor(
    opts: RehearsalOptions,
    private readonly testFd: number,
    private readonly peerFds: number[],
    peers: Peer[],
    dualStack: boolean,
    private readonly peer6Fd: number,
    private readonly agentPort6: number,
  ) {
    const vnet = opts.vnetHeader ? VIRTIO_NET_HDR_LEN : 0;
    const vxlan = opts.backend === 'vxlan' ? VXLAN_HEADROOM : 0;
    // The largest packet that fits both the TUN MTU and one underlay datagram.
    const large = Math.min(1200, opts.mtu, opts.pathMtu);
    const shapes: Array<(buf: Uint8Array, at: number, src: number, dst: number, i: number) => number> = [
      (b, at, s, d, i) => buildIcmpEcho(b, at, s, d, i & 1 ? ICMP_ECHO_REPLY : ICMP_ECHO_REQUEST, 0x5245, i, 56),
      (b, at, s, d, i) => buildTransport(b, at, s, d, IP_PROTOCOL_TCP, 0, i),
      (b, at, s, d, i) => buildTransport(b, at, s, d, IP_PROTOCOL_UDP, 64, i),
      (b, at, s, d, i) => buildTransport(b, at, s, d, IP_PROTOCOL_TCP, large - 40, i),
      (b, at, s, d, i) => buildIcmpEcho(b, at, s, d, ICMP_ECHO_REQUEST, 0x5245, i, large - 28),
    ];
    // Dual-stack: the same kinds over IPv6 (the large ones too), interleaved with the IPv4 ones.
    const shapes6: Array<(buf: Uint8Array, at: number, src: Uint8Array, dst: Uint8Array, i: number) => number> = dualStack
      ? [
          (b, at, s, d, i) => buildIcmpv6Echo(b, at, s, d, i & 1 ? ICMPV6_ECHO_REPLY : ICMPV6_ECHO_REQUEST, 0x5245, i, 56),
          (b, at, s, d, i) => buildTransport6(b, at, s, d, IP_PROTOCOL_TCP, 0, i),
          (b, at, s, d, i) => buildTransport6(b, at, s, d, IP_PROTOCOL_UDP, 64, i),
          (b, at, s, d, i) => buildTransport6(b, at, s, d, IP_PROTOCOL_TCP, large - 60, i),
        ]
      : [];
    this.pool = new PacketPool(2 * (shapes.length + shapes6.length) * peers.length + 2, 1400, 0);
    const bytes = this.pool.bytes;
    let slot = 0;
    peers.forEach((peer, k) => {
      shapes.forEach((shape, i) => {
        const at = this.pool.packetOffsets[slot++];
        bytes.fill(0, at, at + vnet);
        this.frames.push({ offset: at, length: vnet + shape(bytes, at + vnet, OWN_POD, peer.pod, i) });
        const dat = this.pool.packetOffsets[slot++];
        if (vxlan > 0) writeVxlanHeaders(bytes, dat, opts.vni, opts.vtepMac, peer.mac, ETHERTYPE_IPV4);
        this.datagrams.push({ offset: dat, length: vxlan + shape(bytes, dat + vxlan, peer.pod, OWN_POD, i), peer: k, v6: false });
      });
      shapes6.forEach((shape, i) => {
        const at = this.pool.packetOffsets[slot++];
        bytes.fill(0, at, at + vnet);
        this.frames.push({ offset: at, length: vnet + shape(bytes, at + vnet, OWN_POD6, peer.pod6, i) });
        const dat = this.pool.packetOffsets[slot++];
        if (vxlan > 0) writeVxlanHeaders(bytes, dat, opts.vni, opts.vtepMac, peer.mac6, ETHERTYPE_IPV6);
        this.datagrams.push({ offset: dat, length: vxlan + shape(bytes, dat + vxlan, peer.pod6, OWN_POD6, i), peer: k, v6: peer6Fd >= 0 && overIpv6Underlay(k) });
      });
    });
    if (dualStack) {
      // One in the cycle of frames: about one packet in 150.
      const at = this.pool.packetOffsets[slot++];
      bytes.fill(0, at, at + vnet);
      this.unleasedFrame = this.frames.length;
      this.frames.push({ offset: at, length: vnet + buildKernelMldReport(bytes, at + vnet) });
    }
    this.bind = new KernelBind({
      receiveFd: peerFds[0],
      sendFds: peerFds,
      pool: this.pool,
      firstSlot: slot,
      batchSize: 2,
      gro: false,
      gso: false,
      maxMessages: 1,
      maxPieces: 1,
      counters: new Float64Array(COUNTERS_PER_WORKER),
      ...(peer6Fd >= 0 ? { receiveFd6: peer6Fd, sendFds6: [peer6Fd] } : {}),
    });
  }

  writeToTun(n: number, turn: number): number {
    let sent = 0;
    const address = this.pool.memory.address;
    for (let i = 0; i < n; i++) {
      const k = (turn * 7 + i) % this.frames.length;
      const f = this.frames[k];
      if (libc.write(this.testFd, address + f.offset, f.length) !== f.length) continue;
      if (k === this.unleasedFrame) this.unleasedSent++;
      else sent++;
    }
    return sent;
  }

  sendToAgent(n: number, turn: number, agentPort: number): number {
    const batch = this.batch;
    let sent = 0;
    for (let i = 0; i < n; i++) {
      const d = this.datagrams[(turn * 3 + i) % this.datagrams.length];
      batch.reset();
      batch.begin(LOOPBACK, d.v6 ? this.agentPort6 : agentPort, 0, 1);
      if (d.v6) batch.setPeer6(IPV6_LOOPBACK_WORDS, 0);
      batch.add(d.offset, d.length);
      batch.end();
      // The IPv6 sender comes after the IPv4 ones.
      if (this.bind.send(d.v6 ? this.peerFds.length : d.peer, batch, 0) === 1) sent++;
    }
    return sent;
  }

  drain(): void {
    const at = this.scratch.address;
    while (libc.read(this.testFd, at, 70000) >= 0);
    for (const fd of this.peerFds) while (libc.read(fd, at, 70000) >= 0);
    if (this.peer6Fd >= 0) while (libc.read(this.peer6Fd, at, 70000) >= 0);
  }
}

/** The TCP or UDP header and payload of a made-up packet at l4, checksum left zero; returns where the checksum goes. */
function writeTransportHeader(b: Uint8Array, l4: number, protocol: number, payload: number, seq: number): number {
  const header = protocol === IP_PROTOCOL_TCP ? 20 : 8;
  b.fill(0, l4, l4 + header);
  for (let i = 0; i < payload; i++) b[l4 + header + i] = (i + seq) & 0xff;
  write16(b, l4, 40000 + (seq & 7));
  write16(b, l4 + 2, 5201);
  if (protocol !== IP_PROTOCOL_TCP) {
    write16(b, l4 + 4, header + payload);
    return l4 + 6;
  }
  write32(b, l4 + 4, 1000 + seq * 1448);
  write32(b, l4 + 8, 1);
  b[l4 + 12] = 5 << 4;
  b[l4 + 13] = payload > 0 ? 0x18 : 0x10; // PSH+ACK or ACK
  write16(b, l4 + 14, 65535);
  return l4 + 16;
}

/** A TCP (no payload bytes beyond `payload`, ACK set) or UDP packet with correct checksums. */
function buildTransport(b: Uint8Array, at: number, src: number, dst: number, protocol: number, payload: number, seq: number): number {
  const l4 = at + IPV4_MIN_HEADER;
  const header = protocol === IP_PROTOCOL_TCP ? 20 : 8;
  const l4Length = header + payload;
  const checksumAt = writeTransportHeader(b, l4, protocol, payload, seq);
  const sum = internetChecksum(b, l4, l4Length, pseudoHeaderSum(src, dst, protocol, l4Length));
  write16(b, checksumAt, protocol === IP_PROTOCOL_UDP && sum === 0 ? 0xffff : sum);
  buildIPv4Header(b, at, IPV4_MIN_HEADER + l4Length, seq & 0xffff, IPV4_DEFAULT_TTL, protocol, src, dst, true);
  return IPV4_MIN_HEADER + l4Length;
}

/** buildTransport over IPv6: the same TCP or UDP header, checksummed over IPv6's pseudo-header. */
function buildTransport6(b: Uint8Array, at: number, src: Uint8Array, dst: Uint8Array, protocol: number, payload: number, seq: number): number {
  const l4 = at + IPV6_HEADER;
  const header = protocol === IP_PROTOCOL_TCP ? 20 : 8;
  const l4Length = header + payload;
  buildIPv6Header(b, at, l4Length, protocol, IPV6_DEFAULT_HOP_LIMIT, src, 0, dst, 0);
  const checksumAt = writeTransportHeader(b, l4, protocol, payload, seq);
  const sum = internetChecksum(b, l4, l4Length, ipv6PseudoHeaderSum(b, at, protocol, l4Length));
  write16(b, checksumAt, protocol === IP_PROTOCOL_UDP && sum === 0 ? 0xffff : sum);
  return IPV6_HEADER + l4Length;
}

/**
 * The MLDv2 report Linux sends when flannel0 (IPv6 on, no link-local
 * address: addrgenmode none) joins ff02::2, as captured on the agent's TUN at
 * start: from ::, to ff02::16, hop limit 1, a hop-by-hop header with the
 * router alert option, one CHANGE_TO_EXCLUDE record for ff02::2. Returns its
 * length (76).
 */
export function buildKernelMldReport(b: Uint8Array, at: number): number {
  const MLD_LENGTH = 8 + 4 + 16;
  const payload = 8 + MLD_LENGTH;
  const allMldv2Routers = Uint8Array.of(0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x16);
  buildIPv6Header(b, at, payload, IPV6_NEXT_HEADER_HOP_BY_HOP, 1, new Uint8Array(16), 0, allMldv2Routers, 0);
  const hbh = at + IPV6_HEADER;
  // Next header ICMPv6, length 0 (8 bytes), router alert (type 5, value 0: MLD), PadN of 0 bytes.
  b.set([IP_PROTOCOL_ICMPV6, 0, 5, 2, 0, 0, 1, 0], hbh);
  const mld = hbh + 8;
  b.fill(0, mld, mld + MLD_LENGTH);
  b[mld] = MLDV2_REPORT;
  b[mld + 7] = 1; // one record
  b[mld + 8] = MLD_CHANGE_TO_EXCLUDE;
  b[mld + 12] = 0xff;
  b[mld + 13] = 0x02;
  b[mld + 27] = 0x02; // ff02::2, all routers
  const sum = internetChecksum(b, mld, MLD_LENGTH, ipv6PseudoHeaderSum(b, at, IP_PROTOCOL_ICMPV6, MLD_LENGTH));
  write16(b, mld + 2, sum);
  return IPV6_HEADER + payload;
}
const IPV6_NEXT_HEADER_HOP_BY_HOP = 0;
const MLDV2_REPORT = 143;
const MLD_CHANGE_TO_EXCLUDE = 4;

/** What a peer VTEP puts in front of the inner packet: VXLAN header, then Ethernet to our VTEP MAC (one for both families). */
function writeVxlanHeaders(b: Uint8Array, at: number, vni: number, ourMac: Uint8Array, theirMac: Uint8Array, ethertype: number): void {
  b.fill(0, at, at + VXLAN_HEADER);
  b[at] = VXLAN_FLAG_VNI;
  b[at + 4] = vni >>> 16;
  b[at + 5] = (vni >>> 8) & 0xff;
  b[at + 6] = vni & 0xff;
  const eth = at + VXLAN_HEADER;
  b.set(ourMac, eth);
  b.set(theirMac, eth + 6);
  b[eth + 12] = ethertype >>> 8;
  b[eth + 13] = ethertype & 0xff;
}
