// The peers' leases from flannel's etcd store, kept current with a watch:
//
//   <prefix>/subnets/10.244.2.0-24  {"PublicIP":"192.0.2.2","BackendType":"udp",…}
//
// Read everything under <prefix>/subnets/ (one range request, at revision R),
// hand the agent the full set, then watch the prefix from R+1: every put (a
// node joining, a lease renewed or changed), delete and expiry (etcd deletes
// the key when its lease runs out) is applied to the set and the whole set
// handed over again (LeaseSource delivers snapshots, not deltas).
//
// When the watch ends (etcd restarted, the connection dropped, the revision
// was compacted) or a periodic probe goes unanswered (a silent partition
// leaves the stream open but dead): report it once, keep the last set in
// force (the data plane forwards on), retry with exponential backoff, and on
// success start over: a fresh range and a new watch from the revision after
// it. Nothing that happened while we were away can be missed, because the
// range is the truth as of R and the watch replays everything after R.

import { type Cidr, cidrEquals, formatIPv4 } from './ipv4-address.js';
import { type Cidr6, formatIPv6, ipv6Equals } from './ipv6-address.js';
import { type Lease, formatSubnetKey, parseDualStackSubnetKey, parseLeaseAttrs } from './lease.js';
import { checkIpv6Leases, type Ipv6LeaseRejectReason } from './ipv6-lease-checks.js';
import type { LeaseSource, LeaseSourceHandlers } from './lease-source.js';
import { type EtcdClient, EtcdError, type Watch, type WatchEnd, type WatchEvent } from './etcd-client.js';
import { WakeableSleep } from './wakeable-sleep.js';
import { jittered, jitteredInterval } from './jitter.js';

export interface EtcdLeaseSourceOptions {
  /** flannel's --etcd-prefix, e.g. /coreos.com/network */
  prefix: string;
  /** this node's subnet: left out of the snapshots, and watched for revocation */
  ownSubnet?: Cidr;
  /**
   * this node's IPv6 subnet (dual-stack, IPv6-only): the own lease is then the
   * one with both halves of this node's key, and peers' IPv6 halves must not
   * overlap it
   */
  ownIpv6Subnet?: Cidr6;
  /** this node's public IP: its own lease must keep it */
  ownPublicIp?: number;
  /** this node's PublicIPv6: an IPv6-only node's own lease must keep it */
  ownPublicIpv6?: Uint8Array;
  /** IPv6Network of the config (dual-stack): peers' IPv6 halves are checked against it (ipv6-lease-checks.ts) */
  ipv6Network?: Cidr6;
  /** Called (once) when this node's lease is deleted, expires, or is taken over by another node. */
  onOwnLeaseLost?: (why: string) => void;
  /** for reconnection news; errors go to the handlers' onError */
  log?: (line: string) => void;
  /** How often a watching source checks that etcd still answers; default 5 s. */
  probeIntervalMs?: number;
  /** Reconnection backoff; defaults 100 ms doubling to 5 s (flannel's). */
  initialBackoffMs?: number;
  maxBackoffMs?: number;
}

/** How often the first read is tried while etcd does not answer (about a minute with the default backoff). */
const FIRST_READ_ATTEMPTS = 15;

export class EtcdLeaseSource implements LeaseSource {
  private readonly subnetsPrefix: string;
  private readonly probeIntervalMs: number;
  private readonly initialBackoffMs: number;
  private readonly maxBackoffMs: number;
  private handlers: LeaseSourceHandlers | undefined;
  /** every parseable lease under subnets/, by etcd key, the own one included */
  private readonly leases = new Map<string, Lease>();
  private watch: Watch | undefined;
  private loop: Promise<void> | undefined;
  private stopped = false;
  private readonly pause = new WakeableSleep();
  private ownLeaseLost = false;
  /** set while etcd is unreachable: when it started, for the "back after" line */
  private downSince: number | undefined;
  /** bad values already reported, so a broken key is not re-reported on every resync */
  private readonly reported = new Set<string>();
  /** IPv6 rejections of the last snapshot (key + reason), so each is reported once while it lasts */
  private ipv6Reported = new Set<string>();
  /** leases left out for their IPv6 half, by reason, since start (for the agent's counters) */
  readonly ipv6Rejections = new Map<Ipv6LeaseRejectReason, number>();

