// One repetition on one data plane: build a fresh 2-node testbed, take every
// measurement in a fixed order, and always tear the testbed down.
import { setTimeout as sleep } from 'node:timers/promises';
import { createCluster, type Cluster } from '../../src/testbed/cluster.js';
import { replaceKernelVxlanWithAgent } from '../../src/testbed/vxlan-agents.js';
import type { CapturedChild } from '../../src/testbed/exec.js';
import { interfaceCounters, iperf3Tcp, ping } from '../../src/testbed/measure.js';
import { readAgentCounters, sumAgents, syscallsPerPacket, type AgentCounters } from './agent-counters.js';
import { machineCpuDelta, processCpuSeconds, sampleMachineCpu } from './cpu.js';
import { RR_PERCENTILES, rrKey, type RepResult } from './metrics.js';
import type { BenchPlan } from './options.js';
import { clusterOptionsFor, isAgentPlane, type PlaneSpec } from './planes.js';
import { udpSweep } from './udp-sweep.js';
import { startCproxies } from './cproxy.js';
import { measureIdleLatency } from './idle-latency.js';
import { idleKey } from './metrics.js';
import { meterAgents } from './cpu-budget.js';
import { meteredRun, measureSmallMss, recordTcp1Budget, recordTcp4Budget } from './cpu-budget-runs.js';
import { measureRr, underTcpStream, type LatencyPlan, type RrMeasurement, type RrProtocol } from './latency.js';

const GB = 1e9;
const MIB = 1024 * 1024;
// Busy CPUs, averaged over the idle baseline, above which something else is clearly running.
const BUSY_WHEN_IDLE = 0.3;

export async function runPlaneRep(plane: PlaneSpec, rep: number, plan: BenchPlan, progress: (line: string) => void): Promise<RepResult> {
  const result: RepResult = { planeId: plane.id, rep, figures: {}, detail: {} };
  let cluster: Cluster | undefined;
  try {
    cluster = await createCluster(clusterOptionsFor(plane));
    const vxlanAgents: CapturedChild[] = [];
    if (plane.agentVxlanArgs) {
      for (const n of cluster.nodes()) vxlanAgents.push(await replaceKernelVxlanWithAgent(cluster, n.index, plane.agentVxlanArgs, plane.workers ?? 1));
    }
    const cproxies = plane.cproxy ? await startCproxies(cluster, plan.cproxyPath!) : [];
    await measureFresh(cluster, plane, result, progress, [...vxlanAgents, ...cproxies]);
    await measure(cluster, plane, plan, result, progress, vxlanAgents);
  } catch (err) {
    result.error = (err as Error).message;
    progress(`  ${plane.id} rep ${rep} failed: ${result.error.split('\n')[0]}`);
  } finally {
    await cluster?.destroy();
  }
  return result;
}

