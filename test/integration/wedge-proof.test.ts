// Issue 26, live: nothing on disk or on the wire can wedge the agent. Real
// agents in namespaces of this test's clusters: a FIFO, /dev/zero or an
// oversized file as the leases or subnet file, at start and swapped in live,
// is refused with a clear line and SIGTERM still ends the agent; a few hosts
// holding connections cannot starve the node's own health probes; a small
// descriptor limit still serves /healthz and stats, with a warning at start.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { readFileSync, renameSync, rmSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { agentCliPath, createCluster, type Cluster } from '../../src/testbed/cluster.js';
import { ping } from '../../src/testbed/measure.js';
import { isRunning, stopChild, waitForLine, type CapturedChild } from '../../src/testbed/exec.js';
import { requestStatsLine } from '../../src/testbed/agent-signal.js';
import { runRequiredTool } from '../support/required-tool.js';
import { eventually } from '../support/pod-traffic.js';

const READY = /flannel-udp agent ready/;
const supportDir = join(dirname(fileURLToPath(import.meta.url)), '../support');
/** Generous: an agent that is not stuck exits in about a second; a stuck one never does. */
const EXIT_DEADLINE_MS = 30_000;

/** Node i's agent as the testbed starts it, with other files or flags. */
function startOwnAgent(cluster: Cluster, i: number, opts: { subnetFile?: string; leasesFile?: string; extra?: string[] } = {}): CapturedChild {
  const node = cluster.node(i);
  return cluster.spawn(node.ns, process.execPath, [
    agentCliPath, 'up', '--subnet-file', opts.subnetFile ?? node.subnetFile, '--leases', opts.leasesFile ?? cluster.leasesFile,
    '--public-ip', node.underlayIp, '--workers', '1', ...(opts.extra ?? []),
  ]);
}

/** Resolves with the exit when the process ends by itself within the deadline; otherwise kills it and fails. */
async function exitsWithin(child: CapturedChild, what: string): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  let timer: NodeJS.Timeout | undefined;
  const stuck = new Promise<'stuck'>((resolve) => (timer = setTimeout(() => resolve('stuck'), EXIT_DEADLINE_MS)));
  const result = await Promise.race([child.exited, stuck]);
  clearTimeout(timer);
  if (result === 'stuck') {
    await stopChild(child, 'SIGKILL');
    assert.unreachable(`${what}: the agent was still running ${EXIT_DEADLINE_MS / 1000} s later; its output:\n${child.log.tail()}`);
  }
  return result as { code: number | null; signal: NodeJS.Signals | null };
}

/** Pod 1 reaches pod 2 (the old table still forwards): waited for, as a loaded machine can delay the first replies. */
async function forwards(cluster: Cluster): Promise<boolean> {
  return eventually(async () => (await ping(cluster, cluster.pod(1).ns, cluster.pod(2).ip, { count: 2, intervalS: 0.2 })).received === 2, 60_000, 500);
}

async function links(cluster: Cluster, ns: string): Promise<string> {
  return (await cluster.exec(ns, 'ip', ['-o', 'link', 'show'])).stdout;
}

// ---------------------------------------------------------------------------

const files = suite('a FIFO, /dev/zero or an oversized file as the leases or subnet file: refused, and SIGTERM always ends the agent');
let fc: Cluster;

files.before(async () => {
  fc = await createCluster({ nodes: 2, dataplane: 'agent' });
});
files.after(async () => {
  await fc?.destroy();
});

