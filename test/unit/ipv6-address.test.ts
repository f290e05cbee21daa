import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { isIPv6 } from 'node:net';
import {
  cidr6Contains,
  cidr6Covers,
  cidr6Overlaps,
  formatCidr6,
  formatIPv6,
  maskIPv6,
  parseCidr6,
  parseIPv6,
} from '../../src/control/ipv6-address.js';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

test('parseIPv6 gives the 16 bytes in network order', () => {
  assert.is(hex(parseIPv6('fd00:10:244:2::1')), 'fd000010024400020000000000000001');
  assert.is(hex(parseIPv6('::')), '0'.repeat(32));
  assert.is(hex(parseIPv6('::1')), '0'.repeat(31) + '1');
  assert.is(hex(parseIPv6('1::')), '0001' + '0'.repeat(28));
  assert.is(hex(parseIPv6('FFFF:ffff:FFFF:ffff:ffff:ffff:ffff:ffff')), 'f'.repeat(32));
  assert.is(hex(parseIPv6('::ffff:192.0.2.1')), '00000000000000000000ffffc0000201');
  assert.is(hex(parseIPv6('1:2:3:4:5:6:7::')), '00010002000300040005000600070000');
});

test('parseIPv6 refuses what Go net.ParseIP refuses, and agrees with node:net on validity', () => {
  for (const bad of ['', ':', '1:2:3:4:5:6:7', '1:2:3:4:5:6:7:8:9', '1::2::3', ':1::', '1::2:', '12345::', 'g::1', 'fe80::1%eth0', '::ffff:192.0.2', '::192.0.2.1:1', '10.244.1.1', ' ::1', '1:2:3:4:5:6:7:8::']) {
    assert.throws(() => parseIPv6(bad), /is not a valid IPv6 address/, bad);
    assert.not.ok(isIPv6(bad) && !bad.includes('%'), `node:net accepts ${bad}`);
  }
});

test('formatIPv6 is RFC 5952: lower case, zeros dropped, the longest zero run (first on a tie) as ::', () => {
  const cases: [string, string][] = [
    ['fd00:0010:0244:0002:0000:0000:0000:0001', 'fd00:10:244:2::1'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'], // a single zero group stays
    ['0:0:0:0:0:0:0:0', '::'],
    ['2001:0:0:1:0:0:0:1', '2001:0:0:1::1'], // the longer run wins
    ['FD00::ABCD', 'fd00::abcd'],
  ];
  for (const [input, want] of cases) assert.is(formatIPv6(parseIPv6(input)), want, input);
});

test('masks and CIDRs: host bits cleared at every boundary, containment and overlap', () => {
  const ip = parseIPv6('ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff');
  for (let len = 0; len <= 128; len++) {
    const masked = maskIPv6(ip, len);
    const bits = [...masked].map((b) => b.toString(2).padStart(8, '0')).join('');
    assert.is(bits, '1'.repeat(len) + '0'.repeat(128 - len), `/${len}`);
  }
  assert.throws(() => maskIPv6(ip, 129), /out of range/);
  const c = parseCidr6('fd00:10:244:2::1/64');
  assert.is(formatCidr6(c), 'fd00:10:244:2::/64');
  assert.is(formatCidr6(c, true), 'fd00:10:244:2::1/64');
  assert.ok(cidr6Contains(c, parseIPv6('fd00:10:244:2:ffff::9')));
  assert.not.ok(cidr6Contains(c, parseIPv6('fd00:10:244:3::1')));
  const odd = parseCidr6('fd00:10:244:2a00::/57');
  assert.ok(cidr6Contains(odd, parseIPv6('fd00:10:244:2a7f::1')));
  assert.not.ok(cidr6Contains(odd, parseIPv6('fd00:10:244:2a80::1')));
  const net = parseCidr6('fd00:10:244::/48');
  assert.ok(cidr6Covers(net, c));
  assert.not.ok(cidr6Covers(c, net));
  assert.ok(cidr6Overlaps(c, net));
  assert.not.ok(cidr6Overlaps(c, parseCidr6('fd00:10:244:3::/64')));
  for (const bad of ['fd00::/129', 'fd00::', 'fd00::/-1', 'fd00::/064', '10.0.0.0/8']) {
    assert.throws(() => parseCidr6(bad), /is not a valid IPv6 CIDR/, bad);
  }
});

test.run();
