// The main thread's handle on the data plane: it opens the TUN queues and UDP
// sockets (so every setup error surfaces before any worker starts), runs one
// worker thread per queue, pushes lease tables to them, restarts a worker
// that dies, and reads their counters.
//
// worker_threads, not piscina: piscina schedules short tasks onto whichever
// worker is idle, while here each thread is a loop that never finishes and
// must keep its own TUN queue and socket for the life of the agent (see
// docs/design.md).
import { Worker, MessageChannel, type MessagePort } from 'node:worker_threads';
import * as libc from './libc.js';
import { openTunQueues, closeTunQueues, describeOffloads, disableTunQueues, enableTunQueues, inspectTun, unpersistUnlessShared, TUN_F_TSO4, TUN_F_USO4, type TunOrigin } from './tun-device.js';
import { openWorkerSockets, closeWorkerSockets, type WorkerSockets } from './worker-sockets.js';
import { bindUdpSocket, bindUdpSocket6, queuedBytes, setReceiveSpread, withdrawUdpSocket, withdrawUdpSocket6 } from './udp-socket.js';
import { receiveSpreadOutcome } from './reuseport-cbpf.js';
import { allocateStats, workerCounters, snapshotWorker, Counter, type WorkerStatsSnapshot } from './worker-stats.js';
import type { WorkerData } from './worker-build.js';
import type { WorkerControlMessage, WorkerReport, TraceRequest } from './worker-messages.js';
import type { CaptureConfig } from './forwarder-observer.js';
import type { TraceEvent } from '../observe/trace-event.js';
import type { LeaseTableSnapshot } from '../control/lease-table.js';

export interface VxlanOptions {
  vni: number;
  vtepMac: Uint8Array;
  /** Outer UDP checksum: zero (RFC 7348's SHOULD, no GSO) or computed (allows UDP GSO). */
  udpChecksum: boolean;
  /** Send sockets per worker, each on its own source port, picked by inner-flow hash. */
  sourcePorts: number;
}

export interface DataPlaneOptions {
  tunName: string;
  /** The device outlives the agent (TUNSETPERSIST), for the next agent to attach to (tun-device.ts). */
  persistTun?: boolean;
  backend: 'udp' | 'vxlan';
  vxlan?: VxlanOptions;
  workers: number;
  bindAddress: number;
  port: number;
  mtu: number;
  /** Largest inner packet one underlay datagram carries (underlay MTU minus encapsulation). */
  pathMtu: number;
  /**
   * The IPv6 underlay: this node's public IPv6 (16 bytes) to bind its sockets
   * to, and the largest IPv6 packet one datagram over it carries. Absent: IPv6
   * pods travel over the IPv4 underlay and nothing IPv6 is opened.
   */
  bindAddress6?: Uint8Array;
  pathMtu6?: number;
  batchSize: number;
  socketBufferBytes: number;
  /** Use TUN offloads (virtio headers, TSO) and UDP GSO/GRO where the kernel has them. */
  offload: boolean;
  busyPollUs: number;
  /** Each worker warms its forwarding path on private sockets before it reports ready (rehearsal.ts). */
  rehearsal: boolean;
  ownNetwork: number;
  ownMask: number;
  /** Dual-stack: this node's IPv6 subnet (16 bytes) and its prefix length; absent on an IPv4-only node. */
  ownNetwork6?: Uint8Array;
  ownPrefix6?: number;
  /** This node's name in trace events: its subnet key. */
  node: string;
  /** --capture. */
  capture?: CaptureConfig;
  /**
   * UDP mode: which worker receives a datagram. 'inner-flow' (the default): a
   * classic BPF program on the port's SO_REUSEPORT group hashes the inner
   * flow (reuseport-cbpf.ts); 'kernel-hash': the kernel's outer 4-tuple hash,
   * one worker per peer. VXLAN mode always uses the kernel's hash: peers vary
   * the outer source port per flow.
   */
  receiveSpread?: 'inner-flow' | 'kernel-hash';
  log: (line: string) => void;
}