  constructor(
    private readonly client: EtcdClient,
    private readonly opts: EtcdLeaseSourceOptions,
  ) {
    this.subnetsPrefix = `${opts.prefix.replace(/\/+$/, '')}/subnets/`;
    this.probeIntervalMs = opts.probeIntervalMs ?? 5000;
    this.initialBackoffMs = opts.initialBackoffMs ?? 100;
    this.maxBackoffMs = opts.maxBackoffMs ?? 5000;
  }

  describe(): string {
    return `etcd ${this.client.describe()} ${this.subnetsPrefix}`;
  }

  async start(handlers: LeaseSourceHandlers): Promise<void> {
    if (this.handlers !== undefined) throw new Error(`${this.describe()}: already started`);
    this.handlers = handlers;
    let revision: number;
    try {
      revision = await this.firstResync();
    } catch (err) {
      this.handlers = undefined;
      throw err;
    }
    this.loop = this.run(revision);
  }

  /**
   * The first read, retried while etcd does not answer (with backoff, one log
   * line): the subnet manager has just talked to etcd, so this is a busy etcd
   * (50 agents starting at once on a small machine kept it over the 5 s
   * request timeout), not a wrong endpoint. Other errors reject at once.
   */
  private async firstResync(): Promise<number> {
    let backoff = this.initialBackoffMs;
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.resync();
      } catch (err) {
        if (this.stopped || !(err instanceof EtcdError && err.kind === 'unavailable') || attempt >= FIRST_READ_ATTEMPTS) throw err;
        if (attempt === 1) this.opts.log?.(`etcd: reading the leases failed (${err.message}); retrying with backoff`);
        await this.sleep(backoff);
        backoff = Math.min(backoff * 2, this.maxBackoffMs);
      }
    }
  }

  /** SIGHUP: drop the watch and read everything again. */
  async reload(): Promise<void> {
    this.watch?.cancel();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.watch?.cancel();
    this.pause.wake();
    await this.loop;
  }

  /** Reads every lease; replaces the set; returns the revision read at. */
  private async resync(): Promise<number> {
    const { kvs, revision } = await this.client.range(this.subnetsPrefix, { prefix: true });
    this.leases.clear();
    for (const kv of kvs) this.apply({ type: 'PUT', kv });
    this.emit();
    return revision;
  }

  private async run(revision: number): Promise<void> {
    let backoff = this.initialBackoffMs;
    let watchFrom = revision + 1;
    while (!this.stopped) {
      const { end, created } = await this.watchUntilEnd(watchFrom);
      if (this.stopped) return;
      if (end.reason === 'compacted') {
        this.opts.log?.(`etcd: watch of ${this.subnetsPrefix} fell behind compaction (revision ${end.compactRevision}); re-reading all leases`);
      } else if (end.reason === 'failed') {
        this.markDown(end.error.message);
        if (!created) {
          // Reads work but the watch does not start: back off here too, or this loop would spin.
          await this.sleep(backoff);
          backoff = Math.min(backoff * 2, this.maxBackoffMs);
        }
      }
      if (created) backoff = this.initialBackoffMs;
      // Read again until etcd answers, backing off; the last set stays in force meanwhile.
      for (;;) {
        if (this.stopped) return;
        try {
          watchFrom = (await this.resync()) + 1;
          break;
        } catch (err) {
          this.markDown((err as Error).message);
          await this.sleep(backoff);
          backoff = Math.min(backoff * 2, this.maxBackoffMs);
        }
      }
    }
  }

  /** Watches from `from` and probes etcd meanwhile; resolves when the watch is over. */
  private async watchUntilEnd(from: number): Promise<{ end: WatchEnd; created: boolean }> {
    const watch = this.client.watch(this.subnetsPrefix, { prefix: true, startRevision: from }, {
      onEvents: (events) => {
        if (this.stopped) return;
        for (const e of events) this.apply(e);
        this.emit();
      },
    });
    this.watch = watch;
    let created = false;
    // Back in business only once the new watch stands: the range before it already took in everything missed.
    watch.created.then(
      () => {
        created = true;
        this.markUp(from);
      },
      () => undefined,
    );
    // A partition can leave the stream open and silent; a cheap read proves etcd still answers.
    // Jittered: agents started together would otherwise probe in the same instant forever.
    const stopProbe = jitteredInterval(() => {
      this.client.range(`${this.opts.prefix.replace(/\/+$/, '')}/config`).catch((err: Error) => {
        this.markDown(`probe failed: ${err.message}`);
        watch.cancel();
      });
    }, this.probeIntervalMs);
    try {
      const end = await watch.ended;
      // A probe failure cancels the watch; report it as the failure it is.
      if (end.reason === 'cancelled' && this.downSince !== undefined && !this.stopped) {
        return { end: { reason: 'failed', error: new EtcdError('etcd stopped answering', 'unavailable') }, created };
      }
      return { end, created };
    } finally {
      stopProbe();
      this.watch = undefined;
    }
  }

  /** Applies one put or delete to the set. Bad values are reported once and leave the key out. */
  private apply(event: WatchEvent): void {
    const { key } = event.kv;
    if (!key.startsWith(this.subnetsPrefix)) return;
    const subnetKey = key.slice(this.subnetsPrefix.length);
    if (event.type === 'DELETE') {
      this.leases.delete(key);
      this.reported.delete(key);
      this.checkOwn(subnetKey, undefined);
      return;
    }
    let lease: Lease;
    try {
      let attrs: unknown;
      try {
        attrs = JSON.parse(event.kv.value);
      } catch {
        throw new Error(`value is not JSON: ${JSON.stringify(event.kv.value.slice(0, 120))}`);
      }
      lease = parseLeaseAttrs(subnetKey, attrs);
    } catch (err) {
      this.leases.delete(key);
      const message = `etcd key ${key}: ${(err as Error).message}; ignored`;
      if (!this.reported.has(`${key}\n${event.kv.value}`)) {
        this.reported.add(`${key}\n${event.kv.value}`);
        this.report(new Error(message));
      }
      return;
    }
    this.leases.set(key, lease);
    this.checkOwn(subnetKey, lease);
  }

  /** The own lease: the same IPv4 subnet (IPv4-only, as before), or the same key, both halves (dual-stack, IPv6-only). */
  private isOwn(lease: Lease): boolean {
    const own = this.opts.ownSubnet;
    if (own === undefined) return false;
    if (this.opts.ownIpv6Subnet === undefined) return cidrEquals(lease.subnet, own);
    return lease.key === formatSubnetKey(own, this.opts.ownIpv6Subnet);
  }

  private checkOwn(subnetKey: string, lease: Lease | undefined): void {
    const own = this.opts.ownSubnet;
    if (own === undefined || this.ownLeaseLost) return;
    if (lease === undefined) {
      // A delete carries no value: compare keys (canonically: a hand-written key may spell the IPv6 half otherwise).
      let canonical = subnetKey;
      try {
        const k = parseDualStackSubnetKey(subnetKey);
        canonical = formatSubnetKey(k.subnet, k.ipv6Subnet);
      } catch {
        return; // not a subnet key: never ours
      }
      if (canonical !== formatSubnetKey(own, this.opts.ownIpv6Subnet)) return;
      this.loseOwnLease(`this node's lease ${this.subnetsPrefix}${subnetKey} was deleted or expired`);
      return;
    }
    if (!this.isOwn(lease)) return;
    if (lease.ipv6Only) {
      const mine = this.opts.ownPublicIpv6;
      if (mine !== undefined && (lease.publicIpv6 === undefined || !ipv6Equals(lease.publicIpv6, mine))) {
        this.loseOwnLease(`this node's subnet ${subnetKey} is now leased to ${lease.publicIpv6 !== undefined ? formatIPv6(lease.publicIpv6) : 'a lease without PublicIPv6'}`);
      }
      return;
    }
    if (this.opts.ownPublicIp !== undefined && lease.publicIp !== this.opts.ownPublicIp) {
      this.loseOwnLease(`this node's subnet ${subnetKey} is now leased to ${formatIPv4(lease.publicIp)}`);
    }
  }

  private loseOwnLease(why: string): void {
    this.ownLeaseLost = true;
    try {
      this.opts.onOwnLeaseLost?.(why);
    } catch (err) {
      this.report(err as Error);
    }
  }

  private emit(): void {
    if (this.stopped || this.handlers === undefined) return;
    const own = this.opts.ownSubnet;
    let peers = [...this.leases.values()].filter((l) => !this.isOwn(l));
    // After a resync the own key must be there too: missing means it went while we were away.
    if (own !== undefined && !this.ownLeaseLost && ![...this.leases.values()].some((l) => this.isOwn(l))) {
      this.loseOwnLease(`this node's lease ${this.subnetsPrefix}${formatSubnetKey(own, this.opts.ownIpv6Subnet)} is gone from etcd`);
    }
    peers = this.checkIpv6(peers);
    try {
      this.handlers.onLeases(peers);
    } catch (err) {
      this.report(err as Error);
    }
  }

  /** Leaves out leases whose IPv6 half makes no sense here; each reported once while it lasts, and counted. */
  private checkIpv6(peers: Lease[]): Lease[] {
    if (this.opts.ipv6Network === undefined && !peers.some((l) => l.ipv6Only)) return peers;
    const { accepted, rejected } = checkIpv6Leases(peers, { ipv6Network: this.opts.ipv6Network, ownIpv6Subnet: this.opts.ownIpv6Subnet });
    const now = new Set<string>();
    for (const r of rejected) {
      const id = `${r.key}\n${r.reason}`;
      now.add(id);
      if (this.ipv6Reported.has(id)) continue;
      this.ipv6Rejections.set(r.reason, (this.ipv6Rejections.get(r.reason) ?? 0) + 1);
      this.report(new Error(`etcd key ${this.subnetsPrefix}${r.key}: ${r.detail}; lease ignored (${r.reason})`));
    }
    this.ipv6Reported = now;
    return accepted;
  }

  private markUp(watchFrom: number): void {
    if (this.stopped || this.downSince === undefined) return;
    const seconds = ((Date.now() - this.downSince) / 1000).toFixed(1);
    this.downSince = undefined;
    this.opts.log?.(
      `etcd: reachable again after ${seconds} s; resynced ${this.leases.size} lease(s) at revision ${watchFrom - 1}, watching from ${watchFrom}`,
    );
  }

  /** The first failure of an outage is reported; the rest are the same news. */
  private markDown(reason: string): void {
    if (this.stopped || this.downSince !== undefined) return;
    this.downSince = Date.now();
    this.report(
      new Error(
        `etcd is unreachable (${reason}); forwarding continues with the ${this.leases.size} lease(s) last seen, ` +
          `retrying with backoff up to ${this.maxBackoffMs / 1000} s`,
      ),
    );
  }

  private report(err: Error): void {
    if (this.stopped || this.handlers === undefined) return;
    try {
      this.handlers.onError(err);
    } catch {
      // A throwing error handler must not take the watch loop down with it.
    }
  }

  /** Backoff sleeps are jittered (half to all of ms): after an etcd restart the agents come back spread out, not in one burst of full reads. */
  private sleep(ms: number): Promise<void> {
    return this.pause.sleep(jittered(ms));
  }
}
