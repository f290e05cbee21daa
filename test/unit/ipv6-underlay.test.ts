// The IPv6 underlay's pieces (issue 24): sockaddr_in6 as the kernel reads and
// writes it (real AF_INET6 sockets on ::1 through KernelBind), the lease
// table's PublicIPv6 lookups, and the forwarder's choice of underlay, path
// MTU, receive checks and captures on in-memory devices.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as libc from '../../src/dataplane/libc.js';
import { openUdpSocket, writeSockaddrIn6 } from '../../src/dataplane/udp-socket.js';
import { KernelBind } from '../../src/dataplane/kernel-bind.js';
import { PacketPool } from '../../src/dataplane/packet-pool.js';
import { DatagramBatch, NO_OUTER6, SendBatch } from '../../src/dataplane/batches.js';
import { buildLeaseTableSnapshot, LeaseTable } from '../../src/control/lease-table.js';
import { parseLeaseAttrs, type Lease } from '../../src/control/lease.js';
import { parseIPv6 } from '../../src/control/ipv6-address.js';
import { Harness, packet, PEER_POD, OWN_POD } from '../support/forwarder-harness.js';
import { detectPublicIpv6 } from '../../src/agent.js';
import { formatIPv6 } from '../../src/control/ipv6-address.js';
import type { NetworkInterfaceInfo } from 'node:os';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { capturePath } from '../../src/observe/pcap-writer.js';
import { runRequiredTool } from '../support/required-tool.js';

const words = (a: Uint8Array) => [0, 4, 8, 12].map((i) => (a[i] << 24) | (a[i + 1] << 16) | (a[i + 2] << 8) | a[i + 3]);

test('writeSockaddrIn6: family AF_INET6 (10, host order), port big-endian, flow info 0, the 16 address bytes at 8, scope id 0', () => {
  const mem = new libc.NativeMemory(64);
  mem.bytes.fill(0xee);
  writeSockaddrIn6(mem, 4, parseIPv6('2001:db8::1:2'), 8285);
  const b = [...mem.bytes.subarray(4, 4 + libc.SIZEOF_SOCKADDR_IN6)];
  assert.equal(b.slice(0, 8), [10, 0, 0x20, 0x5d, 0, 0, 0, 0]);
  assert.equal(b.slice(8, 24), [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 2]);
  assert.equal(b.slice(24, 28), [0, 0, 0, 0]);
  assert.is(mem.bytes[3], 0xee, 'nothing written before the offset');
  assert.is(mem.bytes[4 + 28], 0xee, 'nor after the 28 bytes');
  writeSockaddrIn6(mem, 4, undefined, 0);
  assert.equal([...mem.bytes.subarray(12, 28)], new Array(16).fill(0), 'undefined: the unspecified address ::');
});

/** A KernelBind with an IPv4 socket on 127.0.0.1 and an IPv6 one on ::1, both on kernel-chosen ports. */
function dualBind(pool: PacketPool) {
  const v4 = openUdpSocket({ bindAddress: 0x7f000001, port: 0, bufferBytes: 1 << 20, gro: false });
  const v6 = openUdpSocket({ bindAddress: 0, bindAddress6: parseIPv6('::1'), port: 0, bufferBytes: 1 << 20, gro: false });
  const bind = new KernelBind({
    receiveFd: v4.fd, sendFds: [v4.fd], pool, firstSlot: 0, batchSize: 8, gro: false, gso: false, maxMessages: 8, maxPieces: 8,
    counters: new Float64Array(256), receiveFd6: v6.fd, sendFds6: [v6.fd],
  });
  return { bind, v4, v6, close: () => [v4.fd, v6.fd].forEach((fd) => libc.close(fd)) };
}

