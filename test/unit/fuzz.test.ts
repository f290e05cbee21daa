// Fuzzing every parser and encoder the data plane and the control plane run
// on input they do not control: more than a million random and mutated
// packets (from valid ICMP echo, TCP with options, UDP, fragments, TSO/USO
// super-packets and VXLAN frames: bits flipped, truncated, lengths that lie,
// bad IHL, options, 0 and 0xFFFF sizes, random virtio and VXLAN headers), and
// mutated subnet and leases files and lease values.
//
// For every input: no throw; a decoder either accepts it (and then an
// independent oracle agrees that it is acceptable and the result is
// consistent) or rejects it with a DropReason code (never 0); a file parser
// either returns a consistent config or throws its own error class with a
// message. Decoders are also run twice on the same bytes followed by
// different garbage ("twin" buffers): the result must not depend on bytes
// past the length they were given.
//
// Reproducible: a fixed seed (printed), FUZZ_SEED=<n> to change it; each case
// derives its own PRNG state from (seed, target, case), so
// FUZZ_REPLAY=<target>:<case> re-runs exactly one case with a trace of its
// mutations. FUZZ_SCALE=<x> multiplies the case counts (default 1: about
// 1.05 million packets, under a minute on this project's 2-vCPU VM).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { DropReason, DROP_REASON_COUNT, dropReasonNames } from '../../src/encap/drop-reasons.js';
import { validateIPv4, decrementTtl } from '../../src/encap/ipv4.js';
import { buildIcmpDestUnreachable, ICMP_DEST_UNREACH_MAX_LENGTH, ICMP_FRAG_NEEDED, ICMP_NET_UNREACHABLE } from '../../src/encap/icmp.js';
import { buildOuterIPv4Udp, createOuterUdpFields, parseOuterIPv4Udp } from '../../src/encap/udp-frame.js';
import { VxlanEncapsulation } from '../../src/encap/vxlan.js';
import { SegmentList, splitSuperPacket } from '../../src/encap/segmentation.js';
import { CoalesceBatch } from '../../src/encap/coalescing.js';
import { VirtioNetHeader, completePartialChecksum } from '../../src/encap/virtio-net-header.js';
import { parseSubnetFile, formatSubnetFile, SubnetFileError, type SubnetConfig } from '../../src/control/subnet-file.js';
import { parseLeasesFile, LeasesFileError, type ParsedLeasesFile } from '../../src/control/leases-file.js';
import { parseLeaseAttrs, formatSubnetKey, LeaseError, type Lease } from '../../src/control/lease.js';
import { cidrCovers, cidrOverlaps, cidrEquals, parseCidr } from '../../src/control/ipv4-address.js';
import {
  Rng,
  seedFromEnv,
  hashName,
  read16,
  read32,
  write16,
  sum16,
  pseudoSum,
  l4ChecksumValid,
  hexDump,
  writePacket,
  writeInnerPacket,
  writeSuperPacket,
  writeVxlanHeaders,
  mutatePacket,
  mutateText,
  randomJsonValue,
  randomTcpOptions,
  randomIpOptions,
  podAddress,
  INNER_KINDS,
  IP_TCP,
  IP_UDP,
  type InnerKind,
  type VirtioFields,
} from '../support/fuzz-kit.js';

const SEED = seedFromEnv('FUZZ_SEED', 20250707);
const SCALE = Number(process.env.FUZZ_SCALE ?? '1');
if (!(SCALE > 0)) throw new Error(`FUZZ_SCALE=${process.env.FUZZ_SCALE} is not a positive number`);
const REPLAY = process.env.FUZZ_REPLAY ?? ''; // "target:case"
console.log(`  fuzz seed ${SEED} (FUZZ_SEED=<n> to change, FUZZ_REPLAY=<target>:<case> to replay one case, FUZZ_SCALE=${SCALE})`);

const CODES = new Set<number>(Object.values(DropReason));
const IPV4_REASONS = new Set<number>([DropReason.TooShort, DropReason.NotIPv4, DropReason.BadHeaderLength, DropReason.BadTotalLength, DropReason.BadHeaderChecksum]);
const OUTER_REASONS = new Set<number>([...IPV4_REASONS, DropReason.NotUdp, DropReason.BadUdpLength, DropReason.BadUdpChecksum]);
const VXLAN_REASONS = new Set<number>([DropReason.TooShort, DropReason.VxlanBadFlags, DropReason.VxlanWrongVni, DropReason.VxlanWrongMac, DropReason.VxlanNotIpv4, DropReason.VxlanArp]);
const SPLIT_REASONS = new Set<number>([DropReason.TooShort, DropReason.NotIPv4, DropReason.BadHeaderLength, DropReason.BadTotalLength, DropReason.BadVirtioNetHeader, DropReason.TooManySegments]);

// ---- the harness ----

class FuzzFailure extends Error {}

/** Throws a FuzzFailure (an oracle disagreement) when `ok` is false. */
function check(ok: boolean, what: string | (() => string)): void {
  if (!ok) throw new FuzzFailure(typeof what === 'string' ? what : what());
}

interface TargetResult {
  name: string;
  cases: number;
  packets: number;
  ms: number;
  failures: Map<string, string>;
}

const results: TargetResult[] = [];

/**
 * Runs `cases` cases of one target. Each case reseeds `rng` from (seed,
 * target, case) and returns how many packets it fed. Failures are grouped by
 * their first line (digits ignored), so one known bug does not hide the
 * others; the test fails at the end with one example of each: case number,
 * input, and the command that replays it.
 */
function fuzz(name: string, cases: number, body: (rng: Rng, caseNo: number, trace: string[] | null) => number): TargetResult {
  const rng = new Rng(SEED);
  const stream = hashName(name);
  const failures = new Map<string, string>();
  const started = performance.now();
  let packets = 0;
  let first = 0;
  let last = Math.round(cases * SCALE);
  let trace: string[] | null = null;
  if (REPLAY !== '') {
    const [target, caseText] = REPLAY.split(':');
    if (target !== name) return { name, cases: 0, packets: 0, ms: 0, failures };
    first = Number(caseText);
    last = first + 1;
    trace = [];
  }
  for (let i = first; i < last; i++) {
    rng.reseed((SEED ^ stream) >>> 0, i);
    inputOf = () => '(not recorded)';
    try {
      packets += body(rng, i, trace);
    } catch (err) {
      const e = err as Error;
      const oracle = err instanceof FuzzFailure;
      const head = oracle ? e.message.split('\n')[0] : `threw ${e.name}: ${e.message.split('\n')[0]}`;
      const key = head.replace(/\d+/g, 'N');
      // The twins may hold this case's bytes: start the next case from clean garbage.
      A.set(GA);
      B.set(GB);
      if (!failures.has(key) && failures.size < 10) {
        failures.set(
          key,
          `${head}\n      case ${i}; replay: FUZZ_SEED=${SEED} FUZZ_REPLAY=${name}:${i} node node_modules/uvu/bin.js dist/test/unit 'fuzz\\.test\\.js$'` +
            (oracle ? '' : `\n      ${(e.stack ?? '').split('\n').slice(1, 5).join('\n      ')}`) +
            `\n      input: ${inputOf()}`,
        );
      }
    }
    if (trace) console.log(`  replay ${name}:${i}: ${trace.join('; ')}\n  input: ${inputOf()}`);
  }
  const result = { name, cases: last - first, packets, ms: performance.now() - started, failures };
  results.push(result);
  return result;
}

/**
 * Describes the input of the case being run, for failure messages. Set by
 * each case as soon as its input is built, called only when the case fails:
 * the input (in W, or the coalescing pool) is still there then, since only
 * the next case overwrites it.
 */
let inputOf: () => string = () => '';
function noteInput(f: () => string): void {
  inputOf = f;
}