async function measure(
  cluster: Cluster,
  plane: PlaneSpec,
  plan: BenchPlan,
  result: RepResult,
  progress: (line: string) => void,
  vxlanAgents: CapturedChild[],
): Promise<void> {
  const { figures, detail } = result;
  const client = cluster.pod(1);
  const server = cluster.pod(2);
  const withAgents = isAgentPlane(plane);
  const agents = vxlanAgents.length > 0 ? vxlanAgents : withAgents ? cluster.nodes().map((n) => cluster.agent(n.index)!) : [];
  const agentCounters = async (): Promise<AgentCounters> => sumAgents(await Promise.all(agents.map((a) => readAgentCounters(a))));
  const agentCpuS = () => agents.reduce((s, a) => s + processCpuSeconds(a.pid!), 0);
  detail.podMtu = cluster.podMtu;

  // What the machine burns with the testbed up and no traffic of ours: idle agents, and other work on a
  // shared box. Not subtracted (under load that work is displaced rather than added), only reported.
  const idleBefore = sampleMachineCpu();
  await sleep(plan.idleBaselineSeconds * 1000);
  const idle = machineCpuDelta(idleBefore, sampleMachineCpu());
  const idleBusyCpus = idle.busyS / idle.wallS;
  figures.idleBusyCpus = idleBusyCpus;
  detail.idleBaseline = idle;
  if (idleBusyCpus > BUSY_WHEN_IDLE) {
    progress(`  note: ${idleBusyCpus.toFixed(2)} CPUs busy before any traffic: other work is sharing the machine, this repetition's figures are disturbed`);
  }

  const atStart = withAgents ? await agentCounters() : undefined;

  const rtt = await ping(cluster, client.ns, server.ip, { count: plan.pingCount, intervalS: plan.pingIntervalS });
  if (rtt.received === 0) throw new Error(`no ping reply from ${server.ip}: the data plane does not forward`);
  figures.pingMinMs = rtt.rttMinMs;
  figures.pingAvgMs = rtt.rttAvgMs;
  detail.ping = rtt;
  progress(`  ping avg ${rtt.rttAvgMs.toFixed(3)} ms (min ${rtt.rttMinMs.toFixed(3)}, ${rtt.received}/${rtt.sent})`);

  await measureRequestResponse(cluster, plan, result, progress);

  // TCP 1 stream, metered: CPU and bytes over the whole iperf3 run, warm-up second included on both sides.
  const beforeTcp1 = withAgents ? await agentCounters() : undefined;
  const budget1 = withAgents ? await meterAgents(agents) : undefined;
  const rxBefore = await interfaceCounters(cluster, server.ns, 'eth0');
  const agentCpuBefore = agentCpuS();
  const machineBefore = sampleMachineCpu();
  const tcp1 = await iperf3Tcp(cluster, server.ns, server.ip, client.ns, { seconds: plan.tcpSeconds, streams: 1, omitSeconds: plan.tcpOmitSeconds });
  const machine = machineCpuDelta(machineBefore, sampleMachineCpu());
  const agentCpuUsed = agentCpuS() - agentCpuBefore;
  const rxAfter = await interfaceCounters(cluster, server.ns, 'eth0');
  const gb = (rxAfter.rxBytes - rxBefore.rxBytes) / GB;
  figures.tcp1Gbps = tcp1.bitsPerSecond / 1e9;
  figures.machineCpuSPerGB = machine.busyS / gb;
  const cpuDetail: Record<string, number> = {
    gbIntoServerPod: gb,
    machineBusyS: machine.busyS,
    stealS: machine.stealS,
    wallS: machine.wallS,
  };
  if (withAgents) {
    figures.agentCpuSPerGB = agentCpuUsed / gb;
    cpuDetail.agentCpuS = agentCpuUsed;
    detail.tcp1Syscalls = syscallsPerPacket(beforeTcp1!, await agentCounters());
    progress(`  CPU budget: ${recordTcp1Budget(result, await budget1!.finish(gb))}`);
  }
  detail.tcp1 = tcp1;
  detail.tcp1Cpu = cpuDetail;
  progress(`  TCP 1 stream ${figures.tcp1Gbps.toFixed(2)} Gbit/s, machine ${figures.machineCpuSPerGB.toFixed(2)} s/GB` +
    (withAgents ? `, agents ${figures.agentCpuSPerGB!.toFixed(2)} s/GB` : ''));

  if (plan.latencyOnly) return;

  const metered4 = await meteredRun(cluster, agents, () =>
    iperf3Tcp(cluster, server.ns, server.ip, client.ns, { seconds: plan.tcpSeconds, streams: 4, omitSeconds: plan.tcpOmitSeconds }));
  const tcp4 = metered4.value;
  figures.tcp4Gbps = tcp4.bitsPerSecond / 1e9;
  detail.tcp4 = tcp4;
  progress(`  TCP 4 streams ${figures.tcp4Gbps.toFixed(2)} Gbit/s` + (metered4.budgets ? `; ${recordTcp4Budget(result, metered4.budgets)}` : ''));
  await measureSmallMss(cluster, plan, result, progress);

  const beforeUdp = withAgents ? await agentCounters() : undefined;
  const sweep = await udpSweep(cluster, client, server, {
    ratesPps: plan.udpRatesPps,
    secondsPerRate: plan.udpSecondsPerRate,
    packetLen: plan.udpPacketLen,
    parallel: plan.udpParallel,
    refineSteps: plan.udpRefineSteps,
  });
  figures.udpLosslessKpps = sweep.losslessPps / 1000;
  figures.udpLosslessInPathKpps = sweep.losslessInPathPps / 1000;
  figures.udpPeakKpps = sweep.peakReceivedPps / 1000;
  detail.udpSweep = sweep;
  progress(`  UDP 64 B: lossless ${figures.udpLosslessKpps.toFixed(1)} k pps, peak ${figures.udpPeakKpps.toFixed(1)} k pps` +
    `  [${sweep.points.map((p) => `${p.targetPps / 1000}k→${(p.receivedPps / 1000).toFixed(1)}k ${p.lossPct.toFixed(1)}%`).join(', ')}]`);

  if (withAgents) {
    // Counters cover the ping, sockperf and iperf3 runs above alike.
    const atEnd = await agentCounters();
    const whole = syscallsPerPacket(atStart!, atEnd);
    figures.syscallsPerPacket = whole.perPacket;
    figures.heapBeforeMiB = atStart!.heapUsedBytes / MIB;
    figures.heapAfterMiB = atEnd.heapUsedBytes / MIB;
    detail.wholeRunSyscalls = whole;
    detail.udpSyscalls = syscallsPerPacket(beforeUdp!, atEnd);
    detail.agentCountersAtEnd = atEnd.totals;
    progress(`  syscalls/packet ${whole.perPacket.toFixed(2)}, worker heap ${figures.heapBeforeMiB.toFixed(1)} → ${figures.heapAfterMiB.toFixed(1)} MiB`);
  }
}

