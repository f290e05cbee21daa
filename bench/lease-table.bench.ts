// LeaseTable.lookup (per-length hash regions) against a naive linear scan, for
// 10, 100, 1 000 and 10 000 leases, on hits and misses; then, per size, what
// a lease change costs the agent (building the table and the structured clone
// every worker receives) and what the table takes in memory.
// Each task does BATCH lookups so the timer's own cost does not swamp a
// nanosecond-scale operation; the second table divides back to ns per lookup.
//
//   npx tsc -p tsconfig.json && node dist/bench/lease-table.bench.js

import { Bench } from 'tinybench';
import { makeCidr } from '../src/control/ipv4-address.js';
import { type Lease, formatSubnetKey } from '../src/control/lease.js';
import { buildLeaseTableSnapshot, LeaseTable } from '../src/control/lease-table.js';

const BATCH = 1024;

/** flannel-shaped leases: /24s out of 10.0.0.0/8, one per node. */
function makeLeases(count: number): Lease[] {
  const leases: Lease[] = [];
  for (let i = 0; i < count; i++) {
    const subnet = makeCidr((0x0a000000 + ((i + 1) << 8)) >>> 0, 24);
    leases.push({ subnet, publicIp: (0xc0000200 + i) >>> 0, backendType: 'udp', backendData: null, key: formatSubnetKey(subnet) });
  }
  return leases;
}

/** The obvious implementation: scan every lease, keep the longest match (what flannel's C proxy did). */
class LinearScanTable {
  private readonly networks: Uint32Array;
  private readonly masks: Uint32Array;
  private readonly lengths: Uint8Array;
  constructor(leases: Lease[]) {
    this.networks = Uint32Array.from(leases, (l) => l.subnet.network);
    this.masks = Uint32Array.from(leases, (l) => l.subnet.mask);
    this.lengths = Uint8Array.from(leases, (l) => l.subnet.prefixLength);
  }
  lookup(addr: number): number {
    let best = -1;
    let bestLength = -1;
    for (let i = 0; i < this.networks.length; i++) {
      if (((addr & this.masks[i]) >>> 0) === this.networks[i] && this.lengths[i] > bestLength) {
        best = i;
        bestLength = this.lengths[i];
      }
    }
    return best;
  }
}

let seed = 0x1234567;
function random(): number {
  seed ^= seed << 13;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  return seed >>> 0;
}

function addresses(leases: Lease[], hit: boolean): Uint32Array {
  const out = new Uint32Array(BATCH);
  for (let i = 0; i < BATCH; i++) {
    if (hit) {
      const subnet = leases[random() % leases.length].subnet;
      out[i] = (subnet.network | (random() & ~subnet.mask)) >>> 0;
    } else {
      out[i] = (0xc6120000 | (random() & 0xffff)) >>> 0; // 198.18.0.0/16: in no lease
    }
  }
  return out;
}

let sink = 0; // consumed below so the lookups cannot be optimised away

const bench = new Bench({ name: 'lease table lookup', time: 500, warmupTime: 100 });
for (const count of [10, 100, 1000, 10_000]) {
  const leases = makeLeases(count);
  const table = new LeaseTable(buildLeaseTableSnapshot(leases, 1));
  const linear = new LinearScanTable(leases);
  const hits = addresses(leases, true);
  const misses = addresses(leases, false);
  for (const [kind, addrs] of [['hit', hits], ['miss', misses]] as const) {
    for (let i = 0; i < BATCH; i++) {
      if ((table.lookup(addrs[i]) === -1) !== (kind === 'miss')) throw new Error(`bench data wrong: ${kind} expected`);
    }
    bench.add(`LeaseTable ${count} leases, ${kind}`, () => {
      let acc = 0;
      for (let i = 0; i < BATCH; i++) acc += table.lookup(addrs[i]);
      sink ^= acc;
    });
    bench.add(`linear scan ${count} leases, ${kind}`, () => {
      let acc = 0;
      for (let i = 0; i < BATCH; i++) acc += linear.lookup(addrs[i]);
      sink ^= acc;
    });
  }
}

await bench.run();
console.table(bench.table());
console.table(
  bench.tasks.map((task) => {
    const result = task.result;
    const perLookupNs = (ms: number): number => Number(((ms * 1e6) / BATCH).toFixed(2));
    return 'latency' in result
      ? { task: task.name, 'ns per lookup (mean)': perLookupNs(result.latency.mean), 'ns per lookup (median)': perLookupNs(result.latency.p50) }
      : { task: task.name, state: result.state };
  }),
);

// Per lease change: the agent builds a new snapshot and posts it to every worker (a structured clone each).
const costs = [];
for (const count of [10, 100, 1000, 10_000]) {
  const leases = makeLeases(count);
  const rounds = count >= 10_000 ? 20 : 200;
  let t = process.hrtime.bigint();
  let snapshot = buildLeaseTableSnapshot(leases, 1);
  for (let r = 0; r < rounds; r++) snapshot = buildLeaseTableSnapshot(leases, r);
  const buildMs = Number(process.hrtime.bigint() - t) / 1e6 / (rounds + 1);
  t = process.hrtime.bigint();
  for (let r = 0; r < rounds; r++) sink ^= structuredClone(snapshot).leaseCount;
  const cloneMs = Number(process.hrtime.bigint() - t) / 1e6 / rounds;
  const bytes = Object.values(snapshot).reduce((n: number, v) => n + (ArrayBuffer.isView(v) ? v.byteLength : 0), 0);
  costs.push({ leases: count, 'table bytes': bytes, 'bytes per lease': Number((bytes / count).toFixed(1)), 'build ms': Number(buildMs.toFixed(3)), 'clone ms (per worker)': Number(cloneMs.toFixed(3)) });
}
console.table(costs);
if (sink === 0x7fffffff) console.log('');