/** How often each decoder returned each reason: evidence that the mutations reach every check. */
const reasonCounts = new Map<string, Int32Array>();
function tally(decoder: string, code: number): void {
  let counts = reasonCounts.get(decoder);
  if (!counts) reasonCounts.set(decoder, (counts = new Int32Array(DROP_REASON_COUNT)));
  counts[code]++;
}

function assertClean(r: TargetResult): void {
  if (r.failures.size === 0) return;
  const lines = [...r.failures.values()].map((v, n) => `  ${n + 1}. ${v}`);
  assert.unreachable(`${r.name}: ${r.failures.size} distinct failure(s) in ${r.cases} cases:\n${lines.join('\n')}`);
}

// ---- buffers ----

/** Where packets start in every buffer: room in front for a 22-byte VXLAN header and more. */
const OFF = 64;
const PACKET_ROOM = 65536 + 4096;
const ARENA_OFF = OFF + PACKET_ROOM;
const SPLIT_CAPACITY = 130; // a SegmentList smaller than some super-packets, so TooManySegments is exercised too
const SPLIT_STRIDE = 160; // TX_ARENA_STRIDE
const ARENA_BYTES = SPLIT_CAPACITY * SPLIT_STRIDE + 256;
const TOTAL = ARENA_OFF + ARENA_BYTES;

/** W: where a case's input is built. A, B: the twins the code under test sees, each with its own garbage around the input. */
const W = new Uint8Array(TOTAL);
const GA = new Uint8Array(TOTAL);
const GB = new Uint8Array(TOTAL);
new Rng(0xa).fill(GA, 0, TOTAL);
new Rng(0xb).fill(GB, 0, TOTAL);
const A = GA.slice();
const B = GB.slice();
const bufW = Buffer.from(W.buffer, W.byteOffset, W.length);
const bufA = Buffer.from(A.buffer, A.byteOffset, A.length);
const bufGA = Buffer.from(GA.buffer, GA.byteOffset, GA.length);

function loadTwins(from: number, len: number): void {
  A.set(W.subarray(from, from + len), from);
  B.set(W.subarray(from, from + len), from);
}

function restoreTwins(from: number, to: number): void {
  A.set(GA.subarray(from, to), from);
  B.set(GB.subarray(from, to), from);
}

function sameBytes(x: Buffer, xOff: number, y: Buffer, yOff: number, len: number): boolean {
  return x.compare(y, yOff, yOff + len, xOff, xOff + len) === 0;
}

/** The oracle's own IPv4 header check (independent of validateIPv4). */
function ipv4Valid(b: Uint8Array, off: number, len: number): boolean {
  if (len < 20 || b[off] >>> 4 !== 4) return false;
  const ihl = (b[off] & 0x0f) << 2;
  if (ihl < 20 || ihl > len) return false;
  const total = read16(b, off + 2);
  if (total < ihl || total > len) return false;
  return sum16(b, off, ihl) === 0xffff;
}

function pickKind(rng: Rng): InnerKind {
  // Jumbo packets cost 40x a small one: keep them rare.
  const kind = rng.pick(INNER_KINDS);
  return kind === 'large' && rng.chance(0.8) ? 'tcp-options' : kind;
}

// ---- validateIPv4, decrementTtl, buildIcmpDestUnreachable ----

const icmpOutA = new Uint8Array(256);
const icmpOutB = new Uint8Array(256);

function icmpErrorExpected(b: Uint8Array, off: number): boolean {
  const ihl = (b[off] & 0x0f) << 2;
  const total = read16(b, off + 2);
  if ((read16(b, off + 6) & 0x1fff) !== 0) return false; // a later fragment
  const src = read32(b, off + 12);
  if (src === 0 || src >>> 24 === 127 || src >>> 24 >= 224) return false;
  if (read32(b, off + 16) >>> 24 >= 224) return false;
  if (b[off + 9] === 1) {
    if (total - ihl < 1) return false;
    if ([3, 4, 5, 11, 12].includes(b[off + ihl])) return false;
  }
  return true;
}

test('fuzz: validateIPv4, decrementTtl (after validation, as the forwarder does), buildIcmpDestUnreachable', () => {
  const r = fuzz('ipv4', 400_000, ((rng, _i, trace) => {
    let len = writeInnerPacket(rng, W, OFF, pickKind(rng), 1, 2);
    if (rng.chance(0.85)) len = mutatePacket(rng, W, OFF, len, PACKET_ROOM, 0, trace);
    noteInput(() => hexDump(W, OFF, len));
    loadTwins(OFF, len);
    const reason = validateIPv4(A, OFF, len);
    check(reason === validateIPv4(B, OFF, len), 'validateIPv4: the result depends on bytes past len');
    check(CODES.has(reason), () => `validateIPv4 returned ${reason}, not a DropReason code`);
    tally('validateIPv4', reason);
    const valid = ipv4Valid(W, OFF, len);
    check((reason === DropReason.None) === valid, () => `validateIPv4 returned ${reason}, the oracle says ${valid ? 'valid' : 'invalid'}`);
    check(valid || IPV4_REASONS.has(reason), () => `validateIPv4 rejected with ${reason}, not an IPv4 header reason`);

    const src = rng.chance(0.5) ? read32(W, OFF + 16) : rng.u32();
    const code = rng.chance(0.8) ? ICMP_NET_UNREACHABLE : ICMP_FRAG_NEEDED;
    const mtu = rng.int(0x10000);
    const n = buildIcmpDestUnreachable(A, OFF, len, icmpOutA, 0, src, code, mtu, 0x1234);
    check(n === buildIcmpDestUnreachable(B, OFF, len, icmpOutB, 0, src, code, mtu, 0x1234), 'buildIcmpDestUnreachable: the length depends on bytes past len');
    check(n >= 0 && n <= ICMP_DEST_UNREACH_MAX_LENGTH, () => `buildIcmpDestUnreachable returned ${n}`);
    if (!valid) check(n === 0, 'buildIcmpDestUnreachable answered an invalid packet');
    else check((n > 0) === icmpErrorExpected(W, OFF), () => `buildIcmpDestUnreachable returned ${n}; RFC 792/1122 say ${icmpErrorExpected(W, OFF) ? 'answer' : 'stay silent'}`);
    if (n > 0) {
      for (let k = 0; k < n; k++) check(icmpOutA[k] === icmpOutB[k], 'buildIcmpDestUnreachable: the reply depends on bytes past len');
      const ihl = (W[OFF] & 0x0f) << 2;
      const quote = ihl + Math.min(8, read16(W, OFF + 2) - ihl);
      check(n === 28 + quote, () => `reply length ${n}, expected 28 + ${quote}`);
      check(ipv4Valid(icmpOutA, 0, n) && read16(icmpOutA, 2) === n, 'the ICMP reply is not a valid IPv4 packet');
      check(icmpOutA[9] === 1 && icmpOutA[20] === 3 && icmpOutA[21] === code, 'the reply is not ICMP destination unreachable with the code asked for');
      check(read32(icmpOutA, 12) === src >>> 0 && read32(icmpOutA, 16) === read32(W, OFF + 12), 'reply addresses wrong');
      check(sum16(icmpOutA, 20, n - 20) === 0xffff, 'ICMP checksum wrong');
      for (let k = 0; k < quote; k++) check(icmpOutA[28 + k] === W[OFF + k], 'the quote differs from the original');
      check(code !== ICMP_FRAG_NEEDED || read16(icmpOutA, 26) === mtu, 'next-hop MTU not written');
    }

    if (reason === DropReason.None) {
      const ttl = A[OFF + 8];
      const decremented = decrementTtl(A, OFF);
      check(decremented === ttl > 1, () => `decrementTtl returned ${decremented} for TTL ${ttl}`);
      const ihl = (A[OFF] & 0x0f) << 2;
      if (decremented) {
        check(A[OFF + 8] === ttl - 1, 'TTL not decremented by one');
        check(validateIPv4(A, OFF, len) === DropReason.None && sum16(A, OFF, ihl) === 0xffff, 'the header checksum is wrong after decrementTtl');
        for (let k = 0; k < ihl; k++) if (k !== 8 && k !== 10 && k !== 11) check(A[OFF + k] === W[OFF + k], `decrementTtl changed header byte ${k}`);
      } else {
        check(sameBytes(bufA, OFF, bufW, OFF, ihl), 'decrementTtl changed a packet it refused');
      }
    }
    restoreTwins(OFF, OFF + len);
    return 1;
  }));
  assertClean(r);
});

