// The forwarding core on in-memory devices (test/support/forwarder-harness.ts):
// both paths, every check and drop reason with its counter, ICMP answers,
// lease swaps and control messages under load, the offload path (split,
// merge, GSO and its refusal) and refused sends. No root, no kernel.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  Harness,
  packet,
  plainFrame,
  superFrame,
  checksumsVerify,
  leaseOf,
  ip,
  OWN_POD,
  PEER_POD,
  OWN_PUBLIC,
  PEER_PUBLIC,
  PORT,
  DEFAULT_LEASES,
} from '../support/forwarder-harness.js';
import { IP_PROTOCOL_UDP, IP_PROTOCOL_ICMP } from '../../src/encap/ipv4.js';
import { read16, read32 } from '../../src/encap/bytes.js';
import { pseudoHeaderSum } from '../../src/encap/checksum.js';
import { VIRTIO_NET_HDR_LEN, VIRTIO_NET_HDR_GSO_TCPV4 } from '../../src/encap/virtio-net-header.js';
import { VXLAN_HEADROOM } from '../../src/encap/vxlan.js';

const inbound = (s: Parameters<typeof packet>[0] = {}) => packet({ src: PEER_POD, dst: OWN_POD, ...s });

function withHarness(opts: ConstructorParameters<typeof Harness>[0], body: (h: Harness) => void): void {
  const h = new Harness(opts);
  try {
    body(h);
  } finally {
    h.close();
  }
}

// ---- the two paths ----

test('outbound: a packet for a leased pod leaves as one datagram to that node, TTL − 1, checksum fixed', () => {
  withHarness({}, (h) => {
    const p = packet({ ttl: 64 });
    h.tun.inject(p);
    h.forwarder.drive(true, false);
    assert.is(h.bind.sent.length, 1);
    const d = h.bind.sent[0];
    assert.is(d.peer, PEER_PUBLIC >>> 0);
    assert.is(d.port, PORT);
    assert.is(d.bytes.length, p.length);
    assert.is(d.bytes[8], 63);
    assert.ok(checksumsVerify(d.bytes));
    assert.equal(d.bytes.subarray(20), p.subarray(20), 'everything past the IPv4 header as sent by the pod');
    assert.is(h.count('TunReadPackets'), 1);
    assert.is(h.count('UdpSentPackets'), 1);
    assert.is(h.count('UdpSentBytes'), p.length);
    assert.equal(h.nonZeroDrops(), {});
  });
});

test('inbound: a datagram from a leased node for one of our pods is written to the TUN, TTL − 1', () => {
  withHarness({}, (h) => {
    const p = inbound({ ttl: 10 });
    h.bind.inject(p, PEER_PUBLIC, PORT);
    h.forwarder.drive(false, true);
    const written = h.tun.writtenPackets();
    assert.is(written.length, 1);
    assert.is(written[0][8], 9);
    assert.ok(checksumsVerify(written[0]));
    assert.is(h.count('UdpReceivedPackets'), 1);
    assert.is(h.count('TunWrittenPackets'), 1);
    assert.is(h.count('TunWrittenBytes'), p.length);
    assert.equal(h.nonZeroDrops(), {});
  });
});

test('inbound: trailing bytes past the IPv4 total length are not written', () => {
  withHarness({}, (h) => {
    const p = inbound();
    const padded = new Uint8Array(p.length + 9);
    padded.set(p);
    h.bind.inject(padded, PEER_PUBLIC, PORT);
    h.forwarder.drive(false, true);
    assert.is(h.tun.writtenPackets()[0].length, p.length);
  });
});

