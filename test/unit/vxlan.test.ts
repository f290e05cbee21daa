// VXLAN against real kernel bytes: the tcpdump of a flannel node's VXLAN
// packet from the project's seeds, and captures/kernel-vxlan.pcap (frames
// the Linux vxlan device sent, programmed as flannel programs it).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { VxlanEncapsulation, parseMac, VXLAN_HEADROOM } from '../../src/encap/vxlan.js';
import { DropReason } from '../../src/encap/drop-reasons.js';
import { validateIPv4, ipv4Source, ipv4Destination, ipv4Protocol, ipv4Ttl, ipv4TotalLength } from '../../src/encap/ipv4.js';
import { buildOuterIPv4Udp, parseOuterIPv4Udp, createOuterUdpFields } from '../../src/encap/udp-frame.js';
import { onesComplementSumNaive } from '../../src/encap/checksum.js';
import { formatIPv4 } from '../../src/control/ipv4-address.js';
import { vxlanSeedPacket } from '../support/packet-fixtures.js';

const require = createRequire(import.meta.url);
const pcapParser = require('pcap-parser') as {
  parse(path: string): { on(event: 'packet', fn: (p: { data: Buffer }) => void): void; on(event: 'end' | 'error', fn: (e?: Error) => void): void };
};

test('the seed packet: what the outer parser and the VXLAN decoder return for it', () => {
  const seed = vxlanSeedPacket();
  assert.is(seed.length, 134);
  const outer = createOuterUdpFields();
  // Its UDP checksum was left for the NIC when tcpdump saw it ("bad udp cksum 0x60d6 -> 0x76a1"):
  // the parser says so, and accepts the datagram once it carries the checksum tcpdump computed.
  assert.is(parseOuterIPv4Udp(seed, 0, seed.length, outer), DropReason.BadUdpChecksum);
  const pkt = seed.slice();
  pkt[26] = 0x76;
  pkt[27] = 0xa1;
  assert.is(parseOuterIPv4Udp(pkt, 0, pkt.length, outer), DropReason.None);
  assert.equal(
    { ...outer, srcAddr: formatIPv4(outer.srcAddr), dstAddr: formatIPv4(outer.dstAddr) },
    { srcAddr: '192.168.111.128', dstAddr: '192.168.111.129', srcPort: 60568, dstPort: 8472, payloadOffset: 28, payloadLength: 106 },
  );

  // Addressed to VTEP 3a:87:cf:81:6a:ce on VNI 1: that VTEP accepts it, another VNI or MAC does not.
  const vtep = new VxlanEncapsulation(1, parseMac('3a:87:cf:81:6a:ce'));
  const inner = vtep.decapsulate(pkt, outer.payloadOffset, outer.payloadLength);
  assert.is(inner, 28 + VXLAN_HEADROOM);
  assert.is(new VxlanEncapsulation(2, parseMac('3a:87:cf:81:6a:ce')).decapsulate(pkt, 28, 106), -DropReason.VxlanWrongVni);
  assert.is(new VxlanEncapsulation(1, parseMac('ce:5f:f6:73:cf:b9')).decapsulate(pkt, 28, 106), -DropReason.VxlanWrongMac);

  assert.is(validateIPv4(pkt, inner, pkt.length - inner), DropReason.None);
  assert.equal(
    [formatIPv4(ipv4Source(pkt, inner)), formatIPv4(ipv4Destination(pkt, inner)), ipv4Protocol(pkt, inner), ipv4Ttl(pkt, inner), ipv4TotalLength(pkt, inner)],
    ['10.244.0.19', '10.244.1.13', 1, 63, 84],
    'an ICMP echo the kernel routed once before flannel.1',
  );

  // The other way: our encoder, given the inner packet and the two MACs, writes the kernel's VXLAN and Ethernet headers.
  const ours = new Uint8Array(pkt.length);
  ours.set(pkt.subarray(inner), inner);
  const sender = new VxlanEncapsulation(1, parseMac('ce:5f:f6:73:cf:b9'));
  sender.peerMacs = parseMac('3a:87:cf:81:6a:ce');
  assert.is(sender.encapsulate(ours, inner, 84, 0), 28);
  assert.equal(Array.from(ours.subarray(28, inner)), Array.from(pkt.subarray(28, inner)));
});

