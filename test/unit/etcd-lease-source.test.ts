// The etcd lease source against a real etcd on loopback, reached through a
// proxy the test can cut: snapshots follow every put, delete and expiry; the
// own lease is left out and watched; an outage is reported once, the last
// leases stay, and everything missed is picked up on reconnect.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { EtcdClient } from '../../src/control/etcd-client.js';
import { EtcdLeaseSource } from '../../src/control/etcd-lease-source.js';
import { formatIPv4, parseCidr, parseIPv4 } from '../../src/control/ipv4-address.js';
import type { Lease } from '../../src/control/lease.js';
import { EtcdServer } from '../support/etcd-server.js';
import { TcpProxy } from '../support/tcp-proxy.js';

const source = suite('EtcdLeaseSource');
let server: EtcdServer;
let admin: EtcdClient; // the test's own direct connection, like etcdctl
let proxy: TcpProxy;
let n = 0;

source.before(async () => {
  server = await EtcdServer.start();
  admin = new EtcdClient({ endpoints: [server.url] });
  proxy = await TcpProxy.start(server.clientPort);
});
source.after(async () => {
  admin?.close();
  await proxy?.close();
  await server?.destroy();
});

const value = (publicIp: string, backendType = 'udp') => JSON.stringify({ PublicIP: publicIp, PublicIPv6: null, BackendType: backendType, BackendData: null });
const describe = (leases: Lease[]) => leases.map((l) => `${l.key}=${formatIPv4(l.publicIp)}`).sort().join(' ');

interface Harness {
  src: EtcdLeaseSource;
  client: EtcdClient;
  snapshots: string[];
  errors: string[];
  lines: string[];
  lost: string[];
  prefix: string;
  latest(): string;
}

async function startSource(opts: { own?: string; ownIp?: string; setup?: (prefix: string) => Promise<void> } = {}): Promise<Harness> {
  const prefix = `/ls${process.pid}-${n++}/network`;
  await opts.setup?.(prefix);
  const client = new EtcdClient({ endpoints: [proxy.url], requestTimeoutMs: 700 });
  const h: Harness = { client, snapshots: [], errors: [], lines: [], lost: [], prefix, latest: () => h.snapshots[h.snapshots.length - 1] ?? '' } as unknown as Harness;
  h.src = new EtcdLeaseSource(client, {
    prefix,
    ownSubnet: opts.own ? parseCidr(opts.own) : undefined,
    ownPublicIp: opts.ownIp ? parseIPv4(opts.ownIp) : undefined,
    onOwnLeaseLost: (why) => h.lost.push(why),
    log: (l) => h.lines.push(l),
    probeIntervalMs: 300,
    maxBackoffMs: 500,
  });
  await h.src.start({ onLeases: (l) => h.snapshots.push(describe(l)), onError: (e) => h.errors.push(e.message) });
  return h;
}

async function stopSource(h: Harness): Promise<void> {
  await h.src.stop();
  h.client.close();
}

