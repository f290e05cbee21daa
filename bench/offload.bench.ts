// Microbenchmarks for the TUN offload path (src/encap/segmentation.ts,
// coalescing.ts, virtio-net-header.ts): splitting a 64 KB-class TSO
// super-packet into MSS 1420 segments, coalescing 45 such segments back
// (over IPv4, and the same TCP segments over IPv6), coalescing 64 small UDP datagrams (iperf3 -u -l 64) into one USO write, and
// finishing a partial checksum on a 1500-byte packet.
//
// As in checksum.bench.ts each task runs a batch of calls and reports the
// mean per call through overriddenDuration. Everything lives in one pooled
// ArrayBuffer at unaligned offsets, as in the data plane.
//
// The pool is packet-pool memory (a WebAssembly.Memory, so checksums run in
// wasm SIMD) unless --plain-memory asks for a plain ArrayBuffer (the
// JavaScript checksum); alternate the two to compare them.
//
//   npx tsc -p tsconfig.json && node dist/bench/offload.bench.js [--plain-memory]
import { Bench, type FnReturnedObject } from 'tinybench';
import { onesComplementSum, pseudoHeaderSum } from '../src/encap/checksum.js';
import { allocateChecksumMemory } from '../src/encap/checksum-wasm.js';
import { COALESCE_MAX_WRITE_HEADER, CoalesceBatch } from '../src/encap/coalescing.js';
import { IP_PROTOCOL_TCP, IP_PROTOCOL_UDP } from '../src/encap/ipv4.js';
import { buildIPv6Header, ipv6PseudoHeaderSum, IPV6_HEADER } from '../src/encap/ipv6.js';
import { SegmentList, TCP_FLAG_ACK, TCP_FLAG_PSH, splitSuperPacket } from '../src/encap/segmentation.js';
import {
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_GSO_TCPV4,
  VirtioNetHeader,
  completePartialChecksum,
} from '../src/encap/virtio-net-header.js';

const MSS = 1420;
const SEGMENTS = 45;
const PAYLOAD = SEGMENTS * MSS; // 63 900 B
const IP_HEADER = 20;
const TCP_HEADER = 32; // with the timestamps option, as Linux sends
const HEADERS = IP_HEADER + TCP_HEADER;
const SUPER_LENGTH = HEADERS + PAYLOAD; // 63 952 B
const MTU_PACKET = 1500;
const SRC = 0x0af40105;
const DST = 0x0af40909;
const HEADROOM = 28; // outer IPv4 + UDP in front of each segment
const SPLIT_STRIDE = 160;
const SLOT = 2048; // one received datagram per slot

const PLAIN_MEMORY = process.argv.includes('--plain-memory');
const pool = PLAIN_MEMORY ? new ArrayBuffer(1 << 20) : allocateChecksumMemory(1 << 20);
const buf = new Uint8Array(pool);
const SUPER_OFF = 14;
const SPLIT_ARENA = 70_000;
const RECEIVED = 80_002;
const COALESCE_ARENA = 180_000;
const SMALL_OFF = 200_014;
const UDP_RECEIVED = 210_003;
const UDP_DATAGRAMS = 64;
const UDP_PAYLOAD = 64;
const UDP_LENGTH = IP_HEADER + 8 + UDP_PAYLOAD;
const RECEIVED6 = 400_005;
const SRC6 = Uint8Array.of(0xfd, 0, 0, 0x10, 2, 0x44, 0, 1, 0, 0, 0, 0, 0, 0, 0, 5);
const DST6 = Uint8Array.of(0xfd, 0, 0, 0x10, 2, 0x44, 0, 9, 0, 0, 0, 0, 0, 0, 0, 9);

function write16(at: number, v: number): void {
  buf[at] = v >>> 8;
  buf[at + 1] = v;
}
function write32(at: number, v: number): void {
  buf[at] = v >>> 24;
  buf[at + 1] = v >>> 16;
  buf[at + 2] = v >>> 8;
  buf[at + 3] = v;
}

