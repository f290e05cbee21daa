// Trace events: decoding header bytes into layers (the seed's VXLAN packet, a
// UDP-mode datagram, ICMP errors, TCP, truncated and malformed bytes), the
// drawing, the JSON form, the limiter and the worker-side tracer.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { describeLayers, renderTraceEvent, renderTraceJson, type Layer } from '../../src/observe/trace-render.js';
import {
  TRACE_HEADER_BYTES,
  TRACE_STAGES,
  TRACE_STAGE_INFO,
  TraceLimiter,
  copyHeaderBytes,
  traceEventFromJson,
  type TraceEvent,
} from '../../src/observe/trace-event.js';
import { WorkerTracer } from '../../src/observe/worker-tracer.js';
import { ICMP_ECHO_REQUEST, ICMP_NET_UNREACHABLE, buildIcmpDestUnreachable, buildIcmpEcho } from '../../src/encap/icmp.js';
import { IP_PROTOCOL_TCP, buildIPv4Header } from '../../src/encap/ipv4.js';
import { buildOuterIPv4Udp, OUTER_IPV4_UDP_HEADERS } from '../../src/encap/udp-frame.js';
import { parseIPv4 } from '../../src/control/ipv4-address.js';
import { parseIPv6 } from '../../src/control/ipv6-address.js';
import { buildIPv6Header } from '../../src/encap/ipv6.js';
import { ICMPV6_ECHO_REQUEST, ICMPV6_PACKET_TOO_BIG, buildIcmpv6Echo, buildIcmpv6Error } from '../../src/encap/icmpv6.js';
import { vxlanSeedPacket } from '../support/packet-fixtures.js';

function fieldsOf(layer: Layer | undefined): Record<string, string> {
  assert.ok(layer, 'layer missing');
  return Object.fromEntries(layer!.fields);
}

function event(layers: TraceEvent['layers'], bytes: Uint8Array, extra: Partial<TraceEvent> = {}): TraceEvent {
  return {
    node: 'node-1',
    worker: 0,
    packet: 17,
    stage: 'tun-read',
    timeNs: 1_000_000,
    layers,
    headerBytes: copyHeaderBytes(bytes, 0, bytes.length),
    ...extra,
  };
}

/** pod 10.244.1.2 → pod 10.244.2.2, ICMP echo request id 20 seq 47, 56 bytes of payload (84 in all). */
function echo(): Uint8Array {
  const buf = new Uint8Array(84);
  buildIcmpEcho(buf, 0, parseIPv4('10.244.1.2'), parseIPv4('10.244.2.2'), ICMP_ECHO_REQUEST, 20, 47, 56);
  // Its header as the kernel sent it after one hop: a known id, TTL 63, DF.
  buildIPv4Header(buf, 0, 84, 0x1a2b, 63, 1, parseIPv4('10.244.1.2'), parseIPv4('10.244.2.2'), true);
  return buf;
}

test('the seed VXLAN datagram, read as outer-ip: outer IPv4, UDP, VXLAN, Ethernet, inner IPv4, ICMP, payload', () => {
  const pkt = vxlanSeedPacket();
  const ev = event('outer-ip', pkt);
  assert.is(ev.headerBytes.length, TRACE_HEADER_BYTES, 'an event carries at most 128 bytes');
  const layers = describeLayers(ev);
  assert.equal(
    layers.map((l) => l.name),
    ['IPv4', 'UDP', 'VXLAN', 'Ethernet', 'IPv4', 'ICMP', 'payload'],
  );
  assert.equal(fieldsOf(layers[0]), {
    src: '192.168.111.128',
    dst: '192.168.111.129',
    ttl: '64',
    proto: 'UDP',
    len: '134',
    id: '0x528a',
    flags: 'none',
    csum: '0xc78a ok',
  });
  assert.equal(fieldsOf(layers[1]), { sport: '60568', dport: '8472', len: '114', csum: '0x60d6' });
  assert.equal(fieldsOf(layers[2]), { flags: '0x08 (I: VNI present)', vni: '1' });
  assert.equal(fieldsOf(layers[3]), { dst: '3a:87:cf:81:6a:ce', src: 'ce:5f:f6:73:cf:b9', type: '0x0800 (IPv4)' });
  assert.equal(fieldsOf(layers[4]), {
    src: '10.244.0.19',
    dst: '10.244.1.13',
    ttl: '63',
    proto: 'ICMP',
    len: '84',
    id: '0x3bc0',
    flags: 'DF',
    csum: '0xe8e1 ok',
  });
  assert.equal(fieldsOf(layers[5]), { type: 'echo-request (8)', code: '0', csum: '0x2e59', id: '20', seq: '47' });
  const payload = fieldsOf(layers[6]);
  assert.is(payload.bytes, '56');
  assert.is(payload.captured, String(128 - 78), 'the 128-byte copy ends inside the payload, and says so');
  assert.is(layers.filter((l) => l.problem).length, 0, 'nothing undecodable in a real packet');
});