test('KernelBind over real sockets: an IPv6 sender sends to a sockaddr_in6, the receiver reports the IPv6 source, after the IPv4 datagrams', () => {
  const pool = new PacketPool(16, 2048, 32, 0);
  const a = dualBind(pool);
  const b = dualBind(pool);
  try {
    assert.is(a.bind.senders, 2);
    assert.is(a.bind.senders6, 1);
    // Payloads in pool slots 8 and 9 (the receive slots are 0..7).
    const out = new SendBatch(4, 4);
    pool.bytes.set([1, 2, 3, 4], pool.packetOffsets[8]);
    pool.bytes.set([6, 6, 6], pool.packetOffsets[9]);
    out.begin(0x7f000001, b.v4.port, 0, 1);
    out.add(pool.packetOffsets[9], 3);
    out.end();
    assert.is(a.bind.send(0, out, 0), 1, 'the IPv4 sender took its message');
    out.reset();
    out.begin(0, b.v6.port, 0, 1);
    out.setPeer6(Int32Array.from(words(parseIPv6('::1'))), 0);
    out.add(pool.packetOffsets[8], 4);
    out.end();
    assert.is(a.bind.send(1, out, 0), 1, 'the IPv6 sender took its message');
    const batch = new DatagramBatch(16);
    for (let t = 0; t < 100 && batch.count < 2; t++) b.bind.receive(batch);
    assert.is(batch.count, 2);
    assert.is(batch.outer6From, 1, 'the IPv4 datagram first, then the IPv6 one');
    assert.is(batch.sourceIp[0], 0x7f000001);
    assert.is(batch.sourcePort[0], a.v4.port);
    assert.equal([...pool.bytes.subarray(batch.offset[0], batch.offset[0] + batch.length[0])], [6, 6, 6]);
    assert.equal([...batch.sourceIp6.subarray(4, 8)], words(parseIPv6('::1')));
    assert.is(batch.sourcePort[1], a.v6.port, 'the IPv6 sender\'s port, read from its sockaddr_in6');
    assert.equal([...pool.bytes.subarray(batch.offset[1], batch.offset[1] + batch.length[1])], [1, 2, 3, 4]);
    assert.ok(batch.offset[1] >= pool.packetOffsets[4], 'the IPv6 socket receives into the second half of the slots');
    b.bind.receive(batch);
    assert.is(batch.count, 0);
    assert.ok(batch.drained);
    assert.is(batch.outer6From >= batch.count, true);
  } finally {
    a.close();
    b.close();
  }
});

const L6 = (key: string, attrs: Record<string, unknown>): Lease => parseLeaseAttrs(key, { BackendType: 'udp', ...attrs });

test('LeaseTable: PublicIPv6 → lease (hashed), none for an address no lease has or for ::, same-PublicIPv6 between leases', () => {
  const leases = [
    L6('10.244.1.0-24&fd00:10:244:1::-64', { PublicIP: '192.0.2.1', PublicIPv6: '2001:db8::1' }),
    L6('10.244.2.0-24&fd00:10:244:2::-64', { PublicIP: '192.0.2.2' }),
    L6('0.0.0.0-0&fd00:10:244:3::-64', { PublicIPv6: '2001:db8::3' }),
    L6('10.244.4.0-24&fd00:10:244:4::-64', { PublicIP: '192.0.2.3', PublicIPv6: '2001:db8::3' }),
  ];
  const t = new LeaseTable(buildLeaseTableSnapshot(leases, 1));
  const find = (a: string) => t.findByPublicIpv6(...(words(parseIPv6(a)) as [number, number, number, number]));
  assert.is(find('2001:db8::1'), 0);
  assert.is(find('2001:db8::3'), 2, 'a node with two leases: the first stands for it');
  assert.is(find('2001:db8::2'), -1);
  assert.is(find('::'), -1, 'a lease without PublicIPv6 is not found by the unspecified address');
  assert.ok(t.hasPublicIpv6At(0) && !t.hasPublicIpv6At(1) && t.hasPublicIpv6At(2));
  assert.ok(t.samePublicIpv6(2, 3) && !t.samePublicIpv6(0, 2));
  assert.equal([...t.publicIpv6Words.subarray(0, 4)], words(parseIPv6('2001:db8::1')));
});

// ---- the forwarder on in-memory devices: a node with one IPv4 and one IPv6 sender ----