async function until(what: string, check: () => boolean, h: Harness, timeoutMs = 5000): Promise<number> {
  const started = Date.now();
  while (!check()) {
    if (Date.now() - started > timeoutMs) {
      assert.unreachable(`${what}: not within ${timeoutMs} ms; snapshots:\n${h.snapshots.join('\n')}\nerrors:\n${h.errors.join('\n')}\nlog:\n${h.lines.join('\n')}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return Date.now() - started;
}

source('first snapshot without the own lease; puts, changes, deletes and expiries follow', async () => {
  const h = await startSource({
    own: '10.244.1.0/24',
    ownIp: '192.0.2.1',
    setup: async (p) => {
      await admin.put(`${p}/subnets/10.244.1.0-24`, value('192.0.2.1'));
      await admin.put(`${p}/subnets/10.244.2.0-24`, value('192.0.2.2'));
      await admin.put(`${p}/config`, '{"Network":"10.244.0.0/16"}'); // not under subnets/: not a lease
    },
  });
  try {
    assert.equal(h.snapshots, ['10.244.2.0-24=192.0.2.2']);
    await admin.put(`${h.prefix}/subnets/10.244.3.0-24`, value('192.0.2.3'));
    await until('add', () => h.latest() === '10.244.2.0-24=192.0.2.2 10.244.3.0-24=192.0.2.3', h);
    await admin.put(`${h.prefix}/subnets/10.244.3.0-24`, value('192.0.2.33'));
    await until('change', () => h.latest() === '10.244.2.0-24=192.0.2.2 10.244.3.0-24=192.0.2.33', h);
    await admin.deleteKey(`${h.prefix}/subnets/10.244.2.0-24`);
    await until('delete', () => h.latest() === '10.244.3.0-24=192.0.2.33', h);
    const short = await admin.leaseGrant(2);
    await admin.put(`${h.prefix}/subnets/10.244.4.0-24`, value('192.0.2.4'), { lease: short.id });
    await until('expiring lease added', () => h.latest().includes('10.244.4.0-24'), h);
    await until('expiry', () => h.latest() === '10.244.3.0-24=192.0.2.33', h, 8000);
    assert.equal(h.errors, []);
    assert.equal(h.lost, []);
  } finally {
    await stopSource(h);
  }
});

source('a bad value is reported once and left out; fixing it brings the lease in', async () => {
  const h = await startSource();
  try {
    await admin.put(`${h.prefix}/subnets/10.244.5.0-24`, '{"PublicIP": "not an ip", "BackendType": "udp"}');
    await until('error', () => h.errors.length === 1, h);
    assert.match(h.errors[0], /subnets\/10\.244\.5\.0-24: lease "10\.244\.5\.0-24": PublicIP: .* ignored/);
    await admin.put(`${h.prefix}/subnets/10.244.6.0-24&fc00::-129`, value('192.0.2.6'));
    await until('bad IPv6 half reported', () => h.errors.length === 2, h);
    assert.match(h.errors[1], /IPv6 prefix length 129/);
    await admin.put(`${h.prefix}/subnets/10.244.5.0-24`, value('192.0.2.5'));
    await until('fixed', () => h.latest() === '10.244.5.0-24=192.0.2.5', h);
  } finally {
    await stopSource(h);
  }
});

source('the own lease deleted, or taken by another node: onOwnLeaseLost', async () => {
  const setup = async (p: string) => void (await admin.put(`${p}/subnets/10.244.1.0-24`, value('192.0.2.1')));
  const a = await startSource({ own: '10.244.1.0/24', ownIp: '192.0.2.1', setup });
  const b = await startSource({ own: '10.244.1.0/24', ownIp: '192.0.2.1', setup });
  try {
    await admin.deleteKey(`${a.prefix}/subnets/10.244.1.0-24`);
    await until('deleted', () => a.lost.length === 1, a);
    assert.match(a.lost[0], /lease .*10\.244\.1\.0-24 was deleted or expired/);
    await admin.put(`${b.prefix}/subnets/10.244.1.0-24`, value('192.0.2.99'));
    await until('taken', () => b.lost.length === 1, b);
    assert.match(b.lost[0], /now leased to 192\.0\.2\.99/);
  } finally {
    await stopSource(a);
    await stopSource(b);
  }
});

source('connection reset: reported once, last leases kept, changes made meanwhile picked up on reconnect', async () => {
  const h = await startSource({ setup: async (p) => void (await admin.put(`${p}/subnets/10.244.2.0-24`, value('192.0.2.2'))) });
  try {
    proxy.set('reset');
    await until('outage reported', () => h.errors.length === 1, h);
    assert.match(h.errors[0], /etcd is unreachable .*forwarding continues with the 1 lease\(s\) last seen, retrying with backoff/);
    const before = h.snapshots.length;
    // Meanwhile, etcd itself is fine and the cluster changes: one node leaves, one joins.
    await admin.deleteKey(`${h.prefix}/subnets/10.244.2.0-24`);
    await admin.put(`${h.prefix}/subnets/10.244.7.0-24`, value('192.0.2.7'));
    // Wait for the source to have retried (and been refused) three more times, not for a fixed time.
    const refused = proxy.refused;
    await until('three retries refused', () => proxy.refused >= refused + 3, h);
    assert.is(h.snapshots.length, before, 'no snapshot while cut off: the last one stays in force');
    assert.is(h.errors.length, 1, 'reported once, not on every retry');
    proxy.set('pass');
    await until('resynced', () => h.latest() === '10.244.7.0-24=192.0.2.7', h);
    // The leases may arrive before the log line: wait for the line itself.
    await until('reachable-again line', () => h.lines.some((l) => /etcd: reachable again after .* resynced 1 lease\(s\) at revision \d+, watching from \d+/.test(l)), h);
    // And the new watch works.
    await admin.put(`${h.prefix}/subnets/10.244.8.0-24`, value('192.0.2.8'));
    await until('watch after reconnect', () => h.latest() === '10.244.7.0-24=192.0.2.7 10.244.8.0-24=192.0.2.8', h);
  } finally {
    proxy.set('pass');
    await stopSource(h);
  }
});

source('silent partition (connections open, nothing delivered): the probe notices, and the resync catches up', async () => {
  const h = await startSource({ setup: async (p) => void (await admin.put(`${p}/subnets/10.244.2.0-24`, value('192.0.2.2'))) });
  try {
    proxy.set('blackhole');
    await admin.put(`${h.prefix}/subnets/10.244.9.0-24`, value('192.0.2.9'));
    await until('partition noticed', () => h.errors.length === 1, h, 5000);
    assert.match(h.errors[0], /etcd is unreachable/);
    proxy.set('pass');
    await until('caught up', () => h.latest() === '10.244.2.0-24=192.0.2.2 10.244.9.0-24=192.0.2.9', h, 8000);
  } finally {
    proxy.set('pass');
    await stopSource(h);
  }
});

source('etcd restarted: the source reconnects by itself; reload() (SIGHUP) re-reads', async () => {
  const h = await startSource({ setup: async (p) => void (await admin.put(`${p}/subnets/10.244.2.0-24`, value('192.0.2.2'))) });
  try {
    await server.stop();
    await until('outage reported', () => h.errors.length === 1, h);
    await server.start();
    await until('back', () => h.lines.some((l) => /reachable again/.test(l)), h, 10_000);
    await admin.put(`${h.prefix}/subnets/10.244.3.0-24`, value('192.0.2.3'));
    await until('watching again', () => h.latest() === '10.244.2.0-24=192.0.2.2 10.244.3.0-24=192.0.2.3', h);
    const count = h.snapshots.length;
    await h.src.reload();
    await until('reloaded', () => h.snapshots.length > count, h);
    assert.is(h.errors.length, 1);
  } finally {
    await stopSource(h);
  }
});

source.run();
