// Restarts keep traffic (issue 22): pings 10 ms apart from a pod on node 1 to
// a pod on node 2 while node 1's agent is restarted, counted as packets, and
// a TCP connection between the pods that must survive each restart.
//
//   hand-over (a DaemonSet rolling update with maxSurge 1: the new agent
//   starts while the old one runs): not one ping lost.
//   SIGTERM then start, SIGKILL then start: flannel0 keeps its address and
//   routes, so the only loss is while no agent runs at all: one run of
//   consecutive pings, none lost once the new agent has attached (packets
//   wait in the TUN queues and socket buffers while it warms up). How long
//   that run is depends on how fast a process starts on this machine;
//   bench/restart-gap.ts measures it (README, "Restarts").
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createCluster, type Cluster } from '../../src/testbed/cluster.js';
import { stopChild, waitForLine, type CapturedChild } from '../../src/testbed/exec.js';
import { measureRestartGap, type RestartKind } from '../../src/testbed/restart-gap.js';
import { ping } from '../../src/testbed/measure.js';
import { eventually } from '../support/pod-traffic.js';

const supportDir = join(dirname(fileURLToPath(import.meta.url)), '../support');
const restart = suite('agent restarts keep traffic');
let cluster: Cluster;
let server: CapturedChild | undefined;
let client: CapturedChild | undefined;
let echoes = 1;
let localPort = '';

restart.before(async () => {
  try {
    cluster = await createCluster({ nodes: 2, dataplane: 'agent', workers: 2 });
    const [p1, p2] = [cluster.pod(1), cluster.pod(2)];
    // The path first (waited for: on a loaded machine a fresh agent's first packets can be late), so the
    // one TCP connection the tests follow is not opened into a path that is not there yet.
    const reachable = await eventually(async () => (await ping(cluster, p1.ns, p2.ip, { count: 1 })).received === 1, 30_000, 200);
    if (!reachable) throw new Error(`pod 1 did not reach pod 2 within 30 s:\n${cluster.agent(1)?.log.tail(20)}`);
    const port = 18000 + Math.floor(Math.random() * 1000);
    server = cluster.spawn(p2.ns, process.execPath, [join(supportDir, 'tcp-echo.js'), 'server', p2.ip, String(port)]);
    await waitForLine(server, /^listening$/, 20_000);
    client = cluster.spawn(p1.ns, process.execPath, [join(supportDir, 'tcp-echo.js'), 'client', p2.ip, String(port)]);
    const first = await waitForLine(client, /^echo 1 /, 30_000);
    localPort = /from port (\d+)/.exec(first)![1];
  } catch (err) {
    // uvu swallows a before hook's error (its tests are only counted as not run): print it.
    console.error(`agent restarts: setup failed: ${(err as Error).stack ?? err}`);
    throw err;
  }
});
restart.after(async () => {
  if (client) await stopChild(client, 'SIGKILL', 1000);
  if (server) await stopChild(server, 'SIGKILL', 1000);
  await cluster?.destroy();
});

/** The TCP connection opened before the first restart still carries data, on the same connection. */
async function connectionSurvives(after: string): Promise<void> {
  echoes++;
  client!.kill('SIGUSR2');
  const line = await waitForLine(client!, new RegExp(`^echo ${echoes} |^error|^closed`), 60_000);
  assert.match(line, new RegExp(`^echo ${echoes} from port ${localPort}$`), `the TCP connection after ${after}: ${line}\n${client!.log.tail()}`);
}

function lostRuns(missing: number[]): number[][] {
  const runs: number[][] = [];
  for (const seq of missing) {
    const last = runs[runs.length - 1];
    if (last && last[last.length - 1] === seq - 1) last.push(seq);
    else runs.push([seq]);
  }
  return runs;
}

restart('hand-over (the new agent starts while the old one runs, as with maxSurge 1): not one of 500 pings is lost, the TCP connection survives', async () => {
  const r = await measureRestartGap(cluster, 'handover');
  assert.is(r.sent, 500);
  assert.is(r.lost, 0, `${r.lost} of ${r.sent} pings lost in the hand-over (missing: ${r.missing.join(',')})\n${cluster.agent(1)!.log.tail()}`);
  assert.match(cluster.agent(1)!.log.text(), /another agent forwards on it; taking over once this one is ready \(hand-over\)/);
  await connectionSurvives('the hand-over');
});

for (const kind of ['sigterm', 'sigkill'] as RestartKind[]) {
  restart(`${kind === 'sigterm' ? 'SIGTERM' : 'SIGKILL'} then a new agent: the pings lost are one run while no agent ran, none after the new one attached; the TCP connection survives`, async () => {
    const r = await measureRestartGap(cluster, kind);
    assert.is(r.sent, 500);
    assert.ok(r.received > 0 && r.missing.every((seq) => seq > 50), `lost before the restart began: ${r.missing.join(',')}`);
    const runs = lostRuns(r.missing);
    assert.ok(runs.length <= 1, `pings lost in ${runs.length} separate runs (${runs.map((x) => `${x[0]}-${x[x.length - 1]}`).join(', ')}): some were dropped after the new agent attached`);
    assert.ok(r.missing.every((seq) => seq < r.sent), 'the last ping was answered: traffic flows again');
    console.log(`    ${kind}: ${r.lost} of ${r.sent} pings lost (goal: at most 20)`);
    await connectionSurvives(kind);
  });
}

restart.run();