test('VXLAN: outbound frames carry the VNI and the peer VTEP MAC; inbound frames are unwrapped', () => {
  const leases = [leaseOf('10.244.1.0/24', '192.0.2.1'), leaseOf('10.244.2.0/24', '192.0.2.2', { VtepMAC: '02:00:00:00:00:02' })];
  withHarness({ backend: 'vxlan', leases }, (h) => {
    const p = packet();
    h.tun.inject(p);
    h.forwarder.drive(true, false);
    const frame = h.bind.sent[0].bytes;
    assert.is(frame.length, VXLAN_HEADROOM + p.length);
    assert.is(frame[0], 0x08);
    assert.is((frame[4] << 16) | (frame[5] << 8) | frame[6], 1);
    assert.equal(Array.from(frame.subarray(8, 14)), [2, 0, 0, 0, 0, 2]);
    // The same framing inbound, to our MAC.
    const back = inbound();
    const f = new Uint8Array(VXLAN_HEADROOM + back.length);
    f.set([0x08, 0, 0, 0, 0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00]);
    f.set(back, VXLAN_HEADROOM);
    h.bind.inject(f, PEER_PUBLIC, 8472);
    const wrongVni = f.slice();
    wrongVni[6] = 9;
    h.bind.inject(wrongVni, PEER_PUBLIC, 8472);
    const noFlag = f.slice();
    noFlag[0] = 0;
    h.bind.inject(noFlag, PEER_PUBLIC, 8472);
    const wrongMac = f.slice();
    wrongMac[13] = 7;
    h.bind.inject(wrongMac, PEER_PUBLIC, 8472);
    const notIpv4 = f.slice();
    notIpv4[21] = 0xdd; // 0x08dd
    h.bind.inject(notIpv4, PEER_PUBLIC, 8472);
    const arp = f.slice();
    arp[21] = 0x06; // 0x0806
    h.bind.inject(arp, PEER_PUBLIC, 8472);
    h.forwarder.drive(false, true);
    assert.is(h.tun.writtenPackets().length, 1);
    assert.equal(h.nonZeroDrops(), { VxlanWrongVni: 1, VxlanBadFlags: 1, VxlanWrongMac: 1, VxlanNotIpv4: 1, VxlanArp: 1 });
  });
});

// ---- every drop reason, counted once ----

function corrupt(p: Uint8Array, edit: (b: Uint8Array) => void): Uint8Array {
  const b = p.slice();
  edit(b);
  return b;
}

const malformed: [string, Uint8Array, string][] = [
  ['shorter than an IPv4 header', packet().subarray(0, 12), 'TooShort'],
  ['version 6', corrupt(packet(), (b) => (b[0] = 0x65)), 'NotIPv4'],
  ['IHL 4', corrupt(packet(), (b) => (b[0] = 0x44)), 'BadHeaderLength'],
  ['total length beyond the bytes', corrupt(packet(), (b) => (b[3] += 50)), 'BadTotalLength'],
  ['header checksum wrong', corrupt(packet(), (b) => (b[10] ^= 0xff)), 'BadHeaderChecksum'],
];

for (const [name, bytes, reason] of malformed) {
  test(`outbound drop ${reason}: ${name}`, () => {
    withHarness({}, (h) => {
      h.tun.inject(bytes);
      h.forwarder.drive(true, false);
      assert.equal(h.nonZeroDrops(), { [reason]: 1 });
      assert.is(h.bind.sent.length, 0);
    });
  });
  test(`inbound drop ${reason}: ${name}`, () => {
    withHarness({}, (h) => {
      h.bind.inject(bytes, PEER_PUBLIC, PORT);
      h.forwarder.drive(false, true);
      assert.equal(h.nonZeroDrops(), { [reason]: 1 });
      assert.is(h.tun.written.length, 0);
    });
  });
}

test('outbound drop TtlExpired: TTL 1 is not forwarded (and TTL 2 is, as 1)', () => {
  withHarness({}, (h) => {
    h.tun.inject(packet({ ttl: 1 }));
    h.tun.inject(packet({ ttl: 2 }));
    h.forwarder.drive(true, false);
    assert.equal(h.nonZeroDrops(), { TtlExpired: 1 });
    assert.is(h.bind.sent.length, 1);
    assert.is(h.bind.sent[0].bytes[8], 1);
  });
});

