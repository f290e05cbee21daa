// The loop a forwarding worker thread runs: wait in poll() for its TUN queue,
// its UDP socket or its wake-up eventfd, then let the forwarder drive both
// directions until they are drained. Latency lives here (how a sleeping
// thread is woken), throughput in forwarder.ts.
//
// The whole loop is one function, run(), entered once and never left while
// the worker lives: poll() is a call from code V8 has optimised, and the
// instructions between a wake-up and the first recvmmsg()/read() are that
// code's, not a fresh entry into a function called once per wake-up (which
// V8 kept in its baseline tier: docs/design.md, "Latency after idle").
// Bookkeeping (the heartbeat's clock, the observer's timers) comes after the
// forwarding it would otherwise delay. With nothing due, poll() has no
// timeout: an idle worker sleeps until a packet or a control message (a 1 s
// timeout woke every idle worker once a second; with two workers a node and a
// ping a second, that was more wake-ups than pings).
import * as libc from './libc.js';
import { Counter } from './worker-stats.js';
import type { Forwarder } from './forwarder.js';

export interface WorkerLoopOptions {
  tunFd: number;
  udpFd: number;
  /** eventfd the main thread writes to after posting a control message, to wake poll(). */
  wakeFd: number;
  /** After traffic, keep polling without sleeping for this long (µs) before blocking; 0 = never. */
  busyPollUs: number;
  counters: Float64Array;
  /**
   * poll() timeout when nothing is due; default none (-1): an idle worker
   * sleeps until a packet or a control message. The rehearsal passes 0.
   */
  idlePollTimeoutMs?: number;
}

export class WorkerLoop {
  private readonly pollFds = new libc.NativeMemory(3 * libc.SIZEOF_POLLFD);
  private readonly wakeValue = new libc.NativeMemory(8);
  private readonly c: Float64Array;
  // Own fields, not the options object: its shape depends on the caller, and
  // optimised code specialised on one shape is thrown away on another.
  private readonly wakeFd: number;
  private readonly busyPollUs: number;
  // Monotonic ms for busy polling, read into a typed array (performance.now() allocates an array per call).
  private readonly clock = new libc.MonotonicClock();
  private readonly now = new Float64Array(1);

  constructor(
    private readonly forwarder: Forwarder,
    opts: WorkerLoopOptions,
  ) {
    this.c = opts.counters;
    this.wakeFd = opts.wakeFd;
    this.busyPollUs = opts.busyPollUs;
    forwarder.setIdlePollTimeout(opts.idlePollTimeoutMs ?? -1);
    const view = this.pollFds.view;
    [opts.tunFd, opts.udpFd, opts.wakeFd].forEach((fd, i) => {
      view.setInt32(i * libc.SIZEOF_POLLFD, fd, true);
      view.setInt16(i * libc.SIZEOF_POLLFD + 4, libc.POLLIN, true);
    });
  }

  /**
   * Waits and forwards until a stop message arrives if turns is 0, or for `turns` waits (the rehearsal: it runs
   * this very function, so the code it leaves optimised is the loop's own;
   * always pass the argument, a default value would be a branch the
   * rehearsal never took, and V8 throws optimised code away on such a branch).
   * Throws on an unexpected syscall failure (the main thread restarts the worker).
   */
  run(turns: number): void {
    const c = this.c;
    const forwarder = this.forwarder;
    const pollFds = this.pollFds.pointer;
    const view = this.pollFds.view;
    const now = this.now;
    let left = turns;
    let busyUntil = 0;
    while (!forwarder.stopping) {
      // Right after traffic, look again without sleeping: the reply to what we
      // just forwarded usually comes within microseconds, and waking a sleeping
      // thread costs far more than that (a vCPU halt and an IPI on a VM).
      let ready = 0;
      if (busyUntil > 0) {
        do {
          ready = libc.poll(pollFds, 3, 0);
          c[Counter.SyscallsPoll]++;
          this.clock.readInto(now, 0);
        } while (ready === 0 && now[0] < busyUntil);
        busyUntil = 0;
      }
      if (ready === 0) {
        // Waiting tells the main thread an old heartbeat is an idle worker, not a stuck one.
        c[Counter.Waiting] = 1;
        ready = libc.poll(pollFds, 3, forwarder.pollTimeoutMs);
        c[Counter.Waiting] = 0;
        c[Counter.SyscallsPoll]++;
      }
      if (ready > 0) {
        if (view.getInt16(2 * libc.SIZEOF_POLLFD + 6, true) !== 0) libc.read(this.wakeFd, this.wakeValue.pointer, 8);
        forwarder.checkControl();
        // While either side has work, bypass poll() (flannel's trick): a read that
        // finds nothing costs less than the poll() that would have told us so.
        const rounds = forwarder.drive(view.getInt16(6, true) !== 0, view.getInt16(libc.SIZEOF_POLLFD + 6, true) !== 0);
        if (rounds > 0 && this.busyPollUs > 0) {
          this.clock.readInto(now, 0);
          busyUntil = now[0] + this.busyPollUs / 1000;
        }
      } else if (ready < 0) {
        const e = libc.errno();
        if (e !== libc.EINTR) throw new libc.SyscallError('poll', e);
      }
      // After the packets went out, never between a wake-up and its forwarding.
      forwarder.heartbeat();
      if (left > 0 && --left === 0) return;
    }
  }
}
