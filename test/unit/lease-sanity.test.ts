// The sense checks every lease passes on its way to the lease table (issue
// 15, defect 3): each bad PublicIP and subnet is rejected with its key and
// reason, and the good leases stay.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { makeCidr, parseCidr, parseIPv4 } from '../../src/control/ipv4-address.js';
import { parseLeaseAttrs, type Lease } from '../../src/control/lease.js';
import { checkLeases, LEASE_REJECT_REASONS, localAddresses, localIpv6Addresses } from '../../src/control/lease-sanity.js';
import { formatIPv6, parseCidr6, parseIPv6 } from '../../src/control/ipv6-address.js';

const cidr = (t: string) => {
  const c = parseCidr(t);
  return makeCidr(c.network, c.prefixLength);
};
const ctx = { network: cidr('10.244.0.0/16'), ownSubnet: cidr('10.244.1.0/24'), ownAddresses: [parseIPv4('192.0.2.1'), parseIPv4('127.0.0.1')] };
const lease = (key: string, publicIp: string): Lease => parseLeaseAttrs(key, { PublicIP: publicIp, BackendType: 'udp' });

test('every bad PublicIP is rejected with its reason; the good lease stays', () => {
  const cases: [string, string][] = [
    ['0.0.0.0', 'public-ip-unspecified'],
    ['127.0.0.1', 'public-ip-loopback'],
    ['127.9.9.9', 'public-ip-loopback'],
    ['224.0.0.1', 'public-ip-multicast'],
    ['239.255.255.250', 'public-ip-multicast'],
    ['255.255.255.255', 'public-ip-broadcast'],
    ['240.0.0.1', 'public-ip-reserved'],
    ['192.0.2.1', 'public-ip-own'],
    ['10.244.7.7', 'public-ip-in-network'],
  ];
  const leases = cases.map(([ip], i) => lease(`10.244.${10 + i}.0-24`, ip));
  const good = lease('10.244.2.0-24', '192.0.2.2');
  const { accepted, rejected } = checkLeases([...leases, good], ctx);
  assert.equal(accepted, [good]);
  assert.equal(rejected.map((r) => [r.key, r.reason]), cases.map(([, reason], i) => [`10.244.${10 + i}.0-24`, reason]));
  for (const r of rejected) assert.match(r.detail, /PublicIP/);
});

test('subnets outside the network, covering it, or overlapping the own subnet are rejected', () => {
  const { accepted, rejected } = checkLeases(
    [lease('10.245.2.0-24', '192.0.2.3'), lease('10.244.0.0-16', '192.0.2.4'), lease('10.0.0.0-8', '192.0.2.5'), lease('10.244.1.128-25', '192.0.2.6'), lease('10.244.3.0-24', '192.0.2.7')],
    ctx,
  );
  assert.equal(accepted.map((l) => l.key), ['10.244.3.0-24']);
  assert.equal(rejected.map((r) => [r.key, r.reason]), [
    ['10.245.2.0-24', 'subnet-outside-network'],
    ['10.244.0.0-16', 'subnet-covers-network'],
    ['10.0.0.0-8', 'subnet-outside-network'],
    ['10.244.1.128-25', 'subnet-overlaps-own'],
  ]);
});

test('overlapping leases: the wider one goes, nested ones included, the others stay', () => {
  const a = lease('10.244.128.0-17', '192.0.2.10'); // holds b, c and d
  const b = lease('10.244.144.0-20', '192.0.2.11'); // holds c
  const c = lease('10.244.145.0-24', '192.0.2.12');
  const d = lease('10.244.160.0-24', '192.0.2.13');
  const e = lease('10.244.2.0-24', '192.0.2.14');
  const { accepted, rejected } = checkLeases([e, d, c, b, a], ctx);
  assert.equal(accepted.map((l) => l.key).sort(), ['10.244.145.0-24', '10.244.160.0-24', '10.244.2.0-24']);
  assert.equal(rejected.map((r) => [r.key, r.reason]).sort(), [['10.244.128.0-17', 'subnet-overlaps-lease'], ['10.244.144.0-20', 'subnet-overlaps-lease']]);
  assert.match(rejected.find((r) => r.key === '10.244.144.0-20')!.detail, /overlaps lease 10\.244\.145\.0-24/);
});

test('unknown lease attributes are accepted and named; a case-variant of a known one is still refused', () => {
  const l = parseLeaseAttrs('10.244.2.0-24', { PublicIP: '192.0.2.2', BackendType: 'udp', FutureField: { x: 1 }, Another: 2 });
  assert.equal(l.unknownFields, ['FutureField', 'Another']);
  assert.is(parseLeaseAttrs('10.244.2.0-24', { PublicIP: '192.0.2.2', BackendType: 'udp' }).unknownFields, undefined);
  assert.throws(() => parseLeaseAttrs('10.244.2.0-24', { PublicIp: '192.0.2.2', BackendType: 'udp' }), /did you mean PublicIP/);
  // strict types where we use the field
  assert.throws(() => parseLeaseAttrs('10.244.2.0-24', { PublicIP: 5, BackendType: 'udp', New: 1 }), /must be a string/);
});

test('the reasons are all distinct metric labels; local addresses are read from networkInterfaces', () => {
  assert.is(new Set(LEASE_REJECT_REASONS).size, LEASE_REJECT_REASONS.length);
  assert.equal(localAddresses({ lo: [{ family: 'IPv4', address: '127.0.0.1' }, { family: 'IPv6', address: '::1' }], eth0: [{ family: 4, address: '192.0.2.9' }] }), [
    parseIPv4('127.0.0.1'),
    parseIPv4('192.0.2.9'),
  ]);
});