// ---- parseOuterIPv4Udp ----

const outerA = createOuterUdpFields();
const outerB = createOuterUdpFields();

function fixUdpChecksum(b: Uint8Array, off: number, len: number): void {
  const ihl = (b[off] & 0x0f) << 2;
  const udpLength = read16(b, off + ihl + 4);
  if (len < ihl + 8 || udpLength < 8 || ihl + udpLength > len) return;
  write16(b, off + ihl + 6, 0);
  let c = ~sum16(b, off + ihl, udpLength, pseudoSum(read32(b, off + 12), read32(b, off + 16), IP_UDP, udpLength)) & 0xffff;
  if (c === 0) c = 0xffff;
  write16(b, off + ihl + 6, c);
}

function outerAcceptable(b: Uint8Array, off: number, len: number): boolean {
  if (!ipv4Valid(b, off, len) || b[off + 9] !== IP_UDP || (read16(b, off + 6) & 0x3fff) !== 0) return false;
  const ihl = (b[off] & 0x0f) << 2;
  const ipPayload = read16(b, off + 2) - ihl;
  const udpLength = read16(b, off + ihl + 4);
  if (ipPayload < 8 || udpLength < 8 || udpLength > ipPayload) return false;
  const checksum = read16(b, off + ihl + 6);
  return checksum === 0 || sum16(b, off + ihl, udpLength, pseudoSum(read32(b, off + 12), read32(b, off + 16), IP_UDP, udpLength)) === 0xffff;
}

test('fuzz: parseOuterIPv4Udp on mutated outer datagrams (buildOuterIPv4Udp round trip on the intact ones)', () => {
  const r = fuzz('outer-udp', 200_000, ((rng, _i, trace) => {
    const kind = pickKind(rng);
    const innerLen = writeInnerPacket(rng, W, OFF + 28, kind === 'large' ? 'udp' : kind, 1, 2);
    const srcAddr = rng.chance(0.9) ? 0xc0000201 : rng.u32();
    const dstAddr = 0xc0000202;
    const srcPort = rng.chance(0.7) ? 8285 : rng.range(1, 65535);
    const withChecksum = rng.chance(0.5);
    const id = rng.int(0x10000);
    const headers = buildOuterIPv4Udp(W, OFF, srcAddr, dstAddr, srcPort, 8285, innerLen, id, withChecksum);
    check(headers === 28, 'buildOuterIPv4Udp did not return 28');
    let len = headers + innerLen;
    const intact = rng.chance(0.1);
    if (!intact) {
      // The outer headers, the inner packet, or both; then the UDP checksum made right (sometimes) so later checks are reached.
      if (rng.chance(0.6)) len = mutatePacket(rng, W, OFF, len, PACKET_ROOM, 0, trace);
      if (rng.chance(0.5) && len > 28) len = 28 + mutatePacket(rng, W, OFF + 28, len - 28, PACKET_ROOM - 28, 0, trace);
      if (rng.chance(0.4)) {
        fixUdpChecksum(W, OFF, len);
        trace?.push('fix udp checksum');
      }
    }
    noteInput(() => hexDump(W, OFF, len));
    loadTwins(OFF, len);
    const reason = parseOuterIPv4Udp(A, OFF, len, outerA);
    const reasonB = parseOuterIPv4Udp(B, OFF, len, outerB);
    check(reason === reasonB, 'parseOuterIPv4Udp: the result depends on bytes past len');
    check(CODES.has(reason), () => `parseOuterIPv4Udp returned ${reason}, not a DropReason code`);
    tally('parseOuterIPv4Udp', reason);
    const acceptable = outerAcceptable(W, OFF, len);
    check((reason === DropReason.None) === acceptable, () => `parseOuterIPv4Udp returned ${reason}, the oracle says ${acceptable ? 'acceptable' : 'not acceptable'}`);
    check(acceptable || OUTER_REASONS.has(reason), () => `parseOuterIPv4Udp rejected with ${reason}, not an outer-datagram reason`);
    if (reason === DropReason.None) {
      const ihl = (W[OFF] & 0x0f) << 2;
      check(
        outerA.payloadOffset === outerB.payloadOffset && outerA.payloadLength === outerB.payloadLength && outerA.srcAddr === outerB.srcAddr && outerA.srcPort === outerB.srcPort,
        'parseOuterIPv4Udp: the fields depend on bytes past len',
      );
      check(outerA.payloadOffset === OFF + ihl + 8, 'payloadOffset is not right after the UDP header');
      check(outerA.payloadLength === read16(W, OFF + ihl + 4) - 8, 'payloadLength is not the UDP length minus 8');
      check(outerA.payloadOffset + outerA.payloadLength <= OFF + len, 'the payload runs past the datagram');
      check(outerA.srcAddr === read32(W, OFF + 12) && outerA.dstAddr === read32(W, OFF + 16), 'addresses differ from the header');
    }
    if (intact) {
      check(reason === DropReason.None, () => `an intact datagram from buildOuterIPv4Udp was rejected with ${reason}`);
      check(outerA.srcAddr === srcAddr && outerA.dstAddr === dstAddr && outerA.srcPort === srcPort && outerA.dstPort === 8285, 'round trip: addresses or ports differ');
      check(outerA.payloadLength === innerLen && outerA.payloadOffset === OFF + 28, 'round trip: the payload differs');
    }
    restoreTwins(OFF, OFF + len);
    return 1;
  }));
  assertClean(r);
});

// ---- VxlanEncapsulation ----

const MACS = [
  Uint8Array.of(0x0e, 0x66, 0x75, 0, 0, 1),
  Uint8Array.of(0x0e, 0x66, 0x75, 0, 0, 2),
  Uint8Array.of(0x02, 0, 0, 0, 0, 0),
  Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0xff, 0xff),
];
const VNIS = [1, 0, 0xffffff, 42];
const receivers = VNIS.map((vni, k) => new VxlanEncapsulation(vni, MACS[k]));
const randomMac = new Uint8Array(6);