test('the seed VXLAN payload, read as vxlan-payload (what recvmmsg hands over)', () => {
  const pkt = vxlanSeedPacket().subarray(28);
  const layers = describeLayers(event('vxlan-payload', pkt));
  assert.equal(
    layers.map((l) => l.name),
    ['VXLAN', 'Ethernet', 'IPv4', 'ICMP', 'payload'],
  );
  assert.is(fieldsOf(layers[2]).src, '10.244.0.19');
  assert.is(fieldsOf(layers[4]).bytes, '56');
  assert.not.ok(fieldsOf(layers[4]).captured, 'all of it fits in 128 bytes');
  assert.is(layers[1].level, 'L2');
  assert.is(layers[0].level, undefined);
});

test('a UDP-mode datagram: outer-ip shows flannel udp (port 8285) carrying the bare inner packet; udp-payload is that packet', () => {
  const inner = echo();
  const buf = new Uint8Array(OUTER_IPV4_UDP_HEADERS + inner.length);
  buf.set(inner, OUTER_IPV4_UDP_HEADERS);
  buildOuterIPv4Udp(buf, 0, parseIPv4('192.0.2.1'), parseIPv4('192.0.2.2'), 8285, 8285, inner.length, 0x4242, true);
  const outer = describeLayers(event('outer-ip', buf));
  assert.equal(
    outer.map((l) => l.name),
    ['IPv4', 'UDP', 'IPv4', 'ICMP', 'payload'],
  );
  assert.equal(fieldsOf(outer[0]), {
    src: '192.0.2.1',
    dst: '192.0.2.2',
    ttl: '64',
    proto: 'UDP',
    len: '112',
    id: '0x4242',
    flags: 'DF',
    csum: fieldsOf(outer[0]).csum,
  });
  assert.match(fieldsOf(outer[0]).csum, / ok$/);
  assert.equal(fieldsOf(outer[1]), { sport: '8285', dport: '8285', len: '92', csum: fieldsOf(outer[1]).csum });
  assert.is(fieldsOf(outer[2]).id, '0x1a2b');
  assert.is(fieldsOf(outer[3]).seq, '47');

  const payload = describeLayers(event('udp-payload', inner));
  assert.equal(
    payload.map((l) => l.name),
    ['IPv4', 'ICMP', 'payload'],
  );
  assert.equal(fieldsOf(payload[2]), { bytes: '56', data: '00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f …' });
});

/** pod fd00:10:244:1::2 → pod fd00:10:244:2::2, ICMPv6 echo request id 20 seq 47, 56 bytes of payload, hop limit 63. */
function echo6(): Uint8Array {
  const buf = new Uint8Array(104);
  buildIcmpv6Echo(buf, 0, parseIPv6('fd00:10:244:1::2'), parseIPv6('fd00:10:244:2::2'), ICMPV6_ECHO_REQUEST, 20, 47, 56, 63);
  return buf;
}