files('at start: each is refused with a clear line naming the file and why, exit code 2, nothing created', async () => {
  await fc.stopAgent(1, 'SIGINT'); // SIGINT removes flannel0 (SIGTERM keeps it for the next agent)
  const fifo = join(fc.tempDir, 'fifo');
  execFileSync('mkfifo', [fifo]);
  const big = join(fc.tempDir, 'big-leases.json');
  writeFileSync(big, '');
  truncateSync(big, 60 << 20); // the 60 MB file
  const cases: [string, { subnetFile?: string; leasesFile?: string }, RegExp][] = [
    ['--subnet-file FIFO', { subnetFile: fifo }, /fifo: the subnet file is a FIFO \(named pipe\), not a regular file/],
    ['--leases FIFO', { leasesFile: fifo }, /fifo: the leases file is a FIFO \(named pipe\), not a regular file/],
    ['--leases /dev/zero', { leasesFile: '/dev/zero' }, /\/dev\/zero: the leases file is a device, not a regular file/],
    ['--subnet-file /dev/zero', { subnetFile: '/dev/zero' }, /\/dev\/zero: the subnet file is a device, not a regular file/],
    ['--leases of 60 MB', { leasesFile: big }, /big-leases\.json: the leases file is 62914560 bytes; the limit is 8 MiB/],
  ];
  try {
    for (const [what, opts, message] of cases) {
      const agent = startOwnAgent(fc, 1, opts);
      const exit = await exitsWithin(agent, what);
      assert.is(exit.code, 2, `${what}: ${agent.log.tail()}`);
      assert.match(agent.log.text(), message, what);
      assert.not.match(agent.log.text(), /\n\s+at /, `${what}: a stack trace instead of a clear line`);
      assert.not.match(await links(fc, fc.node(1).ns), /flannel0/, `${what}: a TUN was left behind`);
    }
  } finally {
    rmSync(fifo, { force: true });
    rmSync(big, { force: true });
    await fc.startAgent(1);
  }
});

files('live: the leases file swapped for a FIFO, /dev/zero, 60 MB; each is reported, the old table keeps forwarding, SIGTERM ends the agent', async () => {
  const original = readFileSync(fc.leasesFile, 'utf8');
  const agent = fc.agent(1)!;
  const swap = (make: (tmp: string) => void) => {
    const tmp = `${fc.leasesFile}.new`;
    rmSync(tmp, { force: true });
    make(tmp);
    renameSync(tmp, fc.leasesFile); // mv -T new leases.json
  };
  try {
    swap((tmp) => execFileSync('mkfifo', [tmp]));
    await waitForLine(agent, /leases: .*leases\.json: the leases file is a FIFO \(named pipe\), not a regular file; keeping the last good leases/, 10_000);
    // SIGHUP reads it again: refused again, and the agent still answers.
    const before = agent.log.snapshot().filter((l) => /is a FIFO/.test(l)).length;
    process.kill(agent.pid!, 'SIGHUP');
    const again = await (async () => {
      for (let i = 0; i < 100; i++) {
        if (agent.log.snapshot().filter((l) => /is a FIFO/.test(l)).length > before) return true;
        await new Promise((r) => setTimeout(r, 100));
      }
      return false;
    })();
    assert.ok(again, `SIGHUP did not report the FIFO again:\n${agent.log.tail()}`);
    assert.ok(await forwards(fc), 'pod 1 cannot reach pod 2');

    swap((tmp) => symlinkSync('/dev/zero', tmp));
    await waitForLine(agent, /the leases file is a device, not a regular file; keeping the last good leases/, 10_000);
    swap((tmp) => {
      writeFileSync(tmp, '');
      truncateSync(tmp, 60 << 20);
    });
    await waitForLine(agent, /the leases file is 62914560 bytes; the limit is 8 MiB; keeping the last good leases/, 10_000);
    assert.ok(await forwards(fc), 'pod 1 cannot reach pod 2');

    // A FIFO again, a SIGHUP to read it, then SIGTERM: the agent exits by itself, cleanly,
    // leaving the persistent flannel0 for the next agent as any SIGTERM does.
    swap((tmp) => execFileSync('mkfifo', [tmp]));
    process.kill(agent.pid!, 'SIGHUP');
    await waitForLine(agent, /SIGHUP: re-reading leases/, 5000);
    process.kill(agent.pid!, 'SIGTERM');
    const exit = await exitsWithin(agent, 'SIGTERM with a FIFO as the leases file');
    assert.is(exit.code, 0, agent.log.tail());
    assert.match(agent.log.text(), /stopped; workers and sockets closed/);
    assert.match(await links(fc, fc.node(1).ns), /flannel0/, 'SIGTERM keeps the persistent device');
  } finally {
    rmSync(fc.leasesFile, { force: true });
    writeFileSync(fc.leasesFile, original);
    if (!isRunning(agent)) await fc.startAgent(1);
  }
});