test('fuzz: VxlanEncapsulation.decapsulate on mutated frames, encapsulate → decapsulate on valid packets', () => {
  let encapsulated = 0;
  const r = fuzz('vxlan', 150_000, ((rng, _i, trace) => {
    const k = rng.int(receivers.length);
    const rx = receivers[k];
    if (rng.chance(0.2)) {
      // encapsulate on a valid packet, as the forwarder does, then the peer decapsulates it
      const tx = new VxlanEncapsulation(rx.vni, MACS[(k + 1) % MACS.length]);
      const leases = rng.range(1, 8);
      const lease = rng.int(leases);
      tx.peerMacs = new Uint8Array(6 * leases);
      rng.fill(tx.peerMacs, 0, tx.peerMacs.length);
      tx.peerMacs.set(rx.localMac, 6 * lease);
      const innerLen = writeInnerPacket(rng, W, OFF + 22, pickKind(rng), 1, 2);
      noteInput(() => `encapsulate lease ${lease} of ${leases}; inner ${hexDump(W, OFF + 22, innerLen)}`);
      loadTwins(OFF + 22, innerLen);
      const start = tx.encapsulate(A, OFF + 22, innerLen, lease);
      check(start === OFF, () => `encapsulate returned ${start}, expected ${OFF}`);
      check(A[OFF] === 0x08 && A[OFF + 1] === 0 && A[OFF + 2] === 0 && A[OFF + 3] === 0 && A[OFF + 7] === 0, 'VXLAN flags/reserved bytes wrong');
      check(((A[OFF + 4] << 16) | (A[OFF + 5] << 8) | A[OFF + 6]) === rx.vni, 'VNI wrong');
      for (let b = 0; b < 6; b++) check(A[OFF + 8 + b] === rx.localMac[b] && A[OFF + 14 + b] === tx.localMac[b], 'Ethernet addresses wrong');
      check(read16(A, OFF + 20) === 0x0800, 'ethertype is not IPv4');
      check(sameBytes(bufA, OFF + 22, bufW, OFF + 22, innerLen), 'encapsulate changed the inner packet');
      const inner = rx.decapsulate(A, OFF, innerLen + 22);
      check(inner === OFF + 22, () => `the peer's decapsulate returned ${inner} for our own frame`);
      restoreTwins(OFF, OFF + 22 + innerLen);
      encapsulated++;
      return 1;
    }

    const innerLen = writeInnerPacket(rng, W, OFF + 22, pickKind(rng), 1, 2);
    rng.fill(randomMac, 0, 6);
    const ethertype = rng.chance(0.85) ? 0x0800 : rng.pick([0x0806, 0x86dd, 0x8100, 0, rng.int(0x10000)]);
    writeVxlanHeaders(W, OFF, rng.chance(0.85) ? rx.vni : rng.int(0x1000000), rng.chance(0.85) ? rx.localMac : randomMac, MACS[rng.int(MACS.length)], ethertype);
    let len = 22 + innerLen;
    switch (rng.int(4)) {
      case 0: // VXLAN header fields
        if (rng.chance(0.5)) W[OFF] = rng.chance(0.5) ? W[OFF] & ~0x08 : rng.int(256);
        if (rng.chance(0.3)) W[OFF + 1 + rng.int(7)] = rng.int(256);
        if (rng.chance(0.3)) W[OFF + 8 + rng.int(14)] ^= 1 << rng.int(8);
        trace?.push('vxlan header fields');
        break;
      case 1: // the inner packet
        len = 22 + mutatePacket(rng, W, OFF + 22, innerLen, PACKET_ROOM - 22, 0, trace);
        break;
      case 2: // the whole frame, aimed at the inner header
        len = mutatePacket(rng, W, OFF, len, PACKET_ROOM, 22, trace);
        break;
      default: // intact (the forwarder's path after decapsulation gets valid packets too)
    }
    noteInput(() => `receiver vni ${rx.vni}; ${hexDump(W, OFF, len)}`);
    loadTwins(OFF, len);
    const inner = rx.decapsulate(A, OFF, len);
    check(inner === rx.decapsulate(B, OFF, len), 'decapsulate: the result depends on bytes past length');
    tally('decapsulate', inner < 0 ? -inner : 0);
    const ok =
      len >= 42 &&
      (W[OFF] & 0x08) !== 0 &&
      ((W[OFF + 4] << 16) | (W[OFF + 5] << 8) | W[OFF + 6]) === rx.vni &&
      read16(W, OFF + 20) === 0x0800 &&
      [0, 1, 2, 3, 4, 5].every((b) => W[OFF + 8 + b] === rx.localMac[b]);
    if (ok) {
      check(inner === OFF + 22, () => `decapsulate returned ${inner} for a frame it must accept`);
      // what the forwarder does next
      const reason = validateIPv4(A, inner, len - 22);
      check(CODES.has(reason) && reason === validateIPv4(B, inner, len - 22), 'validateIPv4 after decapsulate');
    } else {
      check(inner < 0, () => `decapsulate accepted (${inner}) a frame it must refuse`);
      check(VXLAN_REASONS.has(-inner), () => `decapsulate returned ${inner}: not a negative VXLAN drop reason`);
    }
    restoreTwins(OFF, OFF + len);
    return 1;
  }));
  console.log(`    (${encapsulated} of them encapsulated and decapsulated by the peer)`);
  assertClean(r);
});

// ---- splitSuperPacket ----

const vnet = new VirtioNetHeader();
const fields: VirtioFields = { flags: 0, gsoType: 0, hdrLen: 0, gsoSize: 0, csumStart: 0, csumOffset: 0 };
const segsA = new SegmentList(SPLIT_CAPACITY);
const segsB = new SegmentList(SPLIT_CAPACITY);
const scratch = new Uint8Array(70000);

const VIRTIO_EDGES = [0, 1, 2, 5, 6, 16, 20, 40, 60, 0x7f, 0x80, 0x81, 0xff, 0x100, 1448, 0x7fff, 0xffff];

function mutateVirtio(rng: Rng, v: VirtioFields, len: number, trace: string[] | null): void {
  const n = rng.range(1, 2);
  for (let k = 0; k < n; k++) {
    const value = rng.chance(0.5) ? rng.pick(VIRTIO_EDGES) : rng.chance(0.5) ? rng.range(0, len + 2) : rng.int(0x10000);
    switch (rng.int(6)) {
      case 0:
        v.flags = value & 0xff;
        trace?.push(`vnet flags ${v.flags}`);
        break;
      case 1:
        v.gsoType = rng.chance(0.5) ? rng.pick([0, 1, 3, 4, 5, 0x81, 0x85, 0x80]) : value & 0xff;
        trace?.push(`vnet gso_type ${v.gsoType}`);
        break;
      case 2:
        v.hdrLen = value;
        trace?.push(`vnet hdr_len ${value}`);
        break;
      case 3:
        v.gsoSize = value;
        trace?.push(`vnet gso_size ${value}`);
        break;
      case 4:
        v.csumStart = value;
        trace?.push(`vnet csum_start ${value}`);
        break;
      default:
        v.csumOffset = value;
        trace?.push(`vnet csum_offset ${value}`);
    }
  }
}

/** What a correct split must produce, checked segment by segment on a contiguous copy. */
function checkSegments(buf: Uint8Array, n: number, segs: SegmentList, len: number, headroom: number): void {
  const ihl = (W[OFF] & 0x0f) << 2;
  const total = read16(W, OFF + 2);
  const protocol = W[OFF + 9];
  const gso = vnet.gsoType & 0x7f;
  check(total <= len && ihl >= 20 && W[OFF] >>> 4 === 4, 'split accepted a broken IPv4 header');
  check((gso === 1 && protocol === IP_TCP) || (gso === 5 && protocol === IP_UDP), () => `split accepted gso_type ${vnet.gsoType} with protocol ${protocol}`);
  check(vnet.gsoSize > 0, 'split accepted gso_size 0');
  check((read16(W, OFF + 6) & 0x3fff) === 0, 'split accepted a fragment');
  check((vnet.flags & 1) === 0 || (vnet.csumStart === ihl && vnet.csumOffset === (protocol === IP_TCP ? 16 : 6)), 'split accepted NEEDS_CSUM with wrong csum_start/offset');
  check(segs.count === n && n <= SPLIT_CAPACITY, () => `count ${segs.count} vs returned ${n}`);
  const headerLength = segs.headerLength[0];
  const payloadTotal = total - headerLength;
  const mss = vnet.gsoSize;
  check(n === (payloadTotal <= 0 ? 1 : Math.ceil(payloadTotal / mss)), () => `${n} segments for ${payloadTotal} payload bytes at gso_size ${mss}`);
  let payloadSum = 0;
  const seq0 = protocol === IP_TCP ? read32(W, OFF + ihl + 4) : 0;
  for (let s = 0; s < n; s++) {
    const h = segs.headerOffset[s];
    const hl = segs.headerLength[s];
    const po = segs.payloadOffset[s];
    const pl = segs.payloadLength[s];
    check(h === ARENA_OFF + s * SPLIT_STRIDE + headroom && hl === headerLength, () => `segment ${s}: header at ${h} (${hl} bytes)`);
    check(po === OFF + headerLength + s * mss && (s === n - 1 ? pl <= mss : pl === mss), () => `segment ${s}: payload at ${po} (${pl} bytes)`);
    payloadSum += pl;
    scratch.set(buf.subarray(h, h + hl), 0);
    scratch.set(buf.subarray(po, po + pl), hl);
    check(ipv4Valid(scratch, 0, hl + pl) && read16(scratch, 2) === hl + pl, () => `segment ${s} is not a valid IPv4 packet: ${hexDump(scratch, 0, hl + pl, 64)}`);
    check(l4ChecksumValid(scratch, 0), () => `segment ${s}: TCP/UDP checksum does not verify`);
    for (let b = 0; b < ihl; b++) if (b !== 2 && b !== 3 && b !== 4 && b !== 5 && b !== 10 && b !== 11) check(scratch[b] === W[OFF + b], () => `segment ${s}: IPv4 header byte ${b} changed`);
    if (protocol === IP_TCP) check(read32(scratch, ihl + 4) === (seq0 + s * mss) >>> 0, () => `segment ${s}: sequence number`);
    else check(read16(scratch, ihl + 4) === 8 + pl, () => `segment ${s}: UDP length`);
  }
  check(payloadSum === payloadTotal, () => `segments carry ${payloadSum} of ${payloadTotal} payload bytes`);
}