export interface TraceSettings {
  filter: string;
  /** Packets in all, across workers (0 = no limit). */
  limit: number;
  /** Packets per second per worker at most (0 = no limit). */
  perSecond: number;
}

interface WorkerSlot extends WorkerSockets {
  index: number;
  tunFd: number;
  thread?: Worker;
  port?: MessagePort;
  recentRestarts: number[];
}

const WORKER_URL = new URL('./worker-main.js', import.meta.url);
/**
 * A worker's young generation, capped at 3 MB (1 MB semi-spaces, V8 sizes it
 * 3 x semi-space) instead of growing to 48 MB: the forwarding loop allocates
 * nothing per packet (docs/design.md, "Allocation"), so a large young
 * generation only holds start-up garbage. Measured with bench/agent-memory.ts:
 * ~3 MiB of anonymous RSS per worker, with no throughput change (docs/design.md, "Memory").
 */
const WORKER_RESOURCE_LIMITS = { maxYoungGenerationSizeMb: 3 };
const STOP_TIMEOUT_MS = 3000;

export class DataPlane {
  private readonly slots: WorkerSlot[] = [];
  private readonly stats: SharedArrayBuffer;
  private readonly control: SharedArrayBuffer;
  private readonly controlSequence: Int32Array;
  private readonly wakeValue = new libc.NativeMemory(8);
  private leases: LeaseTableSnapshot;
  private stopping = false;
  private opened = false;
  private tunFds: number[] = [];
  /** The trace in force (workers started or restarted meanwhile join it), and where each session's events go. */
  private activeTrace: TraceRequest | undefined;
  private nextTraceSession = 0;
  private readonly traceHandlers = new Map<number, (event: TraceEvent) => void>();
  private vnetHeader = false;
  private tunUso = false;
  /** How the device was found: made now, kept from an earlier agent, or shared with a running one. */
  tunOrigin: TunOrigin = 'created';
  /** How the port's sockets share incoming datagrams, as the stats show it: 'inner-flow', or 'kernel-hash' with the reason. */
  receiveSpread = 'kernel-hash';

  constructor(
    private readonly opts: DataPlaneOptions,
    initialLeases: LeaseTableSnapshot,
  ) {
    this.leases = initialLeases;
    this.stats = allocateStats(opts.workers);
    this.control = new SharedArrayBuffer(4 * opts.workers);
    this.controlSequence = new Int32Array(this.control);
    this.wakeValue.setU64(0, 1);
  }

  /**
   * Opens the devices and sockets, runs `beforeWorkers` (the agent configures
   * the device there), and starts every worker; undoes everything if any
   * step fails.
   */
  async start(beforeWorkers?: () => Promise<void>): Promise<void> {
    const { opts } = this;
    try {
      if (!this.opened) this.open();
      await beforeWorkers?.();
      await Promise.all(this.slots.map((slot) => this.spawn(slot)));
      // Hand-over: our sockets join the old agent's SO_REUSEPORT group and our queues (opened disabled) take
      // flows only now that every worker has rehearsed; until then the old agent forwards everything.
      if (this.tunOrigin === 'handover') {
        for (const slot of this.slots) bindUdpSocket(slot.udpFd, opts.bindAddress, opts.port);
        if (opts.bindAddress6) for (const slot of this.slots) bindUdpSocket6(slot.udp6Fd, opts.bindAddress6, opts.port);
        this.spreadReceives();
        enableTunQueues(opts.tunName, this.tunFds);
      }
    } catch (err) {
      // A device made by this start goes; one kept from an earlier agent stays for the next.
      await this.stop({ removeDevice: this.tunOrigin === 'created' });
      throw err;
    }
  }

