// The pcap writer: files that pcap-parser and tcpdump read back exactly, the
// synthetic Ethernet/IPv4/UDP prefix of UDP-side captures and its IPv6
// underlay twin (Ethernet/IPv6/UDP, checksum computed), truncation,
// buffering and size rotation. Every file lives in a temp dir removed at the end.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createRequire } from 'node:module';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CAPTURE_LINK_TYPES,
  CAPTURE_POINTS,
  LINKTYPE_ETHERNET,
  LINKTYPE_RAW,
  PCAP_SNAPLEN,
  PcapWriter,
  SYNTHETIC_UDP_PREFIX,
  SYNTHETIC_UDP6_PREFIX,
  WorkerCaptures,
  capturePath,
  rotatedPath,
  udpPayloadSum,
  writeSyntheticUdpPrefix,
  writeSyntheticUdp6Prefix,
} from '../../src/observe/pcap-writer.js';
import { ICMP_ECHO_REQUEST, buildIcmpEcho } from '../../src/encap/icmp.js';
import { createOuterUdpFields, parseOuterIPv4Udp } from '../../src/encap/udp-frame.js';
import { DropReason } from '../../src/encap/drop-reasons.js';
import { parseIPv4 } from '../../src/control/ipv4-address.js';
import { parseIPv6 } from '../../src/control/ipv6-address.js';
import { ICMPV6_ECHO_REQUEST, buildIcmpv6Echo } from '../../src/encap/icmpv6.js';
import { runRequiredTool } from '../support/required-tool.js';

const require = createRequire(import.meta.url);
interface PcapPacket {
  header: { timestampSeconds: number; timestampMicroseconds: number; capturedLength: number; originalLength: number };
  data: Buffer;
}
interface PcapGlobalHeader {
  magicNumber: number;
  majorVersion: number;
  minorVersion: number;
  gmtOffset: number;
  timestampAccuracy: number;
  snapshotLength: number;
  linkLayerType: number;
}
const pcapParser = require('pcap-parser') as {
  parse(path: string): {
    on(event: 'globalHeader', fn: (h: PcapGlobalHeader) => void): void;
    on(event: 'packet', fn: (p: PcapPacket) => void): void;
    on(event: 'end' | 'error', fn: (e?: Error) => void): void;
  };
};

function readPcap(path: string): Promise<{ header: PcapGlobalHeader; packets: PcapPacket[] }> {
  return new Promise((resolve, reject) => {
    let header: PcapGlobalHeader | undefined;
    const packets: PcapPacket[] = [];
    const parser = pcapParser.parse(path);
    parser.on('globalHeader', (h) => (header = h));
    parser.on('packet', (p) => packets.push(p));
    parser.on('error', (e) => reject(e));
    parser.on('end', () => (header ? resolve({ header, packets }) : reject(new Error(`${path}: no global header`))));
  });
}

/** tcpdump's reading of a file: one line per packet; throws if tcpdump fails. */
function tcpdump(path: string, ...flags: string[]): string[] {
  const out = runRequiredTool('tcpdump', 'tcpdump', ['-nn', ...flags, '-r', path], { stdio: ['ignore', 'pipe', 'pipe'] });
  // One line per packet starts with its timestamp; decoders may add indented lines.
  return out.split('\n').filter((l) => /^\d\d:\d\d:\d\d\.\d{6} /.test(l));
}

const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'flannel-udp-pcap-'));
  dirs.push(d);
  return d;
}

function echo(seq: number, payload = 56, off = 0, buf = new Uint8Array(off + 28 + payload)): Uint8Array {
  buildIcmpEcho(buf, off, parseIPv4('10.244.1.2'), parseIPv4('10.244.2.2'), ICMP_ECHO_REQUEST, 20, seq, payload);
  return buf;
}

const NO_ROTATION = { rotateBytes: 0, maxFiles: 1 };

