// The syscall layer against the real kernel, on loopback only: pool memory
// keeps its address, and a MessageBatch moves datagrams with sendmmsg and
// recvmmsg exactly where the pool says they are; SO_REUSEPORT shares a port.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as libc from '../../src/dataplane/libc.js';
import { PacketPool } from '../../src/dataplane/packet-pool.js';
import { KernelBind } from '../../src/dataplane/kernel-bind.js';
import { DatagramBatch, SendBatch } from '../../src/dataplane/batches.js';
import { COUNTERS_PER_WORKER } from '../../src/dataplane/worker-stats.js';
import { openUdpSocket, writeSockaddrIn } from '../../src/dataplane/udp-socket.js';
import { execFileSync } from 'node:child_process';
import { createSocket, type Socket } from 'node:dgram';
import { fileURLToPath } from 'node:url';

const LOOPBACK = 0x7f000001;

// The address is read once, in the constructor, and handed to the kernel for
// as long as the agent runs: that is only sound if the ArrayBuffer's backing
// store never moves. A child with --expose-gc (really passed, so gc() exists)
// reads the address back from the ArrayBuffer after forced full and minor
// collections under allocation pressure, and has the kernel write through the
// old address afterwards.
const NATIVE_MEMORY_GC_PROBE = `
import * as libc from ${JSON.stringify(new URL('../../src/dataplane/libc.js', import.meta.url).href)};
import koffi from 'koffi';
if (typeof globalThis.gc !== 'function') { console.error('gc() missing: --expose-gc was not passed'); process.exit(3); }
const blocks = [new libc.NativeMemory(64), new libc.NativeMemory(4096), new libc.NativeMemory(1 << 20)];
const before = blocks.map((m) => m.address);
let keep = [];
for (let round = 0; round < 20; round++) {
  // Pressure on both generations and on the array-buffer allocator, some of it kept alive across collections.
  const junk = [];
  for (let i = 0; i < 2000; i++) junk.push(new ArrayBuffer(4096), { i, s: 'x'.repeat(i & 63) }, new Array(32).fill(i));
  keep.push(junk.slice(0, 500));
  if (keep.length > 4) keep.shift();
  globalThis.gc({ type: 'minor' });
  globalThis.gc();
}
const after = blocks.map((m) => Number(koffi.address(m.buffer)));
// The kernel writes through the address taken before the collections; JS reads it through the same ArrayBuffer.
const mem = blocks[2];
mem.bytes.fill(0xaa, 100, 200);
const fd = libc.openPath('/dev/zero', libc.O_RDWR | libc.O_CLOEXEC);
const n = libc.read(fd, before[2] + 120, 50);
libc.close(fd);
process.stdout.write(JSON.stringify({ before, after, n, bytes: [mem.bytes[119], mem.bytes[120], mem.bytes[169], mem.bytes[170]] }));
`;

test('NativeMemory: the ArrayBuffer backing store keeps its address across forced garbage collections', () => {
  const out = execFileSync(process.execPath, ['--expose-gc', '--max-semi-space-size=1', '--input-type=module', '-e', NATIVE_MEMORY_GC_PROBE], {
    cwd: fileURLToPath(new URL('../../../', import.meta.url)), // resolves 'koffi' from the project's node_modules
    encoding: 'utf8',
    timeout: 60_000,
  });
  const r = JSON.parse(out) as { before: number[]; after: number[]; n: number; bytes: number[] };
  assert.ok(r.before.every((a) => a > 0));
  assert.equal(r.after, r.before, 'koffi.address(buffer) after the collections equals the address read at construction');
  assert.is(r.n, 50);
  assert.equal(r.bytes, [0xaa, 0, 0, 0xaa], 'the kernel wrote exactly where the ArrayBuffer is read');
});

test('PacketPool slots are aligned, disjoint and keep their headroom', () => {
  const pool = new PacketPool(8, 1500, 22);
  assert.is(pool.slotSize % 64, 0);
  for (let i = 0; i < 8; i++) {
    assert.is(pool.packetOffsets[i], i * pool.slotSize + 22);
    assert.ok(pool.packetOffsets[i] + pool.capacity <= (i + 1) * pool.slotSize);
  }
});

function kernelBind(pool: PacketPool, receiveFd: number, sendFd: number, firstSlot: number, batchSize: number): KernelBind {
  return new KernelBind({
    receiveFd,
    sendFds: [sendFd],
    pool,
    firstSlot,
    batchSize,
    gro: false,
    gso: false,
    maxMessages: 8,
    maxPieces: 16,
    counters: new Float64Array(COUNTERS_PER_WORKER),
  });
}

