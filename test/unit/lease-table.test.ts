import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { formatIPv4, makeCidr, parseCidr, parseIPv4 } from '../../src/control/ipv4-address.js';
import { type Lease, formatSubnetKey } from '../../src/control/lease.js';
import { buildLeaseTableSnapshot, LeaseTable, NO_IPV6 } from '../../src/control/lease-table.js';
import { formatIPv6, parseIPv6 } from '../../src/control/ipv6-address.js';
import { parseLeaseAttrs } from '../../src/control/lease.js';

function leaseOf(cidr: string, publicIp: string): Lease {
  const subnet = parseCidr(cidr);
  return { subnet, publicIp: parseIPv4(publicIp), backendType: 'udp', backendData: null, key: formatSubnetKey(subnet) };
}

const tableOf = (leases: Lease[], version = 1): LeaseTable => new LeaseTable(buildLeaseTableSnapshot(leases, version));
const ip = parseIPv4;

test('lookup finds the lease containing the address; misses give -1', () => {
  const table = tableOf([leaseOf('10.244.1.0/24', '192.0.2.1'), leaseOf('10.244.2.0/24', '192.0.2.2')]);
  assert.is(table.lookup(ip('10.244.2.77')), 1);
  assert.is(formatIPv4(table.publicIpAt(table.lookup(ip('10.244.1.0')))), '192.0.2.1');
  assert.is(table.lookup(ip('10.244.1.255')), 0);
  assert.is(table.lookup(ip('10.244.3.1')), -1);
  assert.is(table.lookup(ip('0.0.0.0')), -1);
  assert.is(table.lookup(ip('255.255.255.255')), -1);
  assert.is(formatIPv4(table.subnetNetworkAt(1)), '10.244.2.0');
  assert.is(table.prefixLengthAt(1), 24);
  assert.is(table.leaseCount, 2);
});

test('the longest prefix wins over a shorter overlapping one', () => {
  const table = tableOf([
    leaseOf('10.244.0.0/16', '192.0.2.16'),
    leaseOf('10.244.5.0/24', '192.0.2.24'),
    leaseOf('10.244.5.128/25', '192.0.2.25'),
  ]);
  assert.is(table.lookup(ip('10.244.5.200')), 2);
  assert.is(table.lookup(ip('10.244.5.100')), 1);
  assert.is(table.lookup(ip('10.244.6.1')), 0);
  assert.is(table.lookup(ip('10.245.0.1')), -1);
});

test('/32 and /0', () => {
  const table = tableOf([leaseOf('0.0.0.0/0', '192.0.2.100'), leaseOf('10.244.9.9/32', '192.0.2.32')]);
  assert.is(table.lookup(ip('10.244.9.9')), 1);
  assert.is(table.lookup(ip('10.244.9.8')), 0);
  assert.is(table.lookup(ip('255.255.255.255')), 0);
  assert.is(table.lookup(ip('0.0.0.0')), 0);
  assert.is(table.prefixLengthAt(0), 0);
  assert.is(table.prefixLengthAt(1), 32);
  assert.is(tableOf([leaseOf('255.255.255.255/32', '192.0.2.1')]).lookup(ip('255.255.255.255')), 0);
});

test('an empty table misses everything', () => {
  const table = tableOf([]);
  assert.is(table.lookup(ip('10.244.1.1')), -1);
  assert.is(table.findByPublicIp(ip('192.0.2.1')), -1);
});

test('findByPublicIp', () => {
  const table = tableOf([
    leaseOf('10.244.1.0/24', '192.0.2.1'),
    leaseOf('10.244.2.0/24', '198.51.100.200'),
    leaseOf('10.244.3.0/24', '192.0.2.1'), // second lease of the same node
  ]);
  assert.is(table.findByPublicIp(ip('198.51.100.200')), 1);
  assert.is(table.findByPublicIp(ip('192.0.2.1')), 0);
  assert.is(table.findByPublicIp(ip('192.0.2.2')), -1);
  assert.is(table.findByPublicIp(0), -1);
});

test('two leases for one subnet are refused', () => {
  assert.throws(
    () => buildLeaseTableSnapshot([leaseOf('10.244.1.0/24', '192.0.2.1'), leaseOf('10.244.1.0/24', '192.0.2.2')], 1),
    /two leases for subnet 10\.244\.1\.0\/24/,
  );
});

test('the snapshot is plain data that survives structured clone', () => {
  const snapshot = buildLeaseTableSnapshot([leaseOf('10.244.1.0/24', '192.0.2.1'), leaseOf('10.0.0.0/8', '192.0.2.8')], 42);
  const cloned = structuredClone(snapshot);
  for (const value of Object.values(cloned)) {
    assert.ok(typeof value === 'number' || ArrayBuffer.isView(value), `unexpected ${typeof value} in snapshot`);
  }
  const table = new LeaseTable(cloned);
  assert.is(table.version, 42);
  assert.is(table.lookup(ip('10.244.1.9')), 0);
  assert.is(table.lookup(ip('10.9.9.9')), 1);
});