test('raw IPv4 packets round-trip through pcap-parser: global header, lengths, timestamps, bytes', async () => {
  const path = join(tempDir(), 'tun-in-w0.pcap');
  const w = new PcapWriter(path, LINKTYPE_RAW, NO_ROTATION);
  const sent: Uint8Array[] = [];
  for (let seq = 1; seq <= 5; seq++) {
    // Packets sit at an odd offset behind headroom, as in a pool slot.
    const slot = echo(seq, 50 + seq, 33);
    sent.push(slot.slice(33));
    w.write(slot, 33, 28 + 50 + seq, 1_700_000_000_123_456_000 + seq * 1000);
  }
  w.close();
  const { header, packets } = await readPcap(path);
  assert.equal(header, {
    magicNumber: 0xa1b2c3d4,
    majorVersion: 2,
    minorVersion: 4,
    gmtOffset: 0,
    timestampAccuracy: 0,
    snapshotLength: PCAP_SNAPLEN,
    linkLayerType: LINKTYPE_RAW,
  });
  assert.is(packets.length, 5);
  packets.forEach((p, i) => {
    assert.is(p.header.capturedLength, sent[i].length);
    assert.is(p.header.originalLength, sent[i].length);
    assert.equal(Uint8Array.from(p.data), sent[i]);
    assert.is(p.header.timestampSeconds, 1_700_000_000);
    // ns → µs: the double holding 1.7e18 ns is exact to 256 ns, pcap keeps µs.
    assert.ok(Math.abs(p.header.timestampMicroseconds - (123_456 + (i + 1))) <= 1, `µs ${p.header.timestampMicroseconds}`);
  });
  const lines = tcpdump(path);
  assert.is(lines.length, 5);
  assert.match(lines[0], /IP 10\.244\.1\.2 > 10\.244\.2\.2: ICMP echo request, id 20, seq 1, length 59/);
  assert.match(lines[4], /seq 5, length 63/);
  assert.is(statSync(path).mode & 0o777, 0o600, 'captures hold pod traffic: owner only');
});

test('IPv6 packets in a TUN-side capture: LINKTYPE_RAW carries either family, tcpdump reads them as IP6 beside IPv4', async () => {
  const path = join(tempDir(), 'tun-in-w0.pcap');
  const w = new PcapWriter(path, LINKTYPE_RAW, NO_ROTATION);
  const v6 = new Uint8Array(40 + 8 + 56);
  buildIcmpv6Echo(v6, 0, parseIPv6('fd00:10:244:1::2'), parseIPv6('fd00:10:244:2::2'), ICMPV6_ECHO_REQUEST, 20, 7, 56);
  w.write(v6, 0, v6.length, 1_700_000_000_000_000_000);
  w.write(echo(8), 0, 84, 1_700_000_000_000_001_000);
  w.close();
  const { header, packets } = await readPcap(path);
  assert.is(header.linkLayerType, LINKTYPE_RAW);
  assert.equal(Uint8Array.from(packets[0].data), v6);
  const lines = tcpdump(path);
  assert.is(lines.length, 2);
  assert.match(lines[0], /IP6 fd00:10:244:1::2 > fd00:10:244:2::2: ICMP6, echo request, id 20, seq 7, length 64/);
  assert.match(lines[1], /IP 10\.244\.1\.2 > 10\.244\.2\.2: ICMP echo request/);
  // And tcpdump's own filter agrees with ours on the family.
  assert.is(tcpdump(path, 'icmp6').length, 1);
});

test('default timestamps are the wall clock', async () => {
  const path = join(tempDir(), 'now.pcap');
  const w = new PcapWriter(path, LINKTYPE_RAW, NO_ROTATION);
  const before = Date.now();
  w.write(echo(1), 0, 84);
  w.close();
  const [p] = (await readPcap(path)).packets;
  const ms = p.header.timestampSeconds * 1000 + p.header.timestampMicroseconds / 1000;
  assert.ok(ms >= before - 5 && ms <= Date.now() + 5, `${ms} vs ${before}`);
});

