// The encapsulation step alone, one packet at a time: on the way out
// validate, TTL and encapsulate; on the way in decapsulate and validate; in
// UDP mode and in VXLAN mode. Not the forwarder's whole per-packet path: the
// lease lookup, the anti-spoofing and own-subnet checks, the inbound TTL and
// the counters are in bench/forward-path.bench.ts (which also runs this step
// alone, side by side); syscalls and FFI are in neither.
// Each task handles BATCH packets so the timer's own cost does not swamp it.
//
//   npx tsc -p tsconfig.json && node dist/bench/encap.bench.js

import { Bench } from 'tinybench';
import { buildIcmpEcho } from '../src/encap/icmp.js';
import { validateIPv4, decrementTtl, ipv4TotalLength, IPV4_OFFSET_TTL } from '../src/encap/ipv4.js';
import { UdpEncapsulation } from '../src/encap/encapsulation.js';
import { VxlanEncapsulation, VXLAN_HEADROOM, parseMac } from '../src/encap/vxlan.js';
import { parseIPv4 } from '../src/control/ipv4-address.js';

const BATCH = 1024;
const HEADROOM = 32;
const buf = new Uint8Array(HEADROOM + 2048);
const length = buildIcmpEcho(buf, HEADROOM, parseIPv4('10.244.1.2'), parseIPv4('10.244.2.2'), 8, 1, 1, 1472 - 28);
const udp = new UdpEncapsulation();
const vxlan = new VxlanEncapsulation(1, parseMac('0e:66:75:00:00:01'));
vxlan.peerMacs = parseMac('0e:66:75:00:00:02');
// The peer decodes what we send: a frame addressed to its MAC.
const vxlanPeer = new VxlanEncapsulation(1, parseMac('0e:66:75:00:00:02'));
let sink = 0;

function outbound(encap: UdpEncapsulation | VxlanEncapsulation): void {
  const ttlAt = HEADROOM + IPV4_OFFSET_TTL;
  for (let i = 0; i < BATCH; i++) {
    // Put TTL and header checksum back afterwards, so every round sees the same valid packet.
    const ttl = buf[ttlAt];
    const c0 = buf[ttlAt + 2];
    const c1 = buf[ttlAt + 3];
    if (validateIPv4(buf, HEADROOM, length) !== 0) throw new Error('invalid');
    const total = ipv4TotalLength(buf, HEADROOM);
    decrementTtl(buf, HEADROOM);
    sink += encap.encapsulate(buf, HEADROOM, total, 0);
    buf[ttlAt] = ttl;
    buf[ttlAt + 2] = c0;
    buf[ttlAt + 3] = c1;
  }
}

function inbound(encap: UdpEncapsulation | VxlanEncapsulation, payloadOffset: number, payloadLength: number): void {
  for (let i = 0; i < BATCH; i++) {
    const inner = encap.decapsulate(buf, payloadOffset, payloadLength);
    if (inner < 0 || validateIPv4(buf, inner, payloadLength - (inner - payloadOffset)) !== 0) throw new Error('invalid');
    sink += inner;
  }
}

vxlan.encapsulate(buf, HEADROOM, length, 0); // the VXLAN + Ethernet header in the headroom, for the inbound tasks
const bench = new Bench({ time: 500 });
bench
  .add(`outbound, UDP mode (validate + TTL + encapsulate) ×${BATCH}`, () => outbound(udp))
  .add(`outbound, VXLAN mode (… + 22-byte header) ×${BATCH}`, () => outbound(vxlan))
  .add(`inbound, UDP mode (decapsulate + validate) ×${BATCH}`, () => inbound(udp, HEADROOM, length))
  .add(`inbound, VXLAN mode (checks flags, VNI, MAC, ethertype) ×${BATCH}`, () => inbound(vxlanPeer, HEADROOM - VXLAN_HEADROOM, length + VXLAN_HEADROOM));

await bench.run();
console.table(bench.table());
console.log('ns per packet, mean and median of the rounds (on a shared machine the median is the steadier):');
for (const task of bench.tasks) {
  const result = task.result;
  if (result && 'latency' in result) {
    const mean = (result.latency.mean * 1e6) / BATCH;
    const median = (result.latency.p50! * 1e6) / BATCH;
    console.log(`  ${task.name.replace(/ ×\d+$/, '').padEnd(62)} ${mean.toFixed(1).padStart(6)} ns  ${median.toFixed(1).padStart(6)} ns`);
  }
}
if (sink === 42) console.log(''); // keep the work observable
