import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { formatIPv4, makeCidr, parseCidr, parseIPv4 } from '../../src/control/ipv4-address.js';
import { type Lease, formatSubnetKey } from '../../src/control/lease.js';
import { buildLeaseTableSnapshot, LeaseTable } from '../../src/control/lease-table.js';

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

test.run();