// A TSO super-packet as the TUN returns it: headers, partial TCP checksum.
for (let i = 0; i < buf.length; i++) buf[i] = (i * 2654435761) >>> 24;
function writeHeaders(off: number, totalLength: number, id: number, seq: number, flags: number): void {
  buf[off] = 0x45;
  buf[off + 1] = 0;
  write16(off + 2, totalLength);
  write16(off + 4, id);
  write16(off + 6, 0x4000);
  buf[off + 8] = 63;
  buf[off + 9] = IP_PROTOCOL_TCP;
  write16(off + 10, 0);
  write32(off + 12, SRC);
  write32(off + 16, DST);
  write16(off + 10, ~onesComplementSum(buf, off, IP_HEADER) & 0xffff);
  const tcp = off + IP_HEADER;
  write16(tcp, 40000);
  write16(tcp + 2, 5201);
  write32(tcp + 4, seq);
  write32(tcp + 8, 1);
  buf[tcp + 12] = (TCP_HEADER / 4) << 4;
  buf[tcp + 13] = flags;
  write16(tcp + 14, 502);
  write16(tcp + 18, 0);
  buf.set([1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2], tcp + 20);
  write16(tcp + 16, pseudoHeaderSum(SRC, DST, IP_PROTOCOL_TCP, totalLength - IP_HEADER));
}
writeHeaders(SUPER_OFF, SUPER_LENGTH, 100, 1_000_000, TCP_FLAG_ACK | TCP_FLAG_PSH);

const vnet = new VirtioNetHeader();
vnet.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
vnet.gsoType = VIRTIO_NET_HDR_GSO_TCPV4;
vnet.hdrLen = HEADERS;
vnet.gsoSize = MSS;
vnet.csumStart = IP_HEADER;
vnet.csumOffset = 16;
const segments = new SegmentList(64);

// The receive side: the same segments as separate datagrams, one per slot.
if (splitSuperPacket(buf, SUPER_OFF, SUPER_LENGTH, vnet, SPLIT_ARENA, SPLIT_STRIDE, HEADROOM, segments) !== SEGMENTS) {
  throw new Error('split failed');
}
for (let i = 0; i < SEGMENTS; i++) {
  const at = RECEIVED + i * SLOT;
  const h = segments.headerOffset[i];
  buf.copyWithin(at, h, h + HEADERS);
  buf.copyWithin(at + HEADERS, segments.payloadOffset[i], segments.payloadOffset[i] + segments.payloadLength[i]);
}
const batch = new CoalesceBatch(64, 16);
const verifyingBatch = new CoalesceBatch(64, 16, true);
function coalesceAll(b: CoalesceBatch): number {
  b.reset();
  for (let i = 0; i < SEGMENTS; i++) b.add(buf, RECEIVED + i * SLOT, HEADERS + MSS);
  return b.finish(buf, COALESCE_ARENA, COALESCE_MAX_WRITE_HEADER + 6);
}
if (coalesceAll(batch) !== 1 || coalesceAll(verifyingBatch) !== 1) throw new Error('coalescing failed');

// The same TCP segments behind an IPv6 header, their checksums redone over IPv6's pseudo-header.
const TCP6_LENGTH = TCP_HEADER + MSS;
for (let i = 0; i < SEGMENTS; i++) {
  const at = RECEIVED6 + i * SLOT;
  buildIPv6Header(buf, at, TCP6_LENGTH, IP_PROTOCOL_TCP, 63, SRC6, 0, DST6, 0);
  const tcp = at + IPV6_HEADER;
  buf.copyWithin(tcp, RECEIVED + i * SLOT + IP_HEADER, RECEIVED + i * SLOT + HEADERS + MSS);
  write16(tcp + 16, 0);
  write16(tcp + 16, ~onesComplementSum(buf, tcp, TCP6_LENGTH, ipv6PseudoHeaderSum(buf, at, IP_PROTOCOL_TCP, TCP6_LENGTH)) & 0xffff);
}
function coalesceAll6(b: CoalesceBatch): number {
  b.reset();
  for (let i = 0; i < SEGMENTS; i++) b.add(buf, RECEIVED6 + i * SLOT, IPV6_HEADER + TCP6_LENGTH);
  return b.finish(buf, COALESCE_ARENA, COALESCE_MAX_WRITE_HEADER + 6);
}
if (coalesceAll6(batch) !== 1 || coalesceAll6(verifyingBatch) !== 1) throw new Error('IPv6 coalescing failed');

