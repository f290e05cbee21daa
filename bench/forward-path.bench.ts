// The forwarder's whole per-packet decision path for one plain (non-offload)
// packet, without the syscalls and FFI calls around it, next to the
// encapsulation step alone (what bench/encap.bench.ts measures), in one run:
//
//   outbound: validate, size check, lease lookup (longest prefix), path-MTU
//             check, TTL − 1 with the checksum fix, the peer's public IP,
//             encapsulate, counters
//   inbound:  who sent it (lease by public IP), decapsulate, validate, inner
//             source in that lease's subnet (anti-spoofing), destination in
//             our subnet, TTL − 1, total length, counters
//
// Written against the public functions of src/encap and src/control, in the
// order src/dataplane/forwarder.ts calls them (forwardFromTun and
// receiveDatagram, --offload off): when the forwarder changes, this file must
// follow it. Not included: read/sendmmsg/recvmmsg/write themselves, the FFI
// transition to make them (design.md: ~180-270 ns per call), filling the
// mmsghdr batch, and the offload path (bench/offload.bench.ts).
// Each task handles BATCH packets so the timer's own cost does not swamp it.
//
//   npm run build && node dist/bench/forward-path.bench.js

import { Bench } from 'tinybench';
import { buildIcmpEcho } from '../src/encap/icmp.js';
import { validateIPv4, decrementTtl, ipv4TotalLength, ipv4Destination, ipv4Source, ipv4DontFragment, IPV4_OFFSET_TTL } from '../src/encap/ipv4.js';
import { type Encapsulation, UdpEncapsulation } from '../src/encap/encapsulation.js';
import { VxlanEncapsulation, VXLAN_HEADROOM, parseMac } from '../src/encap/vxlan.js';
import { makeCidr, parseIPv4, formatIPv4 } from '../src/control/ipv4-address.js';
import { type Lease, formatSubnetKey } from '../src/control/lease.js';
import { buildLeaseTableSnapshot, LeaseTable } from '../src/control/lease-table.js';

const BATCH = 1024;
const HEADROOM = 32;
const MTU = 1472;
const PATH_MTU = 1472;
const OWN_NETWORK = parseIPv4('10.244.1.0');
const OWN_MASK = 0xffffff00;

/** flannel-shaped leases: node i has 10.244.(i+2).0/24 and public IP 192.0.2.(i+2), with a VTEP MAC for VXLAN. */
function makeTable(count: number): LeaseTable {
  const leases: Lease[] = [];
  for (let i = 0; i < count; i++) {
    const subnet = makeCidr((parseIPv4('10.244.0.0') + ((i + 2) << 8)) >>> 0, 24);
    const publicIp = (parseIPv4('192.0.2.0') + i + 2) >>> 0;
    const mac = `0e:66:75:00:${((i >> 8) & 0xff).toString(16).padStart(2, '0')}:${(i & 0xff).toString(16).padStart(2, '0')}`;
    leases.push({ subnet, publicIp, backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: mac }, key: formatSubnetKey(subnet) });
  }
  return new LeaseTable(buildLeaseTableSnapshot(leases, 1));
}

// Counters, as the forwarder keeps them (a Float64Array slice per worker).
const c = new Float64Array(16);
let sink = 0;

interface Mode {
  encap: Encapsulation;
  /** the receiving node's decoder (VXLAN: addressed to its MAC) */
  peer: Encapsulation;
}

function outboundWholePath(buf: Uint8Array, table: LeaseTable, mode: Mode): void {
  const off = HEADROOM;
  const ttlAt = off + IPV4_OFFSET_TTL;
  for (let i = 0; i < BATCH; i++) {
    const ttl = buf[ttlAt];
    const c0 = buf[ttlAt + 2];
    const c1 = buf[ttlAt + 3];
    c[0]++;
    c[1] += 84;
    if (validateIPv4(buf, off, 84) !== 0) throw new Error('invalid');
    const length = ipv4TotalLength(buf, off);
    if (length > MTU) throw new Error('too big');
    const lease = table.lookup(ipv4Destination(buf, off));
    if (lease < 0) throw new Error('no lease');
    if (length > PATH_MTU && ipv4DontFragment(buf, off)) throw new Error('frag needed');
    if (!decrementTtl(buf, off)) throw new Error('ttl');
    const peer = table.publicIpAt(lease);
    const start = mode.encap.encapsulate(buf, off, length, lease);
    sink += start + peer;
    c[2]++;
    // Put TTL and header checksum back, so every round sees the same valid packet.
    buf[ttlAt] = ttl;
    buf[ttlAt + 2] = c0;
    buf[ttlAt + 3] = c1;
  }
}

function inboundWholePath(buf: Uint8Array, start: number, datagramLength: number, peerIp: number, table: LeaseTable, mode: Mode): void {
  for (let i = 0; i < BATCH; i++) {
    c[3]++;
    c[4] += datagramLength;
    const peer = table.findByPublicIp(peerIp);
    if (peer < 0) throw new Error('unknown peer');
    const inner = mode.peer.decapsulate(buf, start, datagramLength);
    if (inner < 0) throw new Error('decapsulate');
    const innerLength = datagramLength - (inner - start);
    if (validateIPv4(buf, inner, innerLength) !== 0) throw new Error('invalid');
    if (!table.subnetContains(peer, ipv4Source(buf, inner))) throw new Error('spoofed');
    if (((ipv4Destination(buf, inner) & OWN_MASK) >>> 0) !== OWN_NETWORK) throw new Error('not for us');
    const ttlAt = inner + IPV4_OFFSET_TTL;
    const ttl = buf[ttlAt];
    const c0 = buf[ttlAt + 2];
    const c1 = buf[ttlAt + 3];
    if (!decrementTtl(buf, inner)) throw new Error('ttl');
    sink += ipv4TotalLength(buf, inner);
    c[5]++;
    buf[ttlAt] = ttl;
    buf[ttlAt + 2] = c0;
    buf[ttlAt + 3] = c1;
  }
}

