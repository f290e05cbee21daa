// The static leases file: flannel's etcd lease store written down as one JSON
// object, for clusters run without etcd. Keys are flannel subnet keys, values
// flannel's lease attributes, so `etcdctl get` output maps over one to one:
//
//   {
//     "10.244.1.0-24": {"PublicIP": "192.0.2.1", "BackendType": "udp"},
//     "10.244.2.0-24": {"PublicIP": "192.0.2.2", "BackendType": "udp"}
//   }
//
// Every node can share the same file: the node's own subnet is skipped.
// Dual-stack keys are flannel's too, "10.244.1.0-24&fd00:10:244:1::-64" with
// "PublicIPv6" (and "BackendV6Data"); an IPv6-only node's key has the zero
// IPv4 half "0.0.0.0-0&fd00:10:244:1::-64". With this node's IPv6 subnet
// given, its own entry is the one with both halves of its key; with
// IPv6Network given, entries whose IPv6 half makes no sense are left out and
// reported (ipv6-lease-checks.ts), the rest of the file still in force.

import { watch, type FSWatcher } from 'node:fs';
import { basename, dirname } from 'node:path';
import { type Cidr, cidrEquals } from './ipv4-address.js';
import { type Cidr6, cidr6Equals } from './ipv6-address.js';
import { type Lease, LeaseError, parseLeaseAttrs } from './lease.js';
import { checkIpv6Leases, type Ipv6LeaseRejectReason } from './ipv6-lease-checks.js';
import type { LeaseSource, LeaseSourceHandlers } from './lease-source.js';
import { readBoundedFile } from './bounded-file.js';

/**
 * The largest leases file read. flannel's largest cluster, a /8 cut into
 * /24s, is 65 536 leases of about 80 bytes: 5 MB. Anything longer is not a
 * leases file, and reading it whole would cost the agent many times its size.
 */
export const MAX_LEASES_FILE_BYTES = 8 << 20;

export class LeasesFileError extends Error {
  readonly path: string;
  /** the subnet key concerned, '' when the problem is the file as a whole */
  readonly key: string;

  constructor(path: string, key: string, message: string) {
    super(message);
    this.name = 'LeasesFileError';
    this.path = path;
    this.key = key;
  }
}

export interface ParsedLeasesFile {
  leases: Lease[];
  /** one sentence per entry left out on purpose (the node's own subnet) */
  skipped: string[];
}

export function parseLeasesFile(text: string, path: string, ownSubnet?: Cidr, ownIpv6Subnet?: Cidr6): ParsedLeasesFile {
  // Scan before JSON.parse: V8 reports some syntax errors without a position,
  // and JSON.parse silently keeps the last of two equal keys, which here would
  // drop a lease without a word.
  const scan = scanJson(text);
  const at = (offset: number): string => {
    const { line, column } = lineAndColumn(text, offset);
    return `${path}:${line}:${column}`;
  };
  if (scan.problem !== undefined) {
    const { offset, message, key } = scan.problem;
    throw new LeasesFileError(path, key ?? '', `${at(offset)}: invalid JSON: ${message} (position ${offset})`);
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    // Only if the scan above and V8 ever disagree on what JSON is.
    throw new LeasesFileError(path, '', `${path}: invalid JSON: ${(err as Error).message}`);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) {
    throw new LeasesFileError(
      path,
      '',
      `${path}: expected a JSON object of subnet key → lease, like {"10.244.2.0-24": {"PublicIP": "192.0.2.2", "BackendType": "udp"}}`,
    );
  }

  const leases: Lease[] = [];
  const skipped: string[] = [];
  const offsetOfKey = (key: string): number => scan.topLevelKeys.get(key) ?? 0;

  for (const [key, attrs] of Object.entries(doc)) {
    let lease: Lease;
    try {
      lease = parseLeaseAttrs(key, attrs);
    } catch (err) {
      if (err instanceof LeaseError) throw new LeasesFileError(path, key, `${at(offsetOfKey(key))}: ${err.message}`);
      throw err;
    }
    // This node's own entry: on a dual-stack node the one with both halves of its key (an entry
    // sharing one half is another node's, and the checks reject the overlap); on a single-family
    // node the half it has (an IPv6-only lease's zero IPv4 half names nobody).
    const ownV4 = ownSubnet !== undefined && lease.ipv6Only !== true && cidrEquals(lease.subnet, ownSubnet);
    const ownV6 = ownIpv6Subnet !== undefined && lease.ipv6Subnet !== undefined && cidr6Equals(lease.ipv6Subnet, ownIpv6Subnet);
    const own = ownSubnet !== undefined && ownIpv6Subnet !== undefined ? ownV4 && ownV6 : ownV4 || ownV6;
    if (own) {
      skipped.push(`${key} (line ${lineAndColumn(text, offsetOfKey(key)).line}): this node's own subnet; skipped`);
      continue;
    }
    // A lease overlapping this node's subnet or another lease is not a file
    // error: the agent's sense checks (lease-sanity.ts) reject it alone, and
    // count it, exactly as they do for etcd and Kubernetes leases.
    leases.push(lease);
  }
  return { leases, skipped };
}

