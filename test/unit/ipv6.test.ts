// IPv6 header helpers (src/encap/ipv6.ts) and ICMPv6 building
// (src/encap/icmpv6.ts): validation, hop limit, the extension-header walk
// that finds an ICMPv6 type, and checksums checked against a sum computed
// here byte by byte.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseIPv6 } from '../../src/control/ipv6-address.js';
import { DropReason } from '../../src/encap/drop-reasons.js';
import { decrementHopLimit, ipv6TotalLength, ipv6UpperLayer, UpperLayer, validateIPv6 } from '../../src/encap/ipv6.js';
import { buildIcmpv6Echo, buildIcmpv6Error, ICMPV6_DEST_UNREACH, ICMPV6_PACKET_TOO_BIG } from '../../src/encap/icmpv6.js';

function independentChecksumOk(p: Uint8Array): boolean {
  const len = p.length - 40;
  const bytes = [...p.subarray(8, 40), 0, 0, len >>> 8, len & 255, 0, 0, 0, p[6], ...p.subarray(40)];
  let s = 0;
  for (let i = 0; i < bytes.length; i += 2) s += (bytes[i] << 8) | (bytes[i + 1] ?? 0);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s === 0xffff;
}

const echo = (payload = 20, src = 'fd00::1', dst = 'fd00::2') => {
  const b = new Uint8Array(48 + payload);
  buildIcmpv6Echo(b, 0, parseIPv6(src), parseIPv6(dst), 128, 7, 9, payload);
  return b;
};

test('validateIPv6: short, bad payload length, jumbogram, trailing bytes', () => {
  const p = echo();
  assert.is(validateIPv6(p, 0, p.length), DropReason.None);
  assert.is(validateIPv6(p, 0, 39), DropReason.TooShort);
  assert.is(validateIPv6(p, 0, p.length - 1), DropReason.Ipv6BadPayloadLength);
  const padded = new Uint8Array(p.length + 5);
  padded.set(p);
  assert.is(validateIPv6(padded, 0, padded.length), DropReason.None);
  assert.is(ipv6TotalLength(padded, 0), p.length);
  const empty = p.slice(0, 40);
  empty[4] = 0;
  empty[5] = 0;
  assert.is(validateIPv6(empty, 0, 40), DropReason.Ipv6BadPayloadLength, 'zero payload with a next header: a jumbogram');
  empty[6] = 59;
  assert.is(validateIPv6(empty, 0, 40), DropReason.None, 'zero payload, no next header');
});

test('decrementHopLimit: − 1, nothing else; ≤ 1 refused and left as is', () => {
  const p = echo();
  const before = p.slice();
  assert.ok(decrementHopLimit(p, 0));
  assert.is(p[7], 63);
  p[7] = 64;
  assert.equal(p, before);
  for (const h of [1, 0]) {
    p[7] = h;
    assert.not.ok(decrementHopLimit(p, 0));
    assert.is(p[7], h);
  }
});

test('ipv6UpperLayer walks hop-by-hop, routing, destination options, fragment and AH headers; stops on cut chains', () => {
  const out = new UpperLayer();
  const p = new Uint8Array(40 + 8 + 16 + 8 + 12 + 8);
  p[0] = 0x60;
  p[6] = 0; // hop-by-hop
  let at = 40;
  p[at] = 43; p[at + 1] = 0; at += 8; // → routing, 8 bytes
  p[at] = 44; p[at + 1] = 1; at += 16; // → fragment, routing was 16 bytes
  p[at] = 51; at += 8; // → AH, fragment offset 0
  p[at] = 58; p[at + 1] = 1; at += 12; // → ICMPv6, AH (1 + 2) * 4 = 12 bytes
  p[at] = 1;
  ipv6UpperLayer(p, 0, p.length, out);
  assert.is(out.protocol, 58);
  assert.is(out.offset, at);
  assert.not.ok(out.laterFragment);
  // A later fragment.
  p[40 + 8 + 16 + 2] = 0x01;
  ipv6UpperLayer(p, 0, p.length, out);
  assert.ok(out.laterFragment);
  // Cut short: the chain runs past the packet.
  ipv6UpperLayer(p, 0, 50, out);
  assert.is(out.protocol, -1);
  // ESP hides the rest: reported as protocol 50, not walked.
  p[6] = 50;
  ipv6UpperLayer(p, 0, p.length, out);
  assert.is(out.protocol, 50);
});

test('ICMPv6 echo and errors carry checksums that verify against an independent sum', () => {
  for (const n of [0, 1, 20, 999]) assert.ok(independentChecksumOk(echo(n)), `echo payload ${n}`);
  const orig = echo(100);
  const out = new Uint8Array(1400);
  const src = parseIPv6('fd00:10:244:9::1');
  for (const [type, param] of [[ICMPV6_DEST_UNREACH, 0], [ICMPV6_PACKET_TOO_BIG, 1400]]) {
    const n = buildIcmpv6Error(orig, 0, orig.length, out, 0, src, 0, type, 0, param);
    assert.is(n, 40 + 8 + orig.length);
    assert.ok(independentChecksumOk(out.subarray(0, n)), `type ${type}`);
    assert.is(out[40], type);
    assert.is((out[44] << 24) | (out[45] << 16) | (out[46] << 8) | out[47], param);
  }
});

test('no ICMPv6 error about an error, a multicast destination (packet too big excepted), an unspecified or multicast source, a later fragment, a malformed packet', () => {
  const out = new Uint8Array(1400);
  const src = parseIPv6('fd00::9');
  const answer = (p: Uint8Array, type = ICMPV6_DEST_UNREACH) => buildIcmpv6Error(p, 0, p.length, out, 0, src, 0, type, 0, 0);
  const err = echo();
  err[40] = 1;
  assert.is(answer(err), 0);
  assert.is(answer(echo(8, 'fd00::1', 'ff02::1')), 0);
  assert.ok(answer(echo(8, 'fd00::1', 'ff02::1'), ICMPV6_PACKET_TOO_BIG) > 0);
  assert.is(answer(echo(8, '::', 'fd00::2')), 0);
  assert.is(answer(echo(8, 'ff05::1', 'fd00::2')), 0);
  assert.is(answer(echo().subarray(0, 45)), 0);
  assert.ok(answer(echo()) > 0);
});

test.run();