test('outbound drop TooBig: larger than the TUN MTU', () => {
  withHarness({}, (h) => {
    h.tun.inject(packet({ payload: 1472 - 40 + 1 }));
    h.forwarder.drive(true, false);
    assert.equal(h.nonZeroDrops(), { TooBig: 1 });
  });
});

test('outbound drop NoLease: ICMP net unreachable back into the TUN, from the destination', () => {
  withHarness({}, (h) => {
    const p = packet({ dst: ip('10.244.77.1') });
    h.tun.inject(p);
    h.forwarder.drive(true, false);
    assert.equal(h.nonZeroDrops(), { NoLease: 1 });
    assert.is(h.count('IcmpSent'), 1);
    assert.is(h.count('TunWrittenPackets'), 0, 'an answer is not a forwarded packet');
    const [icmp] = h.tun.writtenPackets();
    assert.ok(checksumsVerify(icmp));
    assert.is(icmp[9], IP_PROTOCOL_ICMP);
    assert.is(read32(icmp, 12) >>> 0, ip('10.244.77.1') >>> 0);
    assert.is(read32(icmp, 16) >>> 0, OWN_POD >>> 0);
    assert.is(icmp[20], 3);
    assert.is(icmp[21], 0);
    assert.equal(icmp.subarray(28, 48), p.subarray(0, 20), 'quotes the original header');
  });
});

test('outbound drop FragmentationNeeded: DF and bigger than the path MTU; ICMP frag-needed with the MTU that fits', () => {
  withHarness({ mtu: 1472, pathMtu: 1400 }, (h) => {
    h.tun.inject(packet({ payload: 1400, df: true }));
    h.tun.inject(packet({ payload: 1400, df: false }));
    h.forwarder.drive(true, false);
    assert.equal(h.nonZeroDrops(), { FragmentationNeeded: 1 });
    const [icmp] = h.tun.writtenPackets();
    assert.is(icmp[20], 3);
    assert.is(icmp[21], 4);
    assert.is(read16(icmp, 26), 1400);
    // Without DF it goes, for the kernel to fragment the outer datagram.
    assert.is(h.count('OuterFragmented'), 1);
    assert.is(h.bind.sent.length, 1);
  });
});

test('no ICMP error about an ICMP error', () => {
  withHarness({}, (h) => {
    const err = packet({ dst: ip('10.244.77.1'), protocol: IP_PROTOCOL_ICMP, payload: 0 });
    const withType = new Uint8Array(err.length + 8);
    withType.set(err);
    withType[3] = withType.length; // total length
    withType[10] = withType[11] = 0;
    withType[20] = 3; // destination unreachable
    const sum = (() => {
      let s = 0;
      for (let i = 0; i < 20; i += 2) s += (withType[i] << 8) | withType[i + 1];
      while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
      return ~s & 0xffff;
    })();
    withType[10] = sum >>> 8;
    withType[11] = sum & 0xff;
    h.tun.inject(withType);
    h.forwarder.drive(true, false);
    assert.equal(h.nonZeroDrops(), { NoLease: 1 });
    assert.is(h.count('IcmpSent'), 0);
  });
});

test('inbound drop UnknownPeer: from an address no lease has', () => {
  withHarness({}, (h) => {
    h.bind.inject(inbound(), ip('192.0.2.66'), PORT);
    h.forwarder.drive(false, true);
    assert.equal(h.nonZeroDrops(), { UnknownPeer: 1 });
  });
});

test('inbound drop SpoofedSource (anti-spoofing): a leased node sending from outside its subnet', () => {
  withHarness({ leases: [...DEFAULT_LEASES, leaseOf('10.244.3.0/24', '192.0.2.3')] }, (h) => {
    h.bind.inject(inbound({ src: ip('10.244.3.9') }), PEER_PUBLIC, PORT);
    h.bind.inject(inbound({ src: ip('10.99.0.1') }), PEER_PUBLIC, PORT);
    h.bind.inject(inbound({ src: ip('10.244.3.9') }), ip('192.0.2.3'), PORT);
    h.forwarder.drive(false, true);
    assert.equal(h.nonZeroDrops(), { SpoofedSource: 2 });
    assert.is(h.tun.written.length, 1);
  });
});

