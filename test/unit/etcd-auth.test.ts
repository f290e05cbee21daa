// etcd v3 authentication (flanneld's --etcd-username / --etcd-password)
// against a real etcd on loopback with auth enabled by etcdctl: the token is
// fetched, sent with every request and watch, fetched again when etcd no
// longer knows it (simple tokens die with an etcd restart), and the password
// appears in no log line and no error.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { EtcdClient, EtcdError, type WatchEvent } from '../../src/control/etcd-client.js';
import { EtcdSubnetManager } from '../../src/control/etcd-subnet-manager.js';
import { parseIPv4 } from '../../src/control/ipv4-address.js';
import { EtcdServer } from '../support/etcd-server.js';
import { runTool } from '../support/required-tool.js';

const PASSWORD = `pw-${process.pid}-Zq7`;
const CLI = fileURLToPath(new URL('../../src/cli.js', import.meta.url));

const auth = suite('etcd auth: username and password');
let server: EtcdServer;
let dir: string;

function etcdctl(args: string[]): string {
  return runTool('etcdctl', ['--endpoints', server.url, ...args], { env: { ...process.env, ETCDCTL_API: '3' }, encoding: 'utf8', timeout: 20_000 });
}

auth.before(async () => {
  server = await EtcdServer.start();
  etcdctl(['user', 'add', `root:${PASSWORD}`]);
  etcdctl(['auth', 'enable']);
  dir = mkdtempSync(join(tmpdir(), `fut-etcd-auth-${process.pid}-`));
});
auth.after(async () => {
  await server?.destroy();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

auth('without credentials etcd refuses; with them reads, writes and watches work', async () => {
  const anonymous = new EtcdClient({ endpoints: [server.url] });
  const refused = await anonymous.get('/t/auth/x').then(() => undefined, (e: Error) => e);
  anonymous.close();
  assert.instance(refused, EtcdError);

  const client = new EtcdClient({ endpoints: [server.url], auth: { username: 'root', password: PASSWORD } });
  try {
    await client.put('/t/auth/x', 'one');
    assert.is((await client.get('/t/auth/x'))?.value, 'one');
    const seen: WatchEvent[] = [];
    let got!: () => void;
    const arrived = new Promise<void>((r) => (got = r));
    const w = client.watch('/t/auth/', { prefix: true }, {
      onEvents: (events) => {
        seen.push(...events);
        got();
      },
    });
    await w.created;
    await client.put('/t/auth/y', 'two');
    await arrived;
    w.cancel();
    assert.equal(seen.map((e) => [e.type, e.kv.key, e.kv.value]), [['PUT', '/t/auth/y', 'two']]);
  } finally {
    client.close();
  }
});

auth('a wrong password is a clear error that does not contain it', async () => {
  const wrong = `${PASSWORD}-wrong`;
  const client = new EtcdClient({ endpoints: [server.url], auth: { username: 'root', password: wrong } });
  const err = await client.get('/t/auth/x').then(() => undefined, (e: Error) => e);
  client.close();
  assert.instance(err, EtcdError);
  assert.match(err!.message, /etcd authentication as "root" failed/);
  assert.not.ok(err!.message.includes(wrong), err!.message);
});

auth('a token etcd no longer knows (etcd restarted) is renewed; requests and new watches go on', async () => {
  const client = new EtcdClient({ endpoints: [server.url], auth: { username: 'root', password: PASSWORD } });
  try {
    await client.put('/t/auth/r', 'before');
    await server.stop();
    await server.start();
    // The old simple token died with the process: this request gets "invalid auth token", re-authenticates and retries.
    assert.is((await client.get('/t/auth/r'))?.value, 'before');
    await client.put('/t/auth/r', 'after');
    const w = client.watch('/t/auth/r', { startRevision: 1 }, { onEvents: () => undefined });
    await w.created;
    w.cancel();
  } finally {
    client.close();
  }
});

auth('the subnet manager joins with auth, and logs neither password nor token', async () => {
  const setup = new EtcdClient({ endpoints: [server.url], auth: { username: 'root', password: PASSWORD } });
  await setup.put('/t/auth-net/config', JSON.stringify({ Network: '10.245.0.0/16' }));
  setup.close();
  const lines: string[] = [];
  const m = new EtcdSubnetManager({
    endpoints: [server.url],
    auth: { username: 'root', password: PASSWORD },
    prefix: '/t/auth-net',
    publicIp: parseIPv4('192.0.2.1'),
    subnetFile: join(dir, 'subnet.env'),
    ipMasq: false,
    renewMarginMs: 60 * 60_000,
    underlayMtu: 1500,
    log: (l) => lines.push(l),
    onFatal: () => undefined,
  });
  try {
    const joined = await m.start();
    assert.ok(joined.subnetConfig.subnet.prefixLength === 24);
  } finally {
    await m.stop();
  }
  assert.ok(lines.length > 0);
  for (const l of lines) assert.not.ok(l.includes(PASSWORD), l);
});

function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) =>
    execFile(process.execPath, [CLI, ...args], { timeout: 30_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr }),
    ),
  );
}

auth('flannel-udp up --etcd-username/--etcd-password: a wrong password exits 2 with one line, the password nowhere', async () => {
  const wrong = `${PASSWORD}-typo`;
  const r = await cli([
    'up', '--etcd-endpoints', server.url, '--etcd-prefix', '/t/auth-net', '--etcd-username', 'root', '--etcd-password', wrong,
    '--subnet-file', join(dir, 'cli-subnet.env'), '--public-ip', '192.0.2.9', '--tun', `fa${process.pid % 100000}`, '--control-socket', 'off',
  ]);
  assert.is(r.code, 2, r.stderr);
  assert.match(r.stderr, /^flannel-udp: etcd authentication as "root" failed/m);
  assert.not.ok(r.stderr.includes(wrong) || r.stdout.includes(wrong), r.stderr);
  const half = await cli(['up', '--etcd-endpoints', server.url, '--etcd-username', 'root', '--subnet-file', join(dir, 'x.env'), '--public-ip', '192.0.2.9']);
  assert.is(half.code, 2);
  assert.match(half.stderr, /^flannel-udp: --etcd-username and --etcd-password go together/);
});

auth.run();
