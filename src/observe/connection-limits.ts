// Caps for the agent's servers (the health server, reachable from the
// underlay, and the root-only control socket). They share one file
// descriptor table with the data plane, the etcd client and the iptables
// repair loop, so a client holding connections open must not be able to use
// it up: each server takes at most maxConnections (of which the health
// server keeps localSlots for loopback and the node's own addresses, where
// kubelet probes from), a connection idle for idleMs is closed, and a new one
// is refused outright while fewer than the reserve of descriptors are left
// below the process's limit (a quarter of a small limit: reserveFor). Refusals
// and accept failures are logged with their cause, at most once per interval;
// the control socket tells a refused client why (LimitOptions.refusal).
import { readdirSync, readFileSync } from 'node:fs';
import type { Server, Socket } from 'node:net';
import { networkInterfaces } from 'node:os';

export interface ConnectionLimits {
  maxConnections: number;
  /** per remote address: one client cannot take every slot and lock out the others (kubelet's probes) */
  maxPerPeer: number;
  /**
   * Of maxConnections, how many only loopback and this node's own addresses
   * may take: kubelet probes from there, and a few hosts holding connections
   * open must not lock it out.
   */
  localSlots: number;
  /** a connection that sends nothing (and is sent nothing) this long is closed */
  idleMs: number;
  /** descriptors kept free for the agent's own work, at most (reserveFor scales it to small limits) */
  reserveFds: number;
}

/** The health server: scrapers and probes make one short request at a time. */
export const HEALTH_LIMITS: ConnectionLimits = { maxConnections: 64, maxPerPeer: 8, localSlots: 16, idleMs: 10_000, reserveFds: 128 };
/** The control socket: an operator's stats and trace commands (a unix socket: every client is local). */
export const CONTROL_LIMITS: ConnectionLimits = { maxConnections: 16, maxPerPeer: 16, localSlots: 0, idleMs: 30_000, reserveFds: 128 };

/**
 * The descriptors kept free under a soft limit of `limit`: reserveFds, but
 * never more than a quarter of the limit. A fixed 128 under a limit of 64
 * refused every probe while the agent itself used 32.
 */
export function reserveFor(limit: number, reserveFds: number): number {
  return limit === Infinity ? reserveFds : Math.min(reserveFds, Math.floor(limit / 4));
}

/** Below this soft limit the reserve is scaled down, and the agent says so at start. */
export const COMFORTABLE_FD_LIMIT = 512;

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

let warnedAboutLimit = false;

/**
 * A warning for the log when the soft descriptor limit is small enough that
 * the reserve is scaled down (once per process), else undefined.
 */
export function fdLimitWarning(limit = fdLimit(), open = openFds()): string | undefined {
  if (limit >= COMFORTABLE_FD_LIMIT) return undefined;
  const reserve = reserveFor(limit, HEALTH_LIMITS.reserveFds);
  return (
    `warning: the open-files limit is ${limit} (${open ?? '?'} in use now): the agent keeps only ${reserve} descriptors ` +
    `in reserve (${HEALTH_LIMITS.reserveFds} from ${COMFORTABLE_FD_LIMIT} on), and /healthz, /metrics and \`flannel-udp stats\` are refused ` +
    `whenever fewer are free; raise it (LimitNOFILE=, ulimit -n) to ${COMFORTABLE_FD_LIMIT} or more`
  );
}

const stripV4Mapped = (a: string): string => (a.startsWith('::ffff:') ? a.slice(7) : a);

// The host's addresses, re-read at most once per interval: networkInterfaces()
// costs about 0.1-0.9 ms (a getifaddrs), too much for every connection of a flood.
const OWN_ADDRESSES_TTL_MS = 5000;
let ownAddresses: { at: number; set: Set<string> } | undefined;

