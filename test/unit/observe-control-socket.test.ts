// The control socket in a temp dir: stats, a trace stream from a fake data
// plane (limit, disconnect, errors), stale and live sockets, cleanup; then
// the real `flannel-udp stats` and `flannel-udp trace` commands against it.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFile, spawn } from 'node:child_process';
import { createConnection } from 'node:net';
import { existsSync, linkSync, lstatSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  CONTROL_SOCKET_DIR,
  ControlClientError,
  ControlSocketInUseError,
  controlRequest,
  controlSocketPath,
  networkNamespaceSuffix,
  startControlServer,
  type ControlHandlers,
  type TraceDone,
} from '../../src/observe/control-socket.js';
import { traceEventFromJson, type TraceEvent } from '../../src/observe/trace-event.js';
import { WorkerTracer } from '../../src/observe/worker-tracer.js';
import type { AgentStats } from '../../src/observe/metrics.js';
import { CONTROL_LIMITS } from '../../src/observe/connection-limits.js';
import { ICMP_ECHO_REQUEST, buildIcmpEcho } from '../../src/encap/icmp.js';
import { parseIPv4 } from '../../src/control/ipv4-address.js';

const CLI = fileURLToPath(new URL('../../src/cli.js', import.meta.url));

const dirs: string[] = [];
function socketPath(): string {
  const d = mkdtempSync(join(tmpdir(), 'flannel-udp-ctl-'));
  dirs.push(d);
  return join(d, 'run', 'flannel0.sock'); // "run" does not exist yet: the server makes it, 0700
}

const STATS: AgentStats = {
  node: '10.244.1.0-24',
  backend: 'udp',
  ready: true,
  workers: [
    {
      worker: 0,
      counters: {
        TunReadPackets: 120,
        TunReadBytes: 10080,
        UdpSentPackets: 119,
        UdpSentBytes: 9996,
        UdpReceivedPackets: 100,
        UdpReceivedBytes: 8400,
        TunWrittenPackets: 100,
        TunWrittenBytes: 8400,
        SyscallsTunRead: 130,
        SyscallsSend: 10,
        SyscallsReceive: 5,
        SyscallsTunWrite: 100,
        SendBatches: 10,
        ReceiveBatches: 5,
        PoolSlots: 129,
        HeapUsedBytes: 3 * 1024 * 1024,
        Restarts: 0,
      },
      drops: { 'no-lease': 1 },
    },
  ],
  leases: ['10.244.2.0-24 -> 192.0.2.2'],
};

/**
 * A data plane stand-in: once started, every 5 ms one more ping packet
 * passes tun-read, lease-lookup and udp-send on worker 0, through the real
 * WorkerTracer (so the filter and the event format are the real ones).
 */
function fakeDataPlane() {
  const state = { starts: 0, stops: 0, filters: [] as string[], limits: [] as number[] };
  const handlers: ControlHandlers = {
    stats: () => STATS,
    startTrace(filter, limit, onEvent) {
      if (filter === 'port 9') throw new Error('a trace is already running');
      state.starts++;
      state.filters.push(filter);
      state.limits.push(limit);
      const tracer = new WorkerTracer({ node: 'node-1', worker: 0, filter, limit: 0, perSecond: 0 }, onEvent);
      const slot = new Uint8Array(32 + 84);
      let seq = 0;
      const timer = setInterval(() => {
        buildIcmpEcho(slot, 32, parseIPv4('10.244.1.2'), parseIPv4('10.244.2.2'), ICMP_ECHO_REQUEST, 20, ++seq, 56);
        const p = tracer.admit(slot, 32);
        if (p < 0) return;
        tracer.emit(p, 'tun-read', 'ip', slot, 32, 84);
        tracer.emit(p, 'lease-lookup', 'ip', slot, 32, 84, { lease: { key: '10.244.2.0-24', publicIp: '192.0.2.2' } });
        tracer.emitOuter(p, 'udp-send', parseIPv4('192.0.2.1'), parseIPv4('192.0.2.2'), 8285, 8285, slot, 32, 84);
      }, 5);
      return () => {
        state.stops++;
        clearInterval(timer);
      };
    },
  };
  return { handlers, state };
}

