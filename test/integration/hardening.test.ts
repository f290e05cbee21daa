// Issue 15, live: no bad config takes a node off the network, nothing on the
// underlay exhausts the agent. Real agents in namespaces of this test's
// clusters: a Network wide enough to take the node's routes is refused and
// every route stays as it was; a flood of unfinished HTTP requests leaves the
// agent's stats, health probes and iptables repair working; bad leases are
// rejected one by one while the good ones forward; after kill -9 a restart
// with another subnet replaces the stale masquerade rules.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { agentCliPath, createCluster, type Cluster } from '../../src/testbed/cluster.js';
import { ping } from '../../src/testbed/measure.js';
import { isRunning, runInNetns, stopChild, waitForLine, type CapturedChild } from '../../src/testbed/exec.js';
import { requestStatsLine } from '../../src/testbed/agent-signal.js';
import { eventually } from '../support/pod-traffic.js';

const supportDir = join(dirname(fileURLToPath(import.meta.url)), '../support');
const READY = /flannel-udp agent ready/;

/** Starts node i's agent as the testbed does, with extra flags and an optional descriptor limit. */
function startOwnAgent(cluster: Cluster, i: number, extra: string[] = [], opts: { nofile?: number; subnetFile?: string } = {}): CapturedChild {
  const node = cluster.node(i);
  const args = [
    agentCliPath, 'up', '--subnet-file', opts.subnetFile ?? node.subnetFile, '--leases', cluster.leasesFile,
    '--public-ip', node.underlayIp, '--workers', '1', ...extra,
  ];
  if (opts.nofile === undefined) return cluster.spawn(node.ns, process.execPath, args);
  // exec: the shell becomes node, so signals and the pid are the agent's.
  return cluster.spawn(node.ns, 'sh', ['-c', `ulimit -n ${opts.nofile} && exec "$0" "$@"`, process.execPath, ...args]);
}

async function routes(cluster: Cluster, ns: string): Promise<string> {
  return (await cluster.exec(ns, 'ip', ['-4', 'route', 'show', 'table', 'main'])).stdout;
}

async function links(cluster: Cluster, ns: string): Promise<string> {
  return (await cluster.exec(ns, 'ip', ['-o', 'link', 'show'])).stdout;
}

async function httpGet(cluster: Cluster, ns: string, url: string): Promise<string> {
  const script = `fetch(${JSON.stringify(url)},{signal:AbortSignal.timeout(3000)}).then(r=>r.text().then(t=>process.stdout.write(r.status+' '+t)),e=>process.stdout.write('error '+e.message))`;
  return (await cluster.exec(ns, process.execPath, ['-e', script], { timeoutMs: 10_000 })).stdout;
}

// ---------------------------------------------------------------------------

const wide = suite('a Network that would take the node\'s own routes is refused; routes stay exactly as they were');
let bare: Cluster;

wide.before(async () => {
  bare = await createCluster({ nodes: 2, dataplane: 'none' });
  // A default route, as every real node has (the gateway need not answer: nothing is sent to it).
  await bare.exec(bare.node(1).ns, 'ip', ['route', 'add', 'default', 'via', '192.0.2.254', 'dev', 'eth0']);
});
wide.after(async () => {
  await bare?.destroy();
});

async function refusedWith(network: string, expected: RegExp, subnet = '10.244.1.1/24'): Promise<void> {
  const node = bare.node(1);
  const subnetFile = join(bare.tempDir, `wide-${network.replace(/[./]/g, '_')}.env`);
  writeFileSync(subnetFile, `FLANNEL_NETWORK=${network}\nFLANNEL_SUBNET=${subnet}\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n`);
  const before = await routes(bare, node.ns);
  const agent = startOwnAgent(bare, 1, [], { subnetFile });
  // Whichever comes first: the agent exits (refused), or it gets ready (accepted: stopped, and the test fails).
  const accepted = await Promise.race([agent.exited.then(() => false), waitForLine(agent, READY, 20_000).then(() => true, () => false)]);
  if (accepted) await stopChild(agent, 'SIGTERM');
  const exit = await agent.exited;
  assert.not.ok(accepted, `Network ${network} was accepted; the agent's output:\n${agent.log.tail()}`);
  assert.is(exit.code, 2, `Network ${network}: the agent was not refused; its output:\n${agent.log.tail()}`);
  assert.match(agent.log.text(), /refusing to route the pod network into flannel0/);
  assert.match(agent.log.text(), expected);
  assert.not.match(agent.log.text(), /\n\s+at /, 'a stack trace instead of a clear line');
  assert.is(await routes(bare, node.ns), before, 'the routes changed');
  assert.not.match(await links(bare, node.ns), /flannel0/);
}

