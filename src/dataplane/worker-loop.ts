// The loop a forwarding worker thread runs: wait in poll() for its TUN queue,
// its UDP socket or its wake-up eventfd, then let the forwarder drive both
// directions until they are drained. Latency lives here (how a sleeping
// thread is woken), throughput in forwarder.ts.
import * as libc from './libc.js';
import { Counter } from './worker-stats.js';
import type { Forwarder } from './forwarder.js';

const POLL_TIMEOUT_MS = 1000;

export interface WorkerLoopOptions {
  tunFd: number;
  udpFd: number;
  /** eventfd the main thread writes to after posting a control message, to wake poll(). */
  wakeFd: number;
  /** After traffic, keep polling without sleeping for this long (µs) before blocking; 0 = never. */
  busyPollUs: number;
  counters: Float64Array;
}

export class WorkerLoop {
  private readonly pollFds = new libc.NativeMemory(3 * libc.SIZEOF_POLLFD);
  private readonly wakeValue = new libc.NativeMemory(8);
  private readonly c: Float64Array;
  // Own fields, not the options object: its shape depends on the caller, and
  // optimised code specialised on one shape is thrown away on another.
  private readonly wakeFd: number;
  private readonly busyPollUs: number;
  private busyUntil = 0;

  constructor(
    private readonly forwarder: Forwarder,
    opts: WorkerLoopOptions,
  ) {
    this.c = opts.counters;
    this.wakeFd = opts.wakeFd;
    this.busyPollUs = opts.busyPollUs;
    const view = this.pollFds.view;
    [opts.tunFd, opts.udpFd, opts.wakeFd].forEach((fd, i) => {
      view.setInt32(i * libc.SIZEOF_POLLFD, fd, true);
      view.setInt16(i * libc.SIZEOF_POLLFD + 4, libc.POLLIN, true);
    });
  }

  /** Runs until a stop message arrives. Throws on an unexpected syscall failure (the main thread restarts the worker). */
  run(): void {
    while (!this.forwarder.stopping) this.turn(POLL_TIMEOUT_MS);
    this.forwarder.close();
  }

  /** One wait (at most timeoutMs) and the forwarding it wakes up for. */
  turn(timeoutMs: number): void {
    const c = this.c;
    const forwarder = this.forwarder;
    const pollFds = this.pollFds;
    const view = pollFds.view;
    forwarder.heartbeat();
    // Right after traffic, look again without sleeping: the reply to what we
    // just forwarded usually comes within microseconds, and waking a sleeping
    // thread costs far more than that (a vCPU halt and an IPI on a VM).
    let ready = 0;
    if (this.busyUntil > 0) {
      do {
        ready = libc.poll(pollFds.pointer, 3, 0);
        c[Counter.SyscallsPoll]++;
      } while (ready === 0 && performance.now() < this.busyUntil);
      this.busyUntil = 0;
    }
    if (ready === 0) {
      ready = libc.poll(pollFds.pointer, 3, timeoutMs);
      c[Counter.SyscallsPoll]++;
    }
    if (ready < 0) {
      const e = libc.errno();
      if (e === libc.EINTR) return;
      throw new libc.SyscallError('poll', e);
    }
    if (view.getInt16(2 * libc.SIZEOF_POLLFD + 6, true) !== 0) libc.read(this.wakeFd, this.wakeValue.pointer, 8);
    forwarder.checkControl();
    // While either side has work, bypass poll() (flannel's trick): a read that
    // finds nothing costs less than the poll() that would have told us so.
    const rounds = forwarder.drive(view.getInt16(6, true) !== 0, view.getInt16(libc.SIZEOF_POLLFD + 6, true) !== 0);
    if (rounds > 0 && this.busyPollUs > 0) this.busyUntil = performance.now() + this.busyPollUs / 1000;
  }
}