test('fuzz: splitSuperPacket with random VirtioNetHeader values, on intact and mutated super-packets', () => {
  const r = fuzz('split', 100_000, ((rng, _i, trace) => {
    const maxTotal = rng.chance(0.08) ? 65535 : rng.range(60, 16000);
    let len = writeSuperPacket(rng, W, OFF, maxTotal, fields);
    const mode = rng.int(10);
    const intact = mode < 2;
    if (mode >= 2 && mode < 5) mutateVirtio(rng, fields, len, trace);
    else if (mode >= 5 && mode < 7) {
      fields.flags = rng.int(256);
      fields.gsoType = rng.int(256);
      fields.hdrLen = rng.int(0x10000);
      fields.gsoSize = rng.chance(0.5) ? rng.int(0x10000) : rng.int(1500);
      fields.csumStart = rng.int(0x10000);
      fields.csumOffset = rng.int(0x10000);
      trace?.push('random virtio header');
    } else if (mode >= 7) {
      len = mutatePacket(rng, W, OFF, len, PACKET_ROOM, 0, trace);
      if (rng.chance(0.3)) mutateVirtio(rng, fields, len, trace);
    }
    Object.assign(vnet, fields);
    const headroom = rng.chance(0.5) ? 0 : 22;
    const twin = rng.chance(0.25);
    noteInput(() => `virtio ${JSON.stringify(fields)} headroom ${headroom}; ${hexDump(W, OFF, len)}`);
    loadTwins(OFF, len);
    const n = splitSuperPacket(A, OFF, len, vnet, ARENA_OFF, SPLIT_STRIDE, headroom, segsA);
    check(n !== 0 && Number.isInteger(n), () => `splitSuperPacket returned ${n}`);
    if (n < 0) check(CODES.has(-n) && SPLIT_REASONS.has(-n), () => `splitSuperPacket returned ${n}: not a negative split reason`);
    tally('splitSuperPacket', n < 0 ? -n : 0);
    if (intact) {
      const ihl = (W[OFF] & 0x0f) << 2;
      const payload = read16(W, OFF + 2) - fields.hdrLen;
      const count = payload === 0 ? 1 : Math.ceil(payload / fields.gsoSize);
      const expected = count > SPLIT_CAPACITY ? -DropReason.TooManySegments : count;
      check(n === expected, () => `an intact super-packet (ihl ${ihl}, ${payload} payload bytes, gso_size ${fields.gsoSize}) gave ${n}, expected ${expected}`);
    }
    if (n > 0) {
      checkSegments(A, n, segsA, len, headroom);
      // The arena outside the headers and the super-packet itself are left alone.
      for (let s = 0; s < n; s++) {
        const slot = ARENA_OFF + s * SPLIT_STRIDE;
        const end = segsA.headerOffset[s] + segsA.headerLength[s];
        check(sameBytes(bufA, slot, bufGA, slot, headroom) && sameBytes(bufA, end, bufGA, end, slot + SPLIT_STRIDE - end), () => `segment ${s}: bytes outside its header slot changed`);
      }
      check(sameBytes(bufA, ARENA_OFF + n * SPLIT_STRIDE, bufGA, ARENA_OFF + n * SPLIT_STRIDE, 64), 'bytes after the last arena slot changed');
    }
    check(sameBytes(bufA, OFF, bufW, OFF, len), 'splitSuperPacket changed the super-packet');
    if (twin) {
      const nB = splitSuperPacket(B, OFF, len, vnet, ARENA_OFF, SPLIT_STRIDE, headroom, segsB);
      check(nB === n, () => `splitSuperPacket: ${n} vs ${nB} with different bytes past len`);
      for (let s = 0; s < n; s++) {
        const h = segsA.headerOffset[s];
        check(segsB.headerOffset[s] === h && segsB.payloadLength[s] === segsA.payloadLength[s], 'segments differ between twins');
        for (let b = 0; b < segsA.headerLength[s]; b++) check(A[h + b] === B[h + b], 'segment headers differ between twins');
      }
    }
    restoreTwins(OFF, OFF + len);
    if (n > 0) restoreTwins(ARENA_OFF, ARENA_OFF + n * SPLIT_STRIDE);
    return 1;
  }));
  assertClean(r);
});

test('splitSuperPacket: the documented RangeError is for a too-small arena stride only (a caller bug, never a packet)', () => {
  const rng = new Rng(SEED);
  const len = writeSuperPacket(rng, W, OFF, 4000, fields);
  Object.assign(vnet, fields);
  assert.throws(() => splitSuperPacket(W, OFF, len, vnet, ARENA_OFF, 22 + 119, 22, segsA), RangeError);
  assert.ok(splitSuperPacket(W, OFF, len, vnet, ARENA_OFF, 22 + 120, 22, segsA) > 0);
});

// ---- CoalesceBatch ----

const SLOT = 2048;
const BATCH = 64;
const POOL_OFF = 128;
const RX_STRIDE = 144; // the forwarder's RX_ARENA_STRIDE
const RX_ARENA = POOL_OFF + BATCH * SLOT;
const POOL_BYTES = RX_ARENA + BATCH * RX_STRIDE + 64;
const P = new Uint8Array(POOL_BYTES);
const Q = new Uint8Array(POOL_BYTES);
const PG = new Uint8Array(POOL_BYTES);
new Rng(0xc).fill(PG, 0, POOL_BYTES);
const QG = new Uint8Array(POOL_BYTES);
new Rng(0xd).fill(QG, 0, POOL_BYTES);
const saved = new Uint8Array(POOL_BYTES);
const bufP = Buffer.from(P.buffer);
const bufSaved = Buffer.from(saved.buffer);
const packetLens = new Int32Array(BATCH);
const coalescers = [false, true].flatMap((verify) => [false, true].flatMap((udp) => [new CoalesceBatch(BATCH, BATCH, verify, udp), new CoalesceBatch(BATCH, 2, verify, udp)]));
const reVnet = new VirtioNetHeader();
const reSegs = new SegmentList(BATCH + 1);
const RE_ARENA = 65536 + 256;
const reBuf = new Uint8Array(RE_ARENA + (BATCH + 1) * SPLIT_STRIDE);

interface Flow {
  protocol: number;
  src: number;
  dst: number;
  srcPort: number;
  dstPort: number;
  seq: number;
  ack: number;
  id: number;
  mss: number;
  ttl: number;
  df: boolean;
  window: number;
  tcpOptions: number[];
  ipOptions: number[];
}

function newFlow(rng: Rng, udp: boolean): Flow {
  return {
    protocol: udp ? IP_UDP : IP_TCP,
    src: podAddress(1, rng.range(2, 9)),
    dst: podAddress(2, rng.range(2, 9)),
    srcPort: rng.range(30000, 30008),
    dstPort: rng.pick([5201, 80]),
    seq: rng.u32(),
    ack: rng.u32(),
    id: rng.int(0x10000),
    mss: rng.chance(0.7) ? rng.range(1300, 1420) : rng.range(1, 1420),
    ttl: 63,
    df: rng.chance(0.8),
    window: rng.int(0x10000),
    tcpOptions: rng.chance(0.5) ? randomTcpOptions(rng) : [],
    ipOptions: rng.chance(0.05) ? randomIpOptions(rng) : [],
  };
}

