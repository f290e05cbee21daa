// A running agent answers on a unix socket, /run/flannel-udp/<tun>.sock, in
// newline-delimited JSON: one request per line, answers as lines.
//
//   {"cmd":"stats"}                               → one AgentStats line
//   {"cmd":"trace","filter":"icmp","limit":20}    → TraceEvent lines (trace-event.ts
//        traceEventToJson), then {"done":true,…}, then the server closes the connection
//   anything else                                 → {"error":"…"}
//
// The directory is 0700 and the socket 0600: stats and traces (which show
// pod traffic) are for root. The socket is removed when the server closes or
// the process exits; a socket left by a dead agent is replaced, a live
// agent's is not (the second agent fails instead).
//
// An agent in a named network namespace (`ip netns`: the testbed runs several
// nodes on one machine, all with a flannel0, all sharing /run) gets the
// namespace's name in its socket's, flannel0.fut-abc-0-n1.sock, so agents
// never collide; `flannel-udp stats` run in the same namespace computes the
// same name.
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { chmodSync, lstatSync, mkdirSync, readdirSync, renameSync, statSync, unlinkSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { AgentStats } from './metrics.js';
import { DEFAULT_TRACE_LIMIT, TERMINAL_STAGES, traceEventToJson, type TraceEvent } from './trace-event.js';
import { compileTraceFilter } from './trace-filter.js';
import { CONTROL_LIMITS, isRefused, limitConnections } from './connection-limits.js';

export const CONTROL_SOCKET_DIR = '/run/flannel-udp';
/** After the last admitted packet, how long to wait for its remaining stages before ending the stream. */
export const TRACE_DRAIN_MS = 1000;
/** A request line longer than this closes the connection. */
const MAX_REQUEST_BYTES = 64 * 1024;
/** Trace output queued for a slow client beyond this is dropped (and counted) rather than buffered. */
const MAX_PENDING_BYTES = 4 << 20;

export type ControlRequest = { cmd: 'stats' } | { cmd: 'trace'; filter?: string; limit?: number };

/** The last line of a trace stream. */
export interface TraceDone {
  done: true;
  /** Packets traced, events sent, events not sent because the client read too slowly. */
  packets: number;
  events: number;
  dropped: number;
  /** 'limit': `limit` packets were traced; 'stopped': the server closed. */
  reason: 'limit' | 'stopped';
}

/** Ends a trace started with ControlHandlers.startTrace. */
export type StopTrace = () => void;

export interface ControlHandlers {
  stats(): AgentStats;
  /**
   * Starts tracing packets that match `filter` (already checked: it
   * compiles) and calls onEvent for each stage of each traced packet until
   * the returned function is called. `limit` is how many packets the client
   * wants; the server counts them itself (by worker and packet number) and
   * calls stop once they are all through, or when the client goes away. May
   * throw (e.g. "a trace is already running"); the client gets the message.
   */
  startTrace(filter: string, limit: number, onEvent: (ev: TraceEvent) => void): StopTrace;
}

export interface ControlServer {
  readonly path: string;
  close(): Promise<void>;
}

/** A live agent already answers on this socket. */
export class ControlSocketInUseError extends Error {
  override name = 'ControlSocketInUseError';
}

/**
 * The name of the network namespace this process runs in when it is a named
 * one (`ip netns add NAME`: a bind mount of the namespace under /run/netns),
 * else undefined: the host's namespace, or one nobody named. Found as
 * `ip netns identify` does, by comparing the namespace file's device and
 * inode with each entry of /run/netns. A name that would make the socket
 * path too long for a unix socket (108 bytes) is replaced by the inode.
 */
export function networkNamespaceSuffix(selfNs = '/proc/self/ns/net', netnsDir = '/run/netns'): string | undefined {
  try {
    const own = statSync(selfNs);
    for (const name of readdirSync(netnsDir)) {
      try {
        const st = statSync(join(netnsDir, name));
        if (st.ino === own.ino && st.dev === own.dev) return name.length <= 48 ? name : `net-${own.ino}`;
      } catch {
        /* an entry being removed */
      }
    }
  } catch {
    /* no /proc or no /run/netns: not in a named namespace */
  }
  return undefined;
}

/** The control socket of the agent on TUN `tun` in this network namespace. */
export function controlSocketPath(tun: string, dir = CONTROL_SOCKET_DIR): string {
  const suffix = networkNamespaceSuffix();
  return join(dir, suffix ? `${tun}.${suffix}.sock` : `${tun}.sock`);
}

/** connect() to a unix socket: 'live' (someone accepted), 'stale' (nobody listens), 'missing'. */
function probe(path: string): Promise<'live' | 'stale' | 'missing'> {
  return new Promise((resolve) => {
    const s = createConnection(path);
    s.once('connect', () => {
      s.destroy();
      resolve('live');
    });
    s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'ENOENT' ? 'missing' : 'stale'));
  });
}

