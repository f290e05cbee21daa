// The syscall layer against the real kernel, on loopback only: pool memory
// keeps its address, and a MessageBatch moves datagrams with sendmmsg and
// recvmmsg exactly where the pool says they are.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as libc from '../../src/dataplane/libc.js';
import { PacketPool } from '../../src/dataplane/packet-pool.js';
import { KernelBind } from '../../src/dataplane/kernel-bind.js';
import { DatagramBatch, SendBatch } from '../../src/dataplane/batches.js';
import { COUNTERS_PER_WORKER } from '../../src/dataplane/worker-stats.js';
import { openUdpSocket } from '../../src/dataplane/udp-socket.js';

const LOOPBACK = 0x7f000001;

test('NativeMemory keeps its address across garbage collections and allocations', () => {
  const mem = new libc.NativeMemory(1 << 20);
  const before = mem.address;
  const junk: ArrayBuffer[] = [];
  for (let i = 0; i < 2000; i++) junk.push(new ArrayBuffer(4096));
  (globalThis as { gc?: () => void }).gc?.();
  assert.is(mem.address, before);
  // And the kernel really writes where JS reads: read() from /dev/zero over a pattern.
  mem.bytes.fill(0xaa, 100, 200);
  const fd = libc.openPath('/dev/zero', libc.O_RDWR | libc.O_CLOEXEC);
  assert.is(libc.read(fd, mem.address + 120, 50), 50);
  libc.close(fd);
  assert.is(mem.bytes[119], 0xaa);
  assert.is(mem.bytes[120], 0);
  assert.is(mem.bytes[169], 0);
  assert.is(mem.bytes[170], 0xaa);
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
  const receiver = openUdpSocket({ bindAddress: LOOPBACK, port: 47_311, bufferBytes: 1 << 20, gro: false }).fd;
  const sender = openUdpSocket({ bindAddress: LOOPBACK, port: 47_312, bufferBytes: 1 << 20, gro: false }).fd;
  try {
    const pool = new PacketPool(16, 2048, 0);
    const bind = kernelBind(pool, receiver, sender, 8, 8);
    const out = new SendBatch(8, 16);
    for (let i = 0; i < 5; i++) {
      const off = pool.packetOffsets[i];
      const length = 100 + i * 37;
      for (let b = 0; b < length; b++) pool.bytes[off + b] = (i * 31 + b) & 0xff;
      // Two pieces per datagram, as a segment goes out: the kernel joins them.
      out.begin(LOOPBACK, 47_311, 0, 1);
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
      assert.is(batch.sourcePort[i], 47_312);
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
  const receiver = openUdpSocket({ bindAddress: LOOPBACK, port: 47_313, bufferBytes: 1 << 20, gro: false }).fd;
  const sender = openUdpSocket({ bindAddress: LOOPBACK, port: 47_314, bufferBytes: 1 << 20, gro: false }).fd;
  try {
    const big = new PacketPool(1, 4000, 0);
    const out = new SendBatch(1, 1);
    out.begin(LOOPBACK, 47_313, 0, 1);
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

test('two sockets can share a port (SO_REUSEPORT), one per worker', () => {
  const a = openUdpSocket({ bindAddress: LOOPBACK, port: 47_315, bufferBytes: 1 << 20, gro: false }).fd;
  const b = openUdpSocket({ bindAddress: LOOPBACK, port: 47_315, bufferBytes: 1 << 20, gro: false }).fd;
  libc.close(a);
  libc.close(b);
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
