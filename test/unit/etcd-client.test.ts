// The etcd client against a real etcd server on loopback (no mocks): key-value,
// transactions racing, leases, watches, an endpoint that is down, and TLS.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EtcdClient, EtcdError, prefixRangeEnd, type WatchEvent } from '../../src/control/etcd-client.js';
import { EtcdServer, freePort } from '../support/etcd-server.js';
import { runRequiredTool } from '../support/required-tool.js';

const kv = suite('etcd client: key-value, transactions, leases, watches');
let server: EtcdServer;
let client: EtcdClient;

kv.before(async () => {
  server = await EtcdServer.start();
  client = new EtcdClient({ endpoints: [server.url] });
});
kv.after(async () => {
  client?.close();
  await server?.destroy();
});

kv('prefixRangeEnd increments the last byte', () => {
  assert.is(Buffer.from(prefixRangeEnd('/a/b/'), 'base64').toString(), '/a/b0');
  assert.is(Buffer.from(prefixRangeEnd('a\u00ff'), 'base64').toString('hex'), '61c3c0');
});

kv('put, get, range with prefix, delete', async () => {
  const rev = await client.put('/t/kv/a', 'one');
  assert.ok(rev > 0);
  await client.put('/t/kv/b', 'two ✓');
  await client.put('/t/kvx', 'outside the prefix');
  const got = await client.get('/t/kv/a');
  assert.is(got?.value, 'one');
  assert.is(got?.version, 1);
  assert.is(got?.lease, '0');
  const { kvs, revision } = await client.range('/t/kv/', { prefix: true });
  assert.equal(kvs.map((k) => [k.key, k.value]), [['/t/kv/a', 'one'], ['/t/kv/b', 'two ✓']]);
  assert.ok(revision >= rev);
  assert.is(await client.deleteKey('/t/kv/a'), 1);
  assert.is(await client.deleteKey('/t/kv/a'), 0);
  assert.is(await client.get('/t/kv/a'), undefined);
});

kv('txn: create-if-absent holds once; mod-revision guards an update', async () => {
  const key = '/t/txn/x';
  const first = await client.txn([{ key, createRevision: 0 }], [{ put: { key, value: 'A' } }], [{ range: { key } }]);
  assert.ok(first.succeeded);
  const second = await client.txn([{ key, createRevision: 0 }], [{ put: { key, value: 'B' } }], [{ range: { key } }]);
  assert.not.ok(second.succeeded);
  assert.is(second.responses[0].kvs?.[0].value, 'A', 'the failure branch reads the winner');
  const current = (await client.get(key))!;
  const stale = await client.txn([{ key, modRevision: current.modRevision - 1 }], [{ put: { key, value: 'C' } }]);
  assert.not.ok(stale.succeeded);
  const fresh = await client.txn([{ key, modRevision: current.modRevision }], [{ put: { key, value: 'C' } }]);
  assert.ok(fresh.succeeded);
  assert.is((await client.get(key))?.value, 'C');
});

kv('two acquirers racing for the same key over separate connections: exactly one wins, every round', async () => {
  const other = new EtcdClient({ endpoints: [server.url] });
  try {
    for (let round = 0; round < 20; round++) {
      const key = `/t/race/${round}`;
      const results = await Promise.all(
        [client, other].map((c, i) => c.txn([{ key, createRevision: 0 }], [{ put: { key, value: `node${i}` } }])),
      );
      const winners = results.filter((r) => r.succeeded).length;
      assert.is(winners, 1, `round ${round}: ${winners} winners`);
      const winner = results.findIndex((r) => r.succeeded);
      assert.is((await client.get(key))?.value, `node${winner}`);
    }
  } finally {
    other.close();
  }
});

