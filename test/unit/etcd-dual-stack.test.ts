// Dual-stack and IPv6-only leases in flannel's etcd layout, against a real
// etcd on loopback: both subnets in one key (10.244.7.0-24&fd00:10:244:7::-64),
// PublicIPv6 and BackendV6Data in the value, both halves kept on restart,
// subnet.env's IPv6 keys; the lease source publishing the IPv6 fields and
// leaving out leases whose IPv6 half makes no sense (issue 24).
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EtcdClient } from '../../src/control/etcd-client.js';
import { EtcdLeaseSource } from '../../src/control/etcd-lease-source.js';
import { formatCidr, parseCidr, parseIPv4 } from '../../src/control/ipv4-address.js';
import { cidr6Overlaps, formatCidr6, formatIPv6, parseCidr6, parseIPv6 } from '../../src/control/ipv6-address.js';
import { parseNetworkConfig } from '../../src/control/network-config.js';
import type { Lease } from '../../src/control/lease.js';
import { acquireLease, EtcdSetupError, EtcdSubnetManager } from '../../src/control/etcd-subnet-manager.js';
import { chooseIpv6Subnet } from '../../src/control/etcd-ipv6-allocator.js';
import { SubnetExhaustedError } from '../../src/control/subnet-allocator.js';
import { readSubnetFile } from '../../src/control/subnet-file.js';
import { EtcdServer } from '../support/etcd-server.js';

let server: EtcdServer;
let client: EtcdClient;
let dir: string;
let counter = 0;
const freshPrefix = () => `/ds${process.pid}-${counter++}/network`;
const ip = parseIPv4;
const ip6 = parseIPv6;
const DUAL = '{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00:10:244::/56"}';
const V6ONLY = '{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "fd00:10:244::/56"}';
const keysUnder = async (prefix: string) => (await client.range(`${prefix}/subnets/`, { prefix: true })).kvs.map((kv) => kv.key.slice(`${prefix}/subnets/`.length)).sort();

const allocator = suite('IPv6 subnet allocation (pure)');

allocator('the first free subnets from IPv6SubnetMin, a wide stale lease jumped over, exhaustion named', () => {
  const cfg = parseNetworkConfig('{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00::/60"}').ipv6!;
  assert.is(formatCidr6(chooseIpv6Subnet(cfg, [], () => 0)), 'fd00:0:0:1::/64');
  assert.is(formatCidr6(chooseIpv6Subnet(cfg, [parseCidr6('fd00:0:0:1::/64')], () => 0)), 'fd00:0:0:2::/64');
  // A /62 lease covers :0..:3; the walk resumes at :4.
  assert.is(formatCidr6(chooseIpv6Subnet(cfg, [parseCidr6('fd00::/62')], () => 0)), 'fd00:0:0:4::/64');
  assert.is(formatCidr6(chooseIpv6Subnet(cfg, [parseCidr6('fd00::/62')], () => 0.999)), 'fd00:0:0:f::/64');
  const all = Array.from({ length: 15 }, (_, i) => parseCidr6(`fd00:0:0:${(i + 1).toString(16)}::/64`));
  assert.throws(() => chooseIpv6Subnet(cfg, all), (e: Error) => e instanceof SubnetExhaustedError && /all 15 \/64 subnet\(s\) from IPv6SubnetMin fd00:0:0:1:: to IPv6SubnetMax fd00:0:0:f::/.test(e.message));
});

allocator.run();

const acquire = suite('dual-stack leases in etcd');