/** The next packet of a flow, usually mergeable, sometimes with one thing that must stop a merge. */
function writeFlowPacket(rng: Rng, buf: Uint8Array, off: number, f: Flow): number {
  let payload = f.mss;
  if (rng.chance(0.12)) payload = rng.int(f.mss + 1);
  if (rng.chance(0.02)) payload = Math.min(1420, f.mss + rng.range(1, 100));
  let flags = 0x10;
  if (rng.chance(0.08)) flags = 0x18;
  if (rng.chance(0.05)) flags = rng.pick([0x11, 0x02, 0x04, 0x30, 0x50, 0x90, 0x12, 0x00]);
  let seq = f.seq;
  if (rng.chance(0.04)) seq = (seq + rng.range(-3000, 3000)) >>> 0;
  const ttl = rng.chance(0.03) ? f.ttl - 1 : f.ttl;
  const tos = rng.chance(0.02) ? 4 : 0;
  const id = rng.chance(0.05) ? rng.int(0x10000) : f.id;
  const ack = rng.chance(0.03) ? f.ack + 1 : f.ack;
  const tcpOptions = rng.chance(0.03) ? randomTcpOptions(rng) : f.tcpOptions;
  const l4Checksum = rng.chance(0.04) ? 'partial' : f.protocol === IP_UDP && rng.chance(0.05) ? 'zero' : 'full';
  const len = writePacket(rng, buf, off, {
    src: f.src, dst: f.dst, protocol: f.protocol, ttl, tos, id, df: f.df, options: f.ipOptions,
    srcPort: f.srcPort, dstPort: f.dstPort, seq, ack: ack >>> 0, flags, window: f.window, tcpOptions, payloadLength: payload, l4Checksum,
  });
  f.seq = (seq + payload) >>> 0;
  f.id = (id + 1) & 0xffff;
  return len;
}

/** The flow key the coalescer would see, or '' for a packet it must leave alone. */
function flowKey(buf: Uint8Array, off: number, len: number, udpToo: boolean): string {
  if (len < 20 || buf[off] >>> 4 !== 4) return '';
  const ihl = (buf[off] & 0x0f) << 2;
  const total = read16(buf, off + 2);
  if (ihl < 20 || total > len || total < ihl || (read16(buf, off + 6) & 0x3fff) !== 0) return '';
  const p = buf[off + 9];
  if (p !== IP_TCP && !(p === IP_UDP && udpToo)) return '';
  if (total < ihl + (p === IP_TCP ? 20 : 8)) return '';
  return `${p}/${read32(buf, off + 12)}/${read32(buf, off + 16)}/${read32(buf, off + ihl)}`;
}

test('fuzz: CoalesceBatch add/finish on random sequences of valid and invalid packets; merged writes re-split to the same segments', () => {
  let batches = 0;
  let merged = 0;
  const r = fuzz('coalesce', 3_400, ((rng, _i, trace) => {
    const co = coalescers[rng.int(coalescers.length)];
    const count = rng.chance(0.2) ? rng.range(1, 8) : rng.range(8, BATCH);
    const flows = Array.from({ length: rng.range(1, 4) }, () => newFlow(rng, co.udpSegmentation && rng.chance(0.4)));
    P.set(PG);
    for (let p = 0; p < count; p++) {
      const off = POOL_OFF + p * SLOT + 64;
      let len: number;
      if (rng.chance(0.1)) {
        const kind = pickKind(rng);
        len = writeInnerPacket(rng, P, off, kind === 'large' ? 'udp' : kind, 1, 2);
        if (rng.chance(0.7)) len = mutatePacket(rng, P, off, len, SLOT - 64 - 64, 0, trace);
      } else {
        len = writeFlowPacket(rng, P, off, rng.pick(flows));
      }
      packetLens[p] = len;
    }
    noteInput(() => `coalescer verify=${co.verifyChecksums} udp=${co.udpSegmentation} maxGroups=${co.maxGroups}; ${count} packets: ${Array.from(packetLens.subarray(0, count)).join(',')}`);
    saved.set(P);
    co.reset();
    for (let p = 0; p < count; p++) co.add(P, POOL_OFF + p * SLOT + 64, packetLens[p]);
    const writes = co.finish(P, RX_ARENA, RX_STRIDE);
    check(writes >= 1 && writes <= count && writes === co.writeCount, () => `${writes} writes for ${count} packets`);
    check(sameBytes(bufP, POOL_OFF, bufSaved, POOL_OFF, BATCH * SLOT), 'finish() changed a received packet');

    const seen = new Int32Array(count).fill(-1);
    const order: number[] = [];
    let lastFirst = -1;
    for (let w = 0; w < writes; w++) {
      const s0 = co.writeSegmentStart[w];
      const s1 = co.writeSegmentEnd[w];
      const headerLength = co.writeHeaderLength[w];
      check(co.writeHeaderOffset[w] === RX_ARENA + w * RX_STRIDE, 'write header outside its arena slot');
      check(s1 > s0, 'a write with no segment');
      const members: number[] = [];
      for (let s = s0; s < s1; s++) {
        const p = Math.floor((co.segmentOffset[s] - POOL_OFF) / SLOT);
        const off = POOL_OFF + p * SLOT + 64;
        check(p >= 0 && p < count && co.segmentOffset[s] >= off && co.segmentOffset[s] + co.segmentLength[s] <= off + packetLens[p], 'a segment outside every packet');
        check(seen[p] < 0, () => `packet ${p} written twice`);
        seen[p] = w;
        members.push(p);
        order.push(p);
      }
      check(members[0] > lastFirst, 'writes are not in the order of their first packet');
      lastFirst = members[0];
      for (let m = 1; m < members.length; m++) check(members[m] > members[m - 1], 'members of a write out of order');
      if (headerLength === 10) {
        check(members.length === 1, 'an unmerged write with several segments');
        const p = members[0];
        check(co.segmentOffset[s0] === POOL_OFF + p * SLOT + 64 && co.segmentLength[s0] === packetLens[p], 'a packet written alone is not written whole');
        for (let b = 0; b < 10; b++) check(P[RX_ARENA + w * RX_STRIDE + b] === 0, 'a packet written alone has a non-zero virtio header');
        continue;
      }
      // A merged write: virtio header + rebuilt headers + the members' payloads.
      merged++;
      const hdr = RX_ARENA + w * RX_STRIDE;
      reVnet.read(P, hdr);
      const first = POOL_OFF + members[0] * SLOT + 64;
      const protocol = P[first + 9];
      const ihl = (P[first] & 0x0f) << 2;
      check(reVnet.flags === 1 && reVnet.gsoType === (protocol === IP_TCP ? 1 : 5), 'merged write: virtio flags or gso_type wrong');
      check(reVnet.hdrLen === headerLength - 10 && reVnet.csumStart === ihl && reVnet.csumOffset === (protocol === IP_TCP ? 16 : 6), 'merged write: virtio hdr_len/csum wrong');
      reBuf.set(P.subarray(hdr + 10, hdr + headerLength), 0);
      let at = headerLength - 10;
      for (let s = s0; s < s1; s++) {
        reBuf.set(P.subarray(co.segmentOffset[s], co.segmentOffset[s] + co.segmentLength[s]), at);
        at += co.segmentLength[s];
      }
      check(at <= 65535 && ipv4Valid(reBuf, 0, at) && read16(reBuf, 2) === at, () => `merged write is not a valid IPv4 packet of ${at} bytes`);
      const mss = reVnet.gsoSize;
      for (let s = s0; s < s1; s++) {
        check(s === s1 - 1 ? co.segmentLength[s] <= mss : co.segmentLength[s] === mss, 'merged member payloads do not cut at gso_size');
      }
      for (let m = 0; m < members.length; m++) {
        const off = POOL_OFF + members[m] * SLOT + 64;
        check(flowKey(P, off, packetLens[members[m]], true) === flowKey(P, first, packetLens[members[0]], true), 'members of different flows merged');
        if (protocol === IP_TCP) {
          const flags = P[off + ihl + 13];
          check(flags === 0x10 || (flags === 0x18 && m === members.length - 1), () => `a member with TCP flags 0x${flags.toString(16)} merged`);
          check(read32(P, off + ihl + 4) === (read32(P, first + ihl + 4) + m * mss) >>> 0, 'members not consecutive in sequence');
        }
        if (co.verifyChecksums) check(l4ChecksumValid(P, off), 'a member with a bad checksum merged (verifyChecksums)');
      }
      const n = splitSuperPacket(reBuf, 0, at, reVnet, RE_ARENA, SPLIT_STRIDE, 0, reSegs);
      check(n === members.length, () => `the merged write re-splits into ${n} segments, not ${members.length}`);
    }
    for (let p = 0; p < count; p++) check(seen[p] >= 0, () => `packet ${p} was never written`);
    // Per flow, the order of arrival survives.
    const lastOfFlow = new Map<string, number>();
    for (const p of order) {
      const key = flowKey(P, POOL_OFF + p * SLOT + 64, packetLens[p], co.udpSegmentation);
      if (key === '') continue;
      check((lastOfFlow.get(key) ?? -1) < p, 'a flow was reordered');
      lastOfFlow.set(key, p);
    }

    if (rng.chance(0.25)) {
      // Twin: the same packets in a buffer with other garbage around them give the same writes.
      Q.set(QG);
      for (let p = 0; p < count; p++) {
        const off = POOL_OFF + p * SLOT + 64;
        Q.set(P.subarray(off, off + packetLens[p]), off);
      }
      const wA = Array.from({ length: writes }, (_, w) => [co.writeHeaderLength[w], co.writeSegmentStart[w], co.writeSegmentEnd[w]].join());
      const segA = Array.from({ length: co.writeSegmentEnd[writes - 1] }, (_, s) => `${co.segmentOffset[s]}+${co.segmentLength[s]}`).join();
      const headers = Array.from({ length: writes }, (_, w) => Buffer.from(P.subarray(RX_ARENA + w * RX_STRIDE, RX_ARENA + w * RX_STRIDE + co.writeHeaderLength[w])).toString('hex'));
      co.reset();
      for (let p = 0; p < count; p++) co.add(Q, POOL_OFF + p * SLOT + 64, packetLens[p]);
      const writesB = co.finish(Q, RX_ARENA, RX_STRIDE);
      check(writesB === writes, 'CoalesceBatch: the number of writes depends on bytes outside the packets');
      const wB = Array.from({ length: writes }, (_, w) => [co.writeHeaderLength[w], co.writeSegmentStart[w], co.writeSegmentEnd[w]].join());
      const segB = Array.from({ length: co.writeSegmentEnd[writes - 1] }, (_, s) => `${co.segmentOffset[s]}+${co.segmentLength[s]}`).join();
      check(wA.join('|') === wB.join('|') && segA === segB, 'CoalesceBatch: the writes depend on bytes outside the packets');
      for (let w = 0; w < writes; w++) {
        check(Buffer.from(Q.subarray(RX_ARENA + w * RX_STRIDE, RX_ARENA + w * RX_STRIDE + co.writeHeaderLength[w])).toString('hex') === headers[w], 'CoalesceBatch: a header depends on bytes outside the packets');
      }
    }
    co.reset();
    batches++;
    return count;
  }));
  console.log(`    (${batches} batches, ${merged} merged writes re-split)`);
  assertClean(r);
});

