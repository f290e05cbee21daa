// The peers' leases in kube mode: every node of the NodeWatch that carries
// flannel's annotations (kube-subnet-manager=true) and a pod CIDR, as a Lease
// (kube-annotations.ts nodeToLease), handed to the agent as a full snapshot
// on every change, through the same LeaseSource interface as etcd and the
// leases file, so the agent's lease checks apply to them alike.
//
// A node deleted from the API server leaves the next snapshot, so its lease
// goes. As client-go's informer resync (flannel's resyncPeriod, 5 min), the
// snapshot is also handed over periodically from the cache, with no API call.

import { cidrEquals, type Cidr } from './ipv4-address.js';
import type { Lease } from './lease.js';
import type { LeaseSource, LeaseSourceHandlers } from './lease-source.js';
import { type AnnotationNames, nodeToLease } from './kube-annotations.js';
import type { NodeWatch } from './kube-node-watch.js';

export const RESYNC_PERIOD_MS = 5 * 60 * 1000;

export interface KubeLeaseSourceOptions {
  names: AnnotationNames;
  /** this node: left out of the snapshots */
  ownNode: string;
  ownSubnet: Cidr;
  describe: string;
  resyncMs?: number;
}

export class KubeLeaseSource implements LeaseSource {
  private handlers: LeaseSourceHandlers | undefined;
  private unsubscribe: (() => void) | undefined;
  private resync: NodeJS.Timeout | undefined;
  /** the problems of the last snapshot, so a broken node is reported once, not on every event */
  private reported = new Set<string>();
  private last = '';

  constructor(
    private readonly watch: NodeWatch,
    private readonly opts: KubeLeaseSourceOptions,
  ) {}

  describe(): string {
    return this.opts.describe;
  }

  async start(handlers: LeaseSourceHandlers): Promise<void> {
    this.handlers = handlers;
    this.unsubscribe = this.watch.subscribe(() => this.emit(false));
    this.emit(true);
    this.resync = setInterval(() => this.emit(true), this.opts.resyncMs ?? RESYNC_PERIOD_MS);
    this.resync.unref?.();
  }

  /** SIGHUP: hand the current snapshot over again. */
  async reload(): Promise<void> {
    this.emit(true);
  }

  stop(): void {
    clearInterval(this.resync);
    this.unsubscribe?.();
    this.handlers = undefined;
  }

  /** The current peers' leases; a node that cannot be one is reported when it first fails so. */
  leases(): Lease[] {
    const leases: Lease[] = [];
    const problems = new Set<string>();
    for (const node of this.watch.all()) {
      const name = node.metadata?.name ?? '';
      if (name === this.opts.ownNode) continue;
      let lease: Lease | undefined;
      try {
        lease = nodeToLease(node, this.opts.names);
      } catch (err) {
        problems.add(`${(err as Error).message}; its lease is ignored`);
        continue;
      }
      if (lease === undefined) continue;
      if (cidrEquals(lease.subnet, this.opts.ownSubnet)) {
        problems.add(`node "${name}" claims this node's subnet ${lease.key}; ignored`);
        continue;
      }
      leases.push(lease);
    }
    // Reported once while it lasts, not on every event; again if it comes back after a fix.
    for (const p of problems) if (!this.reported.has(p)) this.handlers?.onError(new Error(p));
    this.reported = problems;
    return leases;
  }

  private emit(always: boolean): void {
    const handlers = this.handlers;
    if (handlers === undefined) return;
    const leases = this.leases();
    // Most node updates (heartbeats, status) change no lease: do not rebuild the table for them.
    const key = JSON.stringify(leases.map((l) => [l.key, l.publicIp, l.backendType, l.backendData]));
    if (!always && key === this.last) return;
    this.last = key;
    try {
      handlers.onLeases(leases);
    } catch (err) {
      handlers.onError(err as Error);
    }
  }
}