  /**
   * Opens the TUN queues and the sockets (start() does it when not done yet).
   * After a restart the agent calls it first thing: from then on packets
   * wait in the queues and socket buffers instead of being dropped.
   */
  open(): void {
    const { opts } = this;
    this.opened = true;
    const tun = openTunQueues(opts.tunName, opts.workers, opts.offload, opts.persistTun ?? false);
    this.tunFds = tun.fds;
    this.tunOrigin = tun.origin;
    this.vnetHeader = tun.vnetHeader;
    this.tunUso = (tun.offloads & TUN_F_USO4) !== 0;
    for (let i = 0; i < opts.workers; i++) {
      const sockets = openWorkerSockets({
        bindAddress: opts.bindAddress,
        port: opts.port,
        socketBufferBytes: opts.socketBufferBytes,
        offload: opts.offload,
        vxlan: opts.backend === 'vxlan' && opts.vxlan ? opts.vxlan : undefined,
        deferBind: this.tunOrigin === 'handover',
        bindAddress6: opts.bindAddress6,
      });
      this.slots.push({
        index: i,
        tunFd: this.tunFds[i],
        ...sockets,
        recentRestarts: [],
      });
    }
    if (this.tunOrigin !== 'handover') this.spreadReceives();
    if (opts.offload) {
      const s = this.slots[0];
      opts.log(
        `offloads: TUN ${describeOffloads(tun.offloads)}${tun.offloads & TUN_F_TSO4 ? '' : ' (no TSO: one packet per read)'}, ` +
          `UDP GSO ${s.udpGso ? 'on' : opts.backend === 'vxlan' && !opts.vxlan?.udpChecksum ? 'off (zero VXLAN checksum; --vxlan-udp-checksum on allows GSO)' : 'off (kernel refused; one datagram per send)'}, ` +
          `UDP GRO ${s.udpGro ? 'on' : 'off (kernel refused; one datagram per receive)'}`,
      );
    } else {
      opts.log('offloads: off (--offload off): one packet per TUN read and write');
    }
    if (opts.bindAddress6) {
      const s = this.slots[0];
      opts.log(
        `IPv6 underlay: ${opts.workers} more socket(s) on port ${opts.port}${s.send6Fds.length > 1 ? ` and ${s.send6Fds.length} senders each` : ''}, ` +
          `UDP GSO ${s.udp6Gso ? 'on' : 'off'}, UDP GRO ${s.udp6Gro ? 'on' : 'off'}, path MTU ${opts.pathMtu6 ?? opts.pathMtu}`,
      );
    }
  }

  /**
   * Once our sockets are bound (in a hand-over: in the old agent's group, whose
   * program ours replaces). Our program's indices cover the first `workers`
   * sockets of the group: in a hand-over the old agent's, until it withdraws
   * (connects them away), when the kernel's lookup passes the flows on to ours,
   * each flow to one socket (docs/design.md, "Receive spread"). A kernel that
   * refuses the program keeps its own hash: logged once, shown in the stats.
   */
  private spreadReceives(): void {
    const { opts } = this;
    const mode = opts.backend === 'udp' && opts.workers > 1 ? opts.receiveSpread ?? 'inner-flow' : 'kernel-hash';
    const ret = opts.backend === 'udp' ? setReceiveSpread(this.slots[0].udpFd, mode, opts.workers) : 0;
    const outcome = receiveSpreadOutcome({ backend: opts.backend, mode, workers: opts.workers, port: opts.port, result: ret });
    this.receiveSpread = outcome.state;
    if (outcome.log) opts.log(outcome.log);
  }

