import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  cidrContains,
  cidrCovers,
  cidrOverlaps,
  formatCidr,
  formatIPv4,
  parseCidr,
  parseIPv4,
  prefixMask,
} from '../../src/control/ipv4-address.js';

test('parseIPv4 gives a uint32 in host order', () => {
  assert.is(parseIPv4('10.244.1.1'), 0x0af40101);
  assert.is(parseIPv4('0.0.0.0'), 0);
  assert.is(parseIPv4('255.255.255.255'), 0xffffffff);
  assert.is(parseIPv4('192.0.2.200'), 0xc00002c8); // top bit set: still positive
});

test('parseIPv4 refuses anything but a strict dotted quad', () => {
  for (const bad of ['', '10.244.1', '10.244.1.1.1', '10.244.1.256', '10.244.01.1', ' 10.0.0.1', '10.0.0.1 ', '1e1.0.0.1', '-1.0.0.0', '0x0a.0.0.1', 'fc00::1', '10..0.1']) {
    assert.throws(() => parseIPv4(bad), /is not a valid IPv4 address/, bad);
  }
});

test('formatIPv4 round-trips', () => {
  for (const text of ['0.0.0.0', '10.244.1.1', '255.255.255.255', '128.0.0.1', '192.0.2.2']) {
    assert.is(formatIPv4(parseIPv4(text)), text);
  }
});

test('prefixMask handles /0 and /32 (JS shifts count mod 32)', () => {
  assert.is(prefixMask(0), 0);
  assert.is(prefixMask(1), 0x80000000);
  assert.is(prefixMask(24), 0xffffff00);
  assert.is(prefixMask(32), 0xffffffff);
  assert.throws(() => prefixMask(33), /out of range/);
  assert.throws(() => prefixMask(-1), /out of range/);
  assert.throws(() => prefixMask(1.5), /out of range/);
});

test('parseCidr keeps the address as written and computes the network', () => {
  const c = parseCidr('10.244.1.1/24');
  assert.equal(c, { ip: 0x0af40101, prefixLength: 24, network: 0x0af40100, mask: 0xffffff00 });
  assert.is(formatCidr(c), '10.244.1.0/24');
  assert.is(formatCidr(c, true), '10.244.1.1/24');

  const all = parseCidr('203.0.113.7/0');
  assert.is(all.network, 0);
  assert.is(all.mask, 0);
  assert.ok(cidrContains(all, parseIPv4('255.255.255.255')));

  const host = parseCidr('203.0.113.7/32');
  assert.is(host.network, parseIPv4('203.0.113.7'));
  assert.ok(cidrContains(host, parseIPv4('203.0.113.7')));
  assert.not.ok(cidrContains(host, parseIPv4('203.0.113.8')));
});

test('parseCidr refuses bad input with a clear message', () => {
  for (const bad of ['10.244.0.0', '10.244.0.0/33', '10.244.0.0/', '10.244.0.0/024', '10.244.0.300/16', '10.244.0.0/16/1', '/16', '10.244.0.0/-1']) {
    assert.throws(() => parseCidr(bad), /is not a valid IPv4 CIDR/, bad);
  }
});

test('cidrContains, cidrCovers and cidrOverlaps', () => {
  const net = parseCidr('10.244.0.0/16');
  const sub = parseCidr('10.244.7.0/24');
  const other = parseCidr('10.245.0.0/24');
  assert.ok(cidrContains(net, parseIPv4('10.244.255.255')));
  assert.not.ok(cidrContains(net, parseIPv4('10.245.0.0')));
  assert.ok(cidrCovers(net, sub));
  assert.not.ok(cidrCovers(sub, net));
  assert.ok(cidrOverlaps(sub, net));
  assert.ok(cidrOverlaps(net, sub));
  assert.not.ok(cidrOverlaps(net, other));
  // top-bit addresses compare as uint32, not as negative int32
  const high = parseCidr('240.0.0.0/4');
  assert.ok(cidrContains(high, parseIPv4('255.1.2.3')));
  assert.not.ok(cidrContains(high, parseIPv4('239.255.255.255')));
});

test.run();