function lineAndColumn(text: string, offset: number): { line: number; column: number } {
  let line = 1;
  let lineStart = 0;
  for (let i = 0; i < offset && i < text.length; i++) {
    if (text.charCodeAt(i) === 10) {
      line++;
      lineStart = i + 1;
    }
  }
  return { line, column: offset - lineStart + 1 };
}

interface JsonScan {
  problem?: { offset: number; message: string; key?: string };
  /** offset of each top-level key, for line numbers in later messages */
  topLevelKeys: Map<string, number>;
}

class JsonStop {
  constructor(
    readonly offset: number,
    readonly message: string,
    readonly key?: string,
  ) {}
}

const JSON_NUMBER = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;

/** A JSON syntax check that says where it stopped and finds duplicate top-level keys. */
const MAX_JSON_DEPTH = 64;

function scanJson(text: string): JsonScan {
  const topLevelKeys = new Map<string, number>();
  let i = 0;

  const skipSpace = (): void => {
    while (i < text.length && ' \t\n\r'.includes(text[i])) i++;
  };
  const stop = (message: string): never => {
    throw new JsonStop(i, i >= text.length ? 'unexpected end of input' : message);
  };
  const scanString = (): void => {
    i++; // opening quote
    for (;;) {
      if (i >= text.length) stop('unterminated string');
      const c = text[i];
      if (c === '"') {
        i++;
        return;
      }
      if (c === '\\') {
        const e = text[i + 1];
        if (e === 'u' && /^[0-9a-fA-F]{4}$/.test(text.slice(i + 2, i + 6))) i += 6;
        else if (e !== undefined && '"\\/bfnrt'.includes(e)) i += 2;
        else stop('bad escape in string');
      } else if (c < ' ') {
        stop('control character (e.g. a raw line break) in string');
      } else {
        i++;
      }
    }
  };
  const scanValue = (depth: number): void => {
    // A leases file nests four levels (file → lease → BackendData → value);
    // anything far deeper is not one, and recursing into it would overflow the stack.
    if (depth > MAX_JSON_DEPTH) stop(`nested more than ${MAX_JSON_DEPTH} levels deep: not a leases file`);
    skipSpace();
    const c = text[i];
    if (c === '{') {
      i++;
      skipSpace();
      if (text[i] === '}') {
        i++;
        return;
      }
      for (;;) {
        skipSpace();
        if (text[i] !== '"') stop(`expected a double-quoted property name, found ${JSON.stringify(text[i])}`);
        const keyStart = i;
        scanString();
        if (depth === 0) {
          const key = JSON.parse(text.slice(keyStart, i)) as string;
          const first = topLevelKeys.get(key);
          if (first !== undefined) {
            throw new JsonStop(keyStart, `duplicate key ${JSON.stringify(key)} (first at line ${lineAndColumn(text, first).line})`, key);
          }
          topLevelKeys.set(key, keyStart);
        }
        skipSpace();
        if (text[i] !== ':') stop(`expected ':' after the property name, found ${JSON.stringify(text[i])}`);
        i++;
        scanValue(depth + 1);
        skipSpace();
        if (text[i] === ',') {
          i++;
          continue;
        }
        if (text[i] === '}') {
          i++;
          return;
        }
        stop(`expected ',' or '}', found ${JSON.stringify(text[i])}`);
      }
    }
    if (c === '[') {
      i++;
      skipSpace();
      if (text[i] === ']') {
        i++;
        return;
      }
      for (;;) {
        scanValue(depth + 1);
        skipSpace();
        if (text[i] === ',') {
          i++;
          continue;
        }
        if (text[i] === ']') {
          i++;
          return;
        }
        stop(`expected ',' or ']', found ${JSON.stringify(text[i])}`);
      }
    }
    if (c === '"') return scanString();
    for (const literal of ['true', 'false', 'null']) {
      if (text.startsWith(literal, i)) {
        i += literal.length;
        return;
      }
    }
    JSON_NUMBER.lastIndex = i;
    if (JSON_NUMBER.test(text)) {
      i = JSON_NUMBER.lastIndex;
      return;
    }
    stop(`unexpected ${JSON.stringify(c)}`);
  };

  try {
    scanValue(0);
    skipSpace();
    if (i < text.length) stop(`unexpected ${JSON.stringify(text[i])} after the end of the JSON value`);
  } catch (err) {
    if (err instanceof JsonStop) return { problem: { offset: err.offset, message: err.message, key: err.key }, topLevelKeys };
    throw err;
  }
  return { topLevelKeys };
}