// ---- completePartialChecksum ----

test('fuzz: completePartialChecksum with random csum_start/csum_offset', () => {
  const r = fuzz('partial-csum', 100_000, ((rng, _i, trace) => {
    const protocol = rng.chance(0.6) ? IP_TCP : IP_UDP;
    const total = writePacket(rng, W, OFF, {
      src: podAddress(1, rng.range(2, 254)), dst: podAddress(2, rng.range(2, 254)), protocol,
      options: rng.chance(0.1) ? randomIpOptions(rng) : [], tcpOptions: protocol === IP_TCP && rng.chance(0.5) ? randomTcpOptions(rng) : [],
      payloadLength: rng.chance(0.05) ? 0 : rng.int(1420), l4Checksum: 'partial',
    });
    const ihl = (W[OFF] & 0x0f) << 2;
    const field = protocol === IP_TCP ? 16 : 6;
    let pktLen = total;
    let start = ihl;
    let offset = field;
    const roll = rng.int(4);
    if (roll === 1) {
      start = rng.pick([0, 1, ihl - 1, ihl + 1, total - 2, total - 1, total, total + 1, 0xffff]);
      offset = rng.pick([0, 1, field, total - start - 2, total - start - 1, total - start, 0xffff]);
    } else if (roll === 2) {
      start = rng.int(0x10000);
      offset = rng.int(0x10000);
    } else if (roll === 3) {
      pktLen = rng.int(total + 1);
    }
    start &= 0xffff;
    offset = offset & 0xffff;
    trace?.push(`pktLen ${pktLen} csumStart ${start} csumOffset ${offset}`);
    noteInput(() => `pktLen ${pktLen} csum_start ${start} csum_offset ${offset}; ${hexDump(W, OFF, total)}`);
    loadTwins(OFF, pktLen);
    const ok = completePartialChecksum(A, OFF, pktLen, start, offset);
    const okB = completePartialChecksum(B, OFF, pktLen, start, offset);
    const expected = start < pktLen && start + offset + 2 <= pktLen;
    check(ok === expected && okB === ok, () => `returned ${ok} (twin ${okB}), expected ${expected}`);
    if (!ok) {
      check(sameBytes(bufA, OFF, bufW, OFF, pktLen), 'a refused packet was changed');
    } else {
      const at = start + offset;
      check(sameBytes(bufA, OFF, bufW, OFF, at) && sameBytes(bufA, OFF + at + 2, bufW, OFF + at + 2, pktLen - at - 2), 'bytes other than the checksum field changed');
      check(A[OFF + at] === B[OFF + at] && A[OFF + at + 1] === B[OFF + at + 1], 'the checksum depends on bytes past pktLen');
      check(read16(A, OFF + at) !== 0, 'a computed checksum of 0 must be stored as 0xFFFF');
      if (start === ihl && offset === field && pktLen === total) check(l4ChecksumValid(A, OFF), 'the completed TCP/UDP checksum does not verify');
    }
    restoreTwins(OFF, OFF + total);
    return 1;
  }));
  assertClean(r);
});

// ---- the files and values the control plane reads ----

const SUBNET_CORPUS = [
  'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n',
  'FLANNEL_NETWORK=10.244.0.0/16\r\nFLANNEL_SUBNET=10.244.7.1/24\r\nFLANNEL_MTU=1450\r\nFLANNEL_IPMASQ=true\r\n',
  '# written by flanneld\nFLANNEL_NETWORK=10.0.0.0/8\nFLANNEL_SUBNET=10.9.128.1/17\nFLANNEL_IPV6_NETWORK=fc00::/48\nFLANNEL_IPV6_SUBNET=fc00:0:0:2::1/64\nFLANNEL_MTU=8951\nFLANNEL_IPMASQ=true\n',
  'FLANNEL_NETWORK=172.16.0.0/12\nFLANNEL_SUBNET=172.16.0.1/28\nFLANNEL_MTU=68\nFLANNEL_IPMASQ=false\nOTHER=1\n',
  'FLANNEL_NETWORK=0.0.0.0/0\nFLANNEL_SUBNET=192.0.2.1/32\nFLANNEL_MTU=65535\nFLANNEL_IPMASQ=false',
];