test('inbound drop NotForThisNode (own-subnet check): no reflection to other nodes', () => {
  withHarness({}, (h) => {
    h.bind.inject(inbound({ dst: ip('10.244.2.9') }), PEER_PUBLIC, PORT);
    h.bind.inject(inbound({ dst: ip('10.244.0.255') }), PEER_PUBLIC, PORT);
    h.forwarder.drive(false, true);
    assert.equal(h.nonZeroDrops(), { NotForThisNode: 2 });
  });
});

test('inbound drop TtlExpired', () => {
  withHarness({}, (h) => {
    h.bind.inject(inbound({ ttl: 1 }), PEER_PUBLIC, PORT);
    h.forwarder.drive(false, true);
    assert.equal(h.nonZeroDrops(), { TtlExpired: 1 });
  });
});

test('inbound drop TooBig: a datagram larger than its slot (truncated)', () => {
  withHarness({}, (h) => {
    h.bind.inject(new Uint8Array(h.memory.pool.capacity + 1), PEER_PUBLIC, PORT);
    h.forwarder.drive(false, true);
    assert.equal(h.nonZeroDrops(), { TooBig: 1 });
    assert.is(h.count('UdpReceivedPackets'), 1);
  });
});

test('inbound drop TunWriteFailed: the device refuses a write; the next one goes', () => {
  withHarness({}, (h) => {
    h.tun.failWrites = 1;
    h.bind.inject(inbound(), PEER_PUBLIC, PORT);
    h.bind.inject(inbound(), PEER_PUBLIC, PORT);
    h.forwarder.drive(false, true);
    assert.equal(h.nonZeroDrops(), { TunWriteFailed: 1 });
    assert.is(h.count('TunWrittenPackets'), 1);
  });
});

test('outbound drop TooShort and BadVirtioNetHeader on a TUN with vnet headers', () => {
  withHarness({ vnet: true }, (h) => {
    h.tun.inject(new Uint8Array(6)); // shorter than the virtio header
    const udpSuper = superFrame(500, 3000);
    udpSuper[VIRTIO_NET_HDR_LEN + 9] = IP_PROTOCOL_UDP; // gso_type TCPV4 on a UDP packet
    h.tun.inject(udpSuper);
    h.forwarder.drive(true, false);
    assert.equal(h.nonZeroDrops(), { TooShort: 1, BadVirtioNetHeader: 1 });
  });
});

// ---- sends the kernel refuses ----

for (const [errno, name] of [
  [11, 'EAGAIN'],
  [105, 'ENOBUFS'],
] as const) {
  test(`a send that returns ${name}: wait for room once, then send`, () => {
    withHarness({}, (h) => {
      for (let i = 0; i < 5; i++) h.tun.inject(packet({ id: i }));
      h.bind.failSends = 1;
      h.bind.failErrno = errno;
      h.forwarder.drive(true, false);
      assert.is(h.bind.waits, 1);
      assert.is(h.bind.sent.length, 5);
      assert.equal(h.nonZeroDrops(), {});
    });
  });
  test(`a send that returns ${name} and stays full: the rest of the batch is dropped and counted`, () => {
    withHarness({}, (h) => {
      for (let i = 0; i < 5; i++) h.tun.inject(packet({ id: i }));
      h.bind.maxPerCall = 2;
      h.bind.failSends = 0;
      h.forwarder.drive(true, false);
      assert.is(h.bind.sent.length, 5, 'a partial send is resumed');
      h.bind.sent.length = 0;
      for (let i = 0; i < 5; i++) h.tun.inject(packet({ id: i }));
      h.bind.failSends = 1;
      h.bind.failErrno = errno;
      h.bind.writableAfterWait = false;
      h.forwarder.drive(true, false);
      assert.equal(h.nonZeroDrops(), { SendFailed: 5 });
      assert.is(h.count('UdpSentPackets'), 5, 'only the first five');
    });
  });
}