// Small deterministic PRNG so a failure can be replayed.
function xorshift32(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s;
  };
}

test('10 000 random leases agree with a brute-force linear scan on 100 000 addresses', () => {
  const random = xorshift32(0x5eed);
  const leases: Lease[] = [];
  const seen = new Set<string>();
  // Mostly flannel-like /24s inside 10.0.0.0/8, plus nested and odd lengths so prefixes overlap.
  while (leases.length < 10_000) {
    const r = random();
    const len = r % 10 < 7 ? 24 : [8, 12, 16, 20, 22, 26, 28, 30, 32, 31][random() % 10];
    const addr = r % 10 < 8 ? ((0x0a000000 | (random() & 0xffffff)) >>> 0) : random();
    const subnet = makeCidr(addr, len);
    const key = `${subnet.network}/${len}`;
    if (seen.has(key)) continue;
    seen.add(key);
    leases.push({ subnet: makeCidr(subnet.network, len), publicIp: random(), backendType: 'udp', backendData: null, key: formatSubnetKey(subnet) });
  }
  const table = tableOf(leases);

  // Brute force over plain arrays, longest prefix first: the first match is the answer.
  const order = leases.map((_, i) => i).sort((a, b) => leases[b].subnet.prefixLength - leases[a].subnet.prefixLength);
  const networks = Uint32Array.from(order, (i) => leases[i].subnet.network);
  const masks = Uint32Array.from(order, (i) => leases[i].subnet.mask);
  const lengths = Uint8Array.from(order, (i) => leases[i].subnet.prefixLength);
  const bruteForce = (addr: number): number => {
    for (let j = 0; j < networks.length; j++) if (((addr & masks[j]) >>> 0) === networks[j]) return j;
    return -1;
  };

  let hits = 0;
  for (let n = 0; n < 100_000; n++) {
    // Half the addresses inside a random lease, half anywhere (mostly misses, some hits on the short prefixes).
    const inside = leases[random() % leases.length].subnet;
    const addr = n % 2 === 0 ? (inside.network | (random() & ~inside.mask)) >>> 0 : random();
    const expected = bruteForce(addr);
    const got = table.lookup(addr);
    if (expected === -1) {
      if (got !== -1) assert.unreachable(`${formatIPv4(addr)}: expected a miss, got lease ${got}`);
    } else {
      // Equal networks and lengths identify the lease (subnets are unique).
      if (got === -1 || table.subnetNetworkAt(got) !== networks[expected] || table.prefixLengthAt(got) !== lengths[expected]) {
        assert.unreachable(`${formatIPv4(addr)}: expected ${formatIPv4(networks[expected])}/${lengths[expected]}, got ${got}`);
      }
      hits++;
    }
  }
  assert.ok(hits > 40_000, `only ${hits} hits`);

  for (let i = 0; i < leases.length; i += 97) {
    const found = table.findByPublicIp(leases[i].publicIp);
    assert.ok(found !== -1 && table.publicIpAt(found) >>> 0 === leases[i].publicIp);
  }
});

test('public IPs at or above 2^31 are found from either representation and come back as the same 32 bits', () => {
  const table = new LeaseTable(
    buildLeaseTableSnapshot([{ subnet: parseCidr('10.244.7.0/24'), publicIp: ip('192.0.2.7'), backendType: 'udp', backendData: null, key: '10.244.7.0-24' }], 1),
  );
  const uint32 = ip('192.0.2.7');
  assert.ok(uint32 > 0x7fffffff);
  assert.is(table.findByPublicIp(uint32), 0);
  assert.is(table.findByPublicIp(uint32 | 0), 0, 'the int32 a MessageBatch reads');
  assert.is(table.publicIpAt(0), uint32 | 0, 'int32: never a heap number on the hot path');
  assert.is(table.publicIpAt(0) >>> 0, uint32);
  assert.is(formatIPv4(table.publicIpAt(0)), '192.0.2.7');
});

// ---- IPv6 (dual-stack leases) ----

const dual = (key: string, publicIp: string, publicIpv6?: string): Lease =>
  parseLeaseAttrs(key, { PublicIP: publicIp, BackendType: 'udp', ...(publicIpv6 ? { PublicIPv6: publicIpv6 } : {}) });
const lookup6 = (table: LeaseTable, text: string): number => {
  const buf = new Uint8Array(20);
  buf.set(parseIPv6(text), 3); // at an offset, as in a packet
  return table.lookup6(buf, 3);
};

