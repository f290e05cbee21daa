// The receive spread's classic BPF program against the real kernel, on
// loopback only: datagrams whose payload is an inner IPv4 packet (UDP mode's
// wire format) sent to a SO_REUSEPORT group, and the socket each one reaches.
// The kernel must pick the socket innerFlowIndex() computes, fall back to its
// own hash for what is not IPv4, and keep a hand-over's flows (old sockets
// connected away, new ones joined) each on one live socket.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as libc from '../../src/dataplane/libc.js';
import { openUdpSocket, setReceiveSpread, withdrawUdpSocket, writeSockaddrIn } from '../../src/dataplane/udp-socket.js';
import { innerFlowIndex, innerFlowProgram, KERNEL_HASH, receiveSpreadOutcome } from '../../src/dataplane/reuseport-cbpf.js';

const LOOPBACK = 0x7f000001;
const scratch = new libc.NativeMemory(4096);
const opened: number[] = [];

function group(size: number, port = 0): { port: number; fds: number[] } {
  const fds: number[] = [];
  for (let i = 0; i < size; i++) {
    const s = openUdpSocket({ bindAddress: LOOPBACK, port, bufferBytes: 1 << 18, gro: false });
    port = s.port;
    fds.push(s.fd);
    opened.push(s.fd);
  }
  return { port, fds };
}

function closeAll(): void {
  for (const fd of opened.splice(0)) libc.close(fd);
}

/** A connected sender: one write() is one datagram to the group's port. */
function sender(port: number): number {
  const fd = libc.socket(libc.AF_INET, libc.SOCK_DGRAM | libc.SOCK_CLOEXEC, 0);
  opened.push(fd);
  writeSockaddrIn(scratch, 0, LOOPBACK, port);
  libc.connect(fd, scratch.address, libc.SIZEOF_SOCKADDR_IN, 'sender');
  return fd;
}

/** Sends one datagram and returns the index (in `fds`) of the one socket that got it; waits with poll(), no sleep. */
function deliver(from: number, fds: number[], payload: Uint8Array): number {
  scratch.bytes.set(payload, 64);
  assert.is(libc.write(from, scratch.address + 64, payload.length), payload.length);
  const pollfds = new libc.NativeMemory(libc.SIZEOF_POLLFD * fds.length);
  fds.forEach((fd, i) => {
    pollfds.view.setInt32(i * 8, fd, true);
    pollfds.view.setInt16(i * 8 + 4, libc.POLLIN, true);
  });
  assert.ok(libc.poll(pollfds.address, fds.length, 2000) > 0, 'the datagram reached no socket within 2 s');
  const got: number[] = [];
  fds.forEach((fd, i) => {
    while (libc.read(fd, scratch.address + 2048, 2048) >= 0) got.push(i);
  });
  assert.is(got.length, 1, `one datagram, received ${got.length} times`);
  return got[0];
}

/** An inner IPv4 packet as UDP mode carries it: header (IHL words), then 8 bytes of transport header. */
function inner(src: number, dst: number, sport: number, dport: number, opts: { protocol?: number; fragment?: number; ihl?: number } = {}): Uint8Array {
  const ihl = opts.ihl ?? 5;
  const p = new Uint8Array(ihl * 4 + 8);
  const v = new DataView(p.buffer);
  p[0] = 0x40 | ihl;
  v.setUint16(2, p.length);
  v.setUint16(6, opts.fragment ?? 0x4000); // DF, as Linux sends TCP
  p[8] = 64;
  p[9] = opts.protocol ?? 6;
  v.setUint32(12, src);
  v.setUint32(16, dst);
  v.setUint16(ihl * 4, sport);
  v.setUint16(ihl * 4 + 2, dport);
  return p;
}

/** Flows from one pod to another's port 5201, source ports counting up: what `iperf3 -P 4` opens. */
function flowsTo5201(count: number): Uint8Array[] {
  return Array.from({ length: count }, (_, i) => inner(0x0af40102, 0x0af40203, 40000 + i, 5201));
}

test.after.each(closeAll);