test('a send refused for one message (e.g. no route to that peer) drops that one and sends the rest', () => {
  withHarness({}, (h) => {
    for (let i = 0; i < 4; i++) h.tun.inject(packet({ id: i }));
    h.bind.failSends = 1;
    h.bind.failErrno = 101; // ENETUNREACH
    h.forwarder.drive(true, false);
    assert.equal(h.nonZeroDrops(), { SendFailed: 1 });
    assert.is(h.bind.sent.length, 3);
  });
});

// ---- offloads: split, GSO, merge ----

function tcpPayloadOf(p: Uint8Array): Uint8Array {
  const ihl = (p[0] & 0x0f) * 4;
  return p.subarray(ihl + (p[ihl + 12] >>> 4) * 4);
}

function splitCase(name: string, mss: number, payload: number, expected: number): void {
  test(`super-packet split: ${name}`, () => {
    withHarness({ vnet: true, batchSize: 4 }, (h) => {
      const frame = superFrame(mss, payload, { seq: 7000, flags: 0x18 }); // ACK+PSH
      h.tun.inject(frame);
      h.forwarder.drive(true, false);
      assert.equal(h.nonZeroDrops(), {});
      const sent = h.bind.sent.map((d) => d.bytes);
      assert.is(sent.length, expected);
      const whole = new Uint8Array(payload);
      let at = 0;
      sent.forEach((s, i) => {
        assert.ok(checksumsVerify(s), `segment ${i} checksums`);
        assert.is(s[8], 63, 'TTL − 1 in every segment');
        assert.is(read32(s, 24), 7000 + i * mss, 'sequence numbers');
        assert.is(s[33] & 0x08, i === expected - 1 ? 0x08 : 0, 'PSH on the last only');
        const data = tcpPayloadOf(s);
        assert.is(data.length, i < expected - 1 ? mss : payload - (expected - 1) * mss);
        whole.set(data, at);
        at += data.length;
      });
      assert.equal(whole, tcpPayloadOf(frame.subarray(VIRTIO_NET_HDR_LEN)), 'the payload, in order, nothing lost');
      assert.is(h.count('SuperPacketsSplit'), 1);
      assert.is(h.count('SegmentsFromSplit'), expected);
    });
  });
}
splitCase('exactly one segment', 1000, 1000, 1);
splitCase('last segment short', 1000, 2500, 3);
splitCase('exact multiple', 1000, 3000, 3);
splitCase('maximum size at MSS 1432 (46 segments)', 1432, 65535 - 40, 46);

test('super-packet split: GSO messages of up to 64 datagrams of one size, the short one last', () => {
  withHarness({ vnet: true, batchSize: 4 }, (h) => {
    h.tun.inject(superFrame(500, 500 * 70 + 123));
    h.forwarder.drive(true, false);
    assert.is(h.bind.sent.length, 71);
    assert.is(h.count('GsoSends'), 2);
    assert.is(h.count('UdpSentPackets'), 71);
  });
});

test('GSO refused at run time: that message goes out one datagram at a time, and GSO stays off', () => {
  withHarness({ vnet: true, batchSize: 4 }, (h) => {
    h.bind.refuseGso = true;
    h.tun.inject(superFrame(1000, 10_000));
    h.forwarder.drive(true, false);
    assert.is(h.bind.sent.length, 10);
    assert.equal(h.nonZeroDrops(), {});
    assert.not.ok(h.bind.gso);
    assert.ok(h.reports.some((r) => r.type === 'log' && /UDP GSO refused/.test(r.line)));
    h.tun.inject(superFrame(1000, 5000));
    h.forwarder.drive(true, false);
    assert.is(h.bind.sent.length, 15);
    assert.is(h.count('GsoSends'), 0);
  });
});