test('IPv6: a ping -6 across the TUN: addresses, next header, hop limit, payload length, ICMPv6 type and code', () => {
  const layers = describeLayers(event('ip', echo6()));
  assert.equal(
    layers.map((l) => [l.name, l.level, l.offset, l.length]),
    [
      ['IPv6', 'L3', 0, 40],
      ['ICMPv6', 'L4', 40, 8],
      ['payload', undefined, 48, 56],
    ],
  );
  assert.equal(fieldsOf(layers[0]), { src: 'fd00:10:244:1::2', dst: 'fd00:10:244:2::2', hlim: '63', next: 'ICMPv6', plen: '64' });
  assert.equal(fieldsOf(layers[1]), { type: 'echo-request (128)', code: '0', csum: fieldsOf(layers[1]).csum, id: '20', seq: '47' });
  // The checksum shown is the one in the packet (computed over the pseudo-header by the builder).
  const b = echo6();
  assert.is(fieldsOf(layers[1]).csum, `0x${((b[42] << 8) | b[43]).toString(16).padStart(4, '0')}`);
  const flowing = echo6();
  flowing[0] = 0x6b; // traffic class 0xb8 (EF), flow label 0x12345
  flowing[1] = 0x81;
  flowing[2] = 0x23;
  flowing[3] = 0x45;
  const f = fieldsOf(describeLayers(event('ip', flowing))[0]);
  assert.is(f.tc, '0xb8');
  assert.is(f.flow, '0x12345');
  const text = renderTraceEvent(event('ip', echo6()), { color: false });
  assert.match(text, /IPv6 \(L3\)\s+src fd00:10:244:1::2  dst fd00:10:244:2::2  hlim 63  next ICMPv6  plen 64/);
  assert.match(text, /ICMPv6 \(L4\)\s+type echo-request \(128\)  code 0/);
});

test('IPv6 in UDP mode: outer IPv4 and UDP carrying the bare IPv6 packet; TCP and UDP ports behind the fixed header', () => {
  const inner = echo6();
  const buf = new Uint8Array(OUTER_IPV4_UDP_HEADERS + inner.length);
  buf.set(inner, OUTER_IPV4_UDP_HEADERS);
  buildOuterIPv4Udp(buf, 0, parseIPv4('192.0.2.1'), parseIPv4('192.0.2.2'), 8285, 8285, inner.length, 0, true);
  assert.equal(
    describeLayers(event('outer-ip', buf)).map((l) => l.name),
    ['IPv4', 'UDP', 'IPv6', 'ICMPv6', 'payload'],
  );
  assert.equal(
    describeLayers(event('udp-payload', inner)).map((l) => l.name),
    ['IPv6', 'ICMPv6', 'payload'],
  );
  const tcp6 = new Uint8Array(40 + 20 + 1000);
  buildIPv6Header(tcp6, 0, 20 + 1000, IP_PROTOCOL_TCP, 64, parseIPv6('fd00:10:244:1::2'), 0, parseIPv6('fd00:10:244:2::2'), 0);
  tcp6.set([0x9c, 0x40, 0x14, 0x51, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff], 40);
  const t = describeLayers(event('ip', tcp6));
  assert.equal(
    t.map((l) => l.name),
    ['IPv6', 'TCP', 'payload'],
  );
  assert.is(fieldsOf(t[0]).next, 'TCP');
  assert.is(fieldsOf(t[0]).plen, '1020');
  assert.is(fieldsOf(t[1]).sport, '40000');
  assert.is(fieldsOf(t[1]).dport, '5201');
  assert.is(fieldsOf(t[1]).flags, 'PSH,ACK');
  assert.equal(fieldsOf(t[2]), { bytes: '1000', captured: String(TRACE_HEADER_BYTES - 60), data: fieldsOf(t[2]).data });
});