async function collect(path: string, request: Parameters<typeof controlRequest>[1], opts: Parameters<typeof controlRequest>[3] = {}): Promise<unknown[]> {
  const lines: unknown[] = [];
  await controlRequest(path, request, (v) => void lines.push(v), opts);
  return lines;
}

async function until(check: () => boolean, ms = 2000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 10));
  }
}

test('stats: one AgentStats line; the directory 0700, the socket 0600; close() removes the socket', async () => {
  const path = socketPath();
  const server = await startControlServer(path, fakeDataPlane().handlers);
  try {
    assert.is(statSync(join(path, '..')).mode & 0o777, 0o700);
    assert.ok(lstatSync(path).isSocket());
    assert.is(lstatSync(path).mode & 0o777, 0o600);
    const lines: unknown[] = [];
    await controlRequest(path, { cmd: 'stats' }, (v) => {
      lines.push(v);
      return false;
    });
    assert.equal(lines, [STATS]);
    // Several requests on one connection: one answer each.
    const answers = await new Promise<string>((resolve) => {
      const s = createConnection(path);
      let text = '';
      s.setEncoding('utf8');
      s.on('data', (d: string) => {
        text += d;
        if (text.split('\n').length > 3) {
          s.destroy();
          resolve(text);
        }
      });
      s.write('{"cmd":"stats"}\n\n{"cmd":"stats"}\n{"cmd":"nope"}\n');
    });
    const parsed = answers.trim().split('\n').map((l) => JSON.parse(l));
    assert.equal(parsed.slice(0, 2), [STATS, STATS]);
    assert.match(parsed[2].error, /unknown command "nope"/);
  } finally {
    await server.close();
  }
  assert.not.ok(existsSync(path), 'socket removed');
});

test('trace: events stream until `limit` packets have passed all their stages, then {"done"} and the connection closes', async () => {
  const path = socketPath();
  const { handlers, state } = fakeDataPlane();
  const server = await startControlServer(path, handlers);
  try {
    const lines = await collect(path, { cmd: 'trace', filter: 'icmp and dst host 10.244.2.2', limit: 2 });
    const done = lines.pop() as TraceDone;
    assert.equal(done, { done: true, packets: 2, events: 6, dropped: 0, reason: 'limit' });
    const events = lines.map(traceEventFromJson);
    assert.equal(
      events.map((e) => [e.packet, e.stage]),
      [
        [0, 'tun-read'],
        [0, 'lease-lookup'],
        [0, 'udp-send'],
        [1, 'tun-read'],
        [1, 'lease-lookup'],
        [1, 'udp-send'],
      ],
    );
    assert.is(events[2].layers, 'outer-ip');
    assert.equal(state.filters, ['icmp and dst host 10.244.2.2']);
    assert.equal(state.limits, [2]);
    assert.is(state.stops, 1, 'the data plane was told to stop');
    // Defaults: no filter = every packet, no limit = 100.
    const controller = new AbortController();
    let seen = 0;
    await controlRequest(path, { cmd: 'trace' }, () => {
      if (++seen === 3) controller.abort();
    }, { signal: controller.signal });
    assert.equal(state.filters[1], '');
    assert.is(state.limits[1], 100);
  } finally {
    await server.close();
  }
});

test('trace: a client that goes away stops the trace; closing the server stops a running one', async () => {
  const path = socketPath();
  const { handlers, state } = fakeDataPlane();
  const server = await startControlServer(path, handlers);
  try {
    const controller = new AbortController();
    let events = 0;
    await controlRequest(path, { cmd: 'trace', filter: 'icmp', limit: 1000 }, () => {
      if (++events === 4) controller.abort();
    }, { signal: controller.signal });
    await until(() => state.stops === 1);

    let done: TraceDone | undefined;
    const running = controlRequest(path, { cmd: 'trace', limit: 1000 }, (v) => {
      if ((v as TraceDone).done) done = v as TraceDone;
    });
    await until(() => state.starts === 2);
    await server.close();
    await running;
    assert.is(state.stops, 2);
    assert.is(done?.reason, 'stopped');
  } finally {
    await server.close();
  }
});