test('UDP side: synthetic Ethernet + outer IPv4 + UDP prefix, then the payload, written in pieces', async () => {
  const path = join(tempDir(), 'udp-out-w0.pcap');
  const w = new PcapWriter(path, LINKTYPE_ETHERNET, NO_ROTATION);
  const prefix = new Uint8Array(SYNTHETIC_UDP_PREFIX + 3);
  const payloads: Uint8Array[] = [];
  for (let seq = 1; seq <= 3; seq++) {
    const slot = echo(seq, 56, 32);
    payloads.push(slot.slice(32));
    assert.is(writeSyntheticUdpPrefix(prefix, 3, undefined, undefined, parseIPv4('192.0.2.1'), parseIPv4('192.0.2.2'), 8285, 8285, 84, seq), 42);
    w.begin(SYNTHETIC_UDP_PREFIX + 84);
    w.append(prefix, 3, SYNTHETIC_UDP_PREFIX);
    w.append(slot, 32, 84);
    w.end();
  }
  // A caller-chosen MAC pair.
  const mac = (last: number) => Uint8Array.of(0x0e, 0x66, 0x75, 0, 0, last);
  writeSyntheticUdpPrefix(prefix, 0, mac(1), mac(2), parseIPv4('192.0.2.1'), parseIPv4('192.0.2.2'), 40000, 8472, 84, 9);
  w.begin(SYNTHETIC_UDP_PREFIX + 84);
  w.append(prefix, 0, SYNTHETIC_UDP_PREFIX);
  w.append(payloads[0], 0, 84);
  w.end();
  w.close();

  const { header, packets } = await readPcap(path);
  assert.is(header.linkLayerType, LINKTYPE_ETHERNET);
  assert.is(packets.length, 4);
  const outer = createOuterUdpFields();
  packets.slice(0, 3).forEach((p, i) => {
    const bytes = Uint8Array.from(p.data);
    assert.is(p.header.capturedLength, 42 + 84);
    assert.equal(Array.from(bytes.subarray(0, 6)), [0x02, 0x00, 192, 0, 2, 2], 'destination MAC derived from the destination IP');
    assert.equal(Array.from(bytes.subarray(6, 12)), [0x02, 0x00, 192, 0, 2, 1]);
    assert.is((bytes[12] << 8) | bytes[13], 0x0800);
    assert.is(parseOuterIPv4Udp(bytes, 14, bytes.length - 14, outer), DropReason.None, 'a valid IPv4 + UDP datagram');
    assert.equal(
      { ...outer },
      { srcAddr: parseIPv4('192.0.2.1'), dstAddr: parseIPv4('192.0.2.2'), srcPort: 8285, dstPort: 8285, payloadOffset: 42, payloadLength: 84 },
    );
    assert.equal(bytes.subarray(42), payloads[i]);
    assert.is((bytes[14 + 4] << 8) | bytes[14 + 5], i + 1, 'the IP id given');
  });
  assert.equal(Array.from(Uint8Array.from(packets[3].data).subarray(0, 12)), [0x0e, 0x66, 0x75, 0, 0, 2, 0x0e, 0x66, 0x75, 0, 0, 1]);
  const lines = tcpdump(path, '-e');
  assert.is(lines.length, 4);
  assert.match(lines[0], /02:00:c0:00:02:01 > 02:00:c0:00:02:02, ethertype IPv4 \(0x0800\).*192\.0\.2\.1\.8285 > 192\.0\.2\.2\.8285: UDP, length 84/);
  assert.match(lines[3], /192\.0\.2\.1\.40000 > 192\.0\.2\.2\.8472/);
});

/** Four big-endian int32 words of an IPv6 address, as the lease table and the receive batch hold them. */
const words6 = (text: string) => {
  const a = parseIPv6(text);
  return Int32Array.from([0, 4, 8, 12], (i) => (a[i] << 24) | (a[i + 1] << 16) | (a[i + 2] << 8) | a[i + 3]);
};