test('the program is well formed: every jump lands inside it, it ends in a return, and the kernel takes it', () => {
  for (const offset of [0, 22]) {
    const program = innerFlowProgram(4, offset);
    program.forEach((insn, i) => {
      if ((insn.code & 0x07) === 0x05) {
        const targets = (insn.code & 0xf0) === 0 ? [insn.k] : [insn.jt, insn.jf];
        for (const t of targets) assert.ok(i + 1 + t < program.length, `jump at ${i} leaves the program`);
      }
    });
    assert.is(program[program.length - 1].code & 0x07, 0x06);
    const { fds } = group(2);
    assert.is(libc.trySetReuseportCbpf(fds[0], program), 0);
    closeAll();
  }
  assert.throws(() => innerFlowProgram(0), /group of 0 sockets/);
});

test('the kernel picks the socket innerFlowIndex computes, for TCP, UDP, ICMP, fragments and IP options, in groups of 2 to 4', () => {
  const packets: Uint8Array[] = [];
  for (let i = 0; i < 24; i++) {
    const src = 0x0af40100 + ((i * 37) & 0xff);
    const dst = 0x0af40200 + ((i * 11) & 0xff);
    packets.push(inner(src, dst, 30000 + i * 101, 80 + i));
    packets.push(inner(src, dst, 30000 + i * 101, 53, { protocol: 17 }));
    if (i % 3 === 0) packets.push(inner(src, dst, 0x0800, i, { protocol: 1 }));
    if (i % 4 === 0) packets.push(inner(src, dst, 30000 + i, 80, { fragment: 0x2000 }), inner(src, dst, 7, 7, { fragment: 0x00b9 }));
    if (i % 5 === 0) packets.push(inner(src, dst, 30000 + i * 7, 443, { ihl: 6 }));
  }
  for (const size of [2, 3, 4]) {
    const { port, fds } = group(size);
    assert.is(setReceiveSpread(fds[0], 'inner-flow', size), 0);
    const from = sender(port);
    const seen = new Set<number>();
    for (const p of packets) {
      const expected = innerFlowIndex(p, size);
      assert.is(deliver(from, fds, p), expected, `group of ${size}: ${Buffer.from(p).toString('hex')}`);
      seen.add(expected);
    }
    assert.is(seen.size, size, `every socket of the group of ${size} received`);
    closeAll();
  }
});

test('a fragmented packet goes where its other fragments go: the hash of its addresses alone', () => {
  const first = inner(0x0af40102, 0x0af40203, 40000, 5201, { protocol: 17, fragment: 0x2000 });
  const later = inner(0x0af40102, 0x0af40203, 0x1234, 0x5678, { protocol: 17, fragment: 0x00b9 });
  for (let size = 2; size <= 8; size++) assert.is(innerFlowIndex(first, size), innerFlowIndex(later, size));
});

test('several TCP streams from one peer reach different sockets; without the program all reach one (the old spread)', () => {
  const flows = flowsTo5201(8);
  const expected = flows.map((f) => innerFlowIndex(f, 2));
  assert.ok(expected.includes(0) && expected.includes(1), 'the flows were chosen to hash to both sockets');

  const spread = group(2);
  assert.is(setReceiveSpread(spread.fds[0], 'inner-flow', 2), 0);
  let from = sender(spread.port);
  assert.equal(flows.map((f) => deliver(from, spread.fds, f)), expected);
  closeAll();

  // The control: the kernel's hash sees one outer 4-tuple, so one socket gets every flow.
  const plain = group(2);
  from = sender(plain.port);
  const reached = new Set(flows.map((f) => deliver(from, plain.fds, f)));
  assert.is(reached.size, 1, `without the program: ${[...reached]}`);
  closeAll();

  // 'kernel-hash' detaches a program an earlier agent attached.
  const detached = group(2);
  assert.is(setReceiveSpread(detached.fds[0], 'inner-flow', 2), 0);
  assert.is(setReceiveSpread(detached.fds[1], 'kernel-hash', 2), 0);
  from = sender(detached.port);
  assert.is(new Set(flows.map((f) => deliver(from, detached.fds, f))).size, 1);
  assert.is(setReceiveSpread(detached.fds[1], 'kernel-hash', 2), 0, 'detaching twice is no error');
});