test('KernelBind: sendmmsg and recvmmsg move a batch of datagrams between pool slots', () => {
  // Kernel-chosen ports: these sockets use SO_REUSEPORT, so a fixed port could share datagrams with another run.
  const rxSocket = openUdpSocket({ bindAddress: LOOPBACK, port: 0, bufferBytes: 1 << 20, gro: false });
  const txSocket = openUdpSocket({ bindAddress: LOOPBACK, port: 0, bufferBytes: 1 << 20, gro: false });
  const receiver = rxSocket.fd;
  const sender = txSocket.fd;
  try {
    const pool = new PacketPool(16, 2048, 0);
    const bind = kernelBind(pool, receiver, sender, 8, 8);
    const out = new SendBatch(8, 16);
    for (let i = 0; i < 5; i++) {
      const off = pool.packetOffsets[i];
      const length = 100 + i * 37;
      for (let b = 0; b < length; b++) pool.bytes[off + b] = (i * 31 + b) & 0xff;
      // Two pieces per datagram, as a segment goes out: the kernel joins them.
      out.begin(LOOPBACK, rxSocket.port, 0, 1);
      out.add(off, 40);
      out.add(off + 40, length - 40);
      out.end();
    }
    assert.is(bind.send(0, out, 0), 5);

    const batch = new DatagramBatch(8);
    bind.receive(batch);
    assert.is(batch.count, 5);
    assert.ok(batch.drained, 'a short batch means the socket is drained');
    for (let i = 0; i < 5; i++) {
      const off = batch.offset[i];
      assert.is(off, pool.packetOffsets[8 + i]);
      const length = batch.length[i];
      assert.is(length, 100 + i * 37);
      assert.is(batch.sourceIp[i], LOOPBACK);
      assert.is(batch.sourcePort[i], txSocket.port);
      assert.is(batch.truncated[i], 0);
      for (let b = 0; b < length; b++) {
        if (pool.bytes[off + b] !== ((i * 31 + b) & 0xff)) assert.unreachable(`datagram ${i} byte ${b} differs`);
      }
    }
    // Nothing left: the next receive reports drained rather than blocking.
    bind.receive(batch);
    assert.is(batch.count, 0);
    assert.ok(batch.drained);
  } finally {
    libc.close(receiver);
    libc.close(sender);
  }
});

test('KernelBind: a datagram larger than the slot is flagged truncated (MSG_TRUNC), not silently cut', () => {
  const rxSocket = openUdpSocket({ bindAddress: LOOPBACK, port: 0, bufferBytes: 1 << 20, gro: false });
  const receiver = rxSocket.fd;
  const sender = openUdpSocket({ bindAddress: LOOPBACK, port: 0, bufferBytes: 1 << 20, gro: false }).fd;
  try {
    const big = new PacketPool(1, 4000, 0);
    const out = new SendBatch(1, 1);
    out.begin(LOOPBACK, rxSocket.port, 0, 1);
    out.add(big.packetOffsets[0], 3000);
    out.end();
    assert.is(kernelBind(big, receiver, sender, 0, 1).send(0, out, 0), 1);
    const small = new PacketPool(1, 1000, 0);
    const batch = new DatagramBatch(1);
    kernelBind(small, receiver, sender, 0, 1).receive(batch);
    assert.is(batch.count, 1);
    assert.is(batch.truncated[0], 1);
  } finally {
    libc.close(receiver);
    libc.close(sender);
  }
});

test('two sockets share a port with SO_REUSEPORT (one per worker), the kernel spreads flows over both; without it, bind fails', async () => {
  // The first on a kernel-chosen port (a fixed one could join another run's group), the second on the same.
  const a = openUdpSocket({ bindAddress: LOOPBACK, port: 0, bufferBytes: 1 << 20, gro: false });
  const port = a.port;
  const b = openUdpSocket({ bindAddress: LOOPBACK, port, bufferBytes: 1 << 20, gro: false });
  const plain = libc.socket(libc.AF_INET, libc.SOCK_DGRAM | libc.SOCK_CLOEXEC, 0);
  const senders: Socket[] = [];
  try {
    assert.equal([a.port, b.port], [port, port]);
    // A socket without SO_REUSEPORT may not join them: the option is what makes sharing work.
    const addr = new libc.NativeMemory(16);
    writeSockaddrIn(addr, 0, LOOPBACK, port);
    const err = (() => {
      try {
        libc.bind(plain, addr.address, libc.SIZEOF_SOCKADDR_IN, 'plain');
      } catch (e) {
        return e as libc.SyscallError;
      }
    })();
    assert.instance(err, libc.SyscallError, 'bind without SO_REUSEPORT succeeded');
    assert.is(err!.code, 98, 'EADDRINUSE');
    // 32 flows (one source port each): the 4-tuple hash gives each socket some, and every datagram arrives once.
    for (let i = 0; i < 32; i++) {
      const s = createSocket('udp4');
      senders.push(s);
      await new Promise<void>((resolve, reject) => s.send(Buffer.from(`flow ${i}`), port, '127.0.0.1', (e) => (e ? reject(e) : resolve())));
    }
    const buf = new libc.NativeMemory(2048);
    const drain = (fd: number): string[] => {
      const got: string[] = [];
      for (;;) {
        const n = libc.read(fd, buf.address, 2048);
        if (n < 0) break; // EAGAIN: the socket is non-blocking and empty
        got.push(Buffer.from(buf.bytes.subarray(0, n)).toString());
      }
      return got;
    };
    const gotA = drain(a.fd);
    const gotB = drain(b.fd);
    assert.ok(gotA.length > 0 && gotB.length > 0, `flows spread: ${gotA.length} / ${gotB.length}`);
    assert.equal([...gotA, ...gotB].sort(), Array.from({ length: 32 }, (_, i) => `flow ${i}`).sort());
  } finally {
    for (const s of senders) s.close();
    libc.close(plain);
    libc.close(a.fd);
    libc.close(b.fd);
  }
});

test('setup errors carry the syscall and errno text', () => {
  const err = (() => {
    try {
      libc.openPath('/nonexistent/flannel-udp', libc.O_RDWR);
    } catch (e) {
      return e as libc.SyscallError;
    }
  })();
  assert.instance(err, libc.SyscallError);
  assert.is(err!.code, 2);
  assert.match(err!.message, /open \/nonexistent\/flannel-udp: No such file or directory/);
});

test.run();
