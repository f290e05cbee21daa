// The data planes the end-to-end benchmark compares, in the order it reports
// them. Adding one (say the agent's vxlan backend) is one line here.
import type { ClusterOptions, Dataplane } from '../../src/testbed/cluster.js';

export interface PlaneSpec {
  /** What --only takes and the JSON uses. */
  id: string;
  /** Short enough for a chart's row label. */
  short: string;
  /** What it is, for the tables. */
  label: string;
  dataplane: Dataplane;
  workers?: number;
  agentArgs?: string[];
  /** Default: the underlay MTU minus the cluster's idea of the plane's overhead (udp 28). */
  podMtu?: number;
  /**
   * The agent in VXLAN mode: the testbed starts as kernel vxlan (flannel's
   * programming) and the agent, with these extra arguments, replaces flannel.1
   * on every node, keeping the VTEP MACs.
   */
  agentVxlanArgs?: string[];
  /** flannel's C proxy on a 'none' testbed (bench/e2e/cproxy.ts); only with --cproxy PATH. */
  cproxy?: boolean;
  /** Another build's dist/src/cli.js (the build before a change, run side by side); default this tree's. */
  agentCli?: string;
}

/** flannel's own C proxy, measured when the run is given its binary (--cproxy PATH or FLANNEL_CPROXY). */
export const CPROXY_PLANE: PlaneSpec = {
  id: 'cproxy',
  short: 'C proxy',
  label: "flannel's own C udp proxy (pkg/backend/udp/proxy_amd64.c, unchanged, built from ../shared/anchors/flannel-cproxy), measured in this run",
  dataplane: 'none',
  cproxy: true,
};

// Issue 23: with BENCH_BASE_BUILD=<tree with an earlier build>, that build's agent also runs, in UDP and
// VXLAN mode, alternated with this one in the same run ("agent CPU per GB against the build before").
const BASE_BUILD = process.env.BENCH_BASE_BUILD;
const BASE_PLANES: PlaneSpec[] = BASE_BUILD
  ? [
    { id: 'agent-base', short: 'agent udp ×2, before', label: `the build before, UDP mode, defaults (2 workers), from ${BASE_BUILD}`, dataplane: 'agent', workers: 2, agentCli: `${BASE_BUILD}/dist/src/cli.js` },
    { id: 'agent-vxlan-base', short: 'agent vxlan ×2, before', label: `the build before, VXLAN mode, defaults, 2 workers, from ${BASE_BUILD}`, dataplane: 'kernel-vxlan', workers: 2, agentVxlanArgs: [], agentCli: `${BASE_BUILD}/dist/src/cli.js` },
  ]
  : [];

export const PLANES: readonly PlaneSpec[] = [
  { id: 'host-gw', short: 'host-gw', label: 'plain routing (host-gw), the ceiling', dataplane: 'host-gw' },
  { id: 'kernel-vxlan', short: 'kernel vxlan', label: "kernel vxlan (flannel's vxlan backend)", dataplane: 'kernel-vxlan' },
  // The latency reference: an independent forwarder with the C proxy's structure (one thread, poll, one
  // syscall per packet each way) and flannel's wire format, sharing none of our code; it needs nothing
  // outside the repository. flannel's C proxy itself is CPROXY_PLANE, measured when --cproxy names it.
  {
    id: 'reference',
    short: 'reference fwd',
    label: "independent reference forwarder (bench/reference/udp_proxy.py: flannel's C proxy's structure and wire format, in Python, none of our code)",
    dataplane: 'reference',
  },
  { id: 'agent', short: 'agent udp ×2', label: 'this agent, UDP mode, defaults (2 workers)', dataplane: 'agent', workers: 2 },
  {
    id: 'agent-cold',
    short: 'agent udp, no rehearsal',
    label: "this agent, UDP mode, --rehearsal off: not a reference (it is our code) but the evidence for issue 11's cause, a fresh worker's first packets running unoptimised code",
    dataplane: 'agent',
    workers: 2,
    agentArgs: ['--rehearsal', 'off'],
  },
  { id: 'agent-w1', short: 'agent udp ×1', label: 'this agent, UDP mode, --workers 1', dataplane: 'agent', workers: 1 },
  { id: 'agent-vxlan', short: 'agent vxlan ×2', label: 'this agent, VXLAN mode, defaults (a real outer UDP checksum, so UDP GSO), 2 workers', dataplane: 'kernel-vxlan', workers: 2, agentVxlanArgs: [] },
  {
    id: 'agent-vxlan-zero',
    short: 'agent vxlan zero-csum ×2',
    label: 'this agent, VXLAN mode with --vxlan-udp-checksum zero (RFC 7348; no UDP GSO), 2 workers',
    dataplane: 'kernel-vxlan',
    workers: 2,
    agentVxlanArgs: ['--vxlan-udp-checksum', 'zero'],
  },
  ...BASE_PLANES,
];

/** The planes measured by default, in table order. */
export const PLANE_IDS = PLANES.map((p) => p.id);

export function isAgentPlane(plane: PlaneSpec): boolean {
  return plane.dataplane === 'agent' || plane.agentVxlanArgs !== undefined;
}

export function clusterOptionsFor(plane: PlaneSpec): ClusterOptions {
  // Same shape for every plane: 2 nodes, 1 pod each, underlay MTU 1500; the pod MTU follows the plane's overhead.
  return { nodes: 2, underlayMtu: 1500, dataplane: plane.dataplane, workers: plane.workers, agentArgs: plane.agentArgs, podMtu: plane.podMtu, agentCli: plane.agentCli };
}

export function planeById(id: string): PlaneSpec {
  const plane = id === CPROXY_PLANE.id ? CPROXY_PLANE : PLANES.find((p) => p.id === id);
  if (!plane) throw new Error(`unknown data plane "${id}"; known: ${PLANE_IDS.join(', ')}`);
  return plane;
}