test('the decoder refuses what a VTEP must not deliver, each with its reason', () => {
  const vtep = new VxlanEncapsulation(1, parseMac('3a:87:cf:81:6a:ce'));
  const base = vxlanSeedPacket();
  const cases: Array<[string, (p: Uint8Array) => void, number]> = [
    ['I flag clear', (p) => (p[28] = 0), DropReason.VxlanBadFlags],
    ['another VNI', (p) => (p[34] = 2), DropReason.VxlanWrongVni],
    ['another destination MAC', (p) => (p[41] ^= 1), DropReason.VxlanWrongMac],
    ['IPv6 ethertype', (p) => ((p[48] = 0x86), (p[49] = 0xdd)), DropReason.VxlanNotIpv4],
    ['ARP request', (p) => ((p[48] = 0x08), (p[49] = 0x06)), DropReason.VxlanArp],
  ];
  for (const [name, mutate, reason] of cases) {
    const p = base.slice();
    mutate(p);
    assert.is(vtep.decapsulate(p, 28, p.length - 28), -reason, name);
  }
  for (const length of [0, 8, 21, 22, 41]) assert.is(vtep.decapsulate(base, 28, length), -DropReason.TooShort, `runt of ${length}`);
});

test('IPv6 inner packets: 0x86dd and the peer\'s IPv6 MAC on the way out; delivered back only by a dual-stack VTEP, version and ethertype agreeing', () => {
  const inner6 = new Uint8Array(60);
  inner6[0] = 0x60;
  inner6[5] = 20;
  inner6[6] = 59; // no next header
  inner6[7] = 64;
  const buf = new Uint8Array(28 + VXLAN_HEADROOM + inner6.length);
  const at = 28 + VXLAN_HEADROOM;
  buf.set(inner6, at);
  const sender = new VxlanEncapsulation(7, parseMac('02:00:00:00:00:01'), true);
  sender.peerMacs = Uint8Array.from([0, 0, 0, 0, 0, 0, ...parseMac('02:00:00:00:00:02')]);
  sender.peerMacs6 = Uint8Array.from([0, 0, 0, 0, 0, 0, ...parseMac('06:00:00:00:00:02')]);
  assert.is(sender.encapsulate(buf, at, inner6.length, 1), 28);
  assert.equal(
    Array.from(buf.subarray(28, at)),
    [0x08, 0, 0, 0, 0, 0, 7, 0, 6, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x86, 0xdd],
    'VNI 7, to the IPv6 VTEP MAC, from ours, IPv6',
  );
  const dual = new VxlanEncapsulation(7, parseMac('06:00:00:00:00:02'), true);
  assert.is(dual.decapsulate(buf, 28, buf.length - 28), at);
  assert.is(new VxlanEncapsulation(7, parseMac('06:00:00:00:00:02')).decapsulate(buf, 28, buf.length - 28), -DropReason.VxlanNotIpv4, 'an IPv4-only VTEP');
  assert.is(new VxlanEncapsulation(7, parseMac('02:00:00:00:00:02'), true).decapsulate(buf, 28, buf.length - 28), -DropReason.VxlanWrongMac);
  const lying = buf.slice();
  lying[at] = 0x45; // an IPv4 version under 0x86dd
  assert.is(dual.decapsulate(lying, 28, lying.length - 28), -DropReason.VxlanNotIpv4);
  // An IPv4 packet from the same sender still gets 0x0800 and the BackendData MAC, byte for byte as before.
  buf[at] = 0x45;
  assert.is(sender.encapsulate(buf, at, inner6.length, 1), 28);
  assert.equal(Array.from(buf.subarray(36, at)), [2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00]);
  assert.is(dual.decapsulate(buf, 28, buf.length - 28), -DropReason.VxlanWrongMac, 'an IPv4 frame goes to the IPv4 MAC');
});

