// Traffic between pods of a testbed cluster, for integration tests: a TCP
// transfer whose sha256 is compared on both ends, and a UDP probe that waits
// for the ICMP error it should cause.
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import type { Cluster, PodInfo } from '../../src/testbed/cluster.js';
import { waitForLine } from '../../src/testbed/exec.js';

const supportDir = dirname(fileURLToPath(import.meta.url));
let nextPort = 15000;

export interface TransferResult {
  sent: { bytes: number; sha256: string };
  received: { bytes: number; sha256: string };
  seconds: number;
}

/** Sends `bytes` from one pod to another over TCP; returns what each end hashed. */
export async function tcpTransfer(cluster: Cluster, from: PodInfo, to: PodInfo, bytes: number, timeoutMs = 120_000): Promise<TransferResult> {
  const port = nextPort++;
  const sink = cluster.spawn(to.ns, process.execPath, [join(supportDir, 'tcp-sink.js'), to.ip, String(port)]);
  await waitForLine(sink, /^listening$/, 10_000);
  const started = Date.now();
  const source = await cluster.exec(from.ns, process.execPath, [join(supportDir, 'tcp-source.js'), to.ip, String(port), String(bytes)], {
    timeoutMs,
  });
  const receivedLine = await waitForLine(sink, /^\{.*sha256/, 10_000);
  return { sent: JSON.parse(source.stdout.trim().split('\n').pop()!), received: JSON.parse(receivedLine), seconds: (Date.now() - started) / 1000 };
}

export interface IcmpProbeResult {
  received: boolean;
  type?: number;
  code?: number;
  from?: string;
}

/** Sends a UDP datagram from `pod` to host:port and reports the ICMP unreachable that came back, if any. */
export async function udpIcmpProbe(cluster: Cluster, pod: PodInfo, host: string, port: number, timeoutMs = 3000): Promise<IcmpProbeResult> {
  const { stdout } = await cluster.exec(pod.ns, process.execPath, [join(supportDir, 'icmp-probe.js'), host, String(port), String(timeoutMs)], {
    timeoutMs: timeoutMs + 10_000,
  });
  return JSON.parse(stdout.trim().split('\n').pop()!);
}

/** Polls `check` until it returns true or the time is up. */
export async function eventually(check: () => Promise<boolean>, timeoutMs: number, stepMs = 100): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return true;
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, stepMs));
  }
}
