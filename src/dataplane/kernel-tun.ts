// A TUN queue file descriptor as a TunDevice: the frame primitives are
// read(), write() and writev() (tun-device.ts opens the descriptor; frame-tun.ts
// does everything between frames and packets).
import * as libc from './libc.js';
import { Counter } from './worker-stats.js';
import { FrameTun, FRAME_EMPTY, MAX_WRITE_PIECES, type FrameTunOptions } from './frame-tun.js';

export class KernelTun extends FrameTun {
  private readonly poolAddress: number;
  /** Frame addresses for read()/write(), made once per offset (never a number computed per call: see libc.ts). */
  private readonly pointers: libc.Pointers;
  private readonly iov = new libc.NativeMemory(MAX_WRITE_PIECES * libc.SIZEOF_IOVEC);

  constructor(
    readonly fd: number,
    opts: FrameTunOptions,
  ) {
    super(opts);
    this.poolAddress = opts.pool.memory.address;
    this.pointers = new libc.Pointers(opts.pool.memory);
  }

  protected readFrame(offset: number, maxLength: number): number {
    for (;;) {
      const n = libc.read(this.fd, this.pointers.at(offset), maxLength);
      this.c[Counter.SyscallsTunRead]++;
      if (n >= 0) return n;
      const e = libc.errno();
      if (e === libc.EAGAIN) return FRAME_EMPTY;
      if (e !== libc.EINTR) throw new libc.SyscallError('read', e, 'TUN');
    }
  }

  protected writeFrame(pieces: number, total: number): number {
    if (pieces === 1) {
      for (;;) {
        const w = libc.write(this.fd, this.pointers.at(this.pieceOffset[0]), total);
        this.c[Counter.SyscallsTunWrite]++;
        if (w >= 0 || libc.errno() !== libc.EINTR) return w;
      }
    }
    const iov = this.iov;
    for (let i = 0; i < pieces; i++) {
      iov.setU64(i * libc.SIZEOF_IOVEC, this.poolAddress + this.pieceOffset[i]);
      iov.setU64(i * libc.SIZEOF_IOVEC + 8, this.pieceLength[i]);
    }
    for (;;) {
      const w = libc.writev(this.fd, iov.pointer, pieces);
      this.c[Counter.SyscallsTunWritev]++;
      if (w >= 0 || libc.errno() !== libc.EINTR) return w;
    }
  }
}