test('IPv6: packet too big quotes the original (decoded as quoted IPv6); extension headers and truncation are named', () => {
  const orig = echo6();
  const err = new Uint8Array(1280);
  const n = buildIcmpv6Error(orig, 0, orig.length, err, 0, parseIPv6('fd00:10:244:1::'), 0, ICMPV6_PACKET_TOO_BIG, 0, 1400);
  assert.ok(n > 0);
  const layers = describeLayers(event('ip', err.subarray(0, n)));
  assert.equal(
    layers.map((l) => l.name),
    ['IPv6', 'ICMPv6', 'IPv6 (quoted)', 'ICMPv6', 'payload'],
  );
  assert.equal(fieldsOf(layers[1]), { type: 'packet-too-big (2)', code: '0', csum: fieldsOf(layers[1]).csum, mtu: '1400' });
  assert.is(fieldsOf(layers[2]).src, 'fd00:10:244:1::2');

  const ext = echo6();
  ext[6] = 0; // hop-by-hop options
  const e = describeLayers(event('ip', ext));
  assert.match(e[0].problem!, /extension header hop-by-hop \(0\)/);
  assert.is(e[1].name, 'undecoded');

  const cut = describeLayers(event('ip', echo6().subarray(0, 30)));
  assert.is(cut[0].problem, 'truncated: 30 of 40 header bytes captured');
  assert.is(fieldsOf(cut[0]).hlim, '63', 'what was captured is shown');
  assert.is(fieldsOf(cut[0]).src, 'fd00:10:244:1::2');
  assert.not.ok(fieldsOf(cut[0]).dst, 'an address cut short is not shown');
  for (let n = 0; n <= 104; n++) describeLayers(event('ip', echo6().subarray(0, n)));
});

test('ICMP net unreachable quotes the original: decoded as quoted IPv4 and UDP', () => {
  const orig = new Uint8Array(20 + 8 + 4);
  buildIPv4Header(orig, 0, 32, 7, 64, 17, parseIPv4('10.244.1.2'), parseIPv4('10.244.77.5'), true);
  orig.set([0x9c, 0x40, 0x27, 0x0f, 0x00, 0x0c, 0x00, 0x00], 20); // 40000 → 9999
  const out = new Uint8Array(100);
  const n = buildIcmpDestUnreachable(orig, 0, orig.length, out, 0, parseIPv4('10.244.77.5'), ICMP_NET_UNREACHABLE, 0, 0x99);
  const layers = describeLayers(event('ip', out.subarray(0, n)));
  assert.equal(
    layers.map((l) => l.name),
    ['IPv4', 'ICMP', 'IPv4 (quoted)', 'UDP (quoted)'],
  );
  assert.is(fieldsOf(layers[0]).src, '10.244.77.5', 'from the unreachable destination, as the agent sends it');
  assert.is(fieldsOf(layers[1]).type, 'dest-unreachable (3)');
  assert.is(fieldsOf(layers[1]).code, 'net-unreachable (0)');
  assert.is(fieldsOf(layers[2]).dst, '10.244.77.5');
  assert.equal(fieldsOf(layers[3]), { sport: '40000', dport: '9999', len: '12', csum: '0x0000 (none)' });
});

function tcpSegment(payload: number): Uint8Array {
  const buf = new Uint8Array(20 + 32 + payload);
  buildIPv4Header(buf, 0, buf.length, 0x55, 64, IP_PROTOCOL_TCP, parseIPv4('10.244.1.2'), parseIPv4('10.244.2.2'), true);
  const t = 20;
  buf.set([0xa4, 0x10, 0x14, 0x51], t); // 42000 → 5201
  new DataView(buf.buffer).setUint32(t + 4, 3_000_000_000);
  new DataView(buf.buffer).setUint32(t + 8, 12345);
  buf[t + 12] = 8 << 4; // 32-byte header (timestamps)
  buf[t + 13] = 0x18; // PSH, ACK
  buf[t + 14] = 0x01;
  buf[t + 15] = 0xf5; // window 501
  return buf;
}

test('TCP: ports, 32-bit sequence numbers, flags, window, options length, payload beyond the capture', () => {
  const layers = describeLayers(event('ip', tcpSegment(1400)));
  assert.equal(
    layers.map((l) => l.name),
    ['IPv4', 'TCP', 'payload'],
  );
  const f = fieldsOf(layers[1]);
  assert.equal(
    { sport: f.sport, dport: f.dport, seq: f.seq, ack: f.ack, flags: f.flags, win: f.win, hdr: f.hdr },
    { sport: '42000', dport: '5201', seq: '3000000000', ack: '12345', flags: 'PSH,ACK', win: '501', hdr: '32' },
  );
  assert.equal(fieldsOf(layers[2]).bytes, '1400');
  assert.equal(fieldsOf(layers[2]).captured, String(128 - 52));
});

