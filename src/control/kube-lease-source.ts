// The peers' leases in kube mode: every node of the NodeWatch that carries
// flannel's annotations (kube-subnet-manager=true) and a pod CIDR, as a Lease
// (kube-annotations.ts nodeToLease), handed to the agent as a full snapshot
// on every change, through the same LeaseSource interface as etcd and the
// leases file, so the agent's lease checks apply to them alike.
//
// A node deleted from the API server leaves the next snapshot, so its lease
// goes. As client-go's informer resync (flannel's resyncPeriod, 5 min), the
// snapshot is also handed over periodically from the cache, with no API call.
//
// Per watch event the work is O(1) unless a lease changed: most node events
// are kubelet's status updates (every node, every few minutes; 17 events/s
// in a 5 000-node cluster), and rebuilding every node's lease for each was
// O(N) per event, O(N²) per agent per interval. Each node object's lease is
// computed once (the watch replaces the object on every change), and an
// event whose node still has the lease it had in the last snapshot ends there.

import { cidrEquals, type Cidr } from './ipv4-address.js';
import { type Cidr6, cidr6Equals, formatIPv6 } from './ipv6-address.js';
import type { Lease } from './lease.js';
import { checkIpv6Leases, type Ipv6LeaseRejectReason } from './ipv6-lease-checks.js';
import type { LeaseSource, LeaseSourceHandlers } from './lease-source.js';
import { type AnnotationNames, type KubeNode, nodeToLease } from './kube-annotations.js';
import type { NodeWatch } from './kube-node-watch.js';

export const RESYNC_PERIOD_MS = 5 * 60 * 1000;

interface Evaluated {
  lease?: Lease;
  /** why the node's annotations cannot be a lease */
  problem?: string;
  /** what identifies the lease for change detection; '' for none */
  signature: string;
}

export interface KubeLeaseSourceOptions {
  names: AnnotationNames;
  /** this node: left out of the snapshots */
  ownNode: string;
  /** this node's IPv4 subnet; the zero 0.0.0.0/0 on an IPv6-only node */
  ownSubnet: Cidr;
  /** dual-stack / IPv6-only: this node's IPv6 subnet */
  ownIpv6Subnet?: Cidr6;
  /** IPv6Network when the config enables IPv6: the nodes' IPv6 pod CIDRs are read and checked against it */
  ipv6Network?: Cidr6;
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
  /** per node object (a new object per change): its lease, or why it cannot be one */
  private readonly evaluated = new WeakMap<KubeNode, Evaluated>();
  /** per node name: the signature of its lease in the last snapshot handed over ('' = none) */
  private signatures = new Map<string, string>();
  /** leases left out for their IPv6 half, by reason, since start (each counted once while it lasts) */
  readonly ipv6Rejections = new Map<Ipv6LeaseRejectReason, number>();

  constructor(
    private readonly watch: NodeWatch,
    private readonly opts: KubeLeaseSourceOptions,
  ) {}

  describe(): string {
    return this.opts.describe;
  }

  async start(handlers: LeaseSourceHandlers): Promise<void> {
    this.handlers = handlers;
    this.unsubscribe = this.watch.subscribe((changed) => this.emit(false, changed));
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
    let leases: Lease[] = [];
    const problems = new Set<string>();
    const signatures = new Map<string, string>();
    const nodeOf = new Map<Lease, string>();
    for (const node of this.watch.all()) {
      const e = this.evaluate(node);
      if (e.problem !== undefined) problems.add(e.problem);
      if (e.lease === undefined) continue;
      leases.push(e.lease);
      nodeOf.set(e.lease, node.metadata?.name ?? '');
      signatures.set(node.metadata?.name ?? '', e.signature);
    }
    if (this.opts.ipv6Network !== undefined || leases.some((l) => l.ipv6Only)) {
      // The IPv6 halves, against IPv6Network, this node's IPv6 subnet and each other (ipv6-lease-checks.ts).
      const { accepted, rejected } = checkIpv6Leases(leases, { ipv6Network: this.opts.ipv6Network, ownIpv6Subnet: this.opts.ownIpv6Subnet });
      for (const r of rejected) {
        const name = nodeOf.get(r.lease) ?? '?';
        signatures.delete(name);
        const problem = `node "${name}" (lease ${r.key}): ${r.detail}; its lease is ignored (${r.reason})`;
        problems.add(problem);
        if (!this.reported.has(problem)) this.ipv6Rejections.set(r.reason, (this.ipv6Rejections.get(r.reason) ?? 0) + 1);
      }
      leases = accepted;
    }
    this.signatures = signatures;
    // Reported once while it lasts, not on every event; again if it comes back after a fix.
    for (const p of problems) if (!this.reported.has(p)) this.handlers?.onError(new Error(p));
    this.reported = problems;
    return leases;
  }

  /** The lease a node object stands for (once per object). */
  private evaluate(node: KubeNode): Evaluated {
    const known = this.evaluated.get(node);
    if (known) return known;
    const name = node.metadata?.name ?? '';
    let e: Evaluated = { signature: '' };
    if (name !== this.opts.ownNode) {
      try {
        const lease = nodeToLease(node, this.opts.names, { ipv6: this.opts.ipv6Network !== undefined });
        if (lease !== undefined && this.claimsOwn(lease)) {
          e = { problem: `node "${name}" claims this node's subnet ${lease.key}; ignored`, signature: '' };
        } else if (lease !== undefined) {
          const v6 = lease.ipv6Subnet === undefined ? [] : [lease.publicIpv6 ? formatIPv6(lease.publicIpv6) : null, lease.backendV6Data ?? null];
          e = { lease, signature: JSON.stringify([lease.key, lease.publicIp, lease.backendType, lease.backendData, ...v6]) };
        }
      } catch (err) {
        e = { problem: `${(err as Error).message}; its lease is ignored`, signature: '' };
      }
    }
    this.evaluated.set(node, e);
    return e;
  }

  /** Another node with this node's IPv4 subnet, or with its IPv6 subnet (an IPv6-only node's zero IPv4 half is no claim). */
  private claimsOwn(lease: Lease): boolean {
    const own = this.opts.ownSubnet;
    if (!lease.ipv6Only && !(own.prefixLength === 0 && own.network === 0) && cidrEquals(lease.subnet, own)) return true;
    const own6 = this.opts.ownIpv6Subnet;
    return own6 !== undefined && lease.ipv6Subnet !== undefined && cidr6Equals(lease.ipv6Subnet, own6);
  }

  private emit(always: boolean, changed?: string): void {
    const handlers = this.handlers;
    if (handlers === undefined) return;
    if (!always && changed !== undefined) {
      // One node changed: if its lease (or its lack of one) is what the last snapshot had, nothing to do.
      const node = this.watch.get(changed);
      const e = node ? this.evaluate(node) : { signature: '' };
      if (e.signature === (this.signatures.get(changed) ?? '') && e.problem === undefined) return;
    }
    const leases = this.leases();
    // Most node updates (heartbeats, status) change no lease: do not rebuild the table for them.
    const key = [...this.signatures.values()].join('\n');
    if (!always && key === this.last) return;
    this.last = key;
    try {
      handlers.onLeases(leases);
    } catch (err) {
      handlers.onError(err as Error);
    }
  }
}