/**
 * Issue 21, first thing on the fresh testbed: ping RTT at three spacings and the
 * forwarding threads' CPU per ping (bench/e2e/idle-latency.ts).
 */
async function measureFresh(cluster: Cluster, plane: PlaneSpec, result: RepResult, progress: (line: string) => void, started: CapturedChild[]): Promise<void> {
  const pids = started.length > 0
    ? started.map((c) => c.pid!)
    : cluster.nodes().map((n) => (plane.dataplane === 'agent' ? cluster.agent(n.index) : cluster.reference(n.index))?.pid).filter((p): p is number => p !== undefined);
  const idle = await measureIdleLatency(cluster, pids);
  for (const x of idle) {
    result.figures[idleKey(x.intervalS, 'AvgMs')] = x.avgMs;
    result.figures[idleKey(x.intervalS, 'P99Ms')] = x.p99Ms;
    if (Number.isFinite(x.cpuUsPerPing)) result.figures[idleKey(x.intervalS, 'CpuUs')] = x.cpuUsPerPing;
  }
  result.detail.idleLatency = idle;
  progress(`  fresh: ${idle.map((x) => `${x.intervalS} s apart ${x.avgMs.toFixed(3)}/${x.p99Ms.toFixed(3)} ms, ${Number.isFinite(x.cpuUsPerPing) ? x.cpuUsPerPing.toFixed(0) + ' µs' : 'n/a'}`).join('; ')}`);
}

/** sockperf ping-pong over UDP and TCP, first on the idle path, then alongside one iperf3 TCP stream. */
async function measureRequestResponse(cluster: Cluster, plan: BenchPlan, result: RepResult, progress: (line: string) => void): Promise<void> {
  const client = cluster.pod(1);
  const server = cluster.pod(2);
  const rr: LatencyPlan = { seconds: plan.rrSeconds, messagesPerSecond: plan.rrMessagesPerSecond, messageBytes: plan.rrMessageBytes };
  let stalls = 0;
  const record = (protocol: RrProtocol, loaded: boolean, m: RrMeasurement) => {
    const what = `${protocol.toUpperCase()} RR ${loaded ? 'under TCP stream' : 'idle'}`;
    result.detail[`${protocol}Rr${loaded ? 'Loaded' : ''}`] = m;
    stalls += m.stalledRuns;
    const stalled = m.stalledRuns ? `; ${m.stalledRuns} run(s) stalled on a lost reply` : '';
    if (!m.latency) {
      progress(`  ${what}: no figure: every one of ${m.runs.length} runs stalled on a lost reply`);
      return;
    }
    const latency = m.latency;
    for (const { suffix, field } of RR_PERCENTILES) result.figures[rrKey(protocol, loaded, suffix)] = latency[field];
    progress(
      `  ${what}: p50 ${latency.p50Us.toFixed(0)} µs, p99 ${latency.p99Us.toFixed(0)} µs, ` +
        `p99.9 ${latency.p999Us.toFixed(0)} µs (${latency.observations} round trips${stalled})`,
    );
  };
  for (const protocol of ['udp', 'tcp'] as const) record(protocol, false, await measureRr(cluster, client, server, protocol, rr));
  // Long enough for both measurements with their retries; stopped as soon as they are done.
  const streamSeconds = 6 * (plan.rrSeconds + 5) + 10;
  const { result: loaded, load } = await underTcpStream(cluster, client, server, streamSeconds, async () => ({
    udp: await measureRr(cluster, client, server, 'udp', rr),
    tcp: await measureRr(cluster, client, server, 'tcp', rr),
  }));
  result.figures.rrLoadTcpGbps = load.gbitPerSecond;
  result.detail.rrLoad = load;
  progress(`  TCP stream alongside: ${load.gbitPerSecond.toFixed(2)} Gbit/s`);
  record('udp', true, loaded.udp);
  record('tcp', true, loaded.tcp);
  result.figures.rrStalledRuns = stalls;
}