test('what is not an inner IPv4 packet goes by the kernel hash: one socket for one outer 4-tuple', () => {
  const { port, fds } = group(2);
  assert.is(setReceiveSpread(fds[0], 'inner-flow', 2), 0);
  const from = sender(port);
  const ipv6 = new Uint8Array(48);
  ipv6[0] = 0x60;
  const reached = new Set<number>();
  for (let i = 0; i < 12; i++) {
    ipv6[23] = i; // a different source address each time: the kernel's hash ignores it
    assert.is(innerFlowIndex(ipv6, 2), KERNEL_HASH);
    reached.add(deliver(from, fds, ipv6));
  }
  assert.is(reached.size, 1);
  // Too short for the header: the program stops with 0, the first socket, as innerFlowIndex says.
  const short = inner(0x0af40102, 0x0af40203, 1, 2).subarray(0, 14);
  assert.is(innerFlowIndex(short, 2), 0);
  assert.is(deliver(from, fds, short), 0);
});

test('hand-over: once the old sockets are connected away, each flow reaches one new socket, before and after they close', () => {
  const flows = flowsTo5201(16);
  const old = group(2);
  assert.is(setReceiveSpread(old.fds[0], 'inner-flow', 2), 0);
  const fresh = group(2, old.port);
  assert.is(setReceiveSpread(fresh.fds[0], 'inner-flow', 2), 0); // the new agent's program replaces the old one's
  const all = [...old.fds, ...fresh.fds];
  const from = sender(old.port);
  // Joined, not withdrawn yet: the program's indices are the old agent's sockets, which still forward everything.
  assert.equal(flows.map((f) => deliver(from, all, f)), flows.map((f) => innerFlowIndex(f, 2)));
  for (const fd of old.fds) withdrawUdpSocket(fd, LOOPBACK);
  const withdrawn = flows.map((f) => deliver(from, all, f));
  assert.ok(withdrawn.every((i) => i >= 2), `a flow reached a withdrawn socket: ${withdrawn}`);
  assert.equal(flows.map((f) => deliver(from, all, f)), withdrawn, 'each flow stays on its socket');
  assert.ok(new Set(withdrawn).size === 2, 'both new sockets receive');
  for (const fd of old.fds) {
    libc.close(fd);
    opened.splice(opened.indexOf(fd), 1);
  }
  assert.equal(flows.map((f) => deliver(from, fresh.fds, f) + 2), withdrawn, 'closing the old sockets moves no flow');
});

test('a kernel that refuses the program: the kernel hash, said once in the log and in the stats; never an error', () => {
  const ENOPROTOOPT = 92;
  const refused = receiveSpreadOutcome({ backend: 'udp', mode: 'inner-flow', workers: 2, port: 8285, result: -ENOPROTOOPT });
  assert.is(refused.state, 'kernel-hash (the kernel refused the program: errno 92)');
  assert.match(refused.log!, /refused the receive spread's program: errno 92; its own 4-tuple hash gives each peer's traffic to one worker/);
  // The real refusal: a socket that is not in a SO_REUSEPORT group (EINVAL), which setReceiveSpread reports, not throws.
  const fd = libc.socket(libc.AF_INET, libc.SOCK_DGRAM | libc.SOCK_CLOEXEC, 0);
  opened.push(fd);
  const result = setReceiveSpread(fd, 'inner-flow', 2);
  assert.is(result, -22);
  assert.is(receiveSpreadOutcome({ backend: 'udp', mode: 'inner-flow', workers: 2, port: 8285, result }).state, 'kernel-hash (the kernel refused the program: errno 22)');

  const attached = receiveSpreadOutcome({ backend: 'udp', mode: 'inner-flow', workers: 4, port: 8285, result: 0 });
  assert.is(attached.state, 'inner-flow');
  assert.match(attached.log!, /each inner flow to one of 4 workers/);
  assert.equal(receiveSpreadOutcome({ backend: 'udp', mode: 'kernel-hash', workers: 2, port: 8285, result: 0 }), { state: 'kernel-hash (--receive-spread kernel-hash)' });
  assert.equal(receiveSpreadOutcome({ backend: 'udp', mode: 'kernel-hash', workers: 1, port: 8285, result: 0 }), { state: 'kernel-hash (one worker)' });
  assert.match(receiveSpreadOutcome({ backend: 'vxlan', mode: 'kernel-hash', workers: 2, port: 8472, result: 0 }).state, /^kernel-hash \(vxlan/);
});

test.run();