/**
 * The UDP-over-IPv6 checksum of a decoded frame, computed here the long way
 * (RFC 8200 §8.1: pseudo-header of addresses, upper-layer length and next
 * header 17, then the UDP header with a zero checksum field, then the payload,
 * odd tail padded), independent of src/encap/checksum.ts. 0 comes out as 0xffff.
 */
function udp6ChecksumOf(frame: Uint8Array): number {
  const ip = 14;
  const udpLength = (frame[ip + 4] << 8) | frame[ip + 5];
  const bytes = [...frame.subarray(ip + 8, ip + 40), 0, 0, udpLength >> 8, udpLength & 255, 0, 0, 0, 17, ...frame.subarray(ip + 40, ip + 40 + udpLength)];
  bytes[40 + 6] = 0; // the checksum field itself counts as zero
  bytes[40 + 7] = 0;
  if (bytes.length % 2) bytes.push(0);
  let sum = 0;
  for (let i = 0; i < bytes.length; i += 2) sum += bytes[i] * 256 + bytes[i + 1];
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return 0xffff - sum || 0xffff;
}

test('IPv6 underlay: Ethernet 0x86dd + outer IPv6 + UDP with a computed checksum, over a payload in odd pieces; pcap-parser, tcpdump -vv and an independent checksum agree', async () => {
  const path = join(tempDir(), 'udp-out-w0.pcap');
  const w = new PcapWriter(path, LINKTYPE_ETHERNET, NO_ROTATION);
  const src = words6('2001:db8::1');
  const dst = words6('2001:db8::2');
  // Records as the forwarder writes them: [prefix, a header piece, a payload piece]; odd piece lengths and offsets.
  const payload = new Uint8Array(40 + 8 + 57);
  buildIcmpv6Echo(payload, 0, parseIPv6('fd00:10:244:1::2'), parseIPv6('fd00:10:244:2::2'), ICMPV6_ECHO_REQUEST, 20, 7, 57);
  const slot = new Uint8Array(3 + payload.length);
  slot.set(payload, 3);
  const prefix = new Uint8Array(SYNTHETIC_UDP6_PREFIX + 1);
  const cases: Array<{ headerLength: number; srcPort: number }> = [
    { headerLength: 0, srcPort: 8285 }, // UDP mode: one piece
    { headerLength: 41, srcPort: 40001 }, // an odd header piece: the payload piece's bytes pair the other way round
    { headerLength: 48, srcPort: 40002 },
  ];
  for (const c of cases) {
    const sum = udpPayloadSum(slot, 3, c.headerLength, slot, 3 + c.headerLength, payload.length - c.headerLength);
    assert.is(writeSyntheticUdp6Prefix(prefix, 1, src, 0, dst, 0, c.srcPort, 8285, payload.length, sum), 62);
    w.begin(SYNTHETIC_UDP6_PREFIX + payload.length, 1_700_000_000_000_000_000);
    w.append(prefix, 1, SYNTHETIC_UDP6_PREFIX);
    if (c.headerLength > 0) w.append(slot, 3, c.headerLength);
    w.append(slot, 3 + c.headerLength, payload.length - c.headerLength);
    w.end();
  }
  // A payload whose checksum computes to 0: written as 0xffff, since 0 would mean none (and is invalid over IPv6).
  const zero = new Uint8Array(20).fill(0x5a);
  zero[18] = zero[19] = 0;
  const prefixFor = (p: Uint8Array) => writeSyntheticUdp6Prefix(prefix, 1, src, 0, dst, 0, 8285, 8285, p.length, udpPayloadSum(p, 0, p.length, p, 0, 0));
  prefixFor(zero);
  const fix = (prefix[1 + 14 + 40 + 6] << 8) | prefix[1 + 14 + 40 + 7]; // the checksum as the last word makes the sum 0xffff
  zero[18] = fix >> 8;
  zero[19] = fix & 255;
  prefixFor(zero);
  w.begin(SYNTHETIC_UDP6_PREFIX + zero.length, 1_700_000_000_000_000_000);
  w.append(prefix, 1, SYNTHETIC_UDP6_PREFIX);
  w.append(zero, 0, zero.length);
  w.end();
  w.close();

  const { packets } = await readPcap(path);
  assert.is(packets.length, 4);
  packets.forEach((p, i) => {
    const f = Uint8Array.from(p.data);
    const body = i < 3 ? payload : zero;
    assert.is(p.header.capturedLength, 62 + body.length);
    assert.equal([...f.subarray(0, 12)], [0x02, 0x00, 0, 0, 0, 2, 0x02, 0x00, 0, 0, 0, 1], 'MACs from the addresses\' last four bytes');
    assert.is((f[12] << 8) | f[13], 0x86dd, 'ethertype IPv6');
    assert.equal([...f.subarray(14, 18)], [0x60, 0, 0, 0], 'version 6, traffic class and flow label 0');
    assert.is((f[18] << 8) | f[19], 8 + body.length, 'payload length: UDP header + payload');
    assert.is(f[20], 17, 'next header UDP');
    assert.is(f[21], 64, 'hop limit');
    assert.equal(f.subarray(22, 38), parseIPv6('2001:db8::1'));
    assert.equal(f.subarray(38, 54), parseIPv6('2001:db8::2'));
    assert.is((f[54] << 8) | f[55], i < 3 ? cases[i].srcPort : 8285);
    assert.is((f[56] << 8) | f[57], 8285);
    assert.is((f[58] << 8) | f[59], 8 + body.length, 'UDP length');
    assert.is((f[60] << 8) | f[61], udp6ChecksumOf(f), `record ${i}: the checksum an independent computation gives`);
    assert.equal(f.subarray(62), body);
  });
  assert.is((packets[3].data[60] << 8) | packets[3].data[61], 0xffff, 'a computed 0 is written as 0xffff');
  const lines = tcpdump(path, '-vv');
  assert.is(lines.length, 4);
  for (const l of lines) assert.match(l, /IP6 \(hlim 64, next-header UDP \(17\) payload length: \d+\) 2001:db8::1\.\d+ > 2001:db8::2\.8285: \[udp sum ok\] UDP, length \d+/);
  assert.match(lines[1], /2001:db8::1\.40001 > 2001:db8::2\.8285: \[udp sum ok\] UDP, length 105/);
});