  private spawn(slot: WorkerSlot): Promise<void> {
    const { port1, port2 } = new MessageChannel();
    const data: WorkerData = {
      workerIndex: slot.index,
      tunFd: slot.tunFd,
      udpFd: slot.udpFd,
      wakeFd: slot.wakeFd,
      controlPort: port2,
      stats: this.stats,
      control: this.control,
      leases: this.leases,
      backend: this.opts.backend,
      vni: this.opts.vxlan?.vni ?? 0,
      vtepMac: this.opts.vxlan?.vtepMac ?? new Uint8Array(6),
      sendFds: slot.sendFds,
      // By send queue: the IPv6 underlay's senders follow the IPv4 ones (captures and traces show their ports).
      sendPorts: [...slot.sendPorts, ...slot.send6Ports],
      ...(slot.udp6Fd >= 0
        ? {
            udp6Fd: slot.udp6Fd,
            send6Fds: slot.send6Fds,
            udp6Gro: slot.udp6Gro,
            udp6Gso: slot.udp6Gso,
            pathMtu6: this.opts.pathMtu6,
            udpPollFd: slot.udpPollFd,
            publicIpv6: this.opts.bindAddress6,
          }
        : {}),
      node: this.opts.node,
      publicIp: this.opts.bindAddress,
      capture: this.opts.capture,
      trace: this.activeTrace,
      peerPort: this.opts.port,
      batchSize: this.opts.batchSize,
      mtu: this.opts.mtu,
      pathMtu: this.opts.pathMtu,
      vnetHeader: this.vnetHeader,
      udpGro: slot.udpGro,
      udpGso: slot.udpGso,
      tunUso: this.tunUso,
      busyPollUs: this.opts.busyPollUs,
      rehearsal: this.opts.rehearsal,
      offload: this.opts.offload,
      udpChecksum: this.opts.vxlan?.udpChecksum ?? true,
      ownNetwork: this.opts.ownNetwork,
      ownMask: this.opts.ownMask,
      ...(this.opts.ownNetwork6 !== undefined ? { ownNetwork6: this.opts.ownNetwork6, ownPrefix6: this.opts.ownPrefix6 } : {}),
    };
    const thread = new Worker(WORKER_URL, {
      workerData: data,
      transferList: [port2],
      name: `forwarder-${slot.index}`,
      resourceLimits: WORKER_RESOURCE_LIMITS,
    });
    slot.thread = thread;
    slot.port = port1;
    return new Promise((resolve, reject) => {
      let ready = false;
      thread.on('message', (m: WorkerReport) => {
        if (m.type === 'ready' && !ready) {
          ready = true;
          resolve();
        } else if (m.type === 'log') {
          this.opts.log(m.line);
        } else if (m.type === 'trace') {
          this.traceHandlers.get(m.session)?.(m.event);
        }
      });
      thread.on('error', (err) => {
        this.opts.log(`worker ${slot.index} failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}`);
        if (!ready) reject(err);
      });
      thread.on('exit', (code) => {
        if (slot.thread !== thread) return;
        slot.thread = undefined;
        if (!ready) reject(new Error(`worker ${slot.index} exited with code ${code} before it was ready`));
        else if (!this.stopping) this.restart(slot, code);
      });
    });
  }

  /**
   * A worker died: start a new one on the same TUN queue and socket. The
   * other workers keep forwarding meanwhile; flows hashed to this queue wait
   * for the new thread (milliseconds). Repeated deaths back off.
   */
  private restart(slot: WorkerSlot, code: number): void {
    const now = Date.now();
    slot.recentRestarts = slot.recentRestarts.filter((t) => now - t < 60_000);
    slot.recentRestarts.push(now);
    const delayMs = Math.min(5000, 50 * 2 ** (slot.recentRestarts.length - 1));
    workerCounters(this.stats, slot.index)[Counter.Restarts]++;
    this.opts.log(`worker ${slot.index} exited (code ${code}); restarting it in ${delayMs} ms`);
    setTimeout(() => {
      if (this.stopping) return;
      this.spawn(slot).catch((err) => this.opts.log(`worker ${slot.index} restart failed: ${err}`));
    }, delayMs);
  }

  /** Hands a new lease table to every worker; each swaps it in between two packets. */
  updateLeases(snapshot: LeaseTableSnapshot): void {
    this.leases = snapshot;
    for (const slot of this.slots) this.post(slot, { type: 'leases', snapshot });
  }

  private post(slot: WorkerSlot, msg: WorkerControlMessage): void {
    if (!slot.port || !slot.thread) return;
    slot.port.postMessage(msg);
    Atomics.add(this.controlSequence, slot.index, 1);
    libc.write(slot.wakeFd, this.wakeValue.address, 8);
  }

