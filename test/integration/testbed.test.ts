// The namespace testbed itself, checked with the kernel's own data planes
// (flannel's host-gw and vxlan backends) so that a failure here is the
// testbed's fault, not the agent's. Needs root.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, readFileSync } from 'node:fs';
import { createCluster, sweepStaleTestbeds, type Cluster, type Dataplane } from '../../src/testbed/cluster.js';
import { run, spawnCaptured, spawnInNetns, stopChild, waitForLine } from '../../src/testbed/exec.js';
import { iperf3Tcp, ping } from '../../src/testbed/measure.js';

const clusterModuleUrl = new URL('../../src/testbed/cluster.js', import.meta.url).href;

async function listNetns(): Promise<string[]> {
  const { stdout } = await run('ip', ['netns', 'list']);
  return stdout.split('\n').map((l) => l.split(/\s+/)[0]!).filter(Boolean);
}

/** A zombie counts as gone: it holds no namespace, and reaping it is its parent's business. */
function pidAlive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

async function waitUntil(check: () => Promise<boolean> | boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return check();
}

async function checkPodToPod(cluster: Cluster, label: string): Promise<void> {
  const [a, b] = [cluster.pod(1), cluster.pod(2)];
  const there = await ping(cluster, a.ns, b.ip, { count: 5, intervalS: 0.2 });
  const back = await ping(cluster, b.ns, a.ip, { count: 5, intervalS: 0.2 });
  const tcp = await iperf3Tcp(cluster, b.ns, b.ip, a.ns, { seconds: 3, streams: 1 });
  console.log(
    `  ${label}: ping p1->p2 ${there.received}/${there.sent} rtt avg ${there.rttAvgMs} ms, ` +
      `p2->p1 ${back.received}/${back.sent} rtt avg ${back.rttAvgMs} ms; ` +
      `iperf3 TCP p1->p2 ${(tcp.bitsPerSecond / 1e9).toFixed(2)} Gbit/s, ${tcp.retransmits} retransmits`,
  );
  assert.is(there.lossPct, 0, `${label}: pod1 -> pod2 ping lost packets`);
  assert.is(back.lossPct, 0, `${label}: pod2 -> pod1 ping lost packets`);
  assert.ok(tcp.bitsPerSecond > 0, `${label}: iperf3 TCP moved no data`);
}

async function withCluster(dataplane: Dataplane, body: (c: Cluster) => Promise<void>): Promise<void> {
  const cluster = await createCluster({ dataplane, nodes: 2 });
  try {
    await body(cluster);
  } finally {
    await cluster.destroy();
  }
}

test('host-gw: pods on two nodes reach each other', async () => {
  await withCluster('host-gw', async (c) => {
    assert.is(c.podMtu, 1500);
    const routes = await c.exec(c.node(1).ns, 'ip', ['route', 'show', '10.244.2.0/24']);
    assert.match(routes.stdout, /via 192\.0\.2\.2 dev eth0/);
    await checkPodToPod(c, 'host-gw');
  });
});

test('kernel-vxlan: pods on two nodes reach each other through flannel.1', async () => {
  await withCluster('kernel-vxlan', async (c) => {
    assert.is(c.podMtu, 1450);
    const n1 = c.node(1).ns;
    const link = await c.exec(n1, 'ip', ['-d', 'link', 'show', 'flannel.1']);
    assert.match(link.stdout, /mtu 1450/);
    assert.match(link.stdout, /vxlan id 1 local 192\.0\.2\.1 dev eth0.* dstport 8472 nolearning/);
    const fdb = await c.exec(n1, 'bridge', ['fdb', 'show', 'dev', 'flannel.1']);
    assert.match(fdb.stdout, /0e:66:75:00:00:02 dst 192\.0\.2\.2 self permanent/);
    const route = await c.exec(n1, 'ip', ['route', 'show', '10.244.2.0/24']);
    assert.match(route.stdout, /via 10\.244\.2\.0 dev flannel\.1 onlink/);
    await checkPodToPod(c, 'kernel-vxlan');
  });
});

