// The IPv6 half of peers' leases, checked as lease-sanity.ts checks the IPv4
// half (issue 24). Pure; leases built from flannel's dual-stack keys.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseCidr6 } from '../../src/control/ipv6-address.js';
import { parseLeaseAttrs } from '../../src/control/lease.js';
import { checkIpv6Leases } from '../../src/control/ipv6-lease-checks.js';

const lease = (key: string, publicIpv6: string | null = null) =>
  parseLeaseAttrs(key, { PublicIP: key.startsWith('0.0.0.0-0') ? '0.0.0.0' : '192.0.2.9', PublicIPv6: publicIpv6, BackendType: 'udp' });
const ctx = { ipv6Network: parseCidr6('fd00:10:244::/56'), ownIpv6Subnet: parseCidr6('fd00:10:244:1::/64') };
const reasons = (r: ReturnType<typeof checkIpv6Leases>) => r.rejected.map((x) => `${x.key} ${x.reason}`).sort();

test('good leases of either shape pass: dual, IPv4-only, IPv6-only', () => {
  const leases = [lease('10.244.2.0-24&fd00:10:244:2::-64', '2001:db8::2'), lease('10.244.3.0-24'), lease('0.0.0.0-0&fd00:10:244:4::-64', '2001:db8::4')];
  const r = checkIpv6Leases(leases, ctx);
  assert.equal(r.rejected, []);
  assert.is(r.accepted.length, 3);
});

test('subnets outside, covering, overlapping own; nested overlaps reject the wider ones round by round', () => {
  const r = checkIpv6Leases(
    [
      lease('10.244.2.0-24&fd00:11::-64'),
      lease('10.244.3.0-24&fd00:10:244::-56'),
      lease('10.244.4.0-24&fd00:10:244:1:8000::-65'),
      lease('10.244.5.0-24&fd00:10:244:20::-59'),
      lease('10.244.6.0-24&fd00:10:244:20::-60'),
      lease('10.244.7.0-24&fd00:10:244:20::-64'),
      lease('10.244.8.0-24&fd00:10:244:40::-64'),
    ],
    ctx,
  );
  assert.equal(reasons(r), [
    '10.244.2.0-24&fd00:11::-64 ipv6-subnet-outside-network',
    '10.244.3.0-24&fd00:10:244::-56 ipv6-subnet-covers-network',
    '10.244.4.0-24&fd00:10:244:1:8000::-65 ipv6-subnet-overlaps-own',
    '10.244.5.0-24&fd00:10:244:20::-59 ipv6-subnet-overlaps-lease',
    '10.244.6.0-24&fd00:10:244:20::-60 ipv6-subnet-overlaps-lease',
  ]);
  assert.equal(r.accepted.map((l) => l.key), ['10.244.7.0-24&fd00:10:244:20::-64', '10.244.8.0-24&fd00:10:244:40::-64']);
});

test('PublicIPv6 that cannot be a peer: unspecified, loopback, multicast, link-local, inside the pod network', () => {
  const r = checkIpv6Leases(
    [
      lease('10.244.2.0-24&fd00:10:244:2::-64', '::'),
      lease('10.244.3.0-24&fd00:10:244:3::-64', '::1'),
      lease('10.244.4.0-24&fd00:10:244:4::-64', 'ff02::1'),
      lease('10.244.5.0-24&fd00:10:244:5::-64', 'fe80::1'),
      lease('10.244.6.0-24&fd00:10:244:6::-64', 'fd00:10:244:9::1'),
      lease('10.244.7.0-24&fd00:10:244:7::-64', 'fd00:20::1'),
    ],
    ctx,
  );
  assert.equal(reasons(r), [
    '10.244.2.0-24&fd00:10:244:2::-64 public-ipv6-unspecified',
    '10.244.3.0-24&fd00:10:244:3::-64 public-ipv6-loopback',
    '10.244.4.0-24&fd00:10:244:4::-64 public-ipv6-multicast',
    '10.244.5.0-24&fd00:10:244:5::-64 public-ipv6-link-local',
    '10.244.6.0-24&fd00:10:244:6::-64 public-ipv6-in-network',
  ]);
  assert.equal(r.accepted.map((l) => l.key), ['10.244.7.0-24&fd00:10:244:7::-64']);
});

test('without IPv6 here: dual leases pass for their IPv4 half, IPv6-only ones are refused', () => {
  const r = checkIpv6Leases([lease('10.244.2.0-24&fd00:99::-64'), lease('0.0.0.0-0&fd00:10:244:4::-64', '2001:db8::4')], {});
  assert.equal(reasons(r), ['0.0.0.0-0&fd00:10:244:4::-64 ipv6-not-enabled']);
  assert.equal(r.accepted.map((l) => l.key), ['10.244.2.0-24&fd00:99::-64']);
});

test.run();