test('a packet longer than what is appended, and one longer than the snaplen, become truncated records', async () => {
  const path = join(tempDir(), 'cut.pcap');
  const w = new PcapWriter(path, LINKTYPE_RAW, NO_ROTATION);
  const p = echo(1, 1000);
  w.begin(1028);
  w.append(p, 0, 100);
  w.end();
  w.begin(20);
  w.append(p, 0, 1028); // more than announced: cut at 20
  w.end();
  w.close();
  const { packets } = await readPcap(path);
  assert.equal(
    packets.map((x) => [x.header.capturedLength, x.header.originalLength, x.data.length]),
    [
      [100, 1028, 100],
      [20, 20, 20],
    ],
  );
  assert.equal(Uint8Array.from(packets[0].data), p.subarray(0, 100));
  assert.is(tcpdump(path).length, 2);
});

test('buffered until flush (or until the buffer fills); begin/append/end misuse is an error', () => {
  const path = join(tempDir(), 'buffered.pcap');
  const w = new PcapWriter(path, LINKTYPE_RAW, { ...NO_ROTATION, bufferBytes: 128 * 1024 });
  w.write(echo(1), 0, 84);
  assert.is(statSync(path).size, 24, 'only the global header until flush()');
  w.flush();
  assert.is(statSync(path).size, 24 + 16 + 84);
  const big = echo(2, 1400);
  for (let i = 0; i < 200; i++) w.write(big, 0, big.length); // 200 × 1444 bytes > 128 KiB
  assert.ok(statSync(path).size > 24 + 100 + 100_000, 'a full buffer was written without waiting for flush()');
  assert.throws(() => w.append(big, 0, 10), /append\(\) without begin\(\)/);
  w.begin(10);
  assert.throws(() => w.begin(10), /begin\(\) before end\(\)/);
  assert.throws(() => w.flush(), /inside a packet/);
  w.append(big, 0, 10);
  w.end();
  w.close();
  assert.is(statSync(path).size, 24 + 100 + 200 * (16 + 1428) + 16 + 10);
  assert.throws(() => w.write(big, 0, 10), /closed/);
  w.close(); // twice is fine
});