interface Frame {
  data: Buffer;
}

function readCapture(path: string): Promise<Frame[]> {
  return new Promise((resolve, reject) => {
    const frames: Frame[] = [];
    const parser = pcapParser.parse(path);
    parser.on('packet', (p) => frames.push({ data: p.data }));
    parser.on('end', () => resolve(frames));
    parser.on('error', (e) => reject(e));
  });
}

const CAPTURE = fileURLToPath(new URL('../../../captures/kernel-vxlan.pcap', import.meta.url));

test('captures/kernel-vxlan.pcap: every kernel frame decodes, and our encoder rebuilds it byte for byte but for the fields that may differ', async () => {
  const frames = await readCapture(CAPTURE);
  assert.ok(frames.length >= 10, `only ${frames.length} frames in the capture`);
  const outer = createOuterUdpFields();
  let tcp = 0;
  for (const [index, { data }] of frames.entries()) {
    const bytes = Uint8Array.from(data);
    assert.is((bytes[12] << 8) | bytes[13], 0x0800, `frame ${index}: Ethernet carrying IPv4`);
    const ip = 14;
    assert.is(parseOuterIPv4Udp(bytes, ip, bytes.length - ip, outer), DropReason.None, `frame ${index}: outer IPv4/UDP valid, checksum included`);
    assert.is(outer.dstPort, 8472);
    const payload = outer.payloadOffset;
    const destinationMac = bytes.slice(payload + 8, payload + 14);
    const sourceMac = bytes.slice(payload + 14, payload + 20);
    const receiver = new VxlanEncapsulation(1, destinationMac);
    const inner = receiver.decapsulate(bytes, payload, outer.payloadLength);
    assert.is(inner, payload + VXLAN_HEADROOM, `frame ${index}: decoded`);
    assert.is(validateIPv4(bytes, inner, bytes.length - inner), DropReason.None);
    if (ipv4Protocol(bytes, inner) === 6) tcp++;

    // Our encoder, fed the same inner packet and the same MACs, writes the same bytes.
    const innerLength = ipv4TotalLength(bytes, inner);
    const ours = new Uint8Array(28 + VXLAN_HEADROOM + innerLength);
    ours.set(bytes.subarray(inner, inner + innerLength), 28 + VXLAN_HEADROOM);
    const sender = new VxlanEncapsulation(1, sourceMac);
    sender.peerMacs = destinationMac;
    assert.is(sender.encapsulate(ours, 28 + VXLAN_HEADROOM, innerLength, 0), 28);
    const ipId = (bytes[ip + 4] << 8) | bytes[ip + 5];
    buildOuterIPv4Udp(ours, 0, outer.srcAddr, outer.dstAddr, outer.srcPort, 8472, VXLAN_HEADROOM + innerLength, ipId, true);
    const kernel = bytes.subarray(ip, ip + 28 + VXLAN_HEADROOM + innerLength);
    // Fields that legitimately differ between two senders, and how this test
    // treats them: the outer IP id and the UDP source port (a counter and a
    // flow hash: copied from the kernel's frame so the rest can be compared);
    // the DF flag (the kernel's vxlan leaves it clear, a UDP socket sets it)
    // and therefore the IP header checksum (skipped: bytes 6, 10, 11); the UDP
    // checksum (computed on both sides in this capture, so it must agree).
    const mayDiffer = new Set([6, 10, 11]); // flags/fragment high byte, IP header checksum
    for (let b = 0; b < kernel.length; b++) {
      if (mayDiffer.has(b)) continue;
      if (ours[b] !== kernel[b]) assert.unreachable(`frame ${index}: byte ${b} differs (ours ${ours[b]}, kernel ${kernel[b]})`);
    }
    assert.is(onesComplementSumNaive(ours, 0, 20), 0xffff, 'our outer header checksum is valid');
  }
  assert.ok(tcp >= 3, 'the capture has TCP frames too');
});

test.run();