  /**
   * Traces packets matching settings.filter on every worker; each event goes
   * to onEvent. One trace at a time: a new one replaces the old. Returns the
   * function that ends it.
   */
  startTrace(settings: TraceSettings, onEvent: (event: TraceEvent) => void): () => void {
    const session = this.nextTraceSession++;
    const request: TraceRequest = { session, ...settings, shared: new SharedArrayBuffer(4) };
    if (this.activeTrace) this.traceHandlers.delete(this.activeTrace.session);
    this.activeTrace = request;
    this.traceHandlers.set(session, onEvent);
    for (const slot of this.slots) this.post(slot, { type: 'trace', request });
    return () => {
      if (this.activeTrace?.session === session) this.activeTrace = undefined;
      this.traceHandlers.delete(session);
      for (const slot of this.slots) this.post(slot, { type: 'trace-stop', session });
    };
  }

  /** Fault injection for tests: makes worker `index` throw; it is restarted like any failed worker. */
  crashWorker(index: number): void {
    const slot = this.slots[index];
    if (slot) this.post(slot, { type: 'crash' });
  }

  /**
   * A restart exit while another agent is attached to the device (a
   * hand-over): first withdraw from the traffic (TUN queues disabled, so the
   * kernel hashes every flow over the other agent's queues; UDP sockets
   * connected away, so the port's SO_REUSEPORT group gives them nothing
   * more), then let the workers forward what they already hold, and only
   * then stop them. Nothing in flight is dropped. Returns false (and does
   * nothing) when no other agent is attached.
   */
  async withdraw(maxWaitMs = 500): Promise<boolean> {
    const state = inspectTun(this.opts.tunName);
    if (!this.opts.persistTun || state.kind !== 'tun' || state.queues <= this.tunFds.length) return false;
    disableTunQueues(this.opts.tunName, this.tunFds);
    for (const slot of this.slots) withdrawUdpSocket(slot.udpFd, this.opts.bindAddress);
    if (this.opts.bindAddress6) for (const slot of this.slots) withdrawUdpSocket6(slot.udp6Fd, this.opts.bindAddress6);
    const deadline = Date.now() + maxWaitMs;
    // Drained: nothing left in the sockets, then one more moment for the workers' last batch.
    while (Date.now() < deadline && this.slots.some((slot) => queuedBytes(slot.udpFd) > 0 || (slot.udp6Fd >= 0 && queuedBytes(slot.udp6Fd) > 0))) {
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
    this.opts.log(`${this.opts.tunName}: withdrew from the traffic; the other agent forwards everything now`);
    return true;
  }

  /**
   * Stops the workers, then closes the sockets and the TUN queues. A
   * non-persistent device goes with its queues; a persistent one stays with
   * its address and routes (a restart) unless removeDevice is set and no
   * other agent is attached (a clean exit).
   */
  async stop(opts: { removeDevice?: boolean } = {}): Promise<void> {
    this.stopping = true;
    await Promise.all(
      this.slots.map(async (slot) => {
        const thread = slot.thread;
        if (!thread) return;
        const exited = new Promise<void>((resolve) => thread.once('exit', () => resolve()));
        this.post(slot, { type: 'stop' });
        const timer = setTimeout(() => void thread.terminate(), STOP_TIMEOUT_MS);
        await exited;
        clearTimeout(timer);
      }),
    );
    for (const slot of this.slots) {
      closeWorkerSockets(slot);
      slot.port?.close();
    }
    this.slots.length = 0;
    if (this.opts.persistTun && opts.removeDevice && this.tunFds.length > 0 && !unpersistUnlessShared(this.opts.tunName, this.tunFds)) {
      this.opts.log(`${this.opts.tunName}: another agent is attached (a hand-over); the device stays with it`);
    }
    closeTunQueues(this.tunFds);
    this.tunFds = [];
  }

  statsSnapshot(): WorkerStatsSnapshot[] {
    return Array.from({ length: this.opts.workers }, (_, i) => snapshotWorker(this.stats, i));
  }
}