test('rotation by size: x.pcap → x.1.pcap → x.2.pcap, the oldest beyond maxFiles removed, each file whole', async () => {
  const dir = tempDir();
  const path = capturePath(dir, 'tun-in', 0);
  assert.is(path, join(dir, 'tun-in-w0.pcap'));
  assert.is(rotatedPath(path, 2), join(dir, 'tun-in-w0.2.pcap'));
  const w = new PcapWriter(path, LINKTYPE_RAW, { rotateBytes: 1000, maxFiles: 3 });
  // 100 bytes + 16 per record: 8 records fit after the 24-byte header (952 bytes), the 9th starts a new file.
  for (let seq = 1; seq <= 30; seq++) {
    w.write(echo(seq, 72), 0, 100);
    if (seq % 5 === 0) w.flush();
  }
  w.close();
  assert.is(w.packets, 30);
  assert.is(w.files, 4);
  assert.not.ok(existsSync(rotatedPath(path, 3)), 'only maxFiles files are kept');
  const seqsOf = async (p: string) => (await readPcap(p)).packets.map((x) => (x.data[26] << 8) | x.data[27]);
  assert.equal(await seqsOf(rotatedPath(path, 2)), [9, 10, 11, 12, 13, 14, 15, 16]);
  assert.equal(await seqsOf(rotatedPath(path, 1)), [17, 18, 19, 20, 21, 22, 23, 24]);
  assert.equal(await seqsOf(path), [25, 26, 27, 28, 29, 30]);
  for (const i of [0, 1, 2]) {
    const file = rotatedPath(path, i);
    assert.ok(statSync(file).size <= 1000, `${file} within rotateBytes`);
    assert.is(tcpdump(file).length, i === 0 ? 6 : 8);
  }
  // A single record larger than rotateBytes still gets written, alone in its file.
  const lone = new PcapWriter(join(dir, 'lone.pcap'), LINKTYPE_RAW, { rotateBytes: 50, maxFiles: 2 });
  lone.write(echo(1, 72), 0, 100);
  lone.write(echo(2, 72), 0, 100);
  lone.close();
  assert.equal(await seqsOf(join(dir, 'lone.pcap')), [2]);
  assert.equal(await seqsOf(join(dir, 'lone.1.pcap')), [1]);
});

test('WorkerCaptures: four files per worker with their link types, flushed at most every 100 ms', async () => {
  const dir = join(tempDir(), 'captures'); // created by the writers
  const c = new WorkerCaptures(dir, 1, { rotateBytes: 64 << 20, maxFiles: 4 });
  const p = echo(7);
  c.tunIn.write(p, 0, 84);
  c.maybeFlush(1000);
  assert.is(statSync(capturePath(dir, 'tun-in', 1)).size, 24 + 16 + 84);
  c.tunOut.write(p, 0, 84);
  c.maybeFlush(1050);
  assert.is(statSync(capturePath(dir, 'tun-out', 1)).size, 24, 'not yet: 50 ms since the last flush');
  c.maybeFlush(1100);
  assert.is(statSync(capturePath(dir, 'tun-out', 1)).size, 24 + 16 + 84);
  c.close();
  for (const point of CAPTURE_POINTS) {
    const { header } = await readPcap(capturePath(dir, point, 1));
    assert.is(header.linkLayerType, CAPTURE_LINK_TYPES[point], point);
  }
  assert.is(statSync(dir).mode & 0o777, 0o700);
  assert.equal(readFileSync(capturePath(dir, 'udp-in', 1)).length, 24);
});

test.after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

test.run();