files('a live edit with overlapping leases: the wider of two is rejected and counted, the rest of the edit applies', async () => {
  const original = readFileSync(fc.leasesFile, 'utf8');
  const base = JSON.parse(original) as Record<string, unknown>;
  const agent = fc.agent(1)!;
  const write = (leases: Record<string, unknown>) => {
    writeFileSync(`${fc.leasesFile}.new`, JSON.stringify(leases, null, 1));
    renameSync(`${fc.leasesFile}.new`, fc.leasesFile);
  };
  const udp = (ip: string) => ({ PublicIP: ip, BackendType: 'udp' });
  try {
    write({ ...base, '10.244.70.0-24': udp('192.0.2.70') });
    await waitForLine(agent, /lease added: 10\.244\.70\.0-24 -> 192\.0\.2\.70/, 10_000);
    const counted = async () => {
      const { line } = await requestStatsLine(agent, 10_000);
      return JSON.parse(line) as { leases: string[]; leaseRejections: Record<string, number> };
    };
    const before = (await counted()).leaseRejections;
    // The edit: two overlapping leases, a new valid one, one removed; and one overlapping this node's subnet.
    write({
      ...base,
      '10.244.50.0-24': udp('192.0.2.50'),
      '10.244.50.0-25': udp('192.0.2.51'),
      '10.244.60.0-24': udp('192.0.2.60'),
      '10.244.0.0-23': udp('192.0.2.9'),
    });
    await waitForLine(agent, /lease 10\.244\.50\.0-24 rejected \(subnet-overlaps-lease: /, 10_000);
    await waitForLine(agent, /lease 10\.244\.0\.0-23 rejected \(subnet-overlaps-own: /, 10_000);
    await waitForLine(agent, /lease added: 10\.244\.60\.0-24 -> 192\.0\.2\.60/, 10_000);
    await waitForLine(agent, /lease added: 10\.244\.50\.0-25 -> 192\.0\.2\.51/, 10_000);
    await waitForLine(agent, /lease removed: 10\.244\.70\.0-24 -> 192\.0\.2\.70/, 10_000);
    assert.not.match(agent.log.text(), /overlaps lease .*keeping the last good leases/);
    const after = await counted();
    assert.is(after.leaseRejections['subnet-overlaps-lease'] ?? 0, (before['subnet-overlaps-lease'] ?? 0) + 1, JSON.stringify(after.leaseRejections));
    assert.is(after.leaseRejections['subnet-overlaps-own'] ?? 0, (before['subnet-overlaps-own'] ?? 0) + 1, JSON.stringify(after.leaseRejections));
    assert.equal(after.leases.map((l) => l.split(' ')[0]).sort(), ['10.244.2.0-24', '10.244.50.0-25', '10.244.60.0-24']);
    assert.ok(await forwards(fc), 'pod 1 cannot reach pod 2');
  } finally {
    write(base);
    writeFileSync(fc.leasesFile, original);
  }
});

files.run();

// ---------------------------------------------------------------------------

const slots = suite('health probes from the node itself are served while a few hosts hold every connection they can');
let hc: Cluster;
let healthAgent: CapturedChild | undefined;
const HEALTHZ_PORT = 10256;
const FLOOD_ADDRESSES = Array.from({ length: 10 }, (_, k) => `192.0.2.${101 + k}`);

slots.before(async () => {
  hc = await createCluster({ nodes: 2, dataplane: 'agent' });
  await hc.stopAgent(1);
  healthAgent = startOwnAgent(hc, 1, { extra: ['--healthz-port', String(HEALTHZ_PORT)] });
  await waitForLine(healthAgent, READY, 60_000);
  // Ten more addresses on node 2's underlay side: ten "hosts".
  for (const a of FLOOD_ADDRESSES) await hc.exec(hc.node(2).ns, 'ip', ['addr', 'add', `${a}/24`, 'dev', 'eth0']);
});
slots.after(async () => {
  if (healthAgent && isRunning(healthAgent)) await stopChild(healthAgent, 'SIGTERM');
  await hc?.destroy();
});

async function httpGet(cluster: Cluster, ns: string, url: string): Promise<string> {
  const script = `fetch(${JSON.stringify(url)},{signal:AbortSignal.timeout(15000)}).then(r=>r.text().then(t=>process.stdout.write(r.status+' '+t)),e=>process.stdout.write('error '+e.message))`;
  return (await cluster.exec(ns, process.execPath, ['-e', script], { timeoutMs: 30_000 })).stdout;
}

slots('8 held connections from each of 10 addresses: /healthz from loopback and the node\'s own address answers every time', async () => {
  const n1 = hc.node(1);
  const floods = FLOOD_ADDRESSES.map((a) => hc.spawn(hc.node(2).ns, process.execPath, [join(supportDir, 'conn-flood.js'), n1.underlayIp, String(HEALTHZ_PORT), '8', a]));
  try {
    const settled = await Promise.all(floods.map(async (f) => JSON.parse(await waitForLine(f, /"settled":8/, 120_000)) as { open: number }));
    const held = settled.reduce((sum, s) => sum + s.open, 0);
    console.log(`    flood: ${held} of 80 connections held`);
    // While they are held (the server closes unfinished requests after some seconds), the node's own probes:
    const answers: string[] = [];
    for (let i = 0; i < 5; i++) {
      answers.push(await httpGet(hc, n1.ns, `http://127.0.0.1:${HEALTHZ_PORT}/healthz`));
      answers.push(await httpGet(hc, n1.ns, `http://${n1.underlayIp}:${HEALTHZ_PORT}/healthz`));
    }
    assert.ok(answers.every((a) => a.startsWith('200 ')), `probes from the node itself: ${JSON.stringify(answers)}\n${healthAgent!.log.tail()}`);
    assert.match(healthAgent!.log.text(), /healthz: refused a connection from 192\.0\.2\.1\d\d: 48 from other hosts are open already/);
  } finally {
    for (const f of floods) await stopChild(f, 'SIGKILL');
  }
});

slots.run();

// ---------------------------------------------------------------------------

const small = suite('under a descriptor limit of 64 the agent still serves /healthz and stats, and warns at start');
let lc: Cluster;

small.before(async () => {
  lc = await createCluster({ nodes: 2, dataplane: 'agent' });
  await lc.stopAgent(1);
  runRequiredTool('prlimit', 'util-linux', ['--version']);
});
small.after(async () => {
  await lc?.destroy();
});

small('prlimit --nofile=64:64: a warning at start naming the limit, then /healthz and `flannel-udp stats` answer', async () => {
  const node = lc.node(1);
  const agent = lc.spawn(node.ns, 'prlimit', [
    '--nofile=64:64', process.execPath, agentCliPath, 'up', '--subnet-file', node.subnetFile, '--leases', lc.leasesFile,
    '--public-ip', node.underlayIp, '--workers', '1', '--healthz-port', String(HEALTHZ_PORT),
  ]);
  try {
    await waitForLine(agent, READY, 60_000);
    assert.match(agent.log.text(), /warning: the open-files limit is 64 \(\d+ in use now\): the agent keeps only 16 descriptors in reserve/);
    for (let i = 0; i < 3; i++) {
      assert.match(await httpGet(lc, node.ns, `http://127.0.0.1:${HEALTHZ_PORT}/healthz`), /^200 /, agent.log.tail());
      const stats = await lc.exec(node.ns, process.execPath, [agentCliPath, 'stats', '--json'], { timeoutMs: 15_000 });
      assert.is((JSON.parse(stats.stdout) as { workers: unknown[] }).workers.length, 1, stats.stdout + stats.stderr);
    }
    assert.match(await httpGet(lc, lc.node(2).ns, `http://${node.underlayIp}:${HEALTHZ_PORT}/metrics`), /^200 [^]*flannel_udp_packets_total/);
    assert.not.match(agent.log.text(), /refused a connection/);
  } finally {
    const exit = await stopChild(agent, 'SIGTERM', 20_000);
    assert.is(exit.code, 0, agent.log.tail());
  }
});

small.run();
