// What --capture adds per packet: PcapWriter.write copying one record into its
// buffer (the periodic flush to disk included), for a 1500-byte and a 84-byte
// packet, reported as ns per packet and per byte.
//
//   npm run build && node dist/bench/capture.bench.js
import { Bench } from 'tinybench';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LINKTYPE_RAW, PcapWriter } from '../src/observe/pcap-writer.js';

const BATCH = 1024;
const dir = mkdtempSync(join(tmpdir(), 'flannel-udp-capture-bench-'));
const packet = new Uint8Array(1500).map((_, i) => i & 0xff);
const writer = new PcapWriter(join(dir, 'bench.pcap'), LINKTYPE_RAW, { rotateBytes: 64 << 20, maxFiles: 1 });
const t = 1_700_000_000_000_000_000;
const bench = new Bench({ time: 500 });
for (const size of [1500, 84]) {
  bench.add(`${size} B ×${BATCH}`, () => {
    for (let i = 0; i < BATCH; i++) writer.write(packet, 0, size, t);
  });
}
try {
  await bench.run();
  for (const task of bench.tasks) {
    const r = task.result;
    if (!r || !('latency' in r)) continue;
    const size = Number(task.name.split(' ')[0]);
    const ns = (r.latency.p50! * 1e6) / BATCH; // the median: robust to preemption on a shared machine
    console.log(`  PcapWriter.write ${String(size).padStart(4)} B: ${ns.toFixed(1).padStart(7)} ns per packet, ${(ns / (size + 16)).toFixed(2)} ns per byte written`);
  }
} finally {
  writer.close();
  rmSync(dir, { recursive: true, force: true });
}