// ---- dual-stack ----

const ctx6 = { ...ctx, ipv6Network: parseCidr6('fd00:10:244::/48'), ownIpv6Subnet: parseCidr6('fd00:10:244:1::1/64'), ownIpv6Addresses: [parseIPv6('fd00:192::1')] };
const lease6 = (key: string, publicIp: string, publicIpv6?: string): Lease =>
  parseLeaseAttrs(key, { PublicIP: publicIp, BackendType: 'udp', ...(publicIpv6 ? { PublicIPv6: publicIpv6 } : {}) });

test('IPv6 subnets outside the IPv6 network, covering it, overlapping the own one or each other are rejected; a bad half rejects the lease', () => {
  const good = lease6('10.244.2.0-24&fd00:10:244:2::-64', '192.0.2.2', 'fd00:192::2');
  const cases: [Lease, string][] = [
    [lease6('10.244.3.0-24&fd00:10:245:3::-64', '192.0.2.3'), 'ipv6-subnet-outside-network'],
    [lease6('10.244.4.0-24&fd00:10:244::-48', '192.0.2.4'), 'ipv6-subnet-covers-network'],
    [lease6('10.244.5.0-24&fd00:10:244:1:8000::-65', '192.0.2.5'), 'ipv6-subnet-overlaps-own'],
    [lease6('10.244.6.0-24&fd00:10:244:6::-64', '192.0.2.6', '::1'), 'public-ipv6-unusable'],
    [lease6('10.244.7.0-24&fd00:10:244:7::-64', '192.0.2.7', 'ff02::1'), 'public-ipv6-unusable'],
    [lease6('10.244.8.0-24&fd00:10:244:8::-64', '192.0.2.8', 'fd00:192::1'), 'public-ipv6-own'],
  ];
  const { accepted, rejected } = checkLeases([good, ...cases.map(([l]) => l)], ctx6);
  assert.equal(accepted, [good]);
  assert.equal(rejected.map((r) => [r.key, r.reason]), cases.map(([l, reason]) => [l.key, reason]));
  // Nested IPv6 subnets: the wider goes.
  const wide = lease6('10.244.9.0-24&fd00:10:244:80::-57', '192.0.2.9');
  const inner = lease6('10.244.10.0-24&fd00:10:244:81::-64', '192.0.2.10');
  const r2 = checkLeases([inner, good, wide], ctx6);
  assert.equal(r2.accepted.map((l) => l.key).sort(), [good.key, inner.key].sort());
  assert.equal(r2.rejected.map((r) => [r.key, r.reason]), [[wide.key, 'ipv6-subnet-overlaps-lease']]);
  assert.match(r2.rejected[0].detail, /overlaps lease 10\.244\.10\.0-24&fd00:10:244:81::-64/);
});

test('IPv6-only leases: their zero IPv4 half is not checked, they need a node with IPv6; an IPv6-only node ignores IPv4 halves', () => {
  const only = lease6('0.0.0.0-0&fd00:10:244:3::-64', '192.0.2.3');
  const other = lease6('0.0.0.0-0&fd00:10:244:4::-64', '192.0.2.4');
  assert.equal(checkLeases([only, other], ctx6).accepted, [only, other]);
  const onV4Node = checkLeases([only], ctx);
  assert.equal(onV4Node.rejected.map((r) => r.reason), ['no-common-family']);
  const noV4Underlay = parseLeaseAttrs('0.0.0.0-0&fd00:10:244:5::-64', { PublicIPv6: 'fd00:192::5', BackendType: 'udp' });
  const r = checkLeases([noV4Underlay], ctx6).rejected[0];
  assert.is(r.reason, 'public-ip-unspecified');
  assert.match(r.detail, /this node has no public IPv6/);
  // A node on the IPv6 underlay reaches it by its PublicIPv6 alone; without PublicIPv6 it stays unreachable.
  assert.equal(checkLeases([noV4Underlay], { ...ctx6, ipv6Underlay: true }).accepted, [noV4Underlay]);
  // One whose PublicIP is a bad address is still checked as such.
  const badV4 = parseLeaseAttrs('0.0.0.0-0&fd00:10:244:6::-64', { PublicIP: '127.0.0.1', PublicIPv6: 'fd00:192::6', BackendType: 'udp' });
  assert.equal(checkLeases([badV4], { ...ctx6, ipv6Underlay: true }).rejected.map((x) => x.reason), ['public-ip-loopback']);
  // This node IPv6-only: IPv4 halves (even one that would overlap 0.0.0.0/0) are not looked at.
  const v6node = { ...ctx6, network: makeCidr(0, 0), ownSubnet: makeCidr(0, 0), ipv6Only: true };
  const dualPeer = lease6('10.244.2.0-24&fd00:10:244:2::-64', '192.0.2.2');
  assert.equal(checkLeases([only, dualPeer], v6node).accepted, [only, dualPeer]);
  assert.equal(checkLeases([lease('10.244.2.0-24', '192.0.2.2')], v6node).rejected.map((x) => x.reason), ['no-common-family']);
  // A node without IPv6 takes a dual-stack lease by its IPv4 half alone.
  assert.equal(checkLeases([dualPeer], ctx).accepted, [dualPeer]);
});

test('local IPv6 addresses, zones dropped', () => {
  const got = localIpv6Addresses({ lo: [{ family: 'IPv6', address: '::1' }, { family: 'IPv4', address: '127.0.0.1' }], eth0: [{ family: 6, address: 'fe80::1%eth0' }] });
  assert.equal(got.map((a) => formatIPv6(a)), ['::1', 'fe80::1']);
});

test.run();