// The UDP receive side: 64 datagrams of one flow, 64 B of payload each, full
// checksums and consecutive ids, one per slot.
for (let i = 0; i < UDP_DATAGRAMS; i++) {
  const at = UDP_RECEIVED + i * SLOT;
  buf[at] = 0x45;
  buf[at + 1] = 0;
  write16(at + 2, UDP_LENGTH);
  write16(at + 4, 500 + i);
  write16(at + 6, 0x4000);
  buf[at + 8] = 63;
  buf[at + 9] = IP_PROTOCOL_UDP;
  write16(at + 10, 0);
  write32(at + 12, SRC);
  write32(at + 16, DST);
  write16(at + 10, ~onesComplementSum(buf, at, IP_HEADER) & 0xffff);
  const udp = at + IP_HEADER;
  write16(udp, 40001);
  write16(udp + 2, 5201);
  write16(udp + 4, 8 + UDP_PAYLOAD);
  write16(udp + 6, 0);
  const checksum = ~onesComplementSum(buf, udp, 8 + UDP_PAYLOAD, pseudoHeaderSum(SRC, DST, IP_PROTOCOL_UDP, 8 + UDP_PAYLOAD)) & 0xffff;
  write16(udp + 6, checksum === 0 ? 0xffff : checksum);
}
const udpBatch = new CoalesceBatch(UDP_DATAGRAMS, 16, false, true);
const udpVerifyingBatch = new CoalesceBatch(UDP_DATAGRAMS, 16, true, true);
function coalesceUdp(b: CoalesceBatch): number {
  b.reset();
  for (let i = 0; i < UDP_DATAGRAMS; i++) b.add(buf, UDP_RECEIVED + i * SLOT, UDP_LENGTH);
  return b.finish(buf, COALESCE_ARENA, COALESCE_MAX_WRITE_HEADER + 6);
}
if (coalesceUdp(udpBatch) !== 1 || coalesceUdp(udpVerifyingBatch) !== 1) throw new Error('UDP coalescing failed');

// A 1500-byte GSO_NONE packet with a partial checksum.
writeHeaders(SMALL_OFF, MTU_PACKET, 7, 1, TCP_FLAG_ACK);
const smallPartial = (buf[SMALL_OFF + 36] << 8) | buf[SMALL_OFF + 37];

let sink = 0;
const bench = new Bench({ name: 'offload', time: 500, warmupTime: 200 });

function perCall(elapsed: number, calls: number): FnReturnedObject {
  return { overriddenDuration: elapsed / calls, overriddenIterationCost: elapsed };
}

const SPLIT = `splitSuperPacket ${SUPER_LENGTH} B → ${SEGMENTS} x ${MSS}`;
const CHECKSUM_ONLY = `onesComplementSum over the ${PAYLOAD} B payload (floor)`;
const COALESCE = `CoalesceBatch ${SEGMENTS} x ${MSS} → 1 write`;
const COALESCE_VERIFY = `${COALESCE}, verifyChecksums`;
const COALESCE6 = `CoalesceBatch ${SEGMENTS} x ${MSS} TCPv6 → 1 write`;
const COALESCE6_VERIFY = `${COALESCE6}, verifyChecksums`;
const COALESCE_UDP = `CoalesceBatch ${UDP_DATAGRAMS} x ${UDP_PAYLOAD} B UDP → 1 USO write`;
const COALESCE_UDP_VERIFY = `${COALESCE_UDP}, verifyChecksums`;
const COMPLETE = `completePartialChecksum ${MTU_PACKET} B`;

