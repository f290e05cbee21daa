// What the main thread and a forwarding worker say to each other.
import type { LeaseTableSnapshot } from '../control/lease-table.js';
import type { TraceEvent } from '../observe/trace-event.js';

/** What a trace session asks of every worker; `shared` counts admitted packets across workers. */
export interface TraceRequest {
  session: number;
  filter: string;
  limit: number;
  perSecond: number;
  shared: SharedArrayBuffer;
}

/** Messages the main thread sends a worker (through its control port, then a wake-up). */
export type WorkerControlMessage =
  | { type: 'leases'; snapshot: LeaseTableSnapshot }
  | { type: 'stop' }
  | { type: 'trace'; request: TraceRequest }
  | { type: 'trace-stop'; session: number }
  /** Fault injection (SIGUSR2 on the agent): the worker throws, as a bug would make it, and is restarted. */
  | { type: 'crash' };

/** Messages a worker sends the main thread (through parentPort). */
export type WorkerReport =
  | { type: 'ready' }
  | { type: 'log'; line: string }
  | { type: 'trace'; session: number; event: TraceEvent };