test('IPv6: lookup6 finds the lease whose IPv6 subnet holds the address; the IPv4 half still looks up as before', () => {
  const table = tableOf([
    dual('10.244.1.0-24&fd00:10:244:1::-64', '192.0.2.1'),
    dual('10.244.2.0-24&fd00:10:244:2::-64', '192.0.2.2', 'fd00:192::2'),
    leaseOf('10.244.3.0/24', '192.0.2.3'),
  ]);
  assert.is(lookup6(table, 'fd00:10:244:2::5'), 1);
  assert.is(lookup6(table, 'fd00:10:244:1:ffff:ffff:ffff:ffff'), 0);
  assert.is(lookup6(table, 'fd00:10:244:1::'), 0);
  assert.is(lookup6(table, 'fd00:10:244:3::1'), -1);
  assert.is(lookup6(table, 'fd00:10:245:1::1'), -1);
  assert.is(lookup6(table, '::'), -1);
  assert.is(table.lookup(ip('10.244.3.9')), 2);
  assert.is(table.lookup(ip('10.244.2.9')), 1);
  assert.ok(table.hasIpv6At(0));
  assert.not.ok(table.hasIpv6At(2));
  assert.is(table.prefixLength6At(2), NO_IPV6);
  assert.is(table.prefixLength6At(1), 64);
  const out = new Uint8Array(16);
  table.subnetNetwork6At(1, out);
  assert.is(formatIPv6(out), 'fd00:10:244:2::');
  assert.ok(table.hasPublicIpv6At(1));
  assert.not.ok(table.hasPublicIpv6At(0));
  assert.is(formatIPv6(table.publicIpv6Bytes, 16), 'fd00:192::2');
});

test('IPv6: the longest prefix wins, /128 and /0, differences in every word', () => {
  const table = tableOf([
    dual('10.244.1.0-24&fd00::-16', '192.0.2.1'),
    dual('10.244.2.0-24&fd00:0:0:5::-64', '192.0.2.2'),
    dual('10.244.3.0-24&fd00:0:0:5:8000::-65', '192.0.2.3'),
    dual('10.244.4.0-24&fd00::1:2:3:4-128', '192.0.2.4'),
    dual('10.244.5.0-24&::-0', '192.0.2.5'),
    dual('10.244.6.0-24&fd00:0:0:5::abcd:0-112', '192.0.2.6'),
  ]);
  assert.is(lookup6(table, 'fd00:0:0:5:8000::1'), 2);
  assert.is(lookup6(table, 'fd00:0:0:5:7fff::1'), 1);
  assert.is(lookup6(table, 'fd00:0:0:5::abcd:1234'), 5);
  assert.is(lookup6(table, 'fd00::1:2:3:4'), 3);
  assert.is(lookup6(table, 'fd00::1:2:3:5'), 0);
  assert.is(lookup6(table, 'fd01::1'), 4);
  assert.is(lookup6(table, 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff'), 4);
});

test('IPv6: many leases of one length, all found (collisions included), misses miss', () => {
  const leases: Lease[] = [];
  for (let i = 0; i < 2000; i++) leases.push(dual(`10.${(i >> 8) + 1}.${i & 255}.0-24&fd00:10:244:${i.toString(16)}::-64`, `192.0.${(i >> 8) + 2}.${(i & 255) || 1}`));
  const table = tableOf(leases);
  for (let i = 0; i < 2000; i++) assert.is(lookup6(table, `fd00:10:244:${i.toString(16)}::${(i * 7).toString(16)}`), i);
  for (let i = 2000; i < 2100; i++) assert.is(lookup6(table, `fd00:10:244:${i.toString(16)}::1`), -1);
});

test('IPv6: two leases for one IPv6 subnet are refused; an IPv6-only lease never matches IPv4', () => {
  assert.throws(
    () => buildLeaseTableSnapshot([dual('10.244.1.0-24&fd00:1::-64', '192.0.2.1'), dual('10.244.2.0-24&fd00:1::-64', '192.0.2.2')], 1),
    /two leases for IPv6 subnet fd00:1::\/64/,
  );
  const only = dual('0.0.0.0-0&fd00:10:244:9::-64', '192.0.2.9');
  assert.ok(only.ipv6Only);
  const table = tableOf([only, leaseOf('10.244.1.0/24', '192.0.2.1')]);
  assert.is(table.lookup(ip('10.244.1.1')), 1);
  for (const a of ['0.0.0.0', '10.244.9.1', '8.8.8.8', '255.255.255.255']) assert.is(table.lookup(ip(a)), -1, a);
  assert.is(lookup6(table, 'fd00:10:244:9::1'), 0);
  assert.is(table.findByPublicIp(ip('192.0.2.9')), 0);
});

test('IPv6: the snapshot survives structuredClone (it crosses to the workers)', () => {
  const snapshot = structuredClone(buildLeaseTableSnapshot([dual('10.244.1.0-24&fd00:10:244:1::-64', '192.0.2.1')], 3));
  assert.is(lookup6(new LeaseTable(snapshot), 'fd00:10:244:1::7'), 0);
});

test.run();
