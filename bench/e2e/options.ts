// Command-line flags of the end-to-end benchmark, turned into the plan it follows.
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { PLANE_IDS, planeById, CPROXY_PLANE, type PlaneSpec } from './planes.js';
import { cproxyPath } from './cproxy.js';

export interface BenchPlan {
  quick: boolean;
  reps: number;
  planes: PlaneSpec[];
  /** iperf3 TCP: measured seconds, after omitSeconds that are thrown away. */
  tcpSeconds: number;
  tcpOmitSeconds: number;
  /** UDP 64 B sweep: target packets per second, in the order tried. */
  udpRatesPps: number[];
  udpSecondsPerRate: number;
  /** iperf3 pairs run side by side per rate: one iperf3 (single-threaded) cannot offer or absorb enough. */
  udpParallel: number;
  /** Bisection steps between the last lossless and the first lossy sweep rate. */
  udpRefineSteps: number;
  udpPacketLen: number;
  pingCount: number;
  pingIntervalS: number;
  /** Idle time before the CPU-metered run, to learn what the machine burns without our traffic. */
  idleBaselineSeconds: number;
  /** sockperf ping-pong (UDP and TCP, idle and under a TCP stream): seconds per run, requests per second, bytes. */
  rrSeconds: number;
  rrMessagesPerSecond: number;
  rrMessageBytes: number;
  /** --latency-only: no TCP 4-stream run and no UDP sweep (TCP 1 stream stays: a target needs it). */
  latencyOnly: boolean;
  /** The previous recorded run, for targets that compare with "before" (absent: those are n/a). */
  baselineFile: string;
  outDir: string;
  /** flannel's C proxy binary (--cproxy PATH or FLANNEL_CPROXY): measured as the first plane. */
  cproxyPath?: string;
}

/** The planes the latency targets compare. */
export const QUICK_SUBSET = ['kernel-vxlan', 'reference', 'agent'];

export const USAGE = `Usage: npm run bench -- [--quick] [--latency-only] [--reps N] [--only ${PLANE_IDS.slice(0, 2).join(',')}] [--out DIR]

  --quick         smoke run: 1 repetition, 2 s TCP runs, 3 sweep points of 1 s, 3 s sockperf runs
  --latency-only  ping, sockperf and TCP 1 stream only (no TCP 4 streams, no UDP sweep)
  --reps N        repetitions per data plane, interleaved across planes [default: 3]
  --only LIST     comma-separated data planes [default: all: ${PLANE_IDS.join(',')}]
  --out DIR       where latest.{md,json,svg} go [default: bench/results]
  --cproxy PATH   flannel's C proxy (bash ../shared/anchors/flannel-cproxy/build.sh PATH), measured
                  as a plane of this run [default: FLANNEL_CPROXY; absent: not measured]
  --baseline FILE an earlier run's latest.json, for the "not lower than before" target
                  [default: bench/results/latest.json, read before this run writes anything]

  A short try on a busy machine, leaving bench/results alone:
    npm run bench -- --quick --latency-only --only ${QUICK_SUBSET.join(',')} --out /tmp/bench
`;

const FULL_SWEEP = [20_000, 40_000, 60_000, 90_000, 130_000, 180_000, 250_000];
const QUICK_SWEEP = [20_000, 60_000, 130_000];

export function parsePlan(argv: string[], defaultOutDir: string): BenchPlan | 'help' {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean', default: false },
      reps: { type: 'string' },
      only: { type: 'string' },
      out: { type: 'string' },
      baseline: { type: 'string' },
      cproxy: { type: 'string' },
      'latency-only': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) return 'help';
  const quick = values.quick ?? false;
  const reps = values.reps === undefined ? (quick ? 1 : 3) : Number(values.reps);
  if (!Number.isInteger(reps) || reps < 1 || reps > 50) throw new Error(`--reps must be an integer 1..50, got ${values.reps}`);
  const ids = values.only === undefined ? PLANE_IDS : values.only.split(',').map((s) => s.trim()).filter(Boolean);
  if (ids.length === 0) throw new Error('--only needs at least one data plane');
  // Table order, whatever order --only named them in.
  const cproxy = cproxyPath(values.cproxy);
  const wanted = new Set(ids.map((id) => planeById(id).id));
  if (cproxy && values.only === undefined) wanted.add(CPROXY_PLANE.id);
  if (wanted.has(CPROXY_PLANE.id) && !cproxy) throw new Error('--only cproxy needs --cproxy PATH (or FLANNEL_CPROXY)');
  return {
    quick,
    reps,
    planes: [CPROXY_PLANE.id, ...PLANE_IDS].filter((id) => wanted.has(id)).map(planeById),
    cproxyPath: cproxy,
    tcpSeconds: quick ? 2 : 5,
    tcpOmitSeconds: 1,
    udpRatesPps: quick ? QUICK_SWEEP : FULL_SWEEP,
    udpSecondsPerRate: quick ? 1 : 2,
    udpParallel: 2,
    udpRefineSteps: quick ? 1 : 2,
    udpPacketLen: 64,
    pingCount: 50,
    pingIntervalS: 0.02,
    idleBaselineSeconds: quick ? 1 : 2,
    rrSeconds: quick ? 3 : 6,
    // A pause of 1 ms between a reply and the next request: the path goes quiet between requests, as
    // it does for RPCs, rather than staying hot as in a back-to-back loop.
    rrMessagesPerSecond: 1000,
    rrMessageBytes: 64,
    latencyOnly: values['latency-only'] ?? false,
    baselineFile: values.baseline ?? join(defaultOutDir, 'latest.json'),
    outDir: values.out ?? defaultOutDir,
  };
}
