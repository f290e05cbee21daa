// The rehearsal: before a worker says it is ready, it forwards a few thousand
// made-up packets each way through the very classes it is about to run
// (Forwarder, KernelTun, KernelBind, the encapsulation, WorkerLoop.turn), on
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
import { MessageChannel } from 'node:worker_threads';
import * as libc from './libc.js';
import { Forwarder } from './forwarder.js';
import { WorkerLoop } from './worker-loop.js';
import { KernelBind } from './kernel-bind.js';
import { WorkerMemory } from './worker-memory.js';
import { SendBatch } from './batches.js';
import { buildKernelDevices, type DeviceOptions } from './worker-devices.js';
import { openWorkerSockets, closeWorkerSockets } from './worker-sockets.js';
import { COUNTERS_PER_WORKER, Counter, DROPS_BASE } from './worker-stats.js';
import { buildLeaseTableSnapshot } from '../control/lease-table.js';
import { makeCidr, parseIPv4 } from '../control/ipv4-address.js';
import { formatSubnetKey, type Lease } from '../control/lease.js';
import { buildIcmpEcho, ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY } from '../encap/icmp.js';
import { buildIPv4Header, IP_PROTOCOL_TCP, IP_PROTOCOL_UDP, IPV4_DEFAULT_TTL, IPV4_MIN_HEADER } from '../encap/ipv4.js';
import { internetChecksum, pseudoHeaderSum } from '../encap/checksum.js';
import { write16, write32 } from '../encap/bytes.js';
import { VIRTIO_NET_HDR_LEN } from '../encap/virtio-net-header.js';
import { VXLAN_FLAG_VNI, VXLAN_HEADER, VXLAN_HEADROOM, ETHERTYPE_IPV4, formatMac } from '../encap/vxlan.js';

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
}

export interface RehearsalResult {
  /** Packets the rehearsal sent each way, and what came out the other side. */
  outboundSent: number;
  outboundForwarded: number;
  inboundSent: number;
  inboundForwarded: number;
  /** Counted drops of the rehearsal forwarder (none expected). */
  drops: number;
  ms: number;
}

/** Enough turns for V8 to optimise every step of both paths (measured: docs/design.md). */
export const REHEARSAL_TURNS = 1500;
const LOOPBACK = 0x7f000001;
// Addresses from the benchmarking range (RFC 2544): they never leave the
// socketpair and loopback, and cannot be mistaken for a cluster's.
const OWN_SUBNET = parseIPv4('198.18.1.0');
const PEER_SUBNET = parseIPv4('198.18.2.0');
const OWN_POD = OWN_SUBNET + 5;
const PEER_POD = PEER_SUBNET + 7;
const PEER_MAC = new Uint8Array([0x02, 0x52, 0x45, 0x48, 0x52, 0x53]);
/** Packets per turn, in a repeating pattern: mostly single packets, as latency-bound traffic is, and some bursts. */
const BURSTS = [1, 1, 2, 1, 8, 1, 1, 16];

/**
 * Forwards `turns` rounds of packets each way through a private copy of the
 * worker's path on `memory`, then closes what it opened. Throws only if a
 * socket cannot be opened; what it forwarded is in the result.
 */