test('trace: a bad filter (with its position), a bad limit, a handler that refuses: errors, and no trace started', async () => {
  const path = socketPath();
  const { handlers, state } = fakeDataPlane();
  const server = await startControlServer(path, handlers);
  try {
    const errorOf = (request: Parameters<typeof controlRequest>[1]): Promise<string> =>
      collect(path, request).then(
        () => {
          throw new Error('no error');
        },
        (err: Error) => {
          assert.instance(err, ControlClientError);
          return err.message;
        },
      );
    assert.match(await errorOf({ cmd: 'trace', filter: 'icmp and host 10.1' }), /"10.1" is not an IPv4 address \(A.B.C.D\) at position 15/);
    assert.match(await errorOf({ cmd: 'trace', limit: 0 }), /"limit" must be a whole number ≥ 1/);
    assert.match(await errorOf({ cmd: 'trace', filter: 7 } as never), /"filter" must be a string/);
    assert.match(await errorOf({ cmd: 'trace', filter: 'port 9' }), /a trace is already running/);
    assert.is(state.starts, 0);
    // A line that is not JSON.
    const reply = await new Promise<string>((resolve) => {
      const s = createConnection(path);
      s.setEncoding('utf8');
      s.on('data', (d: string) => {
        s.destroy();
        resolve(d);
      });
      s.write('stats please\n');
    });
    assert.match(JSON.parse(reply).error, /bad request/);
  } finally {
    await server.close();
  }
});

function spawnNode(code: string): Promise<number | null> {
  return new Promise((resolve) => spawn(process.execPath, ['--input-type=module', '-e', code], { stdio: 'ignore' }).on('exit', resolve));
}

test('a socket left by a dead agent is replaced; a live agent is not; a file that is not a socket is left alone', async () => {
  const path = socketPath();
  const first = await startControlServer(path, fakeDataPlane().handlers);
  // A second agent on the same socket fails while the first one lives.
  await startControlServer(path, fakeDataPlane().handlers).then(
    () => assert.unreachable('a second server'),
    (err: Error) => {
      assert.instance(err, ControlSocketInUseError);
      assert.match(err.message, /another agent answers on/);
    },
  );
  await first.close();

  // An agent killed with SIGKILL leaves its socket behind.
  const dir = join(path, '..');
  const stale = join(dir, 'other.sock');
  await spawnNode(`import { createServer } from 'node:net'; createServer().listen(${JSON.stringify(path)}, () => process.kill(process.pid, 'SIGKILL'));`);
  await spawnNode(`import { createServer } from 'node:net'; createServer().listen(${JSON.stringify(stale)}, () => process.kill(process.pid, 'SIGKILL'));`);
  assert.ok(lstatSync(path).isSocket(), 'the dead agent left its socket');
  await collect(path, { cmd: 'stats' }).then(
    () => assert.unreachable(),
    (err: Error) => assert.match(err.message, /no agent answers on .* \(left by an agent that has died\)/),
  );
  const second = await startControlServer(path, fakeDataPlane().handlers);
  try {
    assert.equal(await collect(path, { cmd: 'stats' }), [STATS]);
    assert.not.ok(existsSync(stale), 'stale sockets of other dead agents in the directory are swept too');
  } finally {
    await second.close();
  }

  const notSocket = join(dir, 'plain.sock');
  writeFileSync(notSocket, 'x');
  await startControlServer(notSocket, fakeDataPlane().handlers).then(
    () => assert.unreachable(),
    (err: Error) => assert.match(err.message, /exists and is not a socket/),
  );
  assert.ok(existsSync(notSocket));
});

test('the socket goes when the process exits without close()', async () => {
  const path = socketPath();
  const module = new URL('../../src/observe/control-socket.js', import.meta.url).href;
  const code = await spawnNode(
    `import { startControlServer } from ${JSON.stringify(module)};
     await startControlServer(${JSON.stringify(path)}, { stats: () => ({}), startTrace: () => () => {} });
     process.exit(3);`,
  );
  assert.is(code, 3);
  assert.not.ok(existsSync(path));
});