function isSocket(path: string): boolean | undefined {
  try {
    return lstatSync(path).isSocket();
  } catch {
    return undefined;
  }
}

/** Removes sockets in `dir` that nobody listens on any more (agents killed by SIGKILL). */
async function sweepStaleSockets(dir: string, except: string): Promise<void> {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return;
  }
  for (const name of names) {
    const path = join(dir, name);
    if (!name.endsWith('.sock') || path === except || !isSocket(path)) continue;
    if ((await probe(path)) === 'stale') {
      try {
        unlinkSync(path);
      } catch {
        /* gone meanwhile */
      }
    }
  }
}

function sendLine(socket: Socket, value: unknown): boolean {
  if (socket.destroyed) return false;
  return socket.write((typeof value === 'string' ? value : JSON.stringify(value)) + '\n');
}

/** Serves the control protocol at `path` until close(). */
export async function startControlServer(
  path: string,
  handlers: ControlHandlers,
  opts: { log?: (line: string) => void; takeOver?: boolean } = {},
): Promise<ControlServer> {
  const log = opts.log ?? (() => undefined);
  const dir = dirname(path);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
  const existing = isSocket(path);
  if (existing === false) throw new ControlSocketInUseError(`control socket: ${path} exists and is not a socket; not replacing it`);
  if (existing) {
    if ((await probe(path)) === 'live') {
      if (!opts.takeOver) throw new ControlSocketInUseError(`control socket: another agent answers on ${path}`);
      // A hand-over (agent.ts): the agent being replaced keeps its open connections; new ones come here.
      log(`control socket: taking ${path} over from the agent being replaced`);
    }
    unlinkSync(path); // left behind by an agent that died, or handed over
  }
  await sweepStaleSockets(dir, path);

  const connections = new Set<Socket>();
  const stops = new Set<() => void>();
  const server: Server = createServer((socket) => {
    if (isRefused(socket)) return; // told why and closed by limitConnections
    connections.add(socket);
    let stopTrace: (() => void) | undefined;
    let pending = '';
    socket.setEncoding('utf8');
    socket.on('error', () => undefined);
    socket.on('close', () => {
      connections.delete(socket);
      stopTrace?.();
    });
    socket.on('data', (chunk: string) => {
      pending += chunk;
      if (pending.length > MAX_REQUEST_BYTES) {
        sendLine(socket, { error: `request longer than ${MAX_REQUEST_BYTES} bytes` });
        socket.end();
        return;
      }
      for (let nl = pending.indexOf('\n'); nl >= 0; nl = pending.indexOf('\n')) {
        const line = pending.slice(0, nl).trim();
        pending = pending.slice(nl + 1);
        if (line === '') continue;
        if (stopTrace) {
          sendLine(socket, { error: 'a trace is streaming on this connection; open another one' });
          continue;
        }
        stopTrace = handleRequest(socket, line);
        if (stopTrace) {
          stops.add(stopTrace);
          // A trace waiting for matching packets is quiet but not idle.
          socket.setTimeout(0);
        }
      }
    });
  });

  // Returns the trace's stop function when the request started one.
  const handleRequest = (socket: Socket, line: string): (() => void) | undefined => {
    let request: Record<string, unknown>;
    try {
      const parsed: unknown = JSON.parse(line);
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error('not a JSON object');
      request = parsed as Record<string, unknown>;
    } catch (err) {
      sendLine(socket, { error: `bad request: ${(err as Error).message}` });
      return undefined;
    }
    if (request.cmd === 'stats') {
      try {
        sendLine(socket, handlers.stats());
      } catch (err) {
        sendLine(socket, { error: `stats: ${(err as Error).message}` });
      }
      return undefined;
    }
    if (request.cmd === 'trace') return startTraceStream(socket, request);
    sendLine(socket, { error: `unknown command ${JSON.stringify(request.cmd)}; known: "stats", "trace"` });
    return undefined;
  };

  const startTraceStream = (socket: Socket, request: Record<string, unknown>): (() => void) | undefined => {
    const filter = request.filter === undefined ? '' : request.filter;
    const limit = request.limit === undefined ? DEFAULT_TRACE_LIMIT : request.limit;
    if (typeof filter !== 'string') {
      sendLine(socket, { error: 'trace: "filter" must be a string' });
      return undefined;
    }
    if (typeof limit !== 'number' || !Number.isInteger(limit) || limit < 1) {
      sendLine(socket, { error: 'trace: "limit" must be a whole number ≥ 1' });
      return undefined;
    }
    try {
      compileTraceFilter(filter);
    } catch (err) {
      sendLine(socket, { error: (err as Error).message });
      return undefined;
    }

    // Packets are counted here, by (worker, packet): the first `limit` seen
    // are followed through all their stages; later ones are ignored.
    const admitted = new Map<string, boolean>(); // key → reached a terminal stage
    let events = 0;
    let dropped = 0;
    let finished = false;
    let drainTimer: NodeJS.Timeout | undefined;
    let stopHandler: StopTrace | undefined;

    const finish = (reason: TraceDone['reason']) => {
      if (finished) return;
      finished = true;
      if (drainTimer) clearTimeout(drainTimer);
      stops.delete(stop);
      try {
        stopHandler?.();
      } catch (err) {
        log(`control: stopping a trace: ${(err as Error).message}`);
      }
      const done: TraceDone = { done: true, packets: admitted.size, events, dropped, reason };
      sendLine(socket, done);
      socket.end();
    };
    const stop = () => finish('stopped');

    const onEvent = (ev: TraceEvent) => {
      if (finished) return;
      const key = `${ev.worker}:${ev.packet}`;
      let through = admitted.get(key);
      if (through === undefined) {
        if (admitted.size >= limit) return;
        through = false;
        admitted.set(key, false);
        if (admitted.size === limit) drainTimer = setTimeout(() => finish('limit'), TRACE_DRAIN_MS);
      }
      if (socket.writableLength > MAX_PENDING_BYTES) dropped++;
      else {
        sendLine(socket, traceEventToJson(ev));
        events++;
      }
      if (TERMINAL_STAGES.has(ev.stage)) admitted.set(key, true);
      if (admitted.size >= limit && [...admitted.values()].every(Boolean)) finish('limit');
    };

    try {
      stopHandler = handlers.startTrace(filter, limit, onEvent);
    } catch (err) {
      sendLine(socket, { error: `trace: ${(err as Error).message}` });
      return undefined;
    }
    if (finished) {
      // The handler delivered every event synchronously; stop it now.
      try {
        stopHandler();
      } catch {
        /* already reported */
      }
      return undefined;
    }
    return stop;
  };

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => {
      server.off('error', reject);
      resolve();
    });
  });
  // Also the server's error listener from now on: an accept failure (EMFILE) is logged, not thrown.
  limitConnections(server, 'control socket', CONTROL_LIMITS, log, {
    refusal: (why) => JSON.stringify({ error: `the agent's control socket is ${why}: other stats or trace clients hold them; try again when one ends` }) + '\n',
  });
  chmodSync(path, 0o600);
  const ino = lstatSync(path).ino;
  log(`control socket ${path}`);

  // Also when the process exits without close() (a crash, process.exit in a signal handler).
  const removeSocket = () => {
    try {
      if (lstatSync(path).ino === ino) unlinkSync(path);
    } catch {
      /* already gone */
    }
  };
  process.once('exit', removeSocket);

  let closing: Promise<void> | undefined;
  return {
    path,
    close() {
      closing ??= new Promise<void>((resolve) => {
        for (const stop of [...stops]) stop();
        // The server's close unlinks the path; after a hand-over it is the new agent's socket, moved aside meanwhile.
        const aside = `${path}.handover`;
        let movedAside = false;
        try {
          if (lstatSync(path).ino !== ino) {
            renameSync(path, aside);
            movedAside = true;
          }
        } catch {
          /* already gone */
        }
        server.close(() => resolve());
        if (movedAside) {
          try {
            renameSync(aside, path);
          } catch {
            /* the new agent removed it meanwhile */
          }
        }
        for (const c of connections) c.destroy();
        process.off('exit', removeSocket);
        removeSocket();
      });
      return closing;
    },
  };
}