export interface LeasesFileSourceOptions {
  /** this node's lease (FLANNEL_SUBNET); left out of the snapshots */
  ownSubnet?: Cidr;
  /** dual-stack: this node's IPv6 subnet (FLANNEL_IPV6_SUBNET's network): the own entry has both halves; no other may overlap it */
  ownIpv6Subnet?: Cidr6;
  /** dual-stack: FLANNEL_IPV6_NETWORK; entries' IPv6 halves are checked against it */
  ipv6Network?: Cidr6;
  /** quiet time after the last change event before re-reading; editors write in several steps */
  debounceMs?: number;
  /** follow edits with inotify (default); off, only reload() (SIGHUP) re-reads: for filesystems without inotify */
  watch?: boolean;
}

/**
 * Reads the leases file, then follows edits to it.
 *
 * The DIRECTORY is watched, not the file: editors and `mv new leases.json`
 * replace the file with a new inode, and a watch on the old inode would go
 * silent. Change events are debounced, then the file is re-stat'ed, so
 * directory noise (other files, a touch without change) triggers no re-parse.
 * A broken edit is reported through onError and the last good snapshot stays
 * in force; nothing thrown here can escape the watcher.
 */
export class LeasesFileSource implements LeaseSource {
  readonly path: string;
  private readonly ownSubnet: Cidr | undefined;
  private readonly ownIpv6Subnet: Cidr6 | undefined;
  private readonly ipv6Network: Cidr6 | undefined;
  /** entries left out for their IPv6 half, by reason, counted once per file version */
  readonly ipv6Rejections = new Map<Ipv6LeaseRejectReason, number>();
  private readonly debounceMs: number;
  private readonly watchEdits: boolean;
  private handlers: LeaseSourceHandlers | undefined;
  private watcher: FSWatcher | undefined;
  private debounceTimer: NodeJS.Timeout | undefined;
  /** identity of the file version last looked at (inode, size, times), or the read error */
  private lastSeen = '';
  private lastGoodText: string | undefined;
  private stopped = false;
  // Reads run one at a time so an older read can never overwrite a newer snapshot.
  private queue: Promise<void> = Promise.resolve();

  constructor(path: string, options: LeasesFileSourceOptions = {}) {
    this.path = path;
    this.ownSubnet = options.ownSubnet;
    this.ownIpv6Subnet = options.ownIpv6Subnet;
    this.ipv6Network = options.ipv6Network;
    this.debounceMs = options.debounceMs ?? 50;
    this.watchEdits = options.watch ?? true;
  }

  describe(): string {
    return `leases file ${this.path}${this.watchEdits ? '' : ' (reloaded on SIGHUP only)'}`;
  }