test('no agent: a message that says so and what to check', async () => {
  const path = socketPath();
  await collect(path, { cmd: 'stats' }).then(
    () => assert.unreachable(),
    (err: Error) => {
      assert.instance(err, ControlClientError);
      assert.match(err.message, /no agent is running here \(no control socket .*flannel0\.sock/);
    },
  );
});

test('the default path: /run/flannel-udp/<tun>.sock, with the name of a named network namespace in it', () => {
  // Found as `ip netns identify` does: the namespace file's inode among /run/netns's entries.
  const d = mkdtempSync(join(tmpdir(), 'flannel-udp-ctl-'));
  dirs.push(d);
  mkdirSync(join(d, 'netns'));
  const self = join(d, 'self-ns');
  writeFileSync(self, '');
  writeFileSync(join(d, 'netns', 'fut-abc-0-n2'), '');
  assert.is(networkNamespaceSuffix(self, join(d, 'netns')), undefined, 'not among the named ones');
  linkSync(self, join(d, 'netns', 'fut-abc-0-n1')); // same inode, as the bind mount ip netns makes
  assert.is(networkNamespaceSuffix(self, join(d, 'netns')), 'fut-abc-0-n1');
  const long = 'n'.repeat(60);
  rmSync(join(d, 'netns', 'fut-abc-0-n1'));
  linkSync(self, join(d, 'netns', long));
  assert.is(networkNamespaceSuffix(self, join(d, 'netns')), `net-${statSync(self).ino}`, 'a long name would not fit a unix socket path');
  assert.is(networkNamespaceSuffix(self, join(d, 'missing')), undefined);

  // This process: the host's namespace, or a named one.
  const suffix = networkNamespaceSuffix();
  assert.is(controlSocketPath('flannel0'), suffix ? `${CONTROL_SOCKET_DIR}/flannel0.${suffix}.sock` : `${CONTROL_SOCKET_DIR}/flannel0.sock`);
  assert.ok(controlSocketPath('cni9', '/tmp/x').startsWith('/tmp/x/cni9.'));
});

function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    // Without the FORCE_COLOR a test runner may set: Node 24 warns on stderr when both are set.
    const { FORCE_COLOR: _, ...env } = process.env;
    execFile(process.execPath, [CLI, ...args], { timeout: 20_000, env: { ...env, NO_COLOR: '1' } }, (err, stdout, stderr) =>
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr }),
    );
  });
}

