// Caps for the agent's servers (the health server, reachable from the
// underlay, and the root-only control socket). They share one file
// descriptor table with the data plane, the etcd client and the iptables
// repair loop, so a client holding connections open must not be able to use
// it up: each server takes at most maxConnections, a connection idle for
// idleMs is closed, and a new one is refused outright while fewer than
// reserveFds descriptors are left below the process's limit. Refusals and
// accept failures are logged with their cause, at most once per interval.
import { readdirSync, readFileSync } from 'node:fs';
import type { Server, Socket } from 'node:net';

export interface ConnectionLimits {
  maxConnections: number;
  /** per remote address: one client cannot take every slot and lock out the others (kubelet's probes) */
  maxPerPeer: number;
  /** a connection that sends nothing (and is sent nothing) this long is closed */
  idleMs: number;
  /** descriptors kept free for the agent's own work */
  reserveFds: number;
}

/** The health server: scrapers and probes make one short request at a time. */
export const HEALTH_LIMITS: ConnectionLimits = { maxConnections: 64, maxPerPeer: 8, idleMs: 10_000, reserveFds: 128 };
/** The control socket: an operator's stats and trace commands. */
export const CONTROL_LIMITS: ConnectionLimits = { maxConnections: 16, maxPerPeer: 16, idleMs: 30_000, reserveFds: 128 };

const LOG_INTERVAL_MS = 10_000;

/** The soft RLIMIT_NOFILE, from /proc/self/limits; Infinity when unlimited or unreadable. */
export function fdLimit(): number {
  try {
    const line = readFileSync('/proc/self/limits', 'utf8').split('\n').find((l) => l.startsWith('Max open files'));
    const soft = line?.slice('Max open files'.length).trim().split(/\s+/)[0];
    const n = Number(soft);
    return Number.isFinite(n) && n > 0 ? n : Infinity;
  } catch {
    return Infinity;
  }
}

/** Descriptors this process has open now; undefined when they cannot be counted (reading /proc takes a descriptor too). */
export function openFds(): number | undefined {
  try {
    return readdirSync('/proc/self/fd').length;
  } catch {
    return undefined;
  }
}

// Read at start: when the table is full, /proc/self/limits cannot be opened either.
const limitAtStart = fdLimit();

/** "EMFILE" → "EMFILE: too many open files (240 of 256 in use)"; "(all 256 in use)" when the table is too full to count. */
export function describeFdError(err: NodeJS.ErrnoException): string {
  if (err.code === 'EMFILE' || err.code === 'ENFILE') {
    const now = fdLimit();
    const limit = now === Infinity ? limitAtStart : now;
    const shown = limit === Infinity ? 'unlimited' : String(limit);
    const open = openFds();
    return `${err.message}: too many open files (${open === undefined ? `all ${shown}` : `${open} of ${shown}`} in use)`;
  }
  return err.message;
}

/** A log line at most once per interval, with how many were held back. */
function throttledLog(log: (line: string) => void): (line: string) => void {
  let last = 0;
  let held = 0;
  return (line) => {
    const now = Date.now();
    if (now - last < LOG_INTERVAL_MS) {
      held++;
      return;
    }
    log(held > 0 ? `${line} (and ${held} more since the last report)` : line);
    last = now;
    held = 0;
  };
}

/** Applies the caps to a listening (or about to listen) server. */
export function limitConnections(server: Server, what: string, limits: ConnectionLimits, log: (line: string) => void): void {
  const report = throttledLog(log);
  server.maxConnections = limits.maxConnections;
  server.on('drop', () => report(`${what}: refused a connection: ${limits.maxConnections} are open already (the cap)`));
  const limit = fdLimit();
  const perPeer = new Map<string, number>();
  // First, before the server's own handler sees the socket.
  server.prependListener('connection', (socket: Socket) => {
    // Unix sockets have no remote address: they share one count.
    const peer = socket.remoteAddress ?? 'local';
    const held = perPeer.get(peer) ?? 0;
    if (held >= limits.maxPerPeer) {
      report(`${what}: refused a connection from ${peer}: it has ${held} open already (the cap per client)`);
      socket.destroy();
      return;
    }
    perPeer.set(peer, held + 1);
    socket.once('close', () => {
      const n = (perPeer.get(peer) ?? 1) - 1;
      if (n === 0) perPeer.delete(peer);
      else perPeer.set(peer, n);
    });
    if (limit !== Infinity) {
      const open = openFds() ?? limit; // uncountable: the table is full
      if (open > limit - limits.reserveFds) {
        report(`${what}: refused a connection: ${open} of ${limit} file descriptors in use, ${limits.reserveFds} are kept for the data plane`);
        socket.destroy();
        return;
      }
    }
    socket.setTimeout(limits.idleMs, () => socket.destroy());
  });
  server.on('error', (err: NodeJS.ErrnoException) => report(`${what}: ${describeFdError(err)}`));
}