/** The agent is not there, or not reachable: a message that says which and what to do. */
export class ControlClientError extends Error {
  override name = 'ControlClientError';
}

export interface ControlRequestOptions {
  /** Abort the request (e.g. Ctrl-C on a trace): the connection is closed, the promise resolves. */
  signal?: AbortSignal;
  /** Give up connecting after this long; default 5 s. */
  connectTimeoutMs?: number;
}

/**
 * Sends one request and calls onLine with each JSON value the agent answers,
 * until the answer is complete (stats: its one line; trace: the agent closes
 * the connection after {"done":true}), onLine returns false, or opts.signal
 * aborts. An
 * {"error":…} answer rejects with its message; so does a socket that is
 * missing, stale or forbidden, with a hint.
 */
export function controlRequest(
  path: string,
  request: ControlRequest,
  onLine: (value: unknown) => boolean | void,
  opts: ControlRequestOptions = {},
): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = createConnection(path);
    let settled = false;
    const settle = (err?: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      socket.destroy();
      if (err) reject(err);
      else resolve();
    };
    const onAbort = () => settle();
    if (opts.signal?.aborted) return settle();
    opts.signal?.addEventListener('abort', onAbort);
    const timer = setTimeout(
      () => settle(new ControlClientError(`control socket ${path}: no answer to connect within ${opts.connectTimeoutMs ?? 5000} ms`)),
      opts.connectTimeoutMs ?? 5000,
    );
    let pending = '';
    socket.setEncoding('utf8');
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.write(JSON.stringify(request) + '\n');
    });
    socket.on('data', (chunk: string) => {
      pending += chunk;
      for (let nl = pending.indexOf('\n'); nl >= 0 && !settled; nl = pending.indexOf('\n')) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        if (line.trim() === '') continue;
        let value: unknown;
        try {
          value = JSON.parse(line);
        } catch {
          return settle(new ControlClientError(`control socket ${path}: the agent sent a line that is not JSON: ${line.slice(0, 200)}`));
        }
        if (typeof value === 'object' && value !== null && 'error' in value) {
          return settle(new ControlClientError(String((value as { error: unknown }).error)));
        }
        try {
          // A stats answer is one line; a trace ends when the agent closes the connection.
          if (onLine(value) === false || request.cmd === 'stats') return settle();
        } catch (err) {
          return settle(err as Error);
        }
      }
    });
    socket.on('end', () => settle());
    socket.on('close', () => settle());
    socket.on('error', (err: NodeJS.ErrnoException) => {
      const hint =
        err.code === 'ENOENT'
          ? `no agent is running here (no control socket ${path}; is \`flannel-udp up\` running with this --tun, in this network namespace?)`
          : err.code === 'ECONNREFUSED'
            ? `no agent answers on ${path} (left by an agent that has died)`
            : err.code === 'EACCES'
              ? `permission denied on ${path}: the control socket is for root`
              : err.code === 'EPIPE' || err.code === 'ECONNRESET'
                ? `the agent on ${path} closed the connection without answering (${err.code}); its log says why (a connection cap, or too few file descriptors)`
                : `control socket ${path}: ${err.message}`;
      settle(new ControlClientError(hint));
    });
  });
}