test('destroy removes every namespace and file, and may be called twice', async () => {
  const cluster = await createCluster({ dataplane: 'none', nodes: 3, podsPerNode: 2 });
  let destroyed = false;
  try {
    const names = [...cluster.namespaces];
    assert.is(names.length, 1 + 3 + 3 * 2);
    const before = await listNetns();
    for (const ns of names) assert.ok(before.includes(ns), `${ns} should exist`);
    assert.ok(existsSync(cluster.leasesFile));
    const sleeper = cluster.spawn(cluster.pod(3, 1).ns, 'sleep', ['600']);
    await cluster.destroy();
    await cluster.destroy();
    destroyed = true;
    const after = await listNetns();
    for (const ns of names) assert.not.ok(after.includes(ns), `${ns} should be gone`);
    assert.not.ok(existsSync(cluster.tempDir), 'temp dir should be gone');
    assert.not.ok(sleeper.pid !== undefined && pidAlive(sleeper.pid), 'process in a pod should be stopped');
  } finally {
    if (!destroyed) await cluster.destroy();
  }
});

/**
 * A separate node process that builds a small cluster, optionally with a
 * process of its own in a pod, then waits to be killed.
 */
function startClusterOwner(withSleeper: boolean) {
  const script = `
    import { createCluster } from ${JSON.stringify(clusterModuleUrl)};
    const c = await createCluster({ dataplane: 'none', nodes: 1 });
    const sleeper = ${withSleeper} ? c.spawn(c.pod(1).ns, 'sleep', ['600']) : { pid: 0 };
    // Reported once the sleeper runs in the pod (ip netns exec has exec'd it), not after a guessed time.
    for (let i = 0; ${withSleeper} && (await import('node:fs')).readFileSync('/proc/' + sleeper.pid + '/comm', 'utf8').trim() !== 'sleep'; i++) {
      if (i === 500) throw new Error('the sleeper did not start within 5 s');
      await new Promise((r) => setTimeout(r, 10));
    }
    console.log('OWNER ' + JSON.stringify({ namespaces: c.namespaces, sleeper: sleeper.pid, tempDir: c.tempDir }));
    setInterval(() => {}, 1000);
  `;
  return spawnCaptured(process.execPath, ['--input-type=module', '-e', script]);
}

async function ownerState(owner: ReturnType<typeof startClusterOwner>) {
  const line = await waitForLine(owner, /^OWNER /, 20_000);
  return JSON.parse(line.slice('OWNER '.length)) as { namespaces: string[]; sleeper: number; tempDir: string };
}

test('the safety net removes everything when the owning process gets SIGTERM', async () => {
  const owner = startClusterOwner(true);
  let state: Awaited<ReturnType<typeof ownerState>> | undefined;
  try {
    state = await ownerState(owner);
    owner.kill('SIGTERM');
    const { signal } = await owner.exited;
    assert.is(signal, 'SIGTERM', 'owner should die of the re-raised signal');
    const after = await listNetns();
    for (const ns of state.namespaces) assert.not.ok(after.includes(ns), `${ns} should be gone`);
    assert.ok(await waitUntil(() => !pidAlive(state!.sleeper), 3000), 'process in the pod should be killed');
    assert.not.ok(existsSync(state.tempDir));
  } finally {
    await stopChild(owner, 'SIGKILL');
    await sweepStaleTestbeds();
    if (state && pidAlive(state.sleeper)) process.kill(state.sleeper, 'SIGKILL');
  }
});

test('sweepStaleTestbeds removes what a SIGKILLed run left behind', async () => {
  const owner = startClusterOwner(false);
  let state: Awaited<ReturnType<typeof ownerState>> | undefined;
  // Started by this process (not the owner) so that, once swept, it is reaped here instead of becoming init's zombie.
  let stray: ReturnType<typeof spawnInNetns> | undefined;
  try {
    state = await ownerState(owner);
    stray = spawnInNetns(state.namespaces.at(-1)!, 'sleep', ['600']);
    owner.kill('SIGKILL');
    await owner.exited;
    const left = await listNetns();
    for (const ns of state.namespaces) assert.ok(left.includes(ns), `${ns} should survive SIGKILL`);
    const removed = await sweepStaleTestbeds();
    assert.equal([...removed].sort(), [...state.namespaces].sort());
    const after = await listNetns();
    for (const ns of state.namespaces) assert.not.ok(after.includes(ns), `${ns} should be swept`);
    const { signal } = await stray.exited;
    assert.is(signal, 'SIGKILL', 'process in the stale pod should be killed by the sweep');
    assert.not.ok(existsSync(state.tempDir), 'stale temp dir should be removed');
  } finally {
    await stopChild(owner, 'SIGKILL');
    await sweepStaleTestbeds();
    if (stray) await stopChild(stray, 'SIGKILL');
  }
});

test.run();