export function rehearse(opts: RehearsalOptions, memory: WorkerMemory): RehearsalResult {
  const t0 = performance.now();
  const turns = opts.turns ?? REHEARSAL_TURNS;
  const counters = new Float64Array(COUNTERS_PER_WORKER);
  const [tunFd, testFd] = libc.socketpair(libc.AF_UNIX, libc.SOCK_DGRAM | libc.SOCK_NONBLOCK | libc.SOCK_CLOEXEC);
  const opened: Array<() => void> = [() => libc.close(tunFd), () => libc.close(testFd)];
  const channel = new MessageChannel();
  opened.push(() => channel.port1.close());
  try {
    const agent = openWorkerSockets({
      bindAddress: LOOPBACK,
      port: 0,
      socketBufferBytes: 4 << 20,
      offload: opts.offload,
      vxlan: opts.backend === 'vxlan' ? { sourcePorts: opts.sendSockets, udpChecksum: opts.udpChecksum } : undefined,
    });
    opened.push(() => closeWorkerSockets(agent));
    const peer = openWorkerSockets({ bindAddress: LOOPBACK, port: 0, socketBufferBytes: 4 << 20, offload: false });
    opened.push(() => closeWorkerSockets(peer));
    const { tun, bind } = buildKernelDevices(
      { ...opts, udpGro: agent.udpGro, udpGso: opts.udpGso && agent.udpGso },
      { tunFd, udpFd: agent.udpFd, sendFds: agent.sendFds },
      memory,
      counters,
    );
    const leases: Lease[] = [lease(OWN_SUBNET, LOOPBACK + 1, opts.vtepMac), lease(PEER_SUBNET, LOOPBACK, PEER_MAC)];
    const forwarder = new Forwarder(
      {
        workerIndex: 0,
        leases: buildLeaseTableSnapshot(leases, 0),
        counters,
        controlPort: channel.port2,
        controlSequence: new Int32Array(new SharedArrayBuffer(4)),
        backend: opts.backend,
        vni: opts.vni,
        vtepMac: opts.vtepMac,
        peerPort: peer.sendPorts[0],
        mtu: opts.mtu,
        pathMtu: opts.pathMtu,
        ownNetwork: OWN_SUBNET,
        ownMask: 0xffffff00,
        node: 'rehearsal',
        publicIp: LOOPBACK,
        sendPorts: agent.sendPorts,
      },
      tun,
      bind,
      memory,
      () => {},
    );
    const loop = new WorkerLoop(forwarder, { tunFd, udpFd: agent.udpFd, wakeFd: agent.wakeFd, busyPollUs: 0, counters });
    const driver = new Driver(opts, testFd, peer.udpFd);
    const agentPort = portOf(agent.udpFd);
    let outboundSent = 0;
    let inboundSent = 0;
    for (let t = 0; t < turns; t++) {
      const n = BURSTS[t % BURSTS.length];
      outboundSent += driver.writeToTun(n, t);
      inboundSent += driver.sendToAgent(n, t, agentPort);
      // Both are queued in the kernel before the turn: poll() returns at once.
      loop.turn(100);
      driver.drain();
    }
    let drops = 0;
    for (let r = 1; r < COUNTERS_PER_WORKER - DROPS_BASE; r++) drops += counters[DROPS_BASE + r];
    return {
      outboundSent,
      outboundForwarded: counters[Counter.UdpSentPackets],
      inboundSent,
      // A merged write (GRO) carries several of them.
      inboundForwarded: counters[Counter.TunWrittenPackets] - counters[Counter.CoalescedWrites] + counters[Counter.SegmentsCoalesced],
      drops,
      ms: Math.round(performance.now() - t0),
    };
  } finally {
    for (const close of opened.reverse()) close();
  }
}