/** What bench/encap.bench.ts times: validate, TTL, encapsulate (outbound); decapsulate, validate (inbound). */
function outboundEncapOnly(buf: Uint8Array, mode: Mode): void {
  const off = HEADROOM;
  const ttlAt = off + IPV4_OFFSET_TTL;
  for (let i = 0; i < BATCH; i++) {
    const ttl = buf[ttlAt];
    const c0 = buf[ttlAt + 2];
    const c1 = buf[ttlAt + 3];
    if (validateIPv4(buf, off, 84) !== 0) throw new Error('invalid');
    const total = ipv4TotalLength(buf, off);
    decrementTtl(buf, off);
    sink += mode.encap.encapsulate(buf, off, total, 0);
    buf[ttlAt] = ttl;
    buf[ttlAt + 2] = c0;
    buf[ttlAt + 3] = c1;
  }
}

function inboundEncapOnly(buf: Uint8Array, start: number, datagramLength: number, mode: Mode): void {
  for (let i = 0; i < BATCH; i++) {
    const inner = mode.peer.decapsulate(buf, start, datagramLength);
    if (inner < 0 || validateIPv4(buf, inner, datagramLength - (inner - start)) !== 0) throw new Error('invalid');
    sink += inner;
  }
}

const bench = new Bench({ time: 500 });
for (const leaseCount of [10, 10_000]) {
  const table = makeTable(leaseCount);
  // The packet: pod 10.244.1.2 (ours) ↔ a pod of the last lease; a 64-byte ping (84 bytes of IPv4).
  const remotePod = (table.subnetNetworkAt(leaseCount - 1) + 2) >>> 0;
  const remoteNode = table.publicIpAt(leaseCount - 1) >>> 0;
  for (const name of ['UDP', 'VXLAN'] as const) {
    const local = parseMac('0e:66:75:ff:ff:01');
    const mode: Mode =
      name === 'UDP'
        ? { encap: new UdpEncapsulation(), peer: new UdpEncapsulation() }
        : { encap: new VxlanEncapsulation(1, local), peer: new VxlanEncapsulation(1, local) };
    if (mode.encap instanceof VxlanEncapsulation) mode.encap.peerMacs = table.vtepMacs;
    const out = new Uint8Array(HEADROOM + 2048);
    buildIcmpEcho(out, HEADROOM, parseIPv4('10.244.1.2'), remotePod, 8, 1, 1, 56);
    // Inbound: the reply from the remote pod, as the peer would send it (VXLAN: addressed to our MAC).
    const inb = new Uint8Array(HEADROOM + 2048);
    buildIcmpEcho(inb, HEADROOM, remotePod, parseIPv4('10.244.1.2'), 0, 1, 1, 56);
    let start = HEADROOM;
    let datagram = 84;
    if (mode.peer instanceof VxlanEncapsulation) {
      const sender = new VxlanEncapsulation(1, parseMac('0e:66:75:00:00:09'));
      sender.peerMacs = local;
      start = sender.encapsulate(inb, HEADROOM, 84, 0);
      datagram = 84 + VXLAN_HEADROOM;
    }
    const tag = `${name}, ${leaseCount} leases`;
    bench
      .add(`outbound ${tag}: encapsulation step only ×${BATCH}`, () => outboundEncapOnly(out, mode))
      .add(`outbound ${tag}: whole path ×${BATCH}`, () => outboundWholePath(out, table, mode))
      .add(`inbound ${tag}: decapsulation step only ×${BATCH}`, () => inboundEncapOnly(inb, start, datagram, mode))
      .add(`inbound ${tag}: whole path ×${BATCH}`, () => inboundWholePath(inb, start, datagram, remoteNode, table, mode));
    console.log(`${tag}: ${formatIPv4(parseIPv4('10.244.1.2'))} ↔ ${formatIPv4(remotePod)} via node ${formatIPv4(remoteNode)}`);
  }
}

await bench.run();
// The median of many rounds: on a shared machine the mean carries every preemption.
console.log('ns per packet (median of the rounds), and the whole path over the step alone:');
const ns = new Map<string, number>();
for (const task of bench.tasks) {
  const result = task.result;
  if (result && 'latency' in result) ns.set(task.name.replace(/ ×\d+$/, ''), (result.latency.p50! * 1e6) / BATCH);
}
for (const [name, value] of ns) {
  if (!name.endsWith('whole path')) continue;
  const step = ns.get(name.replace('whole path', name.startsWith('outbound') ? 'encapsulation step only' : 'decapsulation step only'))!;
  console.log(`  ${name.padEnd(44)} ${value.toFixed(1).padStart(6)} ns   (step alone ${step.toFixed(1).padStart(5)} ns, ratio ${(value / step).toFixed(2)})`);
}
if (sink === 42) console.log(''); // keep the work observable