test('truncated bytes: every prefix of every sample decodes without throwing, and the cut layer says so', () => {
  const samples: Array<[TraceEvent['layers'], Uint8Array]> = [
    ['outer-ip', vxlanSeedPacket()],
    ['vxlan-payload', vxlanSeedPacket().subarray(28)],
    ['ip', echo()],
    ['ip', tcpSegment(10)],
  ];
  for (const [kind, full] of samples) {
    for (let n = 0; n <= Math.min(full.length, 128); n++) {
      const layers = describeLayers(event(kind, full.subarray(0, n)));
      assert.ok(layers.length >= 1, `${kind} ${n}`);
      const last = layers[layers.length - 1];
      const cut = layers.find((l) => l.problem);
      if (n < 20 && kind !== 'vxlan-payload') assert.ok(cut, `${kind} cut at ${n}: a problem is reported`);
      if (cut) assert.match(cut.problem!, /truncated|no bytes/);
      assert.ok(last.offset <= n);
    }
  }
});

test('malformed bytes: wrong version, bad IHL, total length below the header, random junk never throw', () => {
  const v5 = new Uint8Array(40);
  v5[0] = 0x50;
  const l5 = describeLayers(event('ip', v5));
  assert.is(l5[0].problem, 'not IPv4 (version 5)');
  const badIhl = echo();
  badIhl[0] = 0x43;
  assert.match(describeLayers(event('ip', badIhl))[0].problem!, /bad header length 12/);
  const badTotal = echo();
  badTotal[2] = 0;
  badTotal[3] = 10;
  assert.match(describeLayers(event('ip', badTotal))[0].problem!, /bad total length 10/);
  assert.match(fieldsOf(describeLayers(event('ip', badTotal))[0]).csum, / bad$/, 'the header checksum no longer matches');
  let x = 0x12345678;
  const random = () => ((x = (Math.imul(x, 1103515245) + 12345) >>> 0) >>> 16) & 0xff;
  for (let i = 0; i < 2000; i++) {
    const junk = Uint8Array.from({ length: random() % 130 }, random);
    if (i % 3 === 0 && junk.length) junk[0] = 0x45;
    for (const kind of ['ip', 'udp-payload', 'vxlan-payload', 'outer-ip'] as const) describeLayers(event(kind, junk));
  }
  // Not even a Uint8Array, or unknown layers: an explanation, not an exception.
  assert.ok(describeLayers({ layers: 'ip', headerBytes: undefined as unknown as Uint8Array }).length >= 1);
  assert.match(describeLayers({ layers: 'ethernet' as TraceEvent['layers'], headerBytes: new Uint8Array(4) })[0].problem!, /unknown layers/);
});