wide('0.0.0.0/0 is refused before anything is created: the default route stays', async () => {
  await refusedWith('0.0.0.0/0', /would replace this node's route "default via 192\.0\.2\.254 dev eth0"/);
});

wide('a Network holding the underlay address (and its gateway) is refused', async () => {
  await refusedWith('192.0.0.0/8', /contains 192\.0\.2\.1, an address of this node \(eth0\)/, '192.10.1.1/24');
});

wide('a route for the Network that another device holds is not replaced, and is still there after exit', async () => {
  const ns = bare.node(1).ns;
  await bare.exec(ns, 'ip', ['route', 'add', '10.244.0.0/16', 'via', '192.0.2.253', 'dev', 'eth0']);
  try {
    await refusedWith('10.244.0.0/16', /would replace this node's route "10\.244\.0\.0\/16 via 192\.0\.2\.253 dev eth0", which flannel-udp did not create/);
    assert.match(await routes(bare, ns), /^10\.244\.0\.0\/16 via 192\.0\.2\.253 dev eth0/m);
  } finally {
    await bare.exec(ns, 'ip', ['route', 'del', '10.244.0.0/16', 'via', '192.0.2.253']).catch(() => undefined);
  }
});

wide('a usual Network runs, and after SIGINT (a clean exit) the route table is exactly what it was', async () => {
  const ns = bare.node(1).ns;
  const before = await routes(bare, ns);
  const agent = startOwnAgent(bare, 1);
  try {
    await waitForLine(agent, READY, 15_000);
    assert.match(await routes(bare, ns), /^10\.244\.0\.0\/16 dev flannel0/m);
  } finally {
    const exit = await stopChild(agent, 'SIGINT');
    assert.is(exit.code, 0, agent.log.tail());
  }
  assert.is(await routes(bare, ns), before);
});

wide.run();

// ---------------------------------------------------------------------------

const flood = suite('a flood of unfinished HTTP requests: the agent keeps its descriptors for its own work');
let fc: Cluster;
let flooded: CapturedChild | undefined;
const HEALTHZ_PORT = 10256;

flood.before(async () => {
  fc = await createCluster({ nodes: 2, dataplane: 'agent' });
  await fc.stopAgent(1);
  // 256 descriptors: the agent itself uses a few dozen; an unbounded server would hand the rest to the flood.
  flooded = startOwnAgent(fc, 1, ['--healthz-port', String(HEALTHZ_PORT), '--ip-masq', '--iptables-resync', '1'], { nofile: 256 });
  await waitForLine(flooded, READY, 15_000);
});
flood.after(async () => {
  if (flooded && isRunning(flooded)) await stopChild(flooded, 'SIGTERM');
  await fc?.destroy();
});

async function established(ns: string): Promise<number> {
  const { stdout } = await runInNetns(ns, 'ss', ['-Htn', 'state', 'established', `( sport = :${HEALTHZ_PORT} )`]);
  return stdout.split('\n').filter((l) => l.trim() !== '').length;
}

flood('1000 held connections from one peer: stats, /healthz from elsewhere and the iptables repair keep working; the held ones are closed', async () => {
  const n1 = fc.node(1);
  const attacker = fc.spawn(fc.node(2).ns, process.execPath, [join(supportDir, 'conn-flood.js'), n1.underlayIp, String(HEALTHZ_PORT), '1000']);
  try {
    const settled = JSON.parse(await waitForLine(attacker, /"settled":1000/, 60_000));
    console.log(`    flood settled: ${JSON.stringify(settled)}`);
    // The agent holds at most its per-client cap of them.
    const capped = await eventually(async () => (await established(n1.ns)) <= 8, 5000, 100);
    assert.ok(capped, `the agent holds ${await established(n1.ns)} connections from one client`);
    assert.ok(isRunning(flooded!), `the agent died:\n${flooded!.log.tail()}`);

    // Its own work: the control socket, a health probe from another address, a spawned iptables.
    const stats = await runInNetns(n1.ns, process.execPath, [agentCliPath, 'stats', '--json'], { timeoutMs: 15_000 });
    assert.ok(JSON.parse(stats.stdout).workers.length === 1, stats.stdout + stats.stderr);
    assert.match(await httpGet(fc, n1.ns, `http://127.0.0.1:${HEALTHZ_PORT}/healthz`), /^200 /);
    await runInNetns(n1.ns, 'iptables', ['-w', '-t', 'nat', '-D', 'POSTROUTING', '-m', 'comment', '--comment', 'flanneld masq', '-j', 'FLANNEL-POSTRTG']);
    const repaired = await eventually(async () => {
      const { stdout } = await runInNetns(n1.ns, 'iptables', ['-w', '-t', 'nat', '-S', 'POSTROUTING']);
      return stdout.includes('-j FLANNEL-POSTRTG');
    }, 10_000, 200);
    assert.ok(repaired, `the masquerade jump was not put back:\n${flooded!.log.tail()}`);
    assert.not.match(flooded!.log.text(), /ip-masq: checking the rules failed/);
    assert.match(flooded!.log.text(), /healthz: refused a connection from 192\.0\.2\.2: it has 8 open already/);

    // The held requests never finish: the server closes them (headers timeout), and the peer is served again.
    await waitForLine(attacker, /^\{"open":0\}$/, 30_000);
    assert.match(await httpGet(fc, fc.node(2).ns, `http://${n1.underlayIp}:${HEALTHZ_PORT}/readyz`), /^200 ready/);
    assert.is((await ping(fc, fc.pod(1).ns, fc.pod(2).ip, { count: 2, intervalS: 0.2 })).received, 2);
  } finally {
    await stopChild(attacker, 'SIGKILL');
  }
});

flood.run();

// ---------------------------------------------------------------------------

const sense = suite('leases that make no sense are rejected one by one; the good ones keep forwarding');
let sc: Cluster;

sense.before(async () => {
  sc = await createCluster({ nodes: 2, dataplane: 'agent' });
});
sense.after(async () => {
  await sc?.destroy();
});

sense('bad PublicIPs and subnets are logged with key and reason, counted, and left out; unknown fields are ignored once', async () => {
  const original = readFileSync(sc.leasesFile, 'utf8');
  const leases = JSON.parse(original) as Record<string, Record<string, unknown>>;
  const bad: Record<string, [object, string]> = {
    '10.244.50.0-24': [{ PublicIP: '224.0.0.1', BackendType: 'udp' }, 'public-ip-multicast'],
    '10.244.51.0-24': [{ PublicIP: '0.0.0.0', BackendType: 'udp' }, 'public-ip-unspecified'],
    '10.244.52.0-24': [{ PublicIP: '127.0.0.1', BackendType: 'udp' }, 'public-ip-loopback'],
    '10.244.53.0-24': [{ PublicIP: sc.node(1).underlayIp, BackendType: 'udp' }, 'public-ip-own'],
    '10.244.54.0-24': [{ PublicIP: '255.255.255.255', BackendType: 'udp' }, 'public-ip-broadcast'],
    '10.250.0.0-24': [{ PublicIP: '192.0.2.77', BackendType: 'udp' }, 'subnet-outside-network'],
  };
  for (const [key, [attrs]] of Object.entries(bad)) leases[key] = attrs as Record<string, unknown>;
  // A newer flanneld's field on node 2's good lease.
  leases['10.244.2.0-24'] = { ...leases['10.244.2.0-24'], FutureField: { x: 1 } };
  const agent = sc.agent(1)!;
  try {
    writeFileSync(`${sc.leasesFile}.tmp`, JSON.stringify(leases));
    renameSync(`${sc.leasesFile}.tmp`, sc.leasesFile);
    for (const [key, [, reason]] of Object.entries(bad)) {
      await waitForLine(agent, new RegExp(`lease ${key.replace(/\./g, '\\.')} rejected \\(${reason}: `), 10_000);
    }
    await waitForLine(agent, /lease 10\.244\.2\.0-24: unknown attribute "FutureField" ignored/, 10_000);
    const { line } = await requestStatsLine(agent, 10_000);
    const stats = JSON.parse(line) as { leases: string[]; rejectedLeases: string[]; leaseRejections: Record<string, number> };
    for (const [key, [, reason]] of Object.entries(bad)) {
      assert.ok(stats.leaseRejections[reason] >= 1, `${reason} not counted: ${JSON.stringify(stats.leaseRejections)}`);
      assert.ok(stats.rejectedLeases.some((l) => l.startsWith(`${key}: ${reason}`)), JSON.stringify(stats.rejectedLeases));
      assert.not.ok(stats.leases.some((l) => l.startsWith(`${key} `)), `${key} is in the lease table`);
    }
    assert.ok(stats.leases.some((l) => l.startsWith('10.244.2.0-24 ')), 'the good lease with an unknown field is in the table');
    assert.is((await ping(sc, sc.pod(1).ns, sc.pod(2).ip, { count: 3, intervalS: 0.2 })).received, 3);
    // Once per field name, however often the snapshot comes again.
    process.kill(agent.pid!, 'SIGHUP');
    await waitForLine(agent, /SIGHUP: re-reading leases/, 5000);
    await requestStatsLine(agent, 10_000);
    assert.is(agent.log.snapshot().filter((l) => /unknown attribute "FutureField"/.test(l)).length, 1);
  } finally {
    writeFileSync(`${sc.leasesFile}.tmp`, original);
    renameSync(`${sc.leasesFile}.tmp`, sc.leasesFile);
  }
});

sense.run();

// ---------------------------------------------------------------------------

const crash = suite('after kill -9, a restart with another subnet replaces the stale masquerade rules');
let cc: Cluster;

crash.before(async () => {
  cc = await createCluster({ nodes: 2, dataplane: 'agent', agentArgs: ['--ip-masq'] });
});
crash.after(async () => {
  await cc?.destroy();
});

async function natRules(ns: string): Promise<string[]> {
  return (await runInNetns(ns, 'iptables', ['-w', '-t', 'nat', '-S'])).stdout.trim().split('\n');
}

crash('the old subnet\'s rules stay until the restart, then only the new subnet\'s are there, one jump, all gone after SIGINT (a clean exit)', async () => {
  const ns = cc.node(1).ns;
  const ours = (l: string) => /FLANNEL-POSTRTG|flanneld masq/.test(l);
  const base = (await natRules(ns)).filter((l) => !ours(l));
  assert.ok((await natRules(ns)).some((l) => l.includes('-s 10.244.1.0/24 -d 10.244.0.0/16')));
  const exit = await cc.stopAgent(1, 'SIGKILL');
  assert.is(exit.signal, 'SIGKILL');
  // Documented crash behaviour: the kernel keeps the rules; nothing removes them but the next start.
  assert.ok((await natRules(ns)).some((l) => l.includes('-s 10.244.1.0/24 -d 10.244.0.0/16')), 'the rules are gone after kill -9');

  const subnetFile = join(cc.tempDir, 'n1-moved.env');
  writeFileSync(subnetFile, 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.9.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n');
  const agent = startOwnAgent(cc, 1, ['--ip-masq'], { subnetFile });
  try {
    await waitForLine(agent, READY, 15_000);
    const rules = await natRules(ns);
    assert.not.ok(rules.some((l) => l.includes('10.244.1.0/24')), `stale rules of 10.244.1.0/24:\n${rules.join('\n')}`);
    assert.ok(rules.includes('-A FLANNEL-POSTRTG -s 10.244.9.0/24 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j RETURN'), rules.join('\n'));
    assert.is(rules.filter((l) => l.startsWith('-A POSTROUTING') && l.includes('FLANNEL-POSTRTG')).length, 1, rules.join('\n'));
  } finally {
    const stopped = await stopChild(agent, 'SIGINT');
    assert.is(stopped.code, 0, agent.log.tail());
  }
  assert.equal(await natRules(ns), base);
});

crash.run();

// ---------------------------------------------------------------------------

const spawnFail = suite('the --ip-masq repair loop keeps checking when the agent has no descriptor left (iptables runs in the command helper)');
let one: Cluster;

spawnFail.before(async () => {
  one = await createCluster({ nodes: 1, dataplane: 'none' });
});
spawnFail.after(async () => {
  await one?.destroy();
});

spawnFail('with no descriptor left in the agent, no check fails and no rule is reported missing; the rules are intact and removed at the end', async () => {
  const ns = one.node(1).ns;
  const child = one.spawn(ns, 'sh', ['-c', 'ulimit -n 128 && exec "$0" "$@"', process.execPath, join(supportDir, 'ipmasq-emfile.js')]);
  const exit = await child.exited;
  const out = child.log.text();
  assert.is(exit.code, 0, out);
  assert.match(out, /holding \d+ descriptors/);
  // Before the command helper, the check itself could not be spawned here (EMFILE, logged as such);
  // now the helper, with its own descriptors, runs it.
  assert.not.match(out, /checking the rules failed/, out);
  assert.not.match(out, /rule missing/, out);
  assert.equal((await natRules(ns)).filter((l) => /FLANNEL-POSTRTG|flanneld masq/.test(l)), []);
});

spawnFail.run();
