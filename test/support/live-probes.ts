// Long-running helpers for the robustness tests and the soak: an open-ended
// TCP transfer (starts before, ends after whatever the test does meanwhile),
// a marker listener in a pod (proves that a datagram did or did not arrive),
// and the raw-socket injector run inside a namespace.
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import type { Cluster, PodInfo } from '../../src/testbed/cluster.js';
import { isRunning, runInNetns, stopChild, waitForLine, type CapturedChild } from '../../src/testbed/exec.js';
import type { TransferResult } from './pod-traffic.js';
import type { InjectPlan, InjectResult } from './udp-inject.js';

const supportDir = dirname(fileURLToPath(import.meta.url));
let nextPort = 16000;

export interface StreamingTransfer {
  /** Resolves once the source has sent at least `mib` MiB. */
  progress(mib: number, timeoutMs?: number): Promise<void>;
  /** MiB sent so far, in steps of 8 (0 before the first 8). */
  sentMiB(): number;
  /** Tells the source to finish (after at least its minimum) and resolves with both ends' hashes. */
  finish(timeoutMs?: number): Promise<TransferResult>;
  /** Stops both ends without waiting for a result (cleanup). */
  stop(): Promise<void>;
}

/**
 * pod `from` → pod `to` over TCP through the data plane: test/support's
 * tcp-sink in `to`, tcp-source --until-sigusr2 in `from`, sending until finish().
 */
export async function startStreamingTransfer(cluster: Cluster, from: PodInfo, to: PodInfo, minBytes: number): Promise<StreamingTransfer> {
  const port = nextPort++;
  const started = Date.now();
  const sink = cluster.spawn(to.ns, process.execPath, [join(supportDir, 'tcp-sink.js'), to.ip, String(port)]);
  let source: CapturedChild | undefined;
  try {
    await waitForLine(sink, /^listening$/, 10_000);
    source = cluster.spawn(from.ns, process.execPath, [join(supportDir, 'tcp-source.js'), to.ip, String(port), String(minBytes), '--until-sigusr2']);
  } catch (err) {
    await stopChild(sink, 'SIGKILL');
    throw err;
  }
  const src = source;
  return {
    progress: async (mib, timeoutMs = 60_000) => {
      // The source prints "sent N" at every multiple of 8 MiB.
      await waitForLine(src, new RegExp(`^sent ${Math.max(8, Math.ceil(mib / 8) * 8)}$`), timeoutMs);
    },
    sentMiB: () => {
      const last = src.log.snapshot().filter((l) => /^sent \d+$/.test(l)).pop();
      return last === undefined ? 0 : Number(last.slice(5));
    },
    finish: async (timeoutMs = 120_000) => {
      src.kill('SIGUSR2');
      const sentLine = await waitForLine(src, /^\{.*sha256/, timeoutMs);
      const receivedLine = await waitForLine(sink, /^\{.*sha256/, 10_000);
      return { sent: JSON.parse(sentLine), received: JSON.parse(receivedLine), seconds: (Date.now() - started) / 1000 };
    },
    stop: async () => {
      await Promise.all([stopChild(src, 'SIGKILL', 1000), stopChild(sink, 'SIGKILL', 1000)]);
    },
  };
}

export interface MarkerListener {
  /** Resolves true once `count` datagrams carrying `marker` have arrived, false if `timeoutMs` passes first. */
  waitFor(marker: string, count: number, timeoutMs: number): Promise<boolean>;
  /** Ends the listener and returns how many UDP datagrams carrying each marker reached the pod's kernel. */
  stop(): Promise<{ seen: Record<string, number>; udp: number }>;
  child: CapturedChild;
}

/** A raw UDP listener in `pod` (test/support/marker-listener.ts). */
export async function startMarkerListener(cluster: Cluster, pod: PodInfo, markers: string[]): Promise<MarkerListener> {
  const child = cluster.spawn(pod.ns, process.execPath, [join(supportDir, 'marker-listener.js'), ...markers]);
  const arrived = new Map<string, number>();
  child.log.on('line', (line: string) => {
    if (line.startsWith('+')) arrived.set(line.slice(1), (arrived.get(line.slice(1)) ?? 0) + 1);
  });
  await waitForLine(child, /^listening$/, 10_000);
  return {
    child,
    waitFor: async (marker, count, timeoutMs) => {
      const deadline = Date.now() + timeoutMs;
      while ((arrived.get(marker) ?? 0) < count) {
        if (Date.now() > deadline || !isRunning(child)) return false;
        await new Promise((r) => setTimeout(r, 20));
      }
      return true;
    },
    stop: async () => {
      child.kill('SIGTERM');
      const line = await waitForLine(child, /^\{"seen"/, 10_000);
      await stopChild(child, 'SIGKILL', 2000);
      return JSON.parse(line);
    },
  };
}

/** Runs test/support/udp-inject.ts inside namespace `ns` (a cluster's, or an attacker's) and returns what it sent. */
export async function inject(cluster: Cluster | undefined, ns: string, plan: InjectPlan, timeoutMs = 300_000): Promise<InjectResult> {
  const args = [join(supportDir, 'udp-inject.js'), JSON.stringify(plan)];
  const { stdout } = cluster ? await cluster.exec(ns, process.execPath, args, { timeoutMs }) : await runInNetns(ns, process.execPath, args, { timeoutMs });
  const result = JSON.parse(stdout.trim().split('\n').pop()!) as InjectResult;
  if (result.errors.length > 0) throw new Error(`the injector in ${ns} reported errors: ${result.errors.join('; ')}`);
  return result;
}

export function injectPlan(overrides: Partial<InjectPlan> & Pick<InjectPlan, 'src' | 'dst'>): InjectPlan {
  return {
    dstPort: 8285,
    srcPortFirst: 40000,
    srcPorts: 64,
    seed: 1,
    counts: {},
    inner: { src: '10.244.3.5', dst: '10.244.2.2', elsewhere: ['8.8.8.8'] },
    rate: 0,
    mtu: 1500,
    ...overrides,
  };
}