test('render: the header line, every field of every layer, lease, drop and note; colour only when asked', () => {
  const ev = event('ip', echo(), { syscall: 'read', crossing: 'kernel→user', bytes: 84 });
  const text = renderTraceEvent(ev, { color: false });
  const lines = text.split('\n');
  assert.is(lines[0], 'node-1 w0 #17  kernel → user  read(tun fd)  84 bytes  [TUN read]');
  for (const layer of describeLayers(ev)) {
    assert.ok(text.includes(layer.name), layer.name);
    for (const [k, v] of layer.fields) assert.ok(text.includes(`${k} ${v}`), `${layer.name} ${k} ${v}`);
  }
  assert.match(text, /IPv4 \(L3\)\s+src 10\.244\.1\.2  dst 10\.244\.2\.2  ttl 63  proto ICMP  len 84  id 0x1a2b/);
  assert.match(text, /\n {4}-{40,}\n/, 'rules between the layers, as in the diagrams');
  assert.not.match(text, /\x1b\[/);
  assert.match(renderTraceEvent(ev, { color: true }), /\x1b\[1;?[0-9;]*m|\x1b\[1m/);

  const lookup = renderTraceEvent(event('ip', echo(), { stage: 'lease-lookup', lease: { key: '10.244.2.0-24', publicIp: '192.0.2.2' } }), {
    color: false,
    previousTimeNs: 1_000_000 - 12_300,
  });
  assert.match(lookup.split('\n')[0], /^node-1 w0 #17  in user space  \+12\.3 µs  \[lease lookup\]$/);
  assert.match(lookup, /lease 10\.244\.2\.0-24 → public IP 192\.0\.2\.2/);
  const drop = renderTraceEvent(event('ip', echo(), { stage: 'drop', lease: null, drop: 'no-lease', note: 'answered with ICMP net unreachable' }), { color: false });
  assert.match(drop, /\[drop\]/);
  assert.match(drop, /no lease covers the destination/);
  assert.match(drop, /dropped: no-lease/);
  assert.match(drop, /answered with ICMP net unreachable/);
  const send = renderTraceEvent(event('outer-ip', vxlanSeedPacket(), { stage: 'udp-send', syscall: 'sendmmsg', crossing: 'user→kernel', bytes: 134 }), {
    color: false,
  });
  assert.match(send.split('\n')[0], /user → kernel  sendmmsg\(udp fd\)  134 bytes  \[UDP send\]/);
  assert.match(send, /VXLAN\s+flags 0x08 \(I: VNI present\)  vni 1/);
  assert.match(send, /Ethernet \(L2\)\s+dst 3a:87:cf:81:6a:ce/);
});

test('every stage has a label and a meaning; crossing stages name their syscall', () => {
  for (const stage of TRACE_STAGES) {
    const info = TRACE_STAGE_INFO[stage];
    assert.ok(info.label && info.meaning, stage);
    assert.is(info.syscall === undefined, info.crossing === undefined, stage);
  }
  assert.equal(
    TRACE_STAGES.filter((s) => TRACE_STAGE_INFO[s].crossing).map((s) => [s, TRACE_STAGE_INFO[s].syscall, TRACE_STAGE_INFO[s].crossing]),
    [
      ['tun-read', 'read', 'kernel→user'],
      ['udp-send', 'sendmmsg', 'user→kernel'],
      ['udp-receive', 'recvmmsg', 'kernel→user'],
      ['tun-write', 'write', 'user→kernel'],
    ],
  );
});

test('JSON: one line, headerBytes in hex, and back to the same event', () => {
  const ev = event('ip', echo(), {
    stage: 'lease-lookup',
    bytes: 84,
    lease: { key: '10.244.2.0-24', publicIp: '192.0.2.2' },
    note: 'TTL 64 → 63',
  });
  const line = renderTraceJson(ev);
  assert.not.ok(line.includes('\n'));
  const parsed = JSON.parse(line);
  assert.is(parsed.headerBytes, Buffer.from(echo()).toString('hex'));
  assert.equal(traceEventFromJson(parsed), ev);
  const dropped = event('ip', echo(), { stage: 'drop', lease: null, drop: 'no-lease', syscall: 'read', crossing: 'kernel→user' });
  assert.equal(traceEventFromJson(JSON.parse(renderTraceJson(dropped))), dropped);
  assert.throws(() => traceEventFromJson({ ...parsed, stage: 'teleport' }), /unknown stage/);
  assert.throws(() => traceEventFromJson({ ...parsed, headerBytes: 'xyz' }), /hex/);
  assert.throws(() => traceEventFromJson([]), /not a JSON object/);
});

test('TraceLimiter: a total limit and a per-second window', () => {
  let now = 0;
  const total = new TraceLimiter(3, 0, () => now);
  assert.equal([1, 2, 3, 4, 5].map(() => total.admit()), [true, true, true, false, false]);
  assert.ok(total.exhausted);
  assert.is(total.count, 3);

  const rate = new TraceLimiter(0, 2, () => now);
  const admitted = (ms: number) => {
    now = ms;
    return rate.admit();
  };
  assert.equal([0, 10, 20, 999].map(admitted), [true, true, false, false]);
  assert.equal([1000, 1001, 1002].map(admitted), [true, true, false]);
  assert.not.ok(rate.exhausted, 'a rate alone never ends a trace');

  const both = new TraceLimiter(3, 2, () => now);
  now = 5000;
  assert.equal([both.admit(), both.admit(), both.admit()], [true, true, false]);
  now = 6000;
  assert.equal([both.admit(), both.admit()], [true, false]);
  assert.throws(() => new TraceLimiter(-1, 0), /not a whole number/);

  // Workers sharing one count: the limit is for all of them together.
  const shared = new Int32Array(new SharedArrayBuffer(4));
  const w0 = new TraceLimiter(3, 0, () => now, shared);
  const w1 = new TraceLimiter(3, 0, () => now, shared);
  assert.equal([w0.admit(), w1.admit(), w1.admit(), w0.admit(), w1.admit()], [true, true, true, false, false]);
  assert.ok(w0.exhausted && w1.exhausted);
  assert.equal([w0.count, w1.count], [1, 2]);
  // A packet refused by the rate does not use up the shared total.
  const sharedRate = new Int32Array(new SharedArrayBuffer(4));
  const slow = new TraceLimiter(2, 1, () => now, sharedRate);
  now = 10_000;
  assert.equal([slow.admit(), slow.admit(), slow.admit()], [true, false, false]);
  assert.is(Atomics.load(sharedRate, 0), 1);
});

test('WorkerTracer: filter then limiter, numbered packets, stage defaults, and the outer headers rebuilt for display', () => {
  const events: TraceEvent[] = [];
  const tracer = new WorkerTracer({ node: 'node-1', worker: 1, filter: 'icmp and dst host 10.244.2.2', limit: 2, perSecond: 0 }, (ev) => events.push(ev));
  const slot = new Uint8Array(32 + 84);
  slot.set(echo(), 32);
  const other = new Uint8Array(32 + 84);
  buildIcmpEcho(other, 32, parseIPv4('10.244.1.2'), parseIPv4('10.244.3.3'), ICMP_ECHO_REQUEST, 1, 1, 56);
  assert.is(tracer.admit(other, 32), -1, 'filtered out');
  assert.is(tracer.admit(slot, 32), 0);
  assert.is(tracer.admit(slot, 32), 1);
  assert.is(tracer.admit(slot, 32), -1, 'limit reached');
  assert.ok(tracer.exhausted);

  tracer.emit(0, 'tun-read', 'ip', slot, 32, 84);
  tracer.emit(0, 'lease-lookup', 'ip', slot, 32, 84, { lease: { key: '10.244.2.0-24', publicIp: '192.0.2.2' } });
  tracer.emitOuter(0, 'udp-send', parseIPv4('192.0.2.1'), parseIPv4('192.0.2.2'), 8285, 8285, slot, 32, 84, { note: 'batch of 1' });
  tracer.emit(0, 'tun-write', 'ip', slot, 32, 84, { syscall: 'writev' });
  assert.equal(
    events.map((e) => [e.stage, e.syscall, e.crossing, e.bytes, e.layers]),
    [
      ['tun-read', 'read', 'kernel→user', 84, 'ip'],
      ['lease-lookup', undefined, undefined, 84, 'ip'],
      ['udp-send', 'sendmmsg', 'user→kernel', 112, 'outer-ip'],
      ['tun-write', 'writev', 'user→kernel', 84, 'ip'],
    ],
  );
  assert.ok(events.every((e) => e.node === 'node-1' && e.worker === 1 && e.packet === 0));
  assert.ok(events[1].timeNs >= events[0].timeNs, 'monotonic clock');
  slot.fill(0xee, 32); // the slot is reused: events hold their own copies
  const outer = describeLayers(events[2]);
  assert.equal(
    outer.map((l) => l.name),
    ['IPv4', 'UDP', 'IPv4', 'ICMP', 'payload'],
  );
  assert.equal([fieldsOf(outer[0]).src, fieldsOf(outer[0]).dst, fieldsOf(outer[0]).len], ['192.0.2.1', '192.0.2.2', '112']);
  assert.is(fieldsOf(outer[1]).dport, '8285');
  assert.is(fieldsOf(outer[2]).dst, '10.244.2.2');
  assert.is(events[2].headerBytes.length, 112);
  assert.is(events[2].note, 'batch of 1');
});

test.run();