kv('leases: grant, attach, keep alive, revoke deletes the key; an unknown lease keeps alive to 0', async () => {
  const lease = await client.leaseGrant(60);
  assert.match(lease.id, /^[0-9]+$/);
  assert.is(lease.ttlSeconds, 60);
  await client.put('/t/lease/k', 'v', { lease: lease.id });
  assert.is((await client.get('/t/lease/k'))?.lease, lease.id, 'a 63-bit lease ID survives as a string');
  assert.ok((await client.leaseKeepAlive(lease.id)) > 55);
  const ttl = await client.leaseTimeToLive(lease.id);
  assert.ok(ttl > 0 && ttl <= 60, String(ttl));
  await client.leaseRevoke(lease.id);
  assert.is(await client.get('/t/lease/k'), undefined);
  assert.is(await client.leaseKeepAlive(lease.id), 0);
  await client.leaseRevoke(lease.id); // already gone: no error
});

kv('watch: puts, deletes and lease expiry arrive in order; start revision replays history', async () => {
  const startRev = (await client.range('/t/w/', { prefix: true })).revision + 1;
  const seen: WatchEvent[] = [];
  const watch = client.watch('/t/w/', { prefix: true, startRevision: startRev }, { onEvents: (events) => seen.push(...events) });
  await watch.created;
  await client.put('/t/w/a', '1');
  await client.put('/t/w/a', '2');
  await client.put('/t/other', 'not watched');
  await client.deleteKey('/t/w/a');
  const short = await client.leaseGrant(2);
  await client.put('/t/w/expiring', 'x', { lease: short.id });
  const deadline = Date.now() + 10_000;
  while (seen.length < 5 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  watch.cancel();
  assert.equal((await watch.ended).reason, 'cancelled');
  assert.equal(
    seen.map((e) => `${e.type} ${e.kv.key} ${e.kv.value}`),
    ['PUT /t/w/a 1', 'PUT /t/w/a 2', 'DELETE /t/w/a ', 'PUT /t/w/expiring x', 'DELETE /t/w/expiring '],
  );

  // A second watch from the same start revision sees the same history.
  const replay: WatchEvent[] = [];
  const again = client.watch('/t/w/', { prefix: true, startRevision: startRev }, { onEvents: (events) => replay.push(...events) });
  await again.created;
  const until = Date.now() + 5000;
  while (replay.length < 5 && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
  again.cancel();
  assert.is(replay.length, 5);
});

kv('watch from a compacted revision ends with reason compacted', async () => {
  const old = await client.put('/t/c/a', '1');
  const now = await client.put('/t/c/a', '2');
  const compact = await fetch(`${server.url}/v3/kv/compaction`, { method: 'POST', body: JSON.stringify({ revision: String(now), physical: true }) });
  assert.is(compact.status, 200);
  const watch = client.watch('/t/c/', { prefix: true, startRevision: old }, { onEvents: () => undefined });
  const end = await watch.ended;
  assert.is(end.reason, 'compacted');
  if (end.reason === 'compacted') assert.is(end.compactRevision, now);
});

kv.run();

const down = suite('etcd client: endpoints that are down');

down('a dead first endpoint is skipped; with none alive the error says unavailable and names each endpoint', async () => {
  const server = await EtcdServer.start();
  const deadPort = await freePort();
  const c = new EtcdClient({ endpoints: [`http://127.0.0.1:${deadPort}`, server.url], requestTimeoutMs: 2000 });
  try {
    await c.put('/t/failover', 'ok');
    assert.is((await c.get('/t/failover'))?.value, 'ok');

    // A watch running when etcd goes away ends with 'failed'.
    const watch = c.watch('/t/', { prefix: true }, { onEvents: () => undefined });
    await watch.created;
    await server.stop();
    const end = await watch.ended;
    assert.is(end.reason, 'failed');

    try {
      await c.get('/t/failover');
      assert.unreachable('no error');
    } catch (err) {
      assert.instance(err, EtcdError);
      assert.is((err as EtcdError).kind, 'unavailable');
      assert.match((err as Error).message, new RegExp(`127\\.0\\.0\\.1:${deadPort}: connection refused`));
      assert.match((err as Error).message, /connection refused.*connection refused/);
    }
    // The data dir survives a stop: back up, same data.
    await server.start();
    assert.is((await c.get('/t/failover'))?.value, 'ok');
  } finally {
    c.close();
    await server.destroy();
  }
});

down('a paused etcd (no answers, connection open) times out as unavailable', async () => {
  const server = await EtcdServer.start();
  const c = new EtcdClient({ endpoints: [server.url], requestTimeoutMs: 800 });
  try {
    await c.put('/t/pause', 'x');
    await server.pause();
    const err = await c.get('/t/pause').then((kv) => ({ answered: kv }), (e: Error) => e);
    assert.instance(err, EtcdError, `expected a timeout, got ${err instanceof Error ? err.stack : JSON.stringify(err)}`);
    assert.is((err as EtcdError).kind, 'unavailable');
    assert.match((err as Error).message, /no answer within 800 ms/);
  } finally {
    server.resume();
    c.close();
    await server.destroy();
  }
});

down('bad endpoints and TLS flags are configuration errors', () => {
  assert.throws(() => new EtcdClient({ endpoints: ['unix:///run/etcd.sock'] }), /only http:\/\/ and https:\/\//);
  assert.throws(() => new EtcdClient({ endpoints: ['127.0.0.1:2379'] }), /is not a URL \(expected http:\/\/host:2379/);
  assert.throws(() => new EtcdClient({ endpoints: ['http://127.0.0.1:2379'], caFile: '/nonexistent/ca.pem' }), /--etcd-cafile \/nonexistent\/ca\.pem: no such file/);
  assert.throws(() => new EtcdClient({ endpoints: ['https://127.0.0.1:2379'], certFile: '/x' }), /go together/);
});

down.run();

const tls = suite('etcd client: TLS with a CA and client certificates made by openssl');
let pki: string;

tls.before(() => {
  pki = mkdtempSync(join(tmpdir(), `fut-etcd-pki-${process.pid}-`));
  const ssl = (...args: string[]) => runRequiredTool('openssl', 'openssl', args, { cwd: pki, stdio: ['ignore', 'ignore', 'pipe'] });
  ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '1', '-subj', '/CN=flannel-udp test CA');
  // One certificate for both ends: etcd serves with it, the client presents it (serverAuth + clientAuth).
  writeFileSync(join(pki, 'ext.cnf'), 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n');
  ssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'node.key', '-out', 'node.csr', '-subj', '/CN=node');
  ssl('x509', '-req', '-in', 'node.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'node.pem', '-days', '1', '-extfile', 'ext.cnf');
  // A CA nobody trusts, to see verification fail.
  ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'other.key', '-out', 'other.pem', '-days', '1', '-subj', '/CN=other CA');
});
tls.after(() => {
  if (pki) rmSync(pki, { recursive: true, force: true });
});

tls('https with --etcd-cafile/--etcd-certfile/--etcd-keyfile; refused without the client certificate or with the wrong CA', async () => {
  const f = (name: string) => join(pki, name);
  const server = await EtcdServer.start({ tls: { caFile: f('ca.pem'), certFile: f('node.pem'), keyFile: f('node.key'), clientCertAuth: true } });
  assert.match(server.url, /^https:/);
  const good = new EtcdClient({ endpoints: [server.url], caFile: f('ca.pem'), certFile: f('node.pem'), keyFile: f('node.key') });
  const noCert = new EtcdClient({ endpoints: [server.url], caFile: f('ca.pem'), requestTimeoutMs: 3000 });
  const wrongCa = new EtcdClient({ endpoints: [server.url], caFile: f('other.pem'), certFile: f('node.pem'), keyFile: f('node.key'), requestTimeoutMs: 3000 });
  try {
    await good.put('/t/tls', 'secret');
    assert.is((await good.get('/t/tls'))?.value, 'secret');
    const w = good.watch('/t/', { prefix: true }, { onEvents: () => undefined });
    await w.created;
    w.cancel();
    const e1 = await noCert.get('/t/tls').then(() => undefined, (e: Error) => e);
    assert.instance(e1, EtcdError, 'no client certificate: refused');
    const e2 = await wrongCa.get('/t/tls').then(() => undefined, (e: Error) => e);
    assert.instance(e2, EtcdError, 'server certificate not signed by the given CA: refused');
    assert.match(e2!.message, /certificate/i);
  } finally {
    good.close();
    noCert.close();
    wrongCa.close();
    await server.destroy();
  }
});

tls.run();