bench
  .add(SPLIT, () => {
    const start = bench.now();
    for (let i = 0; i < 50; i++) {
      sink += splitSuperPacket(buf, SUPER_OFF, SUPER_LENGTH, vnet, SPLIT_ARENA, SPLIT_STRIDE, HEADROOM, segments);
    }
    return perCall(bench.now() - start, 50);
  })
  .add(CHECKSUM_ONLY, () => {
    const start = bench.now();
    for (let i = 0; i < 50; i++) sink += onesComplementSum(buf, SUPER_OFF + HEADERS, PAYLOAD);
    return perCall(bench.now() - start, 50);
  })
  .add(COALESCE, () => {
    const start = bench.now();
    for (let i = 0; i < 200; i++) sink += coalesceAll(batch);
    return perCall(bench.now() - start, 200);
  })
  .add(COALESCE_VERIFY, () => {
    const start = bench.now();
    for (let i = 0; i < 50; i++) sink += coalesceAll(verifyingBatch);
    return perCall(bench.now() - start, 50);
  })
  .add(COALESCE6, () => {
    const start = bench.now();
    for (let i = 0; i < 200; i++) sink += coalesceAll6(batch);
    return perCall(bench.now() - start, 200);
  })
  .add(COALESCE6_VERIFY, () => {
    const start = bench.now();
    for (let i = 0; i < 50; i++) sink += coalesceAll6(verifyingBatch);
    return perCall(bench.now() - start, 50);
  })
  .add(COALESCE_UDP, () => {
    const start = bench.now();
    for (let i = 0; i < 200; i++) sink += coalesceUdp(udpBatch);
    return perCall(bench.now() - start, 200);
  })
  .add(COALESCE_UDP_VERIFY, () => {
    const start = bench.now();
    for (let i = 0; i < 100; i++) sink += coalesceUdp(udpVerifyingBatch);
    return perCall(bench.now() - start, 100);
  })
  .add(COMPLETE, () => {
    const start = bench.now();
    for (let i = 0; i < 1000; i++) {
      write16(SMALL_OFF + 36, smallPartial); // back to the partial sum each time
      sink += completePartialChecksum(buf, SMALL_OFF, MTU_PACKET, IP_HEADER, 16) ? 1 : 0;
    }
    return perCall(bench.now() - start, 1000);
  });

await bench.run();
console.table(bench.table());

function meanNs(name: string): number {
  const result = bench.getTask(name)?.result;
  if (result === undefined || !('latency' in result)) throw new Error(`no result for ${name}`);
  return result.latency.mean * 1e6;
}

const split = meanNs(SPLIT);
const floor = meanNs(CHECKSUM_ONLY);
const coalesce = meanNs(COALESCE);
const coalesceVerify = meanNs(COALESCE_VERIFY);
console.log(`memory:    ${PLAIN_MEMORY ? 'plain ArrayBuffer (JavaScript checksum)' : 'packet-pool WebAssembly.Memory (wasm SIMD checksum)'}`);
console.log(`split:     ${split.toFixed(0)} ns per super-packet, ${(split / PAYLOAD).toFixed(3)} ns/B, ${(split / SEGMENTS).toFixed(0)} ns per segment`);
console.log(`           of which the payload checksum alone ≈ ${floor.toFixed(0)} ns (${(floor / PAYLOAD).toFixed(3)} ns/B)`);
console.log(`coalesce:  ${coalesce.toFixed(0)} ns per ${SEGMENTS} segments, ${(coalesce / SEGMENTS).toFixed(0)} ns per segment, ${(coalesce / PAYLOAD).toFixed(3)} ns/B`);
console.log(`  verify:  ${coalesceVerify.toFixed(0)} ns per ${SEGMENTS} segments, ${(coalesceVerify / SEGMENTS).toFixed(0)} ns per segment`);
const coalesce6 = meanNs(COALESCE6);
console.log(`tcpv6:     ${coalesce6.toFixed(0)} ns per ${SEGMENTS} segments, ${(coalesce6 / SEGMENTS).toFixed(0)} ns per segment`);
console.log(`  verify:  ${meanNs(COALESCE6_VERIFY).toFixed(0)} ns per ${SEGMENTS} segments`);
const coalesceUdpNs = meanNs(COALESCE_UDP);
const coalesceUdpVerifyNs = meanNs(COALESCE_UDP_VERIFY);
console.log(`udp:       ${coalesceUdpNs.toFixed(0)} ns per ${UDP_DATAGRAMS} datagrams, ${(coalesceUdpNs / UDP_DATAGRAMS).toFixed(1)} ns per datagram`);
console.log(`  verify:  ${coalesceUdpVerifyNs.toFixed(0)} ns per ${UDP_DATAGRAMS} datagrams, ${(coalesceUdpVerifyNs / UDP_DATAGRAMS).toFixed(1)} ns per datagram`);
console.log(`complete:  ${meanNs(COMPLETE).toFixed(0)} ns per ${MTU_PACKET} B packet`);
if (sink === 0.5) console.log(sink); // never true; keeps `sink` observable