/** Loopback or an address of this host (where kubelet's probes come from). */
function isLocalPeer(address: string | undefined): boolean {
  if (address === undefined) return true; // a unix socket
  const a = stripV4Mapped(address);
  if (a.startsWith('127.') || a === '::1') return true;
  const now = Date.now();
  if (ownAddresses === undefined || now - ownAddresses.at > OWN_ADDRESSES_TTL_MS) {
    const set = new Set<string>();
    for (const list of Object.values(networkInterfaces())) for (const i of list ?? []) set.add(stripV4Mapped(i.address));
    ownAddresses = { at: now, set };
  }
  return ownAddresses.set.has(a);
}

export interface LimitOptions {
  /**
   * The text sent to a refused client before its connection is closed (the
   * control socket: one JSON error line, so the client can say why); without
   * it the connection is simply destroyed.
   */
  refusal?: (why: string) => string;
}

const refused = new WeakSet<Socket>();

/** True for a connection limitConnections refused: the server's own handler leaves it alone. */
export function isRefused(socket: Socket): boolean {
  return refused.has(socket);
}

/** Applies the caps to a listening (or about to listen) server. */
export function limitConnections(server: Server, what: string, limits: ConnectionLimits, log: (line: string) => void, options: LimitOptions = {}): void {
  const report = throttledLog(log);
  const limit = fdLimit();
  const reserve = reserveFor(limit, limits.reserveFds);
  if (!warnedAboutLimit) {
    const warning = fdLimitWarning(limit);
    if (warning !== undefined) log(warning);
    warnedAboutLimit = true;
  }
  const perPeer = new Map<string, number>();
  let open = 0;
  let remoteOpen = 0;
  const refuse = (socket: Socket, why: string, logLine: string) => {
    report(`${what}: refused a connection${logLine}`);
    if (options.refusal === undefined) {
      socket.destroy();
      return;
    }
    refused.add(socket);
    socket.on('error', () => undefined);
    // Whatever the client sends is read and dropped, so it sees the answer and a clean close, not a reset.
    socket.resume();
    socket.setTimeout(1000, () => socket.destroy());
    socket.end(options.refusal(why));
  };
  // First, before the server's own handler sees the socket.
  server.prependListener('connection', (socket: Socket) => {
    // Unix sockets have no remote address: they share one count.
    const peer = socket.remoteAddress ?? 'local';
    if (open >= limits.maxConnections) {
      refuse(socket, `at its cap of ${limits.maxConnections} connections`, `: ${limits.maxConnections} are open already (the cap)`);
      return;
    }
    // Where the peer is only matters while slots are kept for local ones.
    const local = limits.localSlots === 0 || isLocalPeer(socket.remoteAddress);
    const remoteSlots = limits.maxConnections - limits.localSlots;
    if (!local && remoteOpen >= remoteSlots) {
      refuse(
        socket,
        `at its cap of ${remoteSlots} connections from other hosts`,
        ` from ${peer}: ${remoteSlots} from other hosts are open already (the cap; ${limits.localSlots} more are kept for this node's own probes)`,
      );
      return;
    }
    const held = perPeer.get(peer) ?? 0;
    if (held >= limits.maxPerPeer) {
      refuse(socket, `at its cap of ${limits.maxPerPeer} connections per client`, ` from ${peer}: it has ${held} open already (the cap per client)`);
      return;
    }
    if (limit !== Infinity) {
      const inUse = openFds() ?? limit; // uncountable: the table is full
      if (inUse > limit - reserve) {
        refuse(
          socket,
          `short of file descriptors (${inUse} of ${limit} in use, ${reserve} kept for the data plane; raise LimitNOFILE / ulimit -n)`,
          `: ${inUse} of ${limit} file descriptors in use, ${reserve} are kept for the data plane`,
        );
        return;
      }
    }
    open++;
    if (!local) remoteOpen++;
    perPeer.set(peer, held + 1);
    socket.once('close', () => {
      open--;
      if (!local) remoteOpen--;
      const n = (perPeer.get(peer) ?? 1) - 1;
      if (n === 0) perPeer.delete(peer);
      else perPeer.set(peer, n);
    });
    socket.setTimeout(limits.idleMs, () => socket.destroy());
  });
  server.on('error', (err: NodeJS.ErrnoException) => report(`${what}: ${describeFdError(err)}`));
}
