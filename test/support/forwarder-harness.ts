// The forwarding core of one worker on in-memory devices: the real
// Forwarder, the real frame handling (split, merge), the real send policy,
// with MemoryTun and MemoryBind standing in for the kernel. No root, no
// threads: a test queues frames and datagrams, calls drive() or one path, and
// reads what was written, sent and counted.
import { MessageChannel } from 'node:worker_threads';
import { Forwarder, type ForwarderConfig } from '../../src/dataplane/forwarder.js';
import { MemoryTun } from '../../src/dataplane/memory-tun.js';
import { MemoryBind } from '../../src/dataplane/memory-bind.js';
import { WorkerMemory } from '../../src/dataplane/worker-memory.js';
import { COUNTERS_PER_WORKER, Counter, DROPS_BASE } from '../../src/dataplane/worker-stats.js';
import type { WorkerControlMessage, WorkerReport } from '../../src/dataplane/worker-messages.js';
import type { CaptureConfig } from '../../src/dataplane/forwarder-observer.js';
import { DropReason } from '../../src/encap/drop-reasons.js';
import { VXLAN_HEADROOM } from '../../src/encap/vxlan.js';
import { buildLeaseTableSnapshot, type LeaseTableSnapshot } from '../../src/control/lease-table.js';
import { parseCidr, parseIPv4 } from '../../src/control/ipv4-address.js';
import { parseCidr6, parseIPv6 } from '../../src/control/ipv6-address.js';
import { type Lease, formatSubnetKey } from '../../src/control/lease.js';
import { buildIPv4Header, IP_PROTOCOL_TCP, IP_PROTOCOL_UDP } from '../../src/encap/ipv4.js';
import { internetChecksum, pseudoHeaderSum } from '../../src/encap/checksum.js';
import { write16, write32 } from '../../src/encap/bytes.js';
import { VirtioNetHeader, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_LEN } from '../../src/encap/virtio-net-header.js';

export const ip = parseIPv4;
/** This node: subnet 10.244.1.0/24, public IP 192.0.2.1. Its peer: 10.244.2.0/24 at 192.0.2.2. */
export const OWN_POD = ip('10.244.1.5');
export const PEER_POD = ip('10.244.2.7');
export const OWN_PUBLIC = ip('192.0.2.1');
export const PEER_PUBLIC = ip('192.0.2.2');
export const PORT = 8285;
export const MTU = 1472;
export const PATH_MTU = 1472;

export function leaseOf(cidr: string, publicIp: string, backendData: unknown = null): Lease {
  const subnet = parseCidr(cidr);
  return { subnet, publicIp: parseIPv4(publicIp), backendType: 'udp', backendData, key: formatSubnetKey(subnet) };
}

export const DEFAULT_LEASES = [leaseOf('10.244.1.0/24', '192.0.2.1'), leaseOf('10.244.2.0/24', '192.0.2.2')];

export interface HarnessOptions {
  vnet?: boolean;
  uso?: boolean;
  backend?: 'udp' | 'vxlan';
  batchSize?: number;
  leases?: Lease[];
  gso?: boolean;
  senders?: number;
  mtu?: number;
  pathMtu?: number;
  /** Dual-stack: this node's IPv6 subnet, e.g. fd00:10:244:1::/64. */
  ipv6Subnet?: string;
  /** The IPv6 underlay: this many more senders (the last ones), and its path MTU. */
  senders6?: number;
  pathMtu6?: number;
  /** This node's public IPv6 (the IPv6 underlay's outer source in traces and captures). */
  publicIpv6?: string;
  /** --capture: the worker writes its pcap files there. */
  capture?: CaptureConfig;
}

export class Harness {
  readonly counters = new Float64Array(COUNTERS_PER_WORKER);
  readonly memory: WorkerMemory;
  readonly tun: MemoryTun;
  readonly bind: MemoryBind;
  readonly forwarder: Forwarder;
  readonly reports: WorkerReport[] = [];
  private readonly channel = new MessageChannel();
  private readonly sequence = new Int32Array(new SharedArrayBuffer(4));
  private version = 1;

  constructor(readonly opts: HarnessOptions = {}) {
    const vnet = opts.vnet ?? false;
    const backend = opts.backend ?? 'udp';
    const batchSize = opts.batchSize ?? 8;
    this.memory = new WorkerMemory(batchSize, vnet, opts.mtu ?? MTU);
    this.tun = new MemoryTun({
      pool: this.memory.pool,
      readSlots: this.memory.readSlots,
      vnetHeader: vnet,
      uso: opts.uso ?? false,
      verifyBeforeMerge: backend === 'vxlan',
      txArenaOffset: this.memory.txArenaOffset,
      txArenaSegments: this.memory.txArenaSegments,
      rxArenaOffset: this.memory.rxArenaOffset,
      rxArenaWrites: this.memory.rxArenaWrites,
      segmentHeadroom: backend === 'vxlan' ? VXLAN_HEADROOM : 0,
      maxWritePackets: this.memory.maxDatagrams,
      counters: this.counters,
    });
    const senders6 = opts.senders6 ?? 0;
    this.bind = new MemoryBind(this.memory.pool, this.memory.receiveSlots, (opts.senders ?? 1) + senders6, opts.gso ?? vnet, senders6);
    const cfg: ForwarderConfig = {
      workerIndex: 0,
      leases: this.snapshot(opts.leases ?? DEFAULT_LEASES),
      counters: this.counters,
      controlPort: this.channel.port2,
      controlSequence: this.sequence,
      backend,
      vni: 1,
      vtepMac: Uint8Array.of(2, 0, 0, 0, 0, 1),
      peerPort: PORT,
      mtu: opts.mtu ?? MTU,
      pathMtu: opts.pathMtu ?? PATH_MTU,
      ...(opts.pathMtu6 !== undefined ? { pathMtu6: opts.pathMtu6 } : {}),
      ownNetwork: ip('10.244.1.0'),
      ownMask: 0xffffff00,
      ...(opts.ipv6Subnet !== undefined ? { ownNetwork6: parseCidr6(opts.ipv6Subnet).network, ownPrefix6: parseCidr6(opts.ipv6Subnet).prefixLength } : {}),
      node: '10.244.1.0-24',
      publicIp: OWN_PUBLIC,
      sendPorts: [PORT],
      ...(opts.publicIpv6 !== undefined ? { publicIpv6: parseIPv6(opts.publicIpv6) } : {}),
      ...(opts.capture !== undefined ? { capture: opts.capture } : {}),
    };
    this.forwarder = new Forwarder(cfg, this.tun, this.bind, this.memory, (r) => this.reports.push(r));
  }