const OWN6 = 'fd00:10:244:1::5';
const PEER6 = 'fd00:10:244:2::7';
const THIRD6 = 'fd00:10:244:3::9';
const PEER_V6_UNDERLAY = '2001:db8::2';
const LEASES = [
  L6('10.244.1.0-24&fd00:10:244:1::-64', { PublicIP: '192.0.2.1', PublicIPv6: '2001:db8::1' }),
  L6('10.244.2.0-24&fd00:10:244:2::-64', { PublicIP: '192.0.2.2', PublicIPv6: PEER_V6_UNDERLAY }),
  // A peer with no public IPv6: reached over the IPv4 underlay only.
  L6('10.244.3.0-24&fd00:10:244:3::-64', { PublicIP: '192.0.2.3' }),
];

/** A minimal IPv6 packet: an ICMPv6 echo request with `payload` bytes (the forwarder does not check ICMPv6 checksums). */
function echo6(src: string, dst: string, payload = 56): Uint8Array {
  const p = new Uint8Array(40 + 8 + payload);
  p[0] = 0x60;
  p[4] = (8 + payload) >>> 8;
  p[5] = (8 + payload) & 255;
  p[6] = 58;
  p[7] = 64;
  p.set(parseIPv6(src), 8);
  p.set(parseIPv6(dst), 24);
  p[40] = 128;
  return p;
}

function withHarness(body: (h: Harness) => void): void {
  const h = new Harness({ leases: LEASES, ipv6Subnet: 'fd00:10:244:1::/64', senders6: 1, pathMtu6: 1452 });
  try {
    body(h);
  } finally {
    h.close();
  }
}

test('underlay choice: IPv6 to a lease with PublicIPv6 → the IPv6 sender and that address; to a lease without → IPv4; IPv4 pods → IPv4', () => {
  withHarness((h) => {
    h.tun.inject(echo6(OWN6, PEER6));
    h.tun.inject(echo6(OWN6, THIRD6));
    h.tun.inject(packet({ src: OWN_POD, dst: PEER_POD }));
    h.forwarder.drive(true, false);
    assert.is(h.bind.sent.length, 3);
    // Sent per sender, in sender order: the IPv4 sender's two first, then the IPv6 sender's.
    const [to3, v4, to6] = h.bind.sent;
    assert.is(to6.sender, 1, 'the IPv6 underlay\'s sender');
    assert.equal([...to6.peer6!], [...parseIPv6(PEER_V6_UNDERLAY)]);
    assert.is(to6.bytes[0] >>> 4, 6, 'UDP mode: the bare IPv6 packet');
    assert.is(to3.sender, 0);
    assert.is(to3.peer6, undefined);
    assert.is(to3.peer, 0xc0000203, 'no PublicIPv6: over IPv4 to PublicIP');
    assert.is(v4.sender, 0);
    assert.is(v4.peer, 0xc0000202);
    assert.is(h.count('UnderlayIpv6SentPackets'), 1);
  });
});

test('path MTU over the IPv6 underlay: a packet between pathMtu6 and pathMtu gets ICMPv6 packet too big with pathMtu6; over IPv4 it fits', () => {
  withHarness((h) => {
    h.tun.inject(echo6(OWN6, PEER6, 1460 - 48)); // 1460 bytes: > 1452, ≤ 1472
    h.tun.inject(echo6(OWN6, THIRD6, 1460 - 48));
    h.forwarder.drive(true, false);
    assert.is(h.drops('Ipv6PacketTooBig'), 1);
    assert.is(h.bind.sent.length, 1, 'the one to the IPv4-underlay peer left');
    assert.is(h.bind.sent[0].sender, 0);
    const reply = h.tun.writtenPackets()[0];
    assert.ok(reply, 'an ICMPv6 error was written back into the TUN');
    assert.is(reply[40], 2, 'packet too big');
    assert.is((reply[44] << 24) | (reply[45] << 16) | (reply[46] << 8) | reply[47], 1452);
  });
});

