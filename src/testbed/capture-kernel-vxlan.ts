#!/usr/bin/env node
// Regenerates captures/kernel-vxlan.pcap: real VXLAN frames made by the Linux
// kernel's vxlan device, programmed as flannel's vxlan backend programs it,
// captured on the underlay veth of node 1 (ping both ways and a short TCP
// exchange between two pods). Unit tests decode every frame with our VXLAN
// decoder and compare our encoder's output with the kernel's bytes.
//
//   node dist/src/testbed/capture-kernel-vxlan.js [output.pcap]
import { resolve } from 'node:path';
import { createCluster } from './cluster.js';
import { ping } from './measure.js';
import { waitForLine } from './exec.js';

const output = resolve(process.argv[2] ?? 'captures/kernel-vxlan.pcap');
const cluster = await createCluster({ nodes: 2, dataplane: 'kernel-vxlan' });
try {
  // Like a real NIC, finish inner checksums before the frame leaves, so the
  // capture holds what a peer on a physical network would receive.
  for (const n of cluster.nodes()) await cluster.exec(n.ns, 'ethtool', ['-K', 'eth0', 'tx', 'off']);
  const tcpdump = cluster.spawn(cluster.node(1).ns, 'tcpdump', ['-i', 'eth0', '-n', '-U', '--immediate-mode', '-s', '0', '-w', output, 'udp port 8472']);
  await waitForLine(tcpdump, /listening on eth0/, 10_000);
  await ping(cluster, cluster.pod(1).ns, cluster.pod(2).ip, { count: 3, intervalS: 0.2 });
  await ping(cluster, cluster.pod(2).ns, cluster.pod(1).ip, { count: 3, intervalS: 0.2 });
  // A short TCP exchange: handshake, a little data with PSH, FIN.
  const server = cluster.spawn(cluster.pod(2).ns, process.execPath, [
    '-e',
    `require('net').createServer(s => s.pipe(s)).listen(7, '${cluster.pod(2).ip}', () => console.log('listening'))`,
  ]);
  await waitForLine(server, /^listening$/, 10_000);
  await cluster.exec(cluster.pod(1).ns, process.execPath, [
    '-e',
    `const s = require('net').connect(7, '${cluster.pod(2).ip}', () => s.end('flannel-udp capture: hello through kernel vxlan\\n')); s.resume();`,
  ]);
  // The client has exited once the server's FIN came back, so the whole exchange is on the wire;
  // tcpdump -U has written each packet as it came, and flushes on SIGINT.
  server.kill('SIGTERM');
  tcpdump.kill('SIGINT');
  await tcpdump.exited;
  console.log(`wrote ${output}`);
} finally {
  await cluster.destroy();
}
