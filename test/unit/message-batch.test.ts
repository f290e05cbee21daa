// The syscall layer against the real kernel, on loopback only: pool memory
// keeps its address, and a MessageBatch moves datagrams with sendmmsg and
// recvmmsg exactly where the pool says they are.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as libc from '../../src/dataplane/libc.js';
import { PacketPool } from '../../src/dataplane/packet-pool.js';
import { MessageBatch } from '../../src/dataplane/message-batch.js';
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
  assert.is(pool.addressOf(pool.packetOffsets[3]), pool.memory.address + pool.packetOffsets[3]);
});

test('sendmmsg and recvmmsg move a batch of datagrams between pool slots', () => {
  const receiver = openUdpSocket({ bindAddress: LOOPBACK, port: 47_311, bufferBytes: 1 << 20, gro: false }).fd;
  const sender = openUdpSocket({ bindAddress: LOOPBACK, port: 47_312, bufferBytes: 1 << 20, gro: false }).fd;
  try {
    const pool = new PacketPool(16, 2048, 0);
    const tx = new MessageBatch(pool, 0, 8);
    const rx = new MessageBatch(pool, 8, 8);
    for (let i = 0; i < 5; i++) {
      const off = pool.packetOffsets[i];
      const length = 100 + i * 37;
      for (let b = 0; b < length; b++) pool.bytes[off + b] = (i * 31 + b) & 0xff;
      tx.setBuffer(i, off, length);
      tx.setDestination(i, LOOPBACK, 47_311);
    }
    assert.is(libc.sendmmsg(sender, tx.address, 5, 0), 5);
    for (let i = 0; i < 5; i++) assert.is(tx.messageLength(i), 100 + i * 37);

    rx.prepareReceive(8);
    const n = libc.recvmmsg(receiver, rx.address, 8, libc.MSG_DONTWAIT);
    assert.is(n, 5);
    for (let i = 0; i < 5; i++) {
      const off = pool.packetOffsets[8 + i];
      const length = rx.messageLength(i);
      assert.is(length, 100 + i * 37);
      assert.is(rx.sourceAddress(i), LOOPBACK);
      assert.is(rx.sourcePort(i), 47_312);
      assert.is(rx.messageFlags(i) & libc.MSG_TRUNC, 0);
      for (let b = 0; b < length; b++) {
        if (pool.bytes[off + b] !== ((i * 31 + b) & 0xff)) assert.unreachable(`datagram ${i} byte ${b} differs`);
      }
    }
    // Nothing left: the next call reports EAGAIN rather than blocking.
    assert.is(libc.recvmmsg(receiver, rx.address, 8, libc.MSG_DONTWAIT), -1);
    assert.is(libc.errno(), libc.EAGAIN);
  } finally {
    libc.close(receiver);
    libc.close(sender);
  }
});

test('a datagram larger than the slot is flagged MSG_TRUNC, not silently cut', () => {
  const receiver = openUdpSocket({ bindAddress: LOOPBACK, port: 47_313, bufferBytes: 1 << 20, gro: false }).fd;
  const sender = openUdpSocket({ bindAddress: LOOPBACK, port: 47_314, bufferBytes: 1 << 20, gro: false }).fd;
  try {
    const big = new PacketPool(1, 4000, 0);
    const tx = new MessageBatch(big, 0, 1);
    tx.setBuffer(0, big.packetOffsets[0], 3000);
    tx.setDestination(0, LOOPBACK, 47_313);
    assert.is(libc.sendmmsg(sender, tx.address, 1, 0), 1);
    const small = new PacketPool(1, 1000, 0);
    const rx = new MessageBatch(small, 0, 1);
    assert.is(libc.recvmmsg(receiver, rx.address, 1, libc.MSG_DONTWAIT), 1);
    assert.ok((rx.messageFlags(0) & libc.MSG_TRUNC) !== 0);
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