test('receive over the IPv6 underlay: only from a lease\'s PublicIPv6, IPv6 pods only, inner source of the sender\'s lease', () => {
  withHarness((h) => {
    const peer = parseIPv6(PEER_V6_UNDERLAY);
    h.bind.inject6(echo6(PEER6, OWN6), peer, 8285);
    h.bind.inject6(echo6(PEER6, OWN6), parseIPv6('2001:db8::99'), 8285);
    h.bind.inject6(packet({ src: PEER_POD, dst: OWN_POD }), peer, 8285);
    h.bind.inject6(echo6(THIRD6, OWN6), peer, 8285);
    h.forwarder.drive(false, true);
    assert.is(h.tun.writtenPackets().length, 1, 'only the first reaches the pod');
    assert.is(h.drops('UnknownPeer'), 1);
    assert.is(h.drops('Ipv4OverIpv6Underlay'), 1);
    assert.is(h.drops('SpoofedSource'), 1, 'an inner source of another node\'s subnet');
    assert.is(h.count('UnderlayIpv6ReceivedPackets'), 4);
  });
});

test('--capture over the IPv6 underlay: udp-out and udp-in hold Ethernet + outer IPv6 (our PublicIPv6 and the peer\'s) + UDP, checksum good; IPv4 datagrams keep their IPv4 header', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'flannel-udp-capture6-'));
  try {
    const h = new Harness({
      leases: LEASES, ipv6Subnet: 'fd00:10:244:1::/64', senders6: 1, pathMtu6: 1452,
      publicIpv6: '2001:db8::1', capture: { dir, rotateBytes: 0, maxFiles: 1 },
    });
    const request = echo6(OWN6, PEER6, 57);
    const reply = echo6(PEER6, OWN6, 57);
    try {
      h.tun.inject(request);
      h.tun.inject(packet({ src: OWN_POD, dst: PEER_POD }));
      h.forwarder.drive(true, false);
      h.bind.inject6(reply, parseIPv6(PEER_V6_UNDERLAY), 8285);
      h.bind.inject6(reply, parseIPv6('2001:db8::99'), 40000); // no lease has it: dropped, and captured as received (as over IPv4)
      h.forwarder.drive(false, true);
      assert.is(h.tun.writtenPackets().length, 1);
    } finally {
      h.close(); // closes (flushes) the captures
    }
    const out = tcpdumpLines(capturePath(dir, 'udp-out', 0));
    assert.is(out.length, 2, out.join('\n'));
    // Hop limits: the inner one as forwarded (63), the outer one the kernel's default (64).
    assert.match(out[0], /IP6 \(hlim 64, next-header UDP \(17\) payload length: 113\) 2001:db8::1\.8285 > 2001:db8::2\.8285: \[udp sum ok\] UDP, length 105/);
    assert.match(out[1], / IP \(tos 0x0, ttl 64, .*proto UDP \(17\)/, 'the IPv4 pod packet: over IPv4, as before');
    const inbound = tcpdumpLines(capturePath(dir, 'udp-in', 0));
    assert.is(inbound.length, 2, inbound.join('\n'));
    assert.match(inbound[0], /IP6 \(hlim 64, next-header UDP \(17\) payload length: 113\) 2001:db8::2\.8285 > 2001:db8::1\.8285: \[udp sum ok\] UDP, length 105/);
    assert.match(inbound[1], /2001:db8::99\.40000 > 2001:db8::1\.8285: \[udp sum ok\]/);
    // The payload is the datagram as sent: the inner packet with its hop limit decremented.
    const frames = readPcapFrames(capturePath(dir, 'udp-out', 0));
    assert.is((frames[1][12] << 8) | frames[1][13], 0x0800);
    const sentInner = frames[0].subarray(62);
    assert.equal([...sentInner.subarray(8, 40)], [...request.subarray(8, 40)]);
    assert.is(sentInner[7], 63);
    assert.equal([...readPcapFrames(capturePath(dir, 'udp-in', 0))[0].subarray(62)], [...reply]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** tcpdump -vv's line per packet of a capture (tcpdump checks the UDP checksums at -v). */
function tcpdumpLines(path: string): string[] {
  return runRequiredTool('tcpdump', 'tcpdump', ['-nn', '-vv', '-r', path], { stdio: ['ignore', 'pipe', 'pipe'] })
    .split('\n')
    .filter((l) => /^\d\d:\d\d:\d\d\.\d{6} /.test(l));
}

/** The records of a classic pcap file (native little-endian, as PcapWriter writes), read here by hand. */
function readPcapFrames(path: string): Uint8Array[] {
  const f = readFileSync(path);
  assert.is(f.readUInt32LE(0), 0xa1b2c3d4);
  assert.is(f.readUInt32LE(20), 1, 'LINKTYPE_ETHERNET');
  const frames: Uint8Array[] = [];
  for (let at = 24; at < f.length; ) {
    const captured = f.readUInt32LE(at + 8);
    frames.push(Uint8Array.from(f.subarray(at + 16, at + 16 + captured)));
    at += 16 + captured;
  }
  return frames;
}

test('detectPublicIpv6, as flanneld without --public-ipv6: the global IPv6 address of the interface holding the public IPv4; link-local never', () => {
  const addr = (family: 'IPv4' | 'IPv6', address: string): NetworkInterfaceInfo =>
    ({ family, address, netmask: '', mac: '00:00:00:00:00:00', internal: false, cidr: null, ...(family === 'IPv6' ? { scopeid: 0 } : {}) }) as NetworkInterfaceInfo;
  const interfaces = {
    lo: [addr('IPv4', '127.0.0.1')],
    eth0: [addr('IPv4', '192.0.2.1'), addr('IPv6', 'fe80::1'), addr('IPv6', '2001:db8::1')],
    eth1: [addr('IPv4', '198.51.100.1'), addr('IPv6', 'fe80::2')],
  };
  const logged: string[] = [];
  const found = detectPublicIpv6(0xc0000201, (l) => logged.push(l), interfaces);
  assert.is(found && formatIPv6(found), '2001:db8::1');
  assert.match(logged[0], /eth0's global IPv6 address/);
  assert.is(detectPublicIpv6(0xc6336401, () => undefined, interfaces), undefined, 'eth1 has a link-local address only');
  assert.is(detectPublicIpv6(0, () => undefined, interfaces), undefined, 'no public IPv4: nothing to look beside');
});

test('the rehearsal of a worker with the IPv6 underlay\'s socket forwards everything and leaves receive, forwardInbound and the loop optimised', async () => {
  // In a child, as test/unit/rehearsal.test.ts does: V8's optimisation status needs --allow-natives-syntax.
  const src = (path: string) => JSON.stringify(new URL(`../../src/${path}`, import.meta.url).href);
  const code = `
import { rehearse } from ${src('dataplane/rehearsal.js')};
import { WorkerMemory } from ${src('dataplane/worker-memory.js')};
import { Forwarder } from ${src('dataplane/forwarder.js')};
import { WorkerLoop } from ${src('dataplane/worker-loop.js')};
import { KernelBind } from ${src('dataplane/kernel-bind.js')};
const memory = new WorkerMemory(64, false, 1472);
const result = rehearse({ backend: 'udp', batchSize: 64, vnetHeader: false, udpGro: false, tunUso: false, udpGso: false, vni: 1,
  vtepMac: new Uint8Array([2, 0, 0, 0, 0, 1]), mtu: 1472, pathMtu: 1472, sendSockets: 1, offload: false, udpChecksum: true, underlay6: true }, memory);
const fns = { run: WorkerLoop.prototype.run, forwardInbound: Forwarder.prototype.forwardInbound, receive: KernelBind.prototype.receive };
const status = Object.fromEntries(Object.entries(fns).map(([k, f]) => [k, %GetOptimizationStatus(f)]));
process.stdout.write(JSON.stringify({ result, status }) + '\\n');`;
  const out = await new Promise<string>((resolve, reject) =>
    execFile(process.execPath, ['--allow-natives-syntax', '--no-concurrent-recompilation', '--trace-turbo-inlining', '--input-type=module', '-e', code], { timeout: 120_000, maxBuffer: 64 << 20 }, (err, stdout, stderr) =>
      err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout),
    ),
  );
  const { result, status } = JSON.parse(out.trim().split('\n').pop()!) as { result: Record<string, number>; status: Record<string, number> };
  assert.ok(result.outboundSent > 1000);
  assert.is(result.inboundForwarded, result.inboundSent);
  assert.is(result.drops, 0);
  const OPTIMIZED = 1 << 4;
  // A step TurboFan inlined into the optimised loop runs as part of it (test/unit/rehearsal.test.ts says why that counts).
  const inlinedIntoRun = (name: string) => new RegExp(`Inlining .*<SharedFunctionInfo ${name}>\\} into .*<SharedFunctionInfo run>`).test(out);
  assert.ok((status.run & OPTIMIZED) !== 0, `run: status ${status.run}`);
  assert.ok((status.receive & OPTIMIZED) !== 0, `KernelBind.receive: status ${status.receive}`);
  assert.ok((status.forwardInbound & OPTIMIZED) !== 0 || inlinedIntoRun('forwardInbound'), `forwardInbound: status ${status.forwardInbound}, not inlined into run`);
});

for (const backend of ['udp', 'vxlan'] as const) {
  test(`${backend} mode: a dual-stack worker with the IPv6 underlay rehearses IPv6-underlay traffic each way, and leaves its own functions optimised`, async () => {
    const src = (path: string) => JSON.stringify(new URL(`../../src/${path}`, import.meta.url).href);
    const code = `
import { rehearse } from ${src('dataplane/rehearsal.js')};
import { WorkerMemory } from ${src('dataplane/worker-memory.js')};
import { Forwarder } from ${src('dataplane/forwarder.js')};
import { KernelBind } from ${src('dataplane/kernel-bind.js')};
const memory = new WorkerMemory(64, true, 1472);
const result = rehearse({ backend: '${backend}', batchSize: 64, vnetHeader: true, udpGro: true, tunUso: true, udpGso: true, vni: 1,
  vtepMac: new Uint8Array([2, 0, 0, 0, 0, 1]), mtu: 1472, pathMtu: 1472, sendSockets: ${backend === 'vxlan' ? 4 : 1}, offload: true, udpChecksum: true,
  underlay6: true, ownPrefix6: 64 }, memory);
const fns = { receiveDatagram6: Forwarder.prototype.receiveDatagram6, receive6: KernelBind.prototype.receive6, send6: KernelBind.prototype.send6 };
const status = Object.fromEntries(Object.entries(fns).map(([k, f]) => [k, %GetOptimizationStatus(f)]));
process.stdout.write(JSON.stringify({ result, status }) + '\\n');`;
    const out = await new Promise<string>((resolve, reject) =>
      execFile(process.execPath, ['--allow-natives-syntax', '--no-concurrent-recompilation', '--trace-turbo-inlining', '--input-type=module', '-e', code], { timeout: 120_000, maxBuffer: 64 << 20 }, (err, stdout, stderr) =>
        err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout),
      ),
    );
    const { result, status } = JSON.parse(out.trim().split('\n').pop()!) as { result: Record<string, number>; status: Record<string, number> };
    assert.is(result.outboundForwarded, result.outboundSent);
    assert.is(result.inboundForwarded, result.inboundSent);
    assert.is(result.drops, 0);
    // A third of the packets or more each way are IPv6 to peers with a PublicIPv6: they took the IPv6 underlay.
    assert.ok(result.underlay6Sent > 1000 && result.underlay6Received > 1000, `IPv6 underlay: ${result.underlay6Sent} sent, ${result.underlay6Received} received`);
    assert.ok(result.underlay6Sent < result.outboundSent, 'IPv4 packets and one peer\'s IPv6 ones stay on the IPv4 underlay');
    const OPTIMIZED = 1 << 4;
    // The bind's send6 is small: TurboFan inlines it into its caller (SendPolicy.flush), where it runs optimised.
    const inlined = (name: string) => new RegExp(`Inlining .*<SharedFunctionInfo ${name}>\\} into .*<SharedFunctionInfo flush>`).test(out);
    assert.ok((status.receiveDatagram6 & OPTIMIZED) !== 0, `Forwarder.receiveDatagram6: status ${status.receiveDatagram6}`);
    assert.ok((status.receive6 & OPTIMIZED) !== 0, `KernelBind.receive6: status ${status.receive6}`);
    assert.ok((status.send6 & OPTIMIZED) !== 0 || inlined('send6'), `KernelBind.send6: status ${status.send6}, not inlined into flush`);
  });
}

test('DatagramBatch.reset: nothing counts as received over IPv6 until a bind says so', () => {
  const b = new DatagramBatch(4);
  b.add(0, 1, 1, 1, false);
  b.outer6From = 0;
  b.reset();
  assert.is(b.outer6From, NO_OUTER6);
});

test.run();
