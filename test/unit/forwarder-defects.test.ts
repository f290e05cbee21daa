// The defects of issue 12 that live in the forwarding core, one test each,
// on in-memory devices. Each failed against the code before its fix.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Harness, packet, superFrame, checksumsVerify, leaseOf, ip, OWN_POD, PEER_POD, PEER_PUBLIC, PORT, DEFAULT_LEASES } from '../support/forwarder-harness.js';
import { read32 } from '../../src/encap/bytes.js';
import { VIRTIO_NET_HDR_LEN } from '../../src/encap/virtio-net-header.js';
import { IcmpRateLimiter } from '../../src/dataplane/icmp-rate-limit.js';

function withHarness(opts: ConstructorParameters<typeof Harness>[0], body: (h: Harness) => void): void {
  const h = new Harness(opts);
  try {
    body(h);
  } finally {
    h.close();
  }
}

function sentPayload(h: Harness): Uint8Array {
  const parts = h.bind.sent.map((d) => d.bytes.subarray(40));
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

// ---- defect 1: a small MSS collapsed TCP (a super-packet of > 130 segments was dropped whole) ----

for (const [mss, expected] of [
  [388, 169], // MSS 400 with timestamps: the 41 Mbit/s case
  [288, 228], // MSS 300
  [48, 1365], // more segments than one read batch's arena (1024): handed over in two runs
] as const) {
  test(`defect 1: a 64 KB super-packet at gso_size ${mss} goes out whole, as ${expected} segments`, () => {
    withHarness({ vnet: true, batchSize: 4 }, (h) => {
      const payload = 65535 - 40;
      const frame = superFrame(mss, payload, { seq: 1 });
      h.tun.inject(frame);
      h.tun.inject(superFrame(1000, 3000, { seq: 1 + payload })); // the flow's next super-packet, behind it
      h.forwarder.drive(true, false);
      assert.equal(h.nonZeroDrops(), {});
      assert.is(h.bind.sent.length, expected + 3);
      h.bind.sent.forEach((d, i) => assert.ok(checksumsVerify(d.bytes), `segment ${i}`));
      const seqs = h.bind.sent.map((d) => read32(d.bytes, 24));
      for (let i = 1; i < seqs.length; i++) assert.ok(seqs[i] > seqs[i - 1], `in order at ${i}`);
      assert.equal(sentPayload(h).subarray(0, payload), frame.subarray(VIRTIO_NET_HDR_LEN + 40));
    });
  });
}

// ---- defect 2: starvation (the TUN read budget counted only forwarded packets) ----

test('defect 2: a flood of dropped packets does not keep the worker on the TUN: one batch of reads per turn', () => {
  withHarness({ batchSize: 8 }, (h) => {
    h.tun.flood(packet({ dst: ip('10.244.77.1') }), 10_000); // no lease: every one dropped
    h.bind.inject(packet({ src: PEER_POD, dst: OWN_POD }), PEER_PUBLIC, PORT);
    h.forwarder.forwardOutbound();
    assert.is(h.count('TunReadPackets'), 8, 'one batch read, dropped or not');
    // drive() turns to the socket after that batch: the datagram is written long before the flood ends.
    h.control({ type: 'stop' });
    h.forwarder.drive(true, true);
    assert.is(h.count('TunWrittenPackets'), 1);
    assert.ok(h.tun.pending > 9000, `the flood waits its turn (${h.tun.pending} left)`);
  });
});

test('defect 2: packets the device drops itself count against the budget too', () => {
  withHarness({ vnet: true, batchSize: 8 }, (h) => {
    h.tun.flood(new Uint8Array(4), 1000); // shorter than a virtio header
    h.forwarder.forwardOutbound();
    assert.is(h.tun.framesRead, 8);
    assert.is(h.drops('TooShort'), 8);
  });
});

// ---- defect 3: anti-spoofing kept only a node's first lease ----

test("defect 3: a node holding two leases may send from both subnets (and from neither one else's)", () => {
  const leases = [...DEFAULT_LEASES, leaseOf('10.244.5.0/24', '192.0.2.2'), leaseOf('10.244.6.0/24', '192.0.2.6')];
  withHarness({ leases }, (h) => {
    h.bind.inject(packet({ src: ip('10.244.2.9'), dst: OWN_POD }), PEER_PUBLIC, PORT);
    h.bind.inject(packet({ src: ip('10.244.5.9'), dst: OWN_POD }), PEER_PUBLIC, PORT);
    h.bind.inject(packet({ src: ip('10.244.6.9'), dst: OWN_POD }), PEER_PUBLIC, PORT);
    h.forwarder.drive(false, true);
    assert.is(h.count('TunWrittenPackets'), 2);
    assert.equal(h.nonZeroDrops(), { SpoofedSource: 1 });
  });
});

test('defect 3: the same with the leases in the other order', () => {
  const leases = [leaseOf('10.244.5.0/24', '192.0.2.2'), ...DEFAULT_LEASES];
  withHarness({ leases }, (h) => {
    h.bind.inject(packet({ src: ip('10.244.2.9'), dst: OWN_POD }), PEER_PUBLIC, PORT);
    h.bind.inject(packet({ src: ip('10.244.5.9'), dst: OWN_POD }), PEER_PUBLIC, PORT);
    h.forwarder.drive(false, true);
    assert.is(h.count('TunWrittenPackets'), 2);
  });
});

// ---- defect 4: ICMP errors were not rate-limited ----

test('defect 4: a flood to an unleased address gets a burst of ICMP errors per source, the rest counted as suppressed', () => {
  withHarness({ batchSize: 8 }, (h) => {
    h.tun.flood(packet({ dst: ip('10.244.77.1') }), 1000);
    h.forwarder.drive(true, false);
    const sent = h.count('IcmpSent');
    assert.is(sent, 6, 'the burst, all at one time');
    assert.is(h.count('IcmpSuppressed'), 1000 - sent);
    assert.is(h.drops('NoLease'), 1000, 'every packet still counted as dropped');
    // Another pod is not silenced by the first one's flood.
    h.tun.inject(packet({ src: ip('10.244.1.99'), dst: ip('10.244.77.1') }));
    h.forwarder.drive(true, false);
    assert.is(h.count('IcmpSent'), sent + 1);
  });
});

test('defect 4: the limiter: a burst of 6 per source, then one per second; frag-needed exempt; 1000/s in all', () => {
  const l = new IcmpRateLimiter();
  const a = ip('10.244.1.5');
  let allowed = 0;
  for (let i = 0; i < 20; i++) if (l.allow(a, 1000, false)) allowed++;
  assert.is(allowed, 6);
  assert.not.ok(l.allow(a, 1999, false));
  assert.ok(l.allow(a, 2000, false), 'a token a second');
  assert.not.ok(l.allow(a, 2000, false));
  assert.ok(l.allow(a, 2000, true), 'frag-needed is not limited per source');
  assert.ok(l.allow(ip('10.244.1.6'), 2000, false), 'another source has its own bucket');
  // The global bucket: 50 at once, then 1000/s.
  const g = new IcmpRateLimiter();
  let burst = 0;
  for (let i = 0; i < 200; i++) if (g.allow(i, 5000, true)) burst++;
  assert.is(burst, 50);
  assert.not.ok(g.allow(1, 5000, true));
  assert.ok(g.allow(1, 5001, true), 'one more after a millisecond');
});

test.run();