acquire.before(async () => {
  server = await EtcdServer.start();
  client = new EtcdClient({ endpoints: [server.url] });
  dir = mkdtempSync(join(tmpdir(), `fut-dual-stack-${process.pid}-`));
});
acquire.after(async () => {
  client?.close();
  await server?.destroy();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

acquire('a fresh node gets both subnets in one key, PublicIPv6 in the value, one 24 h etcd lease', async () => {
  const prefix = freshPrefix();
  const config = parseNetworkConfig(DUAL);
  const lease = await acquireLease(client, prefix, config, { publicIp: ip('192.0.2.1'), publicIpv6: ip6('2001:db8::1'), backendType: 'udp', backendData: null });
  assert.ok(lease.ipv6Subnet);
  assert.is(lease.ipv6Subnet.prefixLength, 64);
  assert.match(formatCidr6(lease.ipv6Subnet), /^fd00:10:244:[0-9a-f]{1,2}::\/64$/);
  const key = `${formatCidr(lease.subnet).replace('/', '-')}&${formatCidr6(lease.ipv6Subnet).replace('/', '-')}`;
  assert.is(lease.key, `${prefix}/subnets/${key}`);
  const stored = await client.get(lease.key);
  assert.is(stored?.value, '{"PublicIP":"192.0.2.1","PublicIPv6":"2001:db8::1","BackendType":"udp","BackendData":null}');
  assert.is(stored?.lease, lease.leaseId);
  const ttl = await client.leaseTimeToLive(lease.leaseId);
  assert.ok(ttl > 86000 && ttl <= 86400, `TTL ${ttl}`);
  // Without a public IPv6 address: "PublicIPv6": null, as flannel writes it.
  const other = await acquireLease(client, prefix, config, { publicIp: ip('192.0.2.2'), backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: '0e:00:00:00:00:02' }, backendV6Data: { VNI: 1, VtepMAC: '0e:00:00:00:06:02' } });
  assert.is((await client.get(other.key))?.value, '{"PublicIP":"192.0.2.2","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0e:00:00:00:00:02"},"BackendV6Data":{"VNI":1,"VtepMAC":"0e:00:00:00:06:02"}}');
  assert.not.ok(cidr6Overlaps(other.ipv6Subnet!, lease.ipv6Subnet), 'distinct IPv6 subnets');
});

acquire('a restart keeps both subnets; the subnet.env ones are asked for when the lease is gone', async () => {
  const prefix = freshPrefix();
  const config = parseNetworkConfig(DUAL);
  const opts = { publicIp: ip('192.0.2.7'), publicIpv6: ip6('2001:db8::7'), backendType: 'udp', backendData: null };
  const first = await acquireLease(client, prefix, config, opts);
  const lines: string[] = [];
  const second = await acquireLease(client, prefix, config, { ...opts, log: (l) => lines.push(l) });
  assert.is(second.key, first.key);
  assert.is(formatCidr6(second.ipv6Subnet!), formatCidr6(first.ipv6Subnet!));
  assert.is.not(second.leaseId, first.leaseId);
  assert.match(lines.join('\n'), /found the lease 10\.244\.\d+\.0\/24 \+ fd00:10:244:[0-9a-f]+::\/64 of this node's public IP 192\.0\.2\.7; reusing it$/m);
  await client.deleteKey(second.key);
  const third = await acquireLease(client, prefix, config, { ...opts, previousSubnet: parseCidr('10.244.77.0/24'), previousIpv6Subnet: parseCidr6('fd00:10:244:77::/64') });
  assert.is(third.key, `${prefix}/subnets/10.244.77.0-24&fd00:10:244:77::-64`);
  assert.equal(await keysUnder(prefix), ['10.244.77.0-24&fd00:10:244:77::-64']);
});

acquire('IPv6 enabled on a running cluster: the IPv4 subnet stays and gains an IPv6 half in one transaction; disabled again: the half goes', async () => {
  const prefix = freshPrefix();
  const opts = { publicIp: ip('192.0.2.9'), backendType: 'udp', backendData: null };
  const v4 = await acquireLease(client, prefix, parseNetworkConfig('{"Network": "10.244.0.0/16"}'), opts);
  const lines: string[] = [];
  const dual = await acquireLease(client, prefix, parseNetworkConfig(DUAL), { ...opts, publicIpv6: ip6('2001:db8::9'), log: (l) => lines.push(l) });
  assert.is(formatCidr(dual.subnet), formatCidr(v4.subnet));
  assert.ok(dual.ipv6Subnet);
  assert.match(lines.join('\n'), /reusing it \(IPv6 subnet fd00:10:244:[0-9a-f]+::\/64 added\)/);
  assert.equal(await keysUnder(prefix), [dual.key.slice(`${prefix}/subnets/`.length)], 'the IPv4-only key is gone, the dual key there');
  assert.is((await client.get(dual.key))?.lease, dual.leaseId);
  const back = await acquireLease(client, prefix, parseNetworkConfig('{"Network": "10.244.0.0/16"}'), opts);
  assert.is(back.key, v4.key);
  assert.is(back.ipv6Subnet, undefined);
  assert.equal(await keysUnder(prefix), [v4.key.slice(`${prefix}/subnets/`.length)]);
  assert.is((await client.get(back.key))?.value, '{"PublicIP":"192.0.2.9","PublicIPv6":null,"BackendType":"udp","BackendData":null}');
});

acquire('racing nodes: same IPv4 choice, or same IPv6 choice beside different IPv4 subnets: all subnets distinct in both families', async () => {
  const prefix = freshPrefix();
  const config = parseNetworkConfig('{"Network": "10.244.0.0/16", "SubnetMin": "10.244.1.0", "SubnetMax": "10.244.8.0", "EnableIPv6": true, "IPv6Network": "fd00::/56"}');
  const clients = Array.from({ length: 6 }, () => new EtcdClient({ endpoints: [server.url] }));
  try {
    // random 0: every node picks the first free IPv6 subnet; half of them also bring their own distinct IPv4 subnet.
    const leases = await Promise.all(
      clients.map((c, i) =>
        acquireLease(c, prefix, config, {
          publicIp: ip(`192.0.2.${i + 1}`),
          backendType: 'udp',
          backendData: null,
          random: () => 0,
          previousSubnet: i % 2 === 0 ? parseCidr(`10.244.${i + 3}.0/24`) : undefined,
        }),
      ),
    );
    assert.is(new Set(leases.map((l) => formatCidr(l.subnet))).size, 6, leases.map((l) => l.key).join(' '));
    assert.is(new Set(leases.map((l) => formatCidr6(l.ipv6Subnet!))).size, 6, leases.map((l) => l.key).join(' '));
    const stored = await keysUnder(prefix);
    assert.is(stored.length, 6, stored.join(' '));
  } finally {
    for (const c of clients) c.close();
  }
});

acquire('IPv6-only: the key has the zero IPv4 half, the lease is found again by PublicIPv6, and a node without one is refused', async () => {
  const prefix = freshPrefix();
  const config = parseNetworkConfig(V6ONLY);
  const a = await acquireLease(client, prefix, config, { publicIp: 0, publicIpv6: ip6('2001:db8::a'), backendType: 'udp', backendData: null });
  const b = await acquireLease(client, prefix, config, { publicIp: 0, publicIpv6: ip6('2001:db8::b'), backendType: 'udp', backendData: null });
  assert.match(a.key, /\/subnets\/0\.0\.0\.0-0&fd00:10:244:[0-9a-f]+::-64$/);
  assert.is((await client.get(a.key))?.value, '{"PublicIP":"0.0.0.0","PublicIPv6":"2001:db8::a","BackendType":"udp","BackendData":null}');
  assert.not.ok(cidr6Overlaps(a.ipv6Subnet!, b.ipv6Subnet!));
  const again = await acquireLease(client, prefix, config, { publicIp: 0, publicIpv6: ip6('2001:db8::b'), backendType: 'udp', backendData: null });
  assert.is(again.key, b.key, 'its own lease, not the other IPv6-only node\'s');
  assert.is((await keysUnder(prefix)).length, 2);
  const err = await acquireLease(client, prefix, config, { publicIp: 0, backendType: 'udp', backendData: null }).then(() => undefined, (e: Error) => e);
  assert.instance(err, EtcdSetupError);
  assert.match(err!.message, /IPv6-only .* needs a public IPv6 address .*--public-ipv6/);
});

acquire.run();

const manager = suite('EtcdSubnetManager dual-stack: subnet.env, restart, IPv6-only gate');

manager.before(async () => {
  server = await EtcdServer.start();
  client = new EtcdClient({ endpoints: [server.url] });
  dir = mkdtempSync(join(tmpdir(), `fut-dual-stack-${process.pid}-`));
});
manager.after(async () => {
  client?.close();
  await server?.destroy();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function newManager(prefix: string, subnetFile: string, extra: Partial<ConstructorParameters<typeof EtcdSubnetManager>[0]> = {}) {
  const lines: string[] = [];
  const m = new EtcdSubnetManager({
    endpoints: [server.url],
    prefix,
    publicIp: ip('192.0.2.1'),
    publicIpv6: ip6('2001:db8::1'),
    subnetFile,
    ipMasq: true,
    renewMarginMs: 60 * 60_000,
    underlayMtu: 1500,
    log: (l) => lines.push(l),
    onFatal: () => undefined,
    ...extra,
  });
  return { m, lines };
}

manager('subnet.env carries FLANNEL_IPV6_NETWORK and FLANNEL_IPV6_SUBNET as flanneld writes them; a restart keeps both subnets', async () => {
  const prefix = freshPrefix();
  await client.put(`${prefix}/config`, JSON.stringify({ Network: '10.244.0.0/16', SubnetMin: '10.244.30.0', SubnetMax: '10.244.30.0', EnableIPv6: true, IPv6Network: 'fd00:10:244::/56', IPv6SubnetMin: 'fd00:10:244:30::', IPv6SubnetMax: 'fd00:10:244:30::' }));
  const subnetFile = join(dir, `subnet-${counter++}.env`);
  const first = newManager(prefix, subnetFile);
  let key: string;
  try {
    const joined = await first.m.start();
    key = joined.lease.key;
    assert.is(key, `${prefix}/subnets/10.244.30.0-24&fd00:10:244:30::-64`);
    assert.is(
      readFileSync(subnetFile, 'utf8'),
      'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.30.1/24\nFLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:30::1/64\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n',
    );
    assert.match(first.lines.join('\n'), /FLANNEL_IPV6_SUBNET=fd00:10:244:30::1\/64/);
  } finally {
    await first.m.stop();
  }
  const second = newManager(prefix, subnetFile);
  try {
    const joined = await second.m.start();
    assert.is(joined.lease.key, key);
    assert.is(formatCidr6(joined.lease.ipv6Subnet!), 'fd00:10:244:30::/64');
    assert.match(second.lines.join('\n'), /reusing it/);
  } finally {
    await second.m.stop();
  }
});

manager('the previous IPv6 subnet is read from subnet.env; an IPv6-only network writes subnet.env without the IPv4 keys, and a restart keeps its IPv6 subnet', async () => {
  const prefix = freshPrefix();
  await client.put(`${prefix}/config`, DUAL);
  const subnetFile = join(dir, `subnet-${counter++}.env`);
  writeFileSync(subnetFile, 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.123.1/24\nFLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:7b::1/64\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n');
  const { m } = newManager(prefix, subnetFile);
  try {
    const joined = await m.start();
    assert.is(joined.lease.key, `${prefix}/subnets/10.244.123.0-24&fd00:10:244:7b::-64`);
  } finally {
    await m.stop();
  }
  const v6prefix = freshPrefix();
  await client.put(`${v6prefix}/config`, V6ONLY);
  const v6file = join(dir, `subnet-${counter++}.env`);
  const only = newManager(v6prefix, v6file);
  let first: string;
  try {
    const joined = await only.m.start();
    assert.is(joined.subnetConfig.ipv6Only, true);
    const keys = await keysUnder(v6prefix);
    assert.is(keys.length, 1);
    assert.match(keys[0], /^0\.0\.0\.0-0&fd00:10:244:[0-9a-f]+::-64$/);
    first = keys[0];
    const v6subnet = keys[0].replace(/^0\.0\.0\.0-0&/, '').replace('::-64', '::1/64');
    // flannel's WriteSubnetFile with EnableIPv4 false: no FLANNEL_NETWORK, no FLANNEL_SUBNET.
    assert.is(readFileSync(v6file, 'utf8'), `FLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=${v6subnet}\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n`);
    const back = await readSubnetFile(v6file);
    assert.is(back.ipv6Only, true, 'read back as IPv6-only');
    assert.equal(back.ipv6, joined.subnetConfig.ipv6);
  } finally {
    await only.m.stop();
  }
  // A restart finds its lease again by PublicIPv6 and keeps the subnet.
  const again = newManager(v6prefix, v6file);
  try {
    const joined = await again.m.start();
    assert.is(joined.lease.key, `${v6prefix}/subnets/${first}`);
    assert.equal(await keysUnder(v6prefix), [first]);
  } finally {
    await again.m.stop();
  }
});

manager('vxlan: BackendV6Data carries the IPv6 VTEP MAC (vtepMacV6), or the VTEP MAC when none is given', async () => {
  const prefix = freshPrefix();
  await client.put(`${prefix}/config`, JSON.stringify({ ...JSON.parse(DUAL), Backend: { Type: 'vxlan', VNI: 3 } }));
  const a = newManager(prefix, join(dir, `subnet-${counter++}.env`), { vtepMac: '0e:00:00:00:00:01', vtepMacV6: '0e:00:00:00:06:01' });
  const b = newManager(prefix, join(dir, `subnet-${counter++}.env`), { publicIp: ip('192.0.2.2'), publicIpv6: undefined, vtepMac: '0e:00:00:00:00:02' });
  try {
    const ja = await a.m.start();
    assert.equal(JSON.parse(ja.lease.value), {
      PublicIP: '192.0.2.1',
      PublicIPv6: '2001:db8::1',
      BackendType: 'vxlan',
      BackendData: { VNI: 3, VtepMAC: '0e:00:00:00:00:01' },
      BackendV6Data: { VNI: 3, VtepMAC: '0e:00:00:00:06:01' },
    });
    const jb = await b.m.start();
    assert.equal(JSON.parse(jb.lease.value).BackendV6Data, { VNI: 3, VtepMAC: '0e:00:00:00:00:02' });
    assert.is(JSON.parse(jb.lease.value).PublicIPv6, null);
    assert.is(jb.subnetConfig.mtu, 1450);
  } finally {
    await a.m.stop();
    await b.m.stop();
  }
});

manager.run();

const source = suite('EtcdLeaseSource dual-stack');

source.before(async () => {
  server = await EtcdServer.start();
  client = new EtcdClient({ endpoints: [server.url] });
});
source.after(async () => {
  client?.close();
  await server?.destroy();
});

const leaseJson = (publicIp: string, publicIpv6: string | null, extra: object = {}) =>
  JSON.stringify({ PublicIP: publicIp, PublicIPv6: publicIpv6, BackendType: 'udp', BackendData: null, ...extra });
const show = (l: Lease) => `${l.key}=${l.publicIpv6 ? formatIPv6(l.publicIpv6) : '-'}${l.ipv6Only ? ' v6only' : ''}${l.backendV6Data !== undefined ? ` v6data=${JSON.stringify(l.backendV6Data)}` : ''}`;

async function withSource(
  opts: { own: string; own6: string; ownIp?: string; ownIpv6?: string; network6?: string },
  setup: (prefix: string) => Promise<void>,
  body: (h: { prefix: string; snapshots: string[][]; errors: string[]; lost: string[]; src: EtcdLeaseSource }) => Promise<void>,
): Promise<void> {
  const prefix = freshPrefix();
  await setup(prefix);
  const c = new EtcdClient({ endpoints: [server.url] });
  const h = { prefix, snapshots: [] as string[][], errors: [] as string[], lost: [] as string[], src: undefined as unknown as EtcdLeaseSource };
  h.src = new EtcdLeaseSource(c, {
    prefix,
    ownSubnet: parseCidr(opts.own),
    ownIpv6Subnet: parseCidr6(opts.own6),
    ownPublicIp: opts.ownIp !== undefined ? ip(opts.ownIp) : undefined,
    ownPublicIpv6: opts.ownIpv6 !== undefined ? ip6(opts.ownIpv6) : undefined,
    ipv6Network: parseCidr6(opts.network6 ?? 'fd00:10:244::/56'),
    onOwnLeaseLost: (why) => h.lost.push(why),
    probeIntervalMs: 300,
  });
  await h.src.start({ onLeases: (l) => h.snapshots.push(l.map(show).sort()), onError: (e) => h.errors.push(e.message) });
  try {
    await body(h);
  } finally {
    await h.src.stop();
    c.close();
  }
}

async function until(what: string, check: () => boolean, h: { snapshots: string[][]; errors: string[] }): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!check()) {
    if (Date.now() > deadline) assert.unreachable(`${what}: not within 5 s; snapshots:\n${h.snapshots.map((s) => s.join(' ')).join('\n')}\nerrors:\n${h.errors.join('\n')}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

source('peers are published with their IPv6 subnet, PublicIPv6 and BackendV6Data; the own dual key is left out and watched', async () => {
  await withSource(
    { own: '10.244.1.0/24', own6: 'fd00:10:244:1::/64', ownIp: '192.0.2.1' },
    async (p) => {
      await client.put(`${p}/subnets/10.244.1.0-24&fd00:10:244:1::-64`, leaseJson('192.0.2.1', '2001:db8::1'));
      await client.put(`${p}/subnets/10.244.2.0-24&fd00:10:244:2::-64`, leaseJson('192.0.2.2', '2001:db8::2', { BackendV6Data: { VNI: 1, VtepMAC: '0e:00:00:00:06:02' } }));
      await client.put(`${p}/subnets/10.244.3.0-24`, leaseJson('192.0.2.3', null)); // an IPv4-only node in a dual-stack cluster
    },
    async (h) => {
      assert.equal(h.snapshots[0], ['10.244.2.0-24&fd00:10:244:2::-64=2001:db8::2 v6data={"VNI":1,"VtepMAC":"0e:00:00:00:06:02"}', '10.244.3.0-24=-']);
      await client.put(`${h.prefix}/subnets/0.0.0.0-0&fd00:10:244:4::-64`, leaseJson('0.0.0.0', '2001:db8::4'));
      await until('IPv6-only peer', () => h.snapshots[h.snapshots.length - 1].includes('0.0.0.0-0&fd00:10:244:4::-64=2001:db8::4 v6only'), h);
      assert.equal(h.errors, []);
      await client.deleteKey(`${h.prefix}/subnets/10.244.1.0-24&fd00:10:244:1::-64`);
      await until('own lease lost', () => h.lost.length === 1, h);
      assert.match(h.lost[0], /this node's lease .*10\.244\.1\.0-24&fd00:10:244:1::-64 was deleted or expired/);
    },
  );
});

source('IPv6 halves outside IPv6Network, overlapping this node or each other, or a bad PublicIPv6: left out, reported once, counted', async () => {
  await withSource(
    { own: '10.244.1.0/24', own6: 'fd00:10:244:1::/64' },
    async (p) => {
      await client.put(`${p}/subnets/10.244.2.0-24&fd00:99::-64`, leaseJson('192.0.2.2', null));
      await client.put(`${p}/subnets/10.244.3.0-24&fd00:10:244:1::-64`, leaseJson('192.0.2.3', null));
      await client.put(`${p}/subnets/10.244.4.0-24&fd00:10:244:4::-64`, leaseJson('192.0.2.4', null));
      await client.put(`${p}/subnets/10.244.5.0-24&fd00:10:244:4::-64`, leaseJson('192.0.2.5', null));
      await client.put(`${p}/subnets/10.244.6.0-24&fd00:10:244:6::-64`, leaseJson('192.0.2.6', '::1'));
      await client.put(`${p}/subnets/10.244.7.0-24&fd00:10:244:7::-64`, leaseJson('192.0.2.7', '2001:db8::7'));
    },
    async (h) => {
      assert.equal(h.snapshots[0], ['10.244.7.0-24&fd00:10:244:7::-64=2001:db8::7']);
      const text = h.errors.join('\n');
      assert.is(h.errors.length, 5, text);
      assert.match(text, /10\.244\.2\.0-24&fd00:99::-64: IPv6 subnet fd00:99::\/64 is not inside the IPv6 pod network fd00:10:244::\/56; lease ignored \(ipv6-subnet-outside-network\)/);
      assert.match(text, /10\.244\.3\.0-24&fd00:10:244:1::-64: IPv6 subnet fd00:10:244:1::\/64 overlaps this node's IPv6 subnet .*\(ipv6-subnet-overlaps-own\)/);
      assert.match(text, /10\.244\.4\.0-24&fd00:10:244:4::-64: .*overlaps lease 10\.244\.5\.0-24&fd00:10:244:4::-64.*\(ipv6-subnet-overlaps-lease\)/);
      assert.match(text, /10\.244\.5\.0-24&fd00:10:244:4::-64: .*overlaps lease 10\.244\.4\.0-24&fd00:10:244:4::-64.*\(ipv6-subnet-overlaps-lease\)/);
      assert.match(text, /PublicIPv6 ::1 is the loopback address.*\(public-ipv6-loopback\)/);
      assert.equal(Object.fromEntries(h.src.ipv6Rejections), {
        'ipv6-subnet-outside-network': 1,
        'ipv6-subnet-overlaps-own': 1,
        'ipv6-subnet-overlaps-lease': 2,
        'public-ipv6-loopback': 1,
      });
      // Another change: the same rejections are not reported (or counted) again; fixing one brings it in.
      await client.put(`${h.prefix}/subnets/10.244.5.0-24&fd00:10:244:4::-64`, leaseJson('192.0.2.55', null));
      await client.deleteKey(`${h.prefix}/subnets/10.244.4.0-24&fd00:10:244:4::-64`);
      await until('overlap resolved', () => h.snapshots[h.snapshots.length - 1].includes('10.244.5.0-24&fd00:10:244:4::-64=-'), h);
      assert.is(h.errors.length, 5, h.errors.join('\n'));
    },
  );
});

source('IPv6-only node: peers with the same zero IPv4 half are peers, not this node; its own key is found by both halves', async () => {
  await withSource(
    { own: '0.0.0.0/0', own6: 'fd00:10:244:1::/64', ownIpv6: '2001:db8::1' },
    async (p) => {
      await client.put(`${p}/subnets/0.0.0.0-0&fd00:10:244:1::-64`, leaseJson('0.0.0.0', '2001:db8::1'));
      await client.put(`${p}/subnets/0.0.0.0-0&fd00:10:244:2::-64`, leaseJson('0.0.0.0', '2001:db8::2'));
    },
    async (h) => {
      assert.equal(h.snapshots[0], ['0.0.0.0-0&fd00:10:244:2::-64=2001:db8::2 v6only']);
      await client.put(`${h.prefix}/subnets/0.0.0.0-0&fd00:10:244:1::-64`, leaseJson('0.0.0.0', '2001:db8::99'));
      await until('taken over', () => h.lost.length === 1, h);
      assert.match(h.lost[0], /now leased to 2001:db8::99/);
    },
  );
});

source.run();
