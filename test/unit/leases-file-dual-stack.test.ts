// The leases file with flannel's dual-stack keys (issue 24): the own entry
// found by both halves, IPv6-only entries kept apart from it, entries whose
// IPv6 half is outside IPv6Network or overlaps left out, reported and counted.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseCidr } from '../../src/control/ipv4-address.js';
import { formatIPv6, parseCidr6 } from '../../src/control/ipv6-address.js';
import type { Lease } from '../../src/control/lease.js';
import { LeasesFileSource, parseLeasesFile } from '../../src/control/leases-file.js';

const FILE = JSON.stringify({
  '10.244.1.0-24&fd00:10:244:1::-64': { PublicIP: '192.0.2.1', PublicIPv6: '2001:db8::1', BackendType: 'udp' },
  '10.244.2.0-24&fd00:10:244:2::-64': { PublicIP: '192.0.2.2', PublicIPv6: '2001:db8::2', BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: '0e:00:00:00:00:02' }, BackendV6Data: { VNI: 1, VtepMAC: '0e:00:00:00:06:02' } },
  '0.0.0.0-0&fd00:10:244:3::-64': { PublicIP: '0.0.0.0', PublicIPv6: '2001:db8::3', BackendType: 'udp' },
  '10.244.4.0-24&fd00:99::-64': { PublicIP: '192.0.2.4', BackendType: 'udp' },
  '10.244.5.0-24&fd00:10:244:1::-64': { PublicIP: '192.0.2.5', BackendType: 'udp' },
});

test('parseLeasesFile: the own dual entry skipped by both halves; the IPv6 fields kept', () => {
  const { leases, skipped } = parseLeasesFile(FILE, 'leases.json', parseCidr('10.244.1.0/24'), parseCidr6('fd00:10:244:1::/64'));
  assert.equal(leases.map((l) => l.key), ['10.244.2.0-24&fd00:10:244:2::-64', '0.0.0.0-0&fd00:10:244:3::-64', '10.244.4.0-24&fd00:99::-64', '10.244.5.0-24&fd00:10:244:1::-64']);
  assert.match(skipped[0], /^10\.244\.1\.0-24&fd00:10:244:1::-64 \(line 1\): this node's own subnet; skipped$/);
  const two = leases[0];
  assert.is(formatIPv6(two.publicIpv6!), '2001:db8::2');
  assert.equal(two.backendV6Data, { VNI: 1, VtepMAC: '0e:00:00:00:06:02' });
  assert.is(leases[1].ipv6Only, true);
});

test('LeasesFileSource with IPv6Network: bad IPv6 halves left out, reported, counted; the good entries in force', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'leases-file-ds-'));
  const path = join(dir, 'leases.json');
  const source = new LeasesFileSource(path, {
    ownSubnet: parseCidr('10.244.1.0/24'),
    ownIpv6Subnet: parseCidr6('fd00:10:244:1::/64'),
    ipv6Network: parseCidr6('fd00:10:244::/56'),
    watch: false,
  });
  try {
    await writeFile(path, FILE);
    const snapshots: Lease[][] = [];
    const errors: string[] = [];
    await source.start({ onLeases: (l) => snapshots.push(l), onError: (e) => errors.push(e.message) });
    assert.equal(snapshots[0].map((l) => l.key), ['10.244.2.0-24&fd00:10:244:2::-64', '0.0.0.0-0&fd00:10:244:3::-64']);
    assert.is(errors.length, 2, errors.join('\n'));
    assert.match(errors.join('\n'), /lease "10\.244\.4\.0-24&fd00:99::-64": IPv6 subnet fd00:99::\/64 is not inside the IPv6 pod network fd00:10:244::\/56; left out \(ipv6-subnet-outside-network\)/);
    assert.match(errors.join('\n'), /lease "10\.244\.5\.0-24&fd00:10:244:1::-64": IPv6 subnet fd00:10:244:1::\/64 overlaps this node's IPv6 subnet .*\(ipv6-subnet-overlaps-own\)/);
    assert.equal(Object.fromEntries(source.ipv6Rejections), { 'ipv6-subnet-outside-network': 1, 'ipv6-subnet-overlaps-own': 1 });
  } finally {
    await source.stop();
    await rm(dir, { recursive: true, force: true });
  }
});

test('IPv4-only node (no IPv6Network): dual entries are used for their IPv4 half, IPv6-only entries refused as not enabled', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'leases-file-ds-'));
  const path = join(dir, 'leases.json');
  const source = new LeasesFileSource(path, { ownSubnet: parseCidr('10.244.9.0/24'), watch: false });
  try {
    await writeFile(path, FILE);
    const snapshots: Lease[][] = [];
    const errors: string[] = [];
    await source.start({ onLeases: (l) => snapshots.push(l), onError: (e) => errors.push(e.message) });
    assert.is(snapshots[0].length, 4);
    assert.not.ok(snapshots[0].some((l) => l.ipv6Only));
    assert.equal(errors.length, 1);
    assert.match(errors[0], /0\.0\.0\.0-0&fd00:10:244:3::-64.*IPv6-only lease .* does not set EnableIPv6.*\(ipv6-not-enabled\)/);
  } finally {
    await source.stop();
    await rm(dir, { recursive: true, force: true });
  }
});

test.run();