test('at its connection cap the control socket says so, and `flannel-udp stats` prints that, not EPIPE or ECONNRESET (issue 26)', async () => {
  const path = socketPath();
  const logged: string[] = [];
  const server = await startControlServer(path, fakeDataPlane().handlers, { log: (l) => logged.push(l) });
  const held: ReturnType<typeof createConnection>[] = [];
  try {
    // Every slot taken by clients that hold a connection open and say nothing.
    for (let i = 0; i < CONTROL_LIMITS.maxConnections; i++) {
      const s = createConnection(path);
      s.on('error', () => undefined);
      await new Promise((r) => s.once('connect', r));
      held.push(s);
    }
    for (let attempt = 0; attempt < 5; attempt++) {
      const err = await collect(path, { cmd: 'stats' }).then(
        () => undefined,
        (e: Error) => e,
      );
      assert.instance(err, ControlClientError, String(err));
      assert.match(err!.message, new RegExp(`the agent's control socket is at its cap of ${CONTROL_LIMITS.maxConnections} connections`));
    }
    const stats = await cli(['stats', '--socket', path]);
    assert.is(stats.code, 2);
    assert.match(stats.stderr, /^flannel-udp: .*at its cap of 16 connections/);
    assert.not.match(stats.stderr, /EPIPE|ECONNRESET/);
    assert.ok(logged.some((l) => /control socket: refused a connection: 16 are open already \(the cap\)/.test(l)), logged.join('\n'));
    // A slot freed: served again.
    held.pop()!.destroy();
    let served: unknown[] | undefined;
    for (let i = 0; i < 50 && served === undefined; i++) {
      served = await collect(path, { cmd: 'stats' }).catch(() => undefined);
      if (served === undefined) await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(served, [STATS]);
  } finally {
    for (const s of held) s.destroy();
    await server.close();
  }
});

test('flannel-udp stats: the table, --json, and a clear error without an agent', async () => {
  const path = socketPath();
  const server = await startControlServer(path, fakeDataPlane().handlers);
  try {
    const table = await cli(['stats', '--socket', path]);
    assert.is(table.code, 0, table.stderr);
    const out = table.stdout;
    assert.match(out, /^flannel-udp  node 10\.244\.1\.0-24  backend udp  ready  1 worker\(s\)  1 lease\(s\)/);
    assert.match(out, /worker 0\s+total/);
    assert.match(out, /tun → udp\s+packets read\s+120\s+120/);
    assert.match(out, /bytes read\s+9\.8 KiB\s+9\.8 KiB/);
    assert.match(out, /syscalls\/packet\s+1\.18\s+1\.18/, '(130 reads + 10 sendmmsg) / 119 datagrams');
    assert.match(out, /udp → tun\s+datagrams received\s+100/);
    assert.match(out, /packets\/sendmmsg\s+11\.9/);
    assert.match(out, /drops\s+no-lease\s+1\s+1/);
    assert.match(out, /pool slots\s+129/);
    assert.match(out, /heap\s+3\.0 MiB/);
    assert.match(out, /leases \(1\)\n  10\.244\.2\.0-24 -> 192\.0\.2\.2/);
    assert.not.match(out, /\x1b\[/, 'no colour when stdout is not a terminal');

    const json = await cli(['stats', '--socket', path, '--json']);
    assert.equal(JSON.parse(json.stdout), STATS);

    const watch = spawn(process.execPath, [CLI, 'stats', '--socket', path, '--watch', '0.2'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let text = '';
    watch.stdout.on('data', (d) => (text += d));
    await until(() => (text.match(/^flannel-udp/gm) ?? []).length >= 2, 5000);
    watch.kill('SIGINT');
    const code = await new Promise((r) => watch.on('exit', (c) => r(c)));
    assert.is(code, 0, 'Ctrl-C ends --watch cleanly');
    assert.match(text, /per second/, 'a rate column from the second report on');
  } finally {
    await server.close();
  }
  const missing = await cli(['stats', '--socket', path]);
  assert.is(missing.code, 2);
  assert.match(missing.stderr, /^flannel-udp: no agent is running here/);
  const bad = await cli(['stats', '--watch', 'soon']);
  assert.is(bad.code, 2);
  assert.match(bad.stderr, /Unexpected argument 'soon'|soon/);
});

test('flannel-udp trace: drawings or JSON lines, the summary on stderr; a bad filter before connecting', async () => {
  const path = socketPath();
  const server = await startControlServer(path, fakeDataPlane().handlers);
  try {
    const drawn = await cli(['trace', '--socket', path, '--filter', 'icmp', '--limit', '2']);
    assert.is(drawn.code, 0, drawn.stderr);
    const headers = drawn.stdout.split('\n').filter((l) => l.startsWith('node-1 '));
    assert.is(headers.length, 6);
    assert.match(headers[0], /^node-1 w0 #0  kernel → user  read\(tun fd\)  84 bytes  \[TUN read\]$/);
    assert.match(headers[1], /^node-1 w0 #0  in user space  84 bytes  \+[0-9.]+ (µs|ms)  \[lease lookup\]$/);
    assert.match(headers[2], /^node-1 w0 #0  user → kernel  sendmmsg\(udp fd\)  112 bytes  \+[0-9.]+ (µs|ms)  \[UDP send\]$/);
    assert.match(drawn.stdout, /ICMP \(L4\)\s+type echo-request \(8\)  code 0  csum 0x[0-9a-f]{4}  id 20  seq 1/);
    assert.match(drawn.stdout, /UDP \(L4\)\s+sport 8285  dport 8285  len 92/);
    assert.match(drawn.stderr, /^trace: 2 packet\(s\), 6 event\(s\)$/m);

    const json = await cli(['trace', '--socket', path, '--limit', '1', '--json']);
    const events: TraceEvent[] = json.stdout.trim().split('\n').map((l) => traceEventFromJson(JSON.parse(l)));
    assert.equal(
      events.map((e) => e.stage),
      ['tun-read', 'lease-lookup', 'udp-send'],
    );
  } finally {
    await server.close();
  }
  const bad = await cli(['trace', '--socket', path, '--filter', 'icmp or']);
  assert.is(bad.code, 2);
  assert.match(bad.stderr, /trace filter: expected a primitive .* at position 8\n  icmp or\n {9}\^/);
});

test.after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

test.run();
