// The UDP side as the forwarder sees it (after wireguard-go's conn.Bind):
// receive a batch of datagrams with their senders, send a batch of messages
// to peers. mmsghdrs, iovecs, control messages and the UDP GRO/GSO socket
// options belong to the implementation: kernel-bind.ts for real sockets,
// memory-bind.ts for tests. What to do when a send is refused (retry, wait,
// fall back from GSO, drop) is decided once, above both, in send-policy.ts.
import type { DatagramBatch, SendBatch } from './batches.js';

export interface UdpBind {
  /** Sockets to send from (UDP mode: 1; VXLAN: one per source port). A SendBatch goes through one of them. */
  readonly senders: number;
  /**
   * The last senders6 of them send over the IPv6 underlay (SendBatch.peer6
   * destinations), and receive() appends what that socket got, from
   * batch.outer6From on. 0: no IPv6 underlay.
   */
  readonly senders6: number;
  /** Sends may carry UDP GSO messages (SendBatch segmentSize > 0). Cleared by disableGso(). */
  readonly gso: boolean;
  disableGso(): void;
  /** Fills `batch` with the datagrams waiting (a GRO message already cut into its datagrams); sets batch.drained. */
  receive(batch: DatagramBatch): void;
  /**
   * One send call: messages [from, batch.messages) through sender `sender`.
   * Returns how many were accepted from `from` on (≥ 1), or -errno when the
   * one at `from` was refused (EAGAIN/ENOBUFS: none could be queued).
   */
  send(sender: number, batch: SendBatch, from: number): number;
  /** Waits up to timeoutMs for sender `sender` to take more; false on timeout. */
  waitWritable(sender: number, timeoutMs: number): boolean;
}