function lease(network: number, publicIp: number, mac: Uint8Array): Lease {
  const subnet = makeCidr(network, 24);
  return { subnet, publicIp, backendType: 'rehearsal', backendData: { VNI: 1, VtepMAC: formatMac(mac) }, key: formatSubnetKey(subnet) };
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
 * agent's socket as a peer node would, and drains what the agent forwarded.
 */
class Driver {
  private readonly mem: WorkerMemory;
  private readonly frames: { offset: number; length: number }[] = [];
  private readonly datagrams: { offset: number; length: number }[] = [];
  private readonly bind: KernelBind;
  private readonly batch = new SendBatch(16, 16);
  private readonly scratch = new libc.NativeMemory(70000);

  constructor(
    opts: RehearsalOptions,
    private readonly testFd: number,
    private readonly peerFd: number,
  ) {
    this.mem = new WorkerMemory(16, false, 2048);
    this.bind = new KernelBind({
      receiveFd: peerFd,
      sendFds: [peerFd],
      pool: this.mem.pool,
      firstSlot: this.mem.firstReceiveSlot,
      batchSize: 16,
      gro: false,
      gso: false,
      maxMessages: 16,
      maxPieces: 16,
      counters: new Float64Array(COUNTERS_PER_WORKER),
    });
    const bytes = this.mem.pool.bytes;
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
    // Slots 0-4: TUN frames (our pod → the peer's); 5-9: datagrams (the peer's pod → ours).
    shapes.forEach((shape, i) => {
      const at = this.mem.readSlots[i];
      bytes.fill(0, at, at + vnet);
      this.frames.push({ offset: at, length: vnet + shape(bytes, at + vnet, OWN_POD, PEER_POD, i) });
      const dat = this.mem.readSlots[5 + i];
      if (vxlan > 0) writeVxlanHeaders(bytes, dat, opts.vni, opts.vtepMac);
      this.datagrams.push({ offset: dat, length: vxlan + shape(bytes, dat + vxlan, PEER_POD, OWN_POD, i) });
    });
  }

  writeToTun(n: number, turn: number): number {
    let sent = 0;
    const address = this.mem.pool.memory.address;
    for (let i = 0; i < n; i++) {
      const f = this.frames[(turn + i) % this.frames.length];
      if (libc.write(this.testFd, address + f.offset, f.length) === f.length) sent++;
    }
    return sent;
  }

  sendToAgent(n: number, turn: number, agentPort: number): number {
    const batch = this.batch;
    batch.reset();
    for (let i = 0; i < n; i++) {
      const d = this.datagrams[(turn + i) % this.datagrams.length];
      batch.begin(LOOPBACK, agentPort, 0, 1);
      batch.add(d.offset, d.length);
      batch.end();
    }
    return this.bind.send(0, batch, 0);
  }

  drain(): void {
    const at = this.scratch.address;
    while (libc.read(this.testFd, at, 70000) >= 0);
    while (libc.read(this.peerFd, at, 70000) >= 0);
  }
}

/** A TCP (no payload bytes beyond `payload`, ACK set) or UDP packet with correct checksums. */
function buildTransport(b: Uint8Array, at: number, src: number, dst: number, protocol: number, payload: number, seq: number): number {
  const l4 = at + IPV4_MIN_HEADER;
  const header = protocol === IP_PROTOCOL_TCP ? 20 : 8;
  const l4Length = header + payload;
  b.fill(0, l4, l4 + header);
  for (let i = 0; i < payload; i++) b[l4 + header + i] = (i + seq) & 0xff;
  write16(b, l4, 40000 + (seq & 7));
  write16(b, l4 + 2, 5201);
  let checksumAt: number;
  if (protocol === IP_PROTOCOL_TCP) {
    write32(b, l4 + 4, 1000 + seq * 1448);
    write32(b, l4 + 8, 1);
    b[l4 + 12] = 5 << 4;
    b[l4 + 13] = payload > 0 ? 0x18 : 0x10; // PSH+ACK or ACK
    write16(b, l4 + 14, 65535);
    checksumAt = l4 + 16;
  } else {
    write16(b, l4 + 4, l4Length);
    checksumAt = l4 + 6;
  }
  const sum = internetChecksum(b, l4, l4Length, pseudoHeaderSum(src, dst, protocol, l4Length));
  write16(b, checksumAt, protocol === IP_PROTOCOL_UDP && sum === 0 ? 0xffff : sum);
  buildIPv4Header(b, at, IPV4_MIN_HEADER + l4Length, seq & 0xffff, IPV4_DEFAULT_TTL, protocol, src, dst, true);
  return IPV4_MIN_HEADER + l4Length;
}

/** What a peer VTEP puts in front of the inner packet: VXLAN header, then Ethernet to our VTEP MAC. */
function writeVxlanHeaders(b: Uint8Array, at: number, vni: number, ourMac: Uint8Array): void {
  b.fill(0, at, at + VXLAN_HEADER);
  b[at] = VXLAN_FLAG_VNI;
  b[at + 4] = vni >>> 16;
  b[at + 5] = (vni >>> 8) & 0xff;
  b[at + 6] = vni & 0xff;
  const eth = at + VXLAN_HEADER;
  b.set(ourMac, eth);
  b.set(PEER_MAC, eth + 6);
  b[eth + 12] = ETHERTYPE_IPV4 >>> 8;
  b[eth + 13] = ETHERTYPE_IPV4 & 0xff;
}
