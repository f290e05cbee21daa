// Acquiring, renewing and writing a node's subnet lease, against a real etcd on loopback.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EtcdClient } from '../../src/control/etcd-client.js';
import { formatCidr, parseCidr, parseIPv4 } from '../../src/control/ipv4-address.js';
import { NetworkConfigError, parseNetworkConfig } from '../../src/control/network-config.js';
import { SubnetExhaustedError } from '../../src/control/subnet-allocator.js';
import { acquireLease, EtcdSetupError, EtcdSubnetManager, readNetworkConfig } from '../../src/control/etcd-subnet-manager.js';
import { EtcdServer } from '../support/etcd-server.js';
import { TcpProxy } from '../support/tcp-proxy.js';

let server: EtcdServer;
let client: EtcdClient;
let dir: string;
let prefixCounter = 0;
/** Each test its own prefix, so they share one etcd without seeing each other. */
const freshPrefix = () => `/t${process.pid}-${prefixCounter++}/network`;
const ip = parseIPv4;

async function writeConfig(prefix: string, config: object): Promise<void> {
  await client.put(`${prefix}/config`, JSON.stringify(config));
}

const acquire = suite('subnet lease: config, acquisition, races');

acquire.before(async () => {
  server = await EtcdServer.start();
  client = new EtcdClient({ endpoints: [server.url] });
  dir = mkdtempSync(join(tmpdir(), `fut-subnet-mgr-${process.pid}-`));
});
acquire.after(async () => {
  client?.close();
  await server?.destroy();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

acquire('a missing or bad network config is a clear error', async () => {
  const prefix = freshPrefix();
  const missing = await readNetworkConfig(client, prefix).then(() => undefined, (e: Error) => e);
  assert.instance(missing, NetworkConfigError);
  assert.match(missing!.message, new RegExp(`no flannel network config at ${prefix}/config .*etcdctl put ${prefix}/config`));
  await client.put(`${prefix}/config`, '{"Network": "10.244.0.0/16", "SubnetLen": 40}');
  const bad = await readNetworkConfig(client, prefix).then(() => undefined, (e: Error) => e);
  assert.match(bad!.message, new RegExp(`network config ${prefix}/config: SubnetLen 40 is too long`));
});

acquire('a fresh node gets a free subnet in range, stored as flannel lease JSON under a 24 h etcd lease', async () => {
  const prefix = freshPrefix();
  const config = parseNetworkConfig('{"Network": "10.244.0.0/16", "SubnetMin": "10.244.10.0", "SubnetMax": "10.244.19.0"}');
  const lease = await acquireLease(client, prefix, config, { publicIp: ip('192.0.2.1'), backendType: 'udp', backendData: null });
  assert.ok(lease.subnet.network >= ip('10.244.10.0') && lease.subnet.network <= ip('10.244.19.0'), formatCidr(lease.subnet));
  const key = `${prefix}/subnets/${formatCidr(lease.subnet).replace('/', '-')}`;
  assert.is(lease.key, key);
  const stored = await client.get(key);
  assert.is(stored?.value, '{"PublicIP":"192.0.2.1","PublicIPv6":null,"BackendType":"udp","BackendData":null}');
  assert.is(stored?.lease, lease.leaseId);
  const ttl = await client.leaseTimeToLive(lease.leaseId);
  assert.ok(ttl > 86000 && ttl <= 86400, `TTL ${ttl}`);
});

acquire('a restarted node gets its own lease back (same PublicIP), with a fresh etcd lease', async () => {
  const prefix = freshPrefix();
  const config = parseNetworkConfig('{"Network": "10.244.0.0/16"}');
  const first = await acquireLease(client, prefix, config, { publicIp: ip('192.0.2.7'), backendType: 'udp', backendData: null });
  const lines: string[] = [];
  const second = await acquireLease(client, prefix, config, {
    publicIp: ip('192.0.2.7'),
    backendType: 'udp',
    backendData: null,
    previousSubnet: parseCidr('10.244.200.0/24'), // the store wins over subnet.env
    log: (l) => lines.push(l),
  });
  assert.is(formatCidr(second.subnet), formatCidr(first.subnet));
  assert.is.not(second.leaseId, first.leaseId);
  assert.is((await client.get(second.key))?.lease, second.leaseId);
  assert.match(lines.join('\n'), /reusing it/);
  assert.is((await client.range(`${prefix}/subnets/`, { prefix: true })).kvs.length, 1, 'no second lease');
});

acquire('the subnet from an existing subnet.env is preferred when free, ignored when taken or out of range', async () => {
  const prefix = freshPrefix();
  const config = parseNetworkConfig('{"Network": "10.244.0.0/16", "SubnetMin": "10.244.10.0", "SubnetMax": "10.244.50.0"}');
  const a = await acquireLease(client, prefix, config, { publicIp: ip('192.0.2.1'), backendType: 'udp', backendData: null, previousSubnet: parseCidr('10.244.42.0/24') });
  assert.is(formatCidr(a.subnet), '10.244.42.0/24');
  const b = await acquireLease(client, prefix, config, { publicIp: ip('192.0.2.2'), backendType: 'udp', backendData: null, previousSubnet: parseCidr('10.244.42.0/24') });
  assert.is.not(formatCidr(b.subnet), '10.244.42.0/24', 'taken by node 1');
  const c = await acquireLease(client, prefix, config, { publicIp: ip('192.0.2.3'), backendType: 'udp', backendData: null, previousSubnet: parseCidr('10.244.77.0/24'), random: () => 0 });
  assert.is(formatCidr(c.subnet), b.subnet.network === parseCidr('10.244.10.0/24').network ? '10.244.11.0/24' : '10.244.10.0/24', 'outside SubnetMax: ignored');
});

acquire('eight nodes racing for eight subnets, all choosing the same first candidate: all distinct; the ninth gets a clear error', async () => {
  const prefix = freshPrefix();
  const config = parseNetworkConfig('{"Network": "10.244.0.0/16", "SubnetMin": "10.244.1.0", "SubnetMax": "10.244.8.0"}');
  await writeConfig(prefix, { Network: '10.244.0.0/16' });
  // Separate clients (connections), like separate nodes; random 0 makes every node pick the same subnet each round.
  const clients = Array.from({ length: 8 }, () => new EtcdClient({ endpoints: [server.url] }));
  try {
    const leases = await Promise.all(
      clients.map((c, i) => acquireLease(c, prefix, config, { publicIp: ip(`192.0.2.${i + 1}`), backendType: 'udp', backendData: null, random: () => 0 })),
    );
    const subnets = new Set(leases.map((l) => formatCidr(l.subnet)));
    assert.is(subnets.size, 8, [...subnets].join(' '));
    const stored = await client.range(`${prefix}/subnets/`, { prefix: true });
    assert.is(stored.kvs.length, 8);
    const owners = new Set(stored.kvs.map((kv) => JSON.parse(kv.value).PublicIP));
    assert.is(owners.size, 8, 'every node owns exactly one');
    const ninth = await acquireLease(client, prefix, config, { publicIp: ip('192.0.2.9'), backendType: 'udp', backendData: null }).then(
      () => undefined,
      (e: Error) => e,
    );
    assert.instance(ninth, SubnetExhaustedError);
    assert.match(ninth!.message, /all 8 \/24 subnet\(s\) from SubnetMin 10\.244\.1\.0 to SubnetMax 10\.244\.8\.0 are leased/);
  } finally {
    for (const c of clients) c.close();
  }
});

acquire.run();

acquire('two leases with our PublicIP: the one subnet.env records is reused, the other logged as stale and left alone (issue 26)', async () => {
  const prefix = freshPrefix();
  const config = parseNetworkConfig('{"Network": "10.244.0.0/16"}');
  const value = '{"PublicIP":"192.0.2.8","PublicIPv6":null,"BackendType":"udp","BackendData":null}';
  await client.put(`${prefix}/subnets/10.244.5.0-24`, value);
  await client.put(`${prefix}/subnets/10.244.9.0-24`, value);
  const lines: string[] = [];
  const opts = { publicIp: ip('192.0.2.8'), backendType: 'udp', backendData: null, log: (l: string) => lines.push(l) };
  const kept = await acquireLease(client, prefix, config, { ...opts, previousSubnet: parseCidr('10.244.9.0/24') });
  assert.is(formatCidr(kept.subnet), '10.244.9.0/24');
  assert.match(lines.join('\n'), /lease 10\.244\.5\.0\/24 also carries this node's public IP 192\.0\.2\.8: stale, left alone/);
  assert.ok(await client.get(`${prefix}/subnets/10.244.5.0-24`), 'the stale lease is left in place');
  // Without a subnet.env: the first, as flanneld.
  const first = await acquireLease(client, prefix, config, opts);
  assert.is(formatCidr(first.subnet), '10.244.5.0/24');
});

const manager = suite('EtcdSubnetManager: subnet.env, backends, waiting for etcd, renewal');

manager.before(async () => {
  server = await EtcdServer.start();
  client = new EtcdClient({ endpoints: [server.url] });
  dir = mkdtempSync(join(tmpdir(), `fut-subnet-mgr-${process.pid}-`));
});
manager.after(async () => {
  client?.close();
  await server?.destroy();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function newManager(prefix: string, extra: Partial<ConstructorParameters<typeof EtcdSubnetManager>[0]> = {}, endpoints = [server.url]) {
  const lines: string[] = [];
  const fatal: Error[] = [];
  const subnetFile = join(dir, `subnet-${prefixCounter++}.env`);
  const m = new EtcdSubnetManager({
    endpoints,
    prefix,
    publicIp: ip('192.0.2.1'),
    subnetFile,
    ipMasq: false,
    renewMarginMs: 60 * 60_000,
    underlayMtu: 1500,
    log: (l) => lines.push(l),
    onFatal: (e) => fatal.push(e),
    ...extra,
  });
  return { m, lines, fatal, subnetFile };
}

manager('start() writes subnet.env in flannel\'s exact format; Backend.Port is passed on', async () => {
  const prefix = freshPrefix();
  await writeConfig(prefix, { Network: '10.244.0.0/16', SubnetMin: '10.244.30.0', SubnetMax: '10.244.30.0', Backend: { Type: 'udp', Port: 8300 } });
  const { m, subnetFile } = newManager(prefix, { ipMasq: true });
  try {
    const joined = await m.start();
    assert.is(joined.port, 8300);
    assert.is(readFileSync(subnetFile, 'utf8'), 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.30.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n');
  } finally {
    await m.stop();
  }
});

manager('an unsupported backend type is refused, naming what is supported', async () => {
  const prefix = freshPrefix();
  await writeConfig(prefix, { Network: '10.244.0.0/16', Backend: { Type: 'host-gw' } });
  const { m } = newManager(prefix);
  try {
    const err = await m.start().then(() => undefined, (e: Error) => e);
    assert.instance(err, EtcdSetupError);
    assert.match(err!.message, /Backend\.Type "host-gw" is not supported .*\(supported: udp, vxlan\)/);
    assert.is((await client.range(`${prefix}/subnets/`, { prefix: true })).kvs.length, 0, 'no lease taken');
  } finally {
    await m.stop();
  }
});

manager('the subnet recorded in an existing subnet.env is asked for first', async () => {
  const prefix = freshPrefix();
  await writeConfig(prefix, { Network: '10.244.0.0/16' });
  const { m, subnetFile } = newManager(prefix);
  writeFileSync(subnetFile, 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.123.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n');
  try {
    const joined = await m.start();
    assert.is(formatCidr(joined.lease.subnet), '10.244.123.0/24');
  } finally {
    await m.stop();
  }
});

manager('a node that cannot reach etcd at start waits for it (one log line), then joins', async () => {
  const prefix = freshPrefix();
  await writeConfig(prefix, { Network: '10.244.0.0/16' });
  const proxy = await TcpProxy.start(server.clientPort);
  proxy.set('reset');
  const { m, lines, subnetFile } = newManager(prefix, {}, [proxy.url]);
  const started = m.start();
  started.catch(() => undefined); // awaited below; no unhandled rejection meanwhile
  try {
    // The line comes with the first failure; wait for it, then for three more attempts refused.
    await waitFor(() => lines.some((l) => /waiting for it/.test(l)), 20_000, lines);
    const refusedAtLine = proxy.refused;
    await waitFor(() => proxy.refused >= refusedAtLine + 3, 30_000, lines);
    assert.is(lines.filter((l) => /waiting for it/.test(l)).length, 1, lines.join('\n'));
    proxy.set('pass');
    const joined = await started;
    assert.match(readFileSync(subnetFile, 'utf8'), new RegExp(`FLANNEL_SUBNET=${formatCidr(joined.subnetConfig.subnet, true)}`));
    assert.is(lines.filter((l) => /waiting for it/.test(l)).length, 1, 'still one line');
    assert.ok(lines.some((l) => /reachable after/.test(l)));
  } finally {
    await m.stop();
    await proxy.close();
  }
});

manager('the lease is renewed before it expires; a renewal during an etcd outage is retried', async () => {
  const prefix = freshPrefix();
  await writeConfig(prefix, { Network: '10.244.0.0/16' });
  // 8 s leases renewed 5 s before expiry: the first renewal is due after ~3 s.
  const { m, lines, fatal } = newManager(prefix, { ttlSeconds: 8, renewMarginMs: 5000 });
  try {
    const joined = await m.start();
    await waitFor(() => lines.some((l) => /renewed; expires/.test(l)), 8000, lines);
    // etcd down across the next renewal: it fails, is retried, and succeeds once etcd is back.
    await server.stop();
    await waitFor(() => lines.some((l) => /renewing lease .* failed .* retrying in/.test(l)), 10_000, lines);
    await server.start();
    await waitFor(() => lines.some((l) => /renewed after \d+ failed attempt/.test(l)), 10_000, lines);
    assert.is(fatal.length, 0);
    const stored = await client.get(joined.lease.key);
    assert.ok(stored, 'the lease key is still there');
    assert.ok((await client.leaseTimeToLive(stored!.lease)) > 0);
  } finally {
    await m.stop();
  }
});

manager.run();

async function waitFor(check: () => boolean, timeoutMs: number, lines: string[]): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) assert.unreachable(`condition not met within ${timeoutMs} ms; log:\n${lines.join('\n')}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