test('a super-packet too big for the path MTU: one ICMP frag-needed, nothing sent', () => {
  withHarness({ vnet: true, mtu: 1472, pathMtu: 1400 }, (h) => {
    h.tun.inject(superFrame(1420, 5000));
    h.forwarder.drive(true, false);
    assert.equal(h.nonZeroDrops(), { FragmentationNeeded: 1 });
    assert.is(h.count('IcmpSent'), 1);
    assert.is(h.bind.sent.length, 0);
  });
});

test('vnet: a single packet with a partial checksum is completed before it is sent', () => {
  withHarness({ vnet: true }, (h) => {
    const p = packet({ payload: 300 });
    // As the kernel hands over CHECKSUM_PARTIAL: the field holds the pseudo-header sum only.
    const partial = pseudoHeaderSum(read32(p, 12), read32(p, 16), p[9], p.length - 20);
    p[36] = partial >>> 8;
    p[37] = partial & 0xff;
    assert.not.ok(checksumsVerify(p), 'the partial sum alone does not verify');
    const f = plainFrame(p);
    f[0] = 1; // NEEDS_CSUM
    f[6] = 20; // csum_start
    f[8] = 16; // csum_offset
    h.tun.inject(f);
    h.forwarder.drive(true, false);
    assert.is(h.bind.sent.length, 1);
    assert.ok(checksumsVerify(h.bind.sent[0].bytes), 'the completed TCP checksum verifies');
    assert.equal(h.bind.sent[0].bytes.subarray(38), p.subarray(38), 'the rest of the segment untouched');
  });
});

function segmentsOfFlow(count: number, mss: number, seq0: number, s: Parameters<typeof packet>[0] = {}): Uint8Array[] {
  return Array.from({ length: count }, (_, i) => inbound({ seq: seq0 + i * mss, payload: mss, id: 100 + i, ...s }));
}

test('GRO merge: consecutive segments of one flow become one write with a TCPV4 virtio header', () => {
  withHarness({ vnet: true }, (h) => {
    for (const s of segmentsOfFlow(5, 1000, 1)) h.bind.inject(s, PEER_PUBLIC, PORT);
    h.forwarder.drive(false, true);
    assert.is(h.tun.written.length, 1);
    const f = h.tun.written[0];
    assert.is(f[1], VIRTIO_NET_HDR_GSO_TCPV4);
    assert.is(f[4] | (f[5] << 8), 1000, 'gso_size');
    const merged = f.subarray(VIRTIO_NET_HDR_LEN);
    assert.is(read16(merged, 2), 40 + 5000);
    assert.is(h.count('CoalescedWrites'), 1);
    assert.is(h.count('SegmentsCoalesced'), 5);
  });
});

test('GRO merge rules: a gap in the sequence, another flow, a different TTL each start a new write', () => {
  // Each rule alone: three segments of one flow, then one that breaks only that rule.
  const cases: Record<string, Uint8Array> = {
    'in sequence, same flow and TTL (merges)': segmentsOfFlow(1, 1000, 3001)[0],
    'a gap in the sequence': segmentsOfFlow(1, 1000, 4001)[0],
    'another flow': segmentsOfFlow(1, 1000, 3001, { sport: 40001 })[0],
    'a different TTL': segmentsOfFlow(1, 1000, 3001, { ttl: 20 })[0],
  };
  const lengths: Record<string, number[]> = {};
  for (const [rule, next] of Object.entries(cases)) {
    withHarness({ vnet: true }, (h) => {
      for (const s of [...segmentsOfFlow(3, 1000, 1), next]) h.bind.inject(s, PEER_PUBLIC, PORT);
      h.forwarder.drive(false, true);
      lengths[rule] = h.tun.written.map((f) => read16(f, VIRTIO_NET_HDR_LEN + 2));
    });
  }
  assert.equal(lengths, {
    'in sequence, same flow and TTL (merges)': [4040],
    'a gap in the sequence': [3040, 1040],
    'another flow': [3040, 1040],
    'a different TTL': [3040, 1040],
  });
});