  snapshot(leases: Lease[]): LeaseTableSnapshot {
    return buildLeaseTableSnapshot(leases, this.version++);
  }

  /** Posts a control message as the main thread does: the message, then the sequence bump. */
  control(msg: WorkerControlMessage): void {
    this.channel.port1.postMessage(msg);
    Atomics.add(this.sequence, 0, 1);
  }

  count(name: keyof typeof Counter): number {
    return this.counters[Counter[name]];
  }

  drops(reason: keyof typeof DropReason): number {
    return this.counters[DROPS_BASE + DropReason[reason]];
  }

  /** Every drop counter that is not zero, by reason code. */
  nonZeroDrops(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [name, code] of Object.entries(DropReason)) if (code > 0 && this.counters[DROPS_BASE + code] > 0) out[name] = this.counters[DROPS_BASE + code];
    return out;
  }

  close(): void {
    this.forwarder.close();
    this.channel.port1.close();
    this.channel.port2.close();
  }
}

export interface PacketSpec {
  src?: number;
  dst?: number;
  ttl?: number;
  df?: boolean;
  protocol?: number;
  payload?: number;
  id?: number;
  seq?: number;
  sport?: number;
  dport?: number;
  /** TCP flags (ACK by default). */
  flags?: number;
}

/** A valid IPv4 packet: TCP (default, with a correct checksum), UDP, or any other protocol with a zero payload. */
export function packet(s: PacketSpec = {}): Uint8Array {
  const protocol = s.protocol ?? IP_PROTOCOL_TCP;
  const payload = s.payload ?? 100;
  const l4Header = protocol === IP_PROTOCOL_TCP ? 20 : protocol === IP_PROTOCOL_UDP ? 8 : 0;
  const total = 20 + l4Header + payload;
  const b = new Uint8Array(total);
  const src = s.src ?? OWN_POD;
  const dst = s.dst ?? PEER_POD;
  for (let i = 0; i < payload; i++) b[20 + l4Header + i] = (i * 7 + (s.seq ?? 0)) & 0xff;
  if (protocol === IP_PROTOCOL_TCP) {
    write16(b, 20, s.sport ?? 40000);
    write16(b, 22, s.dport ?? 5201);
    write32(b, 24, s.seq ?? 1000);
    write32(b, 28, 1);
    b[32] = 5 << 4;
    b[33] = s.flags ?? 0x10;
    write16(b, 34, 65535);
    write16(b, 36, internetChecksum(b, 20, total - 20, pseudoHeaderSum(src, dst, protocol, total - 20)));
  } else if (protocol === IP_PROTOCOL_UDP) {
    write16(b, 20, s.sport ?? 40000);
    write16(b, 22, s.dport ?? 5201);
    write16(b, 24, total - 20);
    write16(b, 26, internetChecksum(b, 20, total - 20, pseudoHeaderSum(src, dst, protocol, total - 20)) || 0xffff);
  }
  buildIPv4Header(b, 0, total, s.id ?? 1, s.ttl ?? 64, protocol, src, dst, s.df ?? true);
  return b;
}

/** A frame for a TUN with vnet headers: a zero header (no offload) in front of the packet. */
export function plainFrame(p: Uint8Array): Uint8Array {
  const f = new Uint8Array(VIRTIO_NET_HDR_LEN + p.length);
  f.set(p, VIRTIO_NET_HDR_LEN);
  return f;
}

/** A TSO super-packet frame: `payload` bytes of TCP payload to be cut at `mss`. */
export function superFrame(mss: number, payload: number, s: PacketSpec = {}): Uint8Array {
  const p = packet({ ...s, payload });
  const vh = new VirtioNetHeader();
  vh.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
  vh.gsoType = VIRTIO_NET_HDR_GSO_TCPV4;
  vh.hdrLen = 40;
  vh.gsoSize = mss;
  vh.csumStart = 20;
  vh.csumOffset = 16;
  const f = new Uint8Array(VIRTIO_NET_HDR_LEN + p.length);
  vh.write(f, 0);
  f.set(p, VIRTIO_NET_HDR_LEN);
  return f;
}

/** Whether an IPv4 packet's header checksum and (TCP/UDP) checksum verify. */
export function checksumsVerify(p: Uint8Array): boolean {
  const ihl = (p[0] & 0x0f) * 4;
  if (internetChecksum(p, 0, ihl) !== 0) return false;
  const protocol = p[9];
  if (protocol !== IP_PROTOCOL_TCP && protocol !== IP_PROTOCOL_UDP) return true;
  const src = (p[12] << 24) | (p[13] << 16) | (p[14] << 8) | p[15];
  const dst = (p[16] << 24) | (p[17] << 16) | (p[18] << 8) | p[19];
  return internetChecksum(p, ihl, p.length - ihl, pseudoHeaderSum(src >>> 0, dst >>> 0, protocol, p.length - ihl)) === 0;
}