  async start(handlers: LeaseSourceHandlers): Promise<void> {
    if (this.handlers !== undefined) throw new Error(`${this.describe()}: already started`);
    this.handlers = handlers;
    const dir = dirname(this.path);
    const name = basename(this.path);
    try {
      // Watch before the first read, so an edit landing in between is not missed.
      if (this.watchEdits) this.watcher = watch(dir, { persistent: false }, (_event, filename) => {
        // filename can be null on some platforms: then any event may be ours.
        if (filename === null || filename === name) this.scheduleCheck();
      });
    } catch (err) {
      this.handlers = undefined;
      throw new LeasesFileError(this.path, '', `${this.path}: cannot watch directory ${dir}: ${(err as Error).message}`);
    }
    this.watcher?.on('error', (err) => {
      this.report(
        new LeasesFileError(this.path, '', `${this.path}: watching ${dir} failed (${err.message}); edits are no longer followed, SIGHUP still reloads`),
      );
    });

    try {
      const { seen, text } = await this.load();
      const { leases } = parseLeasesFile(text, this.path, this.ownSubnet, this.ownIpv6Subnet);
      this.lastSeen = seen;
      this.lastGoodText = text;
      handlers.onLeases(this.checkIpv6(leases));
    } catch (err) {
      this.closeWatcher();
      this.handlers = undefined;
      throw err;
    }
  }

  reload(): Promise<void> {
    return this.enqueue(() => this.check(true));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.closeWatcher();
    await this.queue;
  }

  private closeWatcher(): void {
    clearTimeout(this.debounceTimer);
    this.debounceTimer = undefined;
    this.watcher?.close();
    this.watcher = undefined;
  }

  private scheduleCheck(): void {
    if (this.stopped) return;
    clearTimeout(this.debounceTimer);
    this.debounceTimer = setTimeout(() => {
      this.debounceTimer = undefined;
      void this.enqueue(() => this.check(false));
    }, this.debounceMs);
  }

  private enqueue(task: () => Promise<void>): Promise<void> {
    this.queue = this.queue.then(task, task);
    return this.queue;
  }

  /** `force` (reload) re-reads and re-emits even when the file looks unchanged. */
  private async check(force: boolean): Promise<void> {
    if (this.stopped || this.handlers === undefined) return;
    let seen: string;
    let text: string;
    try {
      ({ seen, text } = await this.load());
    } catch (err) {
      // Report a missing or unreadable file once, not on every directory event.
      const seenError = `error:${(err as Error).message}`;
      if (!force && seenError === this.lastSeen) return;
      this.lastSeen = seenError;
      this.report(err as Error);
      return;
    }
    if (!force && seen === this.lastSeen) return;
    this.lastSeen = seen;
    // Rewritten with the same content (or reverted after a broken edit): the table in force is already right.
    if (!force && text === this.lastGoodText) return;

    let leases: Lease[];
    try {
      ({ leases } = parseLeasesFile(text, this.path, this.ownSubnet, this.ownIpv6Subnet));
    } catch (err) {
      this.report(err as Error);
      return;
    }
    this.lastGoodText = text;
    if (this.stopped) return;
    try {
      this.handlers.onLeases(this.checkIpv6(leases));
    } catch (err) {
      this.report(err as Error);
    }
  }

  /** Leaves out entries whose IPv6 half makes no sense here: reported and counted once per file version read. */
  private checkIpv6(leases: Lease[]): Lease[] {
    if (this.ipv6Network === undefined && !leases.some((l) => l.ipv6Only)) return leases;
    const { accepted, rejected } = checkIpv6Leases(leases, { ipv6Network: this.ipv6Network, ownIpv6Subnet: this.ownIpv6Subnet });
    for (const r of rejected) {
      this.ipv6Rejections.set(r.reason, (this.ipv6Rejections.get(r.reason) ?? 0) + 1);
      this.report(new LeasesFileError(this.path, r.key, `${this.path}: lease ${JSON.stringify(r.key)}: ${r.detail}; left out (${r.reason})`));
    }
    return accepted;
  }

  /** Only a regular file, at most MAX_LEASES_FILE_BYTES, never blocking (bounded-file.ts). */
  private async load(): Promise<{ seen: string; text: string }> {
    try {
      const { text, identity } = await readBoundedFile(this.path, MAX_LEASES_FILE_BYTES, 'the leases file');
      return { seen: identity, text };
    } catch (err) {
      throw new LeasesFileError(this.path, '', (err as Error).message);
    }
  }

  private report(err: Error): void {
    if (this.stopped || this.handlers === undefined) return;
    try {
      this.handlers.onError(err);
    } catch {
      // A throwing error handler must not take the watcher down with it.
    }
  }
}
