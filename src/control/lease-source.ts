// Where the agent learns the other nodes' leases. Two implementations share
// this interface: the static leases file (leases-file.ts) and, later, flannel's
// etcd store. The agent does not care which one it runs.

import type { Lease } from './lease.js';

export interface LeaseSourceHandlers {
  /**
   * The complete current set of remote leases (the node's own lease excluded).
   * Always a full snapshot, never a delta: the agent rebuilds the lease table
   * from it anyway (the table is immutable, swapped whole into the workers), so
   * deltas would only add add/remove bookkeeping that can drift out of sync,
   * e.g. after a missed watch event. A few thousand leases rebuild in
   * milliseconds and change rarely.
   */
  onLeases(leases: Lease[]): void;
  /**
   * A problem after start (a broken edit, a lost watch). The source keeps its
   * last good snapshot in force; the agent logs the error and carries on.
   */
  onError(err: Error): void;
}

export interface LeaseSource {
  /**
   * Delivers the first snapshot through onLeases before resolving, then keeps
   * watching. Rejects when no first snapshot can be had, so the agent never
   * starts forwarding with an empty table by mistake.
   */
  start(handlers: LeaseSourceHandlers): Promise<void>;
  /** Re-read now (the agent calls it on SIGHUP). Problems go to onError; it does not reject. */
  reload?(): Promise<void>;
  /** No handler is called after stop() returns (or its promise settles). */
  stop(): Promise<void> | void;
  /** For logs: "leases file /etc/flannel-udp/leases.json". */
  describe(): string;
}