test('fuzz: parseSubnetFile on mutated subnet.env texts (a config that round-trips, or a SubnetFileError with a message)', () => {
  const r = fuzz('subnet-file', 30_000, ((rng) => {
    const text = mutateText(rng, rng.pick(SUBNET_CORPUS), SUBNET_CORPUS);
    noteInput(() => JSON.stringify(text.length > 400 ? text.slice(0, 400) + '…' : text));
    let cfg: SubnetConfig;
    try {
      cfg = parseSubnetFile(text, 'subnet.env');
    } catch (err) {
      check(err instanceof SubnetFileError, () => `threw ${(err as Error).name} (${(err as Error).message}), not a SubnetFileError`);
      check((err as Error).message.startsWith('subnet.env'), () => `the message does not name the file: ${(err as Error).message}`);
      return 0;
    }
    check(Number.isInteger(cfg.mtu) && cfg.mtu >= 68 && cfg.mtu <= 65535, () => `accepted MTU ${cfg.mtu}`);
    check(cidrCovers(cfg.network, cfg.subnet), 'accepted a subnet outside the network');
    const again = parseSubnetFile(formatSubnetFile(cfg), 'again.env');
    check(cidrEquals(again.network, cfg.network) && cidrEquals(again.subnet, cfg.subnet) && again.subnet.ip === cfg.subnet.ip && again.mtu === cfg.mtu && again.ipMasq === cfg.ipMasq, 'formatSubnetFile does not round-trip');
    return 0;
  }));
  assertClean(r);
});

function leasesText(rng: Rng): string {
  const leases: Record<string, unknown> = {};
  const n = rng.range(1, 10);
  for (let k = 0; k < n; k++) {
    const key = `10.244.${k + 1}.0-24`;
    leases[key] = rng.chance(0.7)
      ? { PublicIP: `192.0.2.${k + 1}`, BackendType: 'udp' }
      : { PublicIP: `192.0.2.${k + 1}`, PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: `0e:66:75:00:00:0${k}` } };
  }
  return JSON.stringify(leases, null, rng.chance(0.5) ? 2 : 0);
}

const LEASES_CORPUS = ['{}', '{"10.244.2.0-24": {"PublicIP": "192.0.2.2", "BackendType": "udp"}}', leasesText(new Rng(1)), leasesText(new Rng(2))];
const OWN = parseCidr('10.244.1.1/24');

test('fuzz: parseLeasesFile on mutated leases files (consistent leases, or a LeasesFileError with a message)', () => {
  const r = fuzz('leases-file', 20_000, ((rng) => {
    const base = rng.chance(0.5) ? leasesText(rng) : rng.pick(LEASES_CORPUS);
    const text = mutateText(rng, base, LEASES_CORPUS);
    const own = rng.chance(0.5) ? OWN : undefined;
    noteInput(() => JSON.stringify(text.length > 400 ? text.slice(0, 200) + ` …(${text.length} chars)… ` + text.slice(-100) : text));
    let parsed: ParsedLeasesFile;
    try {
      parsed = parseLeasesFile(text, 'leases.json', own);
    } catch (err) {
      check(err instanceof LeasesFileError, () => `threw ${(err as Error).name} (${(err as Error).message}), not a LeasesFileError`);
      check((err as Error).message.includes('leases.json'), () => `the message does not name the file: ${(err as Error).message}`);
      return 0;
    }
    const { leases } = parsed;
    for (const lease of leases) {
      check(lease.key === formatSubnetKey(lease.subnet, lease.ipv6Subnet), () => `lease key ${lease.key} is not canonical`);
      check(Number.isInteger(lease.publicIp) && lease.publicIp >= 0 && lease.publicIp <= 0xffffffff, 'public IP not a uint32');
      check(typeof lease.backendType === 'string' && lease.backendType !== '', 'empty backend type');
      check(own === undefined || !cidrEquals(lease.subnet, own), "the node's own subnet was not skipped");
    }
    if (leases.length <= 64) {
      for (let a = 0; a < leases.length; a++) for (let b = a + 1; b < leases.length; b++) check(!cidrOverlaps(leases[a].subnet, leases[b].subnet), 'overlapping leases accepted');
    }
    return 0;
  }));
  assertClean(r);
});

const KEYS = ['10.244.2.0-24', '10.244.0.0-16', '0.0.0.0-0', '192.0.2.1-32', '10.244.2.0-24&fc00::-64', '0.0.0.0-0&fd00:10:244:2::-64'];

test('fuzz: parseLeaseAttrs on random JSON values and mutated subnet keys (a Lease, or a LeaseError with a message)', () => {
  const r = fuzz('lease-attrs', 50_000, ((rng) => {
    const key = rng.chance(0.6) ? rng.pick(KEYS) : mutateText(rng, rng.pick(KEYS), KEYS).slice(0, 64);
    const value = randomJsonValue(rng);
    noteInput(() => `key ${JSON.stringify(key)} value ${JSON.stringify(value)}`);
    let lease: Lease;
    try {
      lease = parseLeaseAttrs(key, value);
    } catch (err) {
      check(err instanceof LeaseError, () => `threw ${(err as Error).name} (${(err as Error).message}), not a LeaseError`);
      check((err as Error).message.length > 0, 'an empty message');
      return 0;
    }
    check(lease.key === formatSubnetKey(lease.subnet, lease.ipv6Subnet), 'key not canonical');
    check(Number.isInteger(lease.publicIp) && lease.publicIp >= 0 && lease.publicIp <= 0xffffffff, 'public IP not a uint32');
    check(typeof lease.backendType === 'string' && lease.backendType !== '', 'empty backend type');
    return 0;
  }));
  assertClean(r);
});

test('found by the fuzzer: a leases file nested 10 000 deep is refused with a LeasesFileError, not a stack overflow', () => {
  // src/control/leases-file.ts scanJson() recursed once per nesting level; from
  // a few thousand levels on it threw RangeError "Maximum call stack size
  // exceeded" instead of a LeasesFileError naming the file and position, and
  // at start the CLI printed a stack trace and exited 1 instead of 2. Fixed in
  // ee2b8dd (a 64-level limit); this keeps it fixed.
  const text = `{"10.244.2.0-24": ${'['.repeat(10_000)}${']'.repeat(10_000)}}`;
  let thrown: unknown;
  try {
    parseLeasesFile(text, 'leases.json');
  } catch (err) {
    thrown = err;
  }
  assert.ok(thrown instanceof Error, 'must be refused');
  assert.ok(thrown instanceof LeasesFileError, `threw ${(thrown as Error).name}: ${(thrown as Error).message}`);
});

test('fuzz totals: at least a million packets through the decoders', () => {
  if (REPLAY !== '') return;
  const packets = results.reduce((n, r) => n + r.packets, 0);
  const texts = results.filter((r) => r.packets === 0).reduce((n, r) => n + r.cases, 0);
  const ms = results.reduce((n, r) => n + r.ms, 0);
  for (const r of results) console.log(`    ${r.name.padEnd(13)} ${String(r.cases).padStart(8)} cases ${String(r.packets).padStart(8)} packets ${(r.ms / 1000).toFixed(1).padStart(6)} s`);
  console.log(`    total: ${packets} packets and ${texts} texts/values in ${(ms / 1000).toFixed(1)} s (seed ${SEED})`);
  for (const [decoder, counts] of reasonCounts) {
    const all = counts.reduce((a, b) => a + b, 0);
    const parts = [...counts].map((n, code) => [n, code]).filter(([n]) => n > 0).map(([n, code]) => `${code === 0 ? 'accepted' : dropReasonNames[code]} ${((100 * n) / all).toFixed(1)}%`);
    console.log(`    ${decoder}: ${parts.join(', ')}`);
  }
  if (SCALE >= 1) assert.ok(packets >= 1_000_000, `only ${packets} packets`);
});

test.run();