test('GRO receive: one message of several datagrams is cut into them before the checks', () => {
  withHarness({ vnet: true }, (h) => {
    const segs = segmentsOfFlow(4, 1000, 1);
    const message = new Uint8Array(segs.length * 1040);
    segs.forEach((s, i) => message.set(s, i * 1040));
    h.bind.inject(message, PEER_PUBLIC, PORT, 1040);
    h.forwarder.drive(false, true);
    assert.is(h.count('UdpReceivedPackets'), 4);
    assert.is(h.tun.written.length, 1);
    assert.is(read16(h.tun.written[0], VIRTIO_NET_HDR_LEN + 2), 4040);
  });
});

test('a 64 KB flow of 48-byte segments, both ways: split into 1365 datagrams, merged back into writes of at most 1023 segments, nothing dropped', () => {
  const payload = 0xffff - 40; // the largest IPv4 packet: 1364 segments of 48 bytes and one of 23
  const segments = Math.ceil(payload / 48);
  withHarness({ vnet: true, batchSize: 32 }, (h) => {
    h.tun.inject(superFrame(48, payload));
    h.forwarder.drive(true, false);
    assert.equal(h.nonZeroDrops(), {});
    assert.is(h.bind.sent.length, segments);
    assert.ok(h.bind.sent.every((d) => checksumsVerify(d.bytes)), 'every datagram checksummed');
    assert.equal([...new Set(h.bind.sent.map((d) => d.bytes.length))], [88, 40 + payload - (segments - 1) * 48]);
    assert.is(h.bind.sent.reduce((n, d) => n + d.bytes.length - 40, 0), payload);
  });
  withHarness({ vnet: true, batchSize: 32 }, (h) => {
    const segs = Array.from({ length: segments }, (_, i) => inbound({ seq: 1 + i * 48, payload: Math.min(48, payload - i * 48), id: 100 + i }));
    // As the kernel hands them over with UDP GRO: messages of up to 64 datagrams, the short one last.
    for (let i = 0; i < segs.length; i += 64) {
      const chunk = segs.slice(i, i + 64);
      const message = new Uint8Array(chunk.reduce((n, s) => n + s.length, 0));
      let at = 0;
      for (const s of chunk) (message.set(s, at), (at += s.length));
      h.bind.inject(message, PEER_PUBLIC, PORT, 88);
    }
    h.forwarder.drive(false, true);
    assert.equal(h.nonZeroDrops(), {});
    assert.is(h.count('UdpReceivedPackets'), segments);
    const written = h.tun.writtenPackets();
    const carried = written.reduce((n, p) => n + read16(p, 2) - 40, 0);
    assert.is(carried, payload, 'every byte written');
    assert.ok(written.length >= 2, `more than one write: ${written.length}`);
    for (const f of h.tun.written) if (f[1] === VIRTIO_NET_HDR_GSO_TCPV4) assert.ok((read16(f, VIRTIO_NET_HDR_LEN + 2) - 40) / 48 <= 1023, 'one writev each');
  });
});

// ---- lease swaps and control messages while packets flow ----

test('a lease table swapped in the middle of a flood takes effect between two batches, never inside one', () => {
  withHarness({ batchSize: 8 }, (h) => {
    const to3 = packet({ dst: ip('10.244.3.3') });
    h.tun.flood(to3, 10_000);
    h.forwarder.forwardOutbound();
    assert.is(h.drops('NoLease'), 8);
    h.control({ type: 'leases', snapshot: h.snapshot([...DEFAULT_LEASES, leaseOf('10.244.3.0/24', '192.0.2.3')]) });
    h.forwarder.drive(true, false);
    assert.is(h.tun.pending, 0);
    assert.is(h.count('LeaseTableVersion'), 2);
    const noLease = h.drops('NoLease');
    assert.is(noLease % 8, 0, `whole batches saw the old table (${noLease})`);
    assert.ok(noLease <= 8 + 64 * 8, `the swap came within one control check (${noLease})`);
    assert.is(h.bind.sent.length, 10_000 - noLease);
    assert.ok(h.bind.sent.every((d) => d.peer === ip('192.0.2.3') >>> 0));
  });
});

