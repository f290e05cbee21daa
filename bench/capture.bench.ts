// What --capture adds per packet: PcapWriter.write copying one record into its
// buffer (the periodic flush to disk included), for a 1500-byte and a 84-byte
// packet, reported as ns per packet and per byte; and a UDP-side record of a
// 1400-byte datagram as the worker writes it (ForwarderObserver), over the
// IPv4 underlay (synthetic IPv4 header, no checksum) beside the IPv6
// underlay (IPv6 header and the UDP checksum summed over the datagram).
//
//   npm run build && node dist/bench/capture.bench.js
import { Bench } from 'tinybench';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LINKTYPE_RAW, PcapWriter } from '../src/observe/pcap-writer.js';
import { ForwarderObserver } from '../src/dataplane/forwarder-observer.js';

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
const observer = new ForwarderObserver(0, 0xc0000201, 8285, 8285, [8285, 8285], 'udp-payload', Uint8Array.of(0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1));
observer.startCapture({ dir: join(dir, 'observer'), rotateBytes: 64 << 20, maxFiles: 1 });
const peer6 = Int32Array.of(0x20010db8, 0, 0, 2);
bench.add(`udp-out IPv4 underlay 1400 B ×${BATCH}`, () => {
  for (let i = 0; i < BATCH; i++) observer.captureUdpOut(packet, 0, 0, 0, 1400, 0xc0000202 | 0, 0);
});
bench.add(`udp-out IPv6 underlay 1400 B ×${BATCH}`, () => {
  for (let i = 0; i < BATCH; i++) observer.captureUdpOut6(packet, 0, 0, 0, 1400, peer6, 0, 1);
});
try {
  await bench.run();
  for (const task of bench.tasks) {
    const r = task.result;
    if (!r || !('latency' in r)) continue;
    const ns = (r.latency.p50! * 1e6) / BATCH; // the median: robust to preemption on a shared machine
    if (task.name.startsWith('udp-out')) {
      console.log(`  ForwarderObserver ${task.name.replace(/ ×\d+$/, '')}: ${ns.toFixed(1).padStart(7)} ns per datagram`);
      continue;
    }
    const size = Number(task.name.split(' ')[0]);
    console.log(`  PcapWriter.write ${String(size).padStart(4)} B: ${ns.toFixed(1).padStart(7)} ns per packet, ${(ns / (size + 16)).toFixed(2)} ns per byte written`);
  }
} finally {
  writer.close();
  observer.close();
  rmSync(dir, { recursive: true, force: true });
}