test('control messages arriving during a flood of both directions are handled within one control check', () => {
  withHarness({ batchSize: 8 }, (h) => {
    h.tun.flood(packet(), 100_000);
    h.bind.flood(inbound(), PEER_PUBLIC, PORT, 100_000);
    h.control({ type: 'leases', snapshot: h.snapshot(DEFAULT_LEASES) });
    h.control({ type: 'stop' });
    const rounds = h.forwarder.drive(true, true);
    assert.is(rounds, 64, 'stopped at the first control check');
    assert.ok(h.forwarder.stopping);
    assert.is(h.count('LeaseTableVersion'), 2);
    assert.is(h.count('TunReadPackets'), 64 * 8);
    assert.is(h.count('UdpReceivedPackets'), 64 * 8);
  });
});

test('VXLAN spreads flows over its senders, one flow on one sender (UDP mode has one: worker-sockets.test.ts)', () => {
  withHarness({ backend: 'vxlan', senders: 4, leases: [leaseOf('10.244.1.0/24', '192.0.2.1'), leaseOf('10.244.2.0/24', '192.0.2.2', { VtepMAC: '02:00:00:00:00:02' })] }, (h) => {
    for (let port = 0; port < 64; port++) for (let k = 0; k < 2; k++) h.tun.inject(packet({ sport: 30000 + port }));
    h.forwarder.drive(true, false);
    const used = new Set(h.bind.sent.map((d) => d.sender));
    assert.ok(used.size > 1, 'several senders used');
    const senderOfFlow = new Map<number, number>();
    for (const d of h.bind.sent) {
      const sport = read16(d.bytes, VXLAN_HEADROOM + 20);
      if (senderOfFlow.has(sport)) assert.is(senderOfFlow.get(sport), d.sender);
      senderOfFlow.set(sport, d.sender);
    }
  });
});

test('the pool never grows: after traffic on every path, the same memory and slots, and every send from inside it', () => {
  withHarness({ vnet: true, batchSize: 8 }, (h) => {
    const pool = h.memory.pool;
    const memory = pool.memory;
    const size = pool.bytes.byteLength;
    const offsets = pool.packetOffsets.slice();
    const sendBatches: unknown[] = [];
    const send = h.bind.send.bind(h.bind);
    let outside = 0;
    h.bind.send = (sender, batch, from) => {
      sendBatches.push(batch);
      for (let p = 0; p < batch.pieces; p++) {
        if (batch.pieceOffset[p] < 0 || batch.pieceOffset[p] + batch.pieceLength[p] > size) outside++;
      }
      return send(sender, batch, from);
    };
    h.tun.flood(plainFrame(packet()), 5000);
    h.bind.flood(inbound(), PEER_PUBLIC, PORT, 5000);
    h.forwarder.drive(true, true);
    for (let i = 0; i < 20; i++) h.tun.inject(superFrame(1000, 20_000 + i));
    h.tun.inject(plainFrame(packet({ dst: ip('10.244.9.9') }))); // no lease: an ICMP answer from its own slot
    for (const s of segmentsOfFlow(40, 1000, 1)) h.bind.inject(s, PEER_PUBLIC, PORT);
    h.forwarder.drive(true, true);
    assert.ok(h.bind.sent.length > 5000 + 20 * 20, `traffic went out (${h.bind.sent.length})`);
    assert.ok(h.count('TunWrittenPackets') > 5000 && h.count('SegmentsCoalesced') > 0, 'traffic came in, merged too');
    assert.is(h.count('IcmpSent'), 1);
    assert.is(h.count('PoolSlots'), 17);
    assert.is(pool.memory, memory, 'the same native memory');
    assert.is(pool.bytes.byteLength, size);
    assert.equal(pool.packetOffsets, offsets);
    assert.is(outside, 0, 'no send reached past the pool');
    assert.is(new Set(sendBatches).size, 1, 'one send batch, reused');
  });
});

test.run();
