// A small etcd v3 client over etcd's JSON gateway (POST /v3/kv/range, /v3/kv/txn,
// /v3/lease/grant, /v3/watch, …): only what flannel's lease store needs, on
// node:http / node:https, so there is no gRPC dependency.
//
// The gateway's JSON is protobuf's JSON mapping: keys and values are base64,
// 64-bit integers are decimal strings, and fields holding their default value
// (false, 0, "", PUT as event type) are left out. Lease IDs stay strings here:
// they use all 63 bits and would lose precision as JS numbers. Revisions fit
// in a double for millennia of writes, so they are numbers.
//
// Errors come in three kinds (EtcdError.kind): 'unavailable' (no endpoint
// answered: refused, reset, timed out; try again later), 'rejected' (etcd
// answered with an error: a bad request, an unknown lease; trying again will
// not help) and 'config' (a bad endpoint URL or TLS file, found before any
// request).

import http from 'node:http';
import https from 'node:https';
import { BoundedFileError, readBoundedFileSync } from './bounded-file.js';

export interface EtcdTlsFiles {
  /** CA bundle that signed etcd's server certificate (flanneld --etcd-cafile) */
  caFile?: string;
  /** client certificate and key, for etcd's --client-cert-auth (flanneld --etcd-certfile / --etcd-keyfile) */
  certFile?: string;
  keyFile?: string;
}

/** etcd v3 user and password (flanneld --etcd-username / --etcd-password). Never logged. */
export interface EtcdAuth {
  username: string;
  password: string;
}

export interface EtcdClientOptions extends EtcdTlsFiles {
  /** With auth enabled in etcd: a token is fetched from /v3/auth/authenticate and sent with every request. */
  auth?: EtcdAuth;
  /** http://host:port or https://host:port; tried in turn until one answers */
  endpoints: string[];
  /** per request, watches excluded; default 5 s */
  requestTimeoutMs?: number;
}

export interface KeyValue {
  key: string;
  value: string;
  createRevision: number;
  modRevision: number;
  version: number;
  /** lease ID the key is attached to, '0' for none */
  lease: string;
}

export interface RangeResult {
  kvs: KeyValue[];
  /** the store's revision the result was read at */
  revision: number;
}

/** One comparison of a transaction; every one must hold for the success branch to run. */
export type Compare =
  | { key: string; createRevision: number } // CREATE: 0 means "the key does not exist"
  | { key: string; modRevision: number }; // MOD: "nobody wrote the key since I read it"

export type TxnOp =
  | { put: { key: string; value: string; lease?: string } }
  | { range: { key: string } }
  | { deleteKey: { key: string } };

export interface TxnResult {
  succeeded: boolean;
  revision: number;
  /** one per op of the branch that ran; range ops carry their key-values */
  responses: { kvs?: KeyValue[] }[];
}

export interface WatchEvent {
  type: 'PUT' | 'DELETE';
  kv: KeyValue;
}

export interface WatchHandlers {
  /** One watch response: its events (in store order) and the revision of the last. */
  onEvents(events: WatchEvent[], revision: number): void;
}

/** Why a watch ended. A watch never ends by itself while etcd is healthy, so every end means "resync". */
export type WatchEnd =
  | { reason: 'cancelled' }
  | { reason: 'compacted'; compactRevision: number }
  | { reason: 'failed'; error: EtcdError };

export interface Watch {
  /** Resolves once, when the stream is over for whatever reason. */
  readonly ended: Promise<WatchEnd>;
  /** Resolves when etcd confirmed the watch (or rejects if it ended first). */
  readonly created: Promise<void>;
  cancel(): void;
}

export class EtcdError extends Error {
  override name = 'EtcdError';
  constructor(
    message: string,
    readonly kind: 'unavailable' | 'rejected' | 'config',
  ) {
    super(message);
  }
}

const b64 = (s: string): string => Buffer.from(s, 'utf8').toString('base64');
const unb64 = (s: string | undefined): string => (s === undefined ? '' : Buffer.from(s, 'base64').toString('utf8'));
const num = (s: string | number | undefined): number => (s === undefined ? 0 : Number(s));

/** etcd's "every key starting with key": the range end is key with its last byte incremented. */
export function prefixRangeEnd(key: string): string {
  const bytes = Buffer.from(key, 'utf8');
  for (let i = bytes.length - 1; i >= 0; i--) {
    if (bytes[i] < 0xff) {
      const end = Buffer.from(bytes.subarray(0, i + 1));
      end[i]++;
      return end.toString('base64');
    }
  }
  return Buffer.from([0]).toString('base64'); // all 0xff: to the end of the keyspace
}

interface RawKv {
  key?: string;
  value?: string;
  create_revision?: string;
  mod_revision?: string;
  version?: string;
  lease?: string;
}

function decodeKv(raw: RawKv): KeyValue {
  return {
    key: unb64(raw.key),
    value: unb64(raw.value),
    createRevision: num(raw.create_revision),
    modRevision: num(raw.mod_revision),
    version: num(raw.version),
    lease: raw.lease ?? '0',
  };
}

function encodeOp(op: TxnOp): object {
  if ('put' in op) return { request_put: { key: b64(op.put.key), value: b64(op.put.value), lease: op.put.lease ?? '0' } };
  if ('range' in op) return { request_range: { key: b64(op.range.key) } };
  return { request_delete_range: { key: b64(op.deleteKey.key) } };
}

function encodeCompare(c: Compare): object {
  // result EQUAL is the enum's default (0), but is spelled out for the reader.
  if ('createRevision' in c) return { key: b64(c.key), target: 'CREATE', result: 'EQUAL', create_revision: String(c.createRevision) };
  return { key: b64(c.key), target: 'MOD', result: 'EQUAL', mod_revision: String(c.modRevision) };
}

export class EtcdClient {
  readonly endpoints: readonly URL[];
  private readonly requestTimeoutMs: number;
  private readonly httpAgent: http.Agent;
  private readonly httpsAgent: https.Agent | undefined;
  /** the endpoint that answered last; requests start there */
  private current = 0;
  private closed = false;
  private readonly watches = new Set<http.ClientRequest>();
  private readonly auth: EtcdAuth | undefined;
  /** etcd's auth token; dropped when etcd calls it invalid (expired, etcd restarted), fetched again on the next request */
  private token: Promise<string> | undefined;

  constructor(opts: EtcdClientOptions) {
    const configError = (message: string) => new EtcdError(message, 'config');
    if (opts.endpoints.length === 0) throw configError('no etcd endpoint given');
    this.endpoints = opts.endpoints.map((e) => {
      let url: URL;
      try {
        url = new URL(e);
      } catch {
        throw configError(`etcd endpoint ${JSON.stringify(e)} is not a URL (expected http://host:2379 or https://host:2379)`);
      }
      if (url.protocol !== 'http:' && url.protocol !== 'https:') {
        throw configError(`etcd endpoint ${JSON.stringify(e)}: only http:// and https:// are supported`);
      }
      return url;
    });
    this.requestTimeoutMs = opts.requestTimeoutMs ?? 5000;
    if (opts.auth !== undefined && opts.auth.username === '') throw configError('--etcd-username: give a user name');
    this.auth = opts.auth;
    this.httpAgent = new http.Agent({ keepAlive: true });
    if ((opts.certFile === undefined) !== (opts.keyFile === undefined)) {
      throw configError('--etcd-certfile and --etcd-keyfile go together (a client certificate needs its key)');
    }
    const read = (what: string, path: string | undefined): Buffer | undefined => {
      if (path === undefined) return undefined;
      try {
        // A certificate or key is a few KiB; a FIFO or device here must not block the start.
        return readBoundedFileSync(path, 1 << 20, 'the file');
      } catch (err) {
        throw configError(`${what} ${path}: ${err instanceof BoundedFileError ? err.detail.replace(/^cannot read the file: /, '') : (err as Error).message}`);
      }
    };
    const tls = { ca: read('--etcd-cafile', opts.caFile), cert: read('--etcd-certfile', opts.certFile), key: read('--etcd-keyfile', opts.keyFile) };
    const usesHttps = this.endpoints.some((u) => u.protocol === 'https:');
    if (!usesHttps && (tls.ca || tls.cert)) {
      throw configError('--etcd-cafile/--etcd-certfile/--etcd-keyfile need https:// endpoints');
    }
    this.httpsAgent = usesHttps ? new https.Agent({ keepAlive: true, minVersion: 'TLSv1.2', ...tls }) : undefined;
  }

  describe(): string {
    return this.endpoints.map((u) => u.origin).join(',');
  }

  // ---- key-value ----

  async range(key: string, opts: { prefix?: boolean } = {}): Promise<RangeResult> {
    const body: Record<string, string> = { key: b64(key) };
    if (opts.prefix) body.range_end = prefixRangeEnd(key);
    const res = (await this.call('/v3/kv/range', body)) as { header?: { revision?: string }; kvs?: RawKv[] };
    return { kvs: (res.kvs ?? []).map(decodeKv), revision: num(res.header?.revision) };
  }

  async get(key: string): Promise<KeyValue | undefined> {
    return (await this.range(key)).kvs[0];
  }

  async put(key: string, value: string, opts: { lease?: string } = {}): Promise<number> {
    const res = (await this.call('/v3/kv/put', { key: b64(key), value: b64(value), lease: opts.lease ?? '0' })) as {
      header?: { revision?: string };
    };
    return num(res.header?.revision);
  }

  /** Deletes one key; resolves with how many keys went (0 or 1). */
  async deleteKey(key: string): Promise<number> {
    const res = (await this.call('/v3/kv/deleterange', { key: b64(key) })) as { deleted?: string };
    return num(res.deleted);
  }

  async txn(compare: Compare[], success: TxnOp[], failure: TxnOp[] = []): Promise<TxnResult> {
    const res = (await this.call('/v3/kv/txn', {
      compare: compare.map(encodeCompare),
      success: success.map(encodeOp),
      failure: failure.map(encodeOp),
    })) as { succeeded?: boolean; header?: { revision?: string }; responses?: { response_range?: { kvs?: RawKv[] } }[] };
    return {
      succeeded: res.succeeded === true,
      revision: num(res.header?.revision),
      responses: (res.responses ?? []).map((r) => (r.response_range ? { kvs: (r.response_range.kvs ?? []).map(decodeKv) } : {})),
    };
  }

  // ---- leases ----

  async leaseGrant(ttlSeconds: number): Promise<{ id: string; ttlSeconds: number }> {
    const res = (await this.call('/v3/lease/grant', { TTL: String(ttlSeconds), ID: '0' })) as { ID?: string; TTL?: string; error?: string };
    if (res.error) throw new EtcdError(`lease grant: ${res.error}`, 'rejected');
    if (!res.ID) throw new EtcdError('lease grant: no lease ID in the answer', 'rejected');
    return { id: res.ID, ttlSeconds: num(res.TTL) };
  }

  /** One keep-alive round; resolves with the lease's new TTL, 0 when the lease no longer exists. */
  async leaseKeepAlive(id: string): Promise<number> {
    // A bidirectional stream in gRPC; through the gateway one request gets one answer.
    const res = (await this.call('/v3/lease/keepalive', { ID: id })) as { result?: { TTL?: string } };
    return num(res.result?.TTL);
  }

  async leaseRevoke(id: string): Promise<void> {
    try {
      await this.call('/v3/lease/revoke', { ID: id });
    } catch (err) {
      // Already gone is what we wanted.
      if (err instanceof EtcdError && err.kind === 'rejected' && /lease not found/.test(err.message)) return;
      throw err;
    }
  }

  /** Remaining TTL in seconds, -1 when the lease does not exist. */
  async leaseTimeToLive(id: string): Promise<number> {
    const res = (await this.call('/v3/lease/timetolive', { ID: id })) as { TTL?: string };
    return res.TTL === undefined ? 0 : num(res.TTL);
  }

  // ---- watch ----

  /**
   * Streams changes to `key` (every key under it with prefix) from
   * startRevision on. Events arrive in store order; a revision compacted away
   * ends the watch with reason 'compacted' (the caller re-reads and watches
   * again); so does a lost connection, with 'failed'. The gateway sends one
   * JSON object per line.
   */
  watch(key: string, opts: { prefix?: boolean; startRevision?: number }, handlers: WatchHandlers): Watch {
    const createRequest: Record<string, string | boolean> = { key: b64(key) };
    if (opts.prefix) createRequest.range_end = prefixRangeEnd(key);
    if (opts.startRevision !== undefined) createRequest.start_revision = String(opts.startRevision);
    const body = JSON.stringify({ create_request: createRequest });
    const endpoint = this.endpoints[this.current];

    let endWith!: (end: WatchEnd) => void;
    let finished = false;
    const ended = new Promise<WatchEnd>((resolve) => (endWith = resolve));
    let confirm!: () => void;
    let refuse!: (err: Error) => void;
    const created = new Promise<void>((resolve, reject) => {
      confirm = resolve;
      refuse = reject;
    });
    created.catch(() => undefined); // a watch ended before creation is reported through `ended` as well

    const req = this.request(endpoint, '/v3/watch', body);
    this.watches.add(req);
    // The token is fetched before the stream is sent: req.end() waits for it.
    const tokenReady = this.auth ? this.authToken() : Promise.resolve(undefined);
    const finish = (end: WatchEnd) => {
      if (finished) return;
      finished = true;
      this.watches.delete(req);
      req.destroy();
      refuse(end.reason === 'failed' ? end.error : new Error(`watch ${end.reason}`));
      endWith(end);
    };
    const fail = (message: string, kind: EtcdError['kind'] = 'unavailable') =>
      finish({ reason: 'failed', error: new EtcdError(`${endpoint.origin}: watch ${key}: ${message}`, kind) });

    // No timeout on the stream itself: an idle watch is normal. Only the connection attempt is bounded.
    const connectTimer = setTimeout(() => fail(`no answer within ${this.requestTimeoutMs} ms`), this.requestTimeoutMs);
    req.on('error', (err) => {
      clearTimeout(connectTimer);
      fail(describeNetError(err));
    });
    req.on('response', (res) => {
      clearTimeout(connectTimer);
      if (res.statusCode !== 200) {
        collect(res).then(
          (text) => {
            if (isAuthTokenProblem(gatewayMessage(text))) this.token = undefined;
            fail(`HTTP ${res.statusCode}: ${gatewayMessage(text)}`, 'rejected');
          },
          (err) => fail(describeNetError(err)),
        );
        return;
      }
      res.setEncoding('utf8');
      let pending = '';
      res.on('data', (chunk: string) => {
        pending += chunk;
        let nl: number;
        while (!finished && (nl = pending.indexOf('\n')) >= 0) {
          const line = pending.slice(0, nl).trim();
          pending = pending.slice(nl + 1);
          if (line !== '') onMessage(line);
        }
      });
      res.on('end', () => fail('stream ended (etcd closed the connection)'));
      res.on('error', (err) => fail(describeNetError(err)));
      res.on('close', () => fail('connection closed'));
    });

    const onMessage = (line: string) => {
      let msg: {
        result?: {
          header?: { revision?: string };
          created?: boolean;
          canceled?: boolean;
          compact_revision?: string;
          cancel_reason?: string;
          events?: { type?: string; kv?: RawKv }[];
        };
        error?: { message?: string };
      };
      try {
        msg = JSON.parse(line);
      } catch {
        return fail(`unreadable watch message ${JSON.stringify(line.slice(0, 200))}`, 'rejected');
      }
      if (msg.error) {
        const message = msg.error.message ?? JSON.stringify(msg.error);
        if (isAuthTokenProblem(message)) this.token = undefined; // the next resync authenticates again
        return fail(message, 'rejected');
      }
      const r = msg.result;
      if (!r) return;
      if (r.created) confirm();
      if (r.compact_revision !== undefined && num(r.compact_revision) > 0) {
        return finish({ reason: 'compacted', compactRevision: num(r.compact_revision) });
      }
      if (r.canceled) return fail(`cancelled by etcd${r.cancel_reason ? `: ${r.cancel_reason}` : ''}`, 'rejected');
      if (r.events && r.events.length > 0) {
        const events = r.events.map((e) => ({ type: e.type === 'DELETE' ? ('DELETE' as const) : ('PUT' as const), kv: decodeKv(e.kv ?? {}) }));
        try {
          handlers.onEvents(events, num(r.header?.revision));
        } catch (err) {
          fail(`event handler failed: ${(err as Error).message}`, 'rejected');
        }
      }
    };

    tokenReady.then(
      (token) => {
        if (finished) return;
        if (token !== undefined) req.setHeader('authorization', token);
        req.end(body);
      },
      (err: Error) => fail(err.message, err instanceof EtcdError ? err.kind : 'unavailable'),
    );
    return { ended, created, cancel: () => finish({ reason: 'cancelled' }) };
  }

  /** Ends every watch and closes idle connections; later calls fail. */
  close(): void {
    this.closed = true;
    for (const req of this.watches) req.destroy();
    this.watches.clear();
    this.httpAgent.destroy();
    this.httpsAgent?.destroy();
  }

  // ---- transport ----

  /**
   * The auth token, fetched once and shared by concurrent requests. A failed
   * fetch is not kept, so the next request tries again.
   */
  private authToken(): Promise<string> {
    if (this.token === undefined) {
      const auth = this.auth!;
      const fetching = this.send('/v3/auth/authenticate', { name: auth.username, password: auth.password }, undefined).then(
        (res) => {
          const token = (res as { token?: string }).token;
          if (typeof token !== 'string' || token === '') {
            throw new EtcdError(`etcd user ${JSON.stringify(auth.username)}: no token in etcd's answer (is auth enabled in etcd?)`, 'rejected');
          }
          return token;
        },
        (err: EtcdError) => {
          // etcd's message names the user at most, never the password.
          throw new EtcdError(`etcd authentication as ${JSON.stringify(auth.username)} failed: ${err.message}`, err.kind);
        },
      );
      this.token = fetching;
      fetching.catch(() => {
        if (this.token === fetching) this.token = undefined;
      });
    }
    return this.token;
  }

  /** A request, with the auth token when there is auth; an expired or invalid token is renewed once. */
  private async call(path: string, body: object): Promise<unknown> {
    if (this.auth === undefined) return this.send(path, body, undefined);
    const token = await this.authToken();
    try {
      return await this.send(path, body, token);
    } catch (err) {
      if (!(err instanceof EtcdError) || !isAuthTokenProblem(err.message)) throw err;
      if (this.token !== undefined && (await this.token.catch(() => undefined)) === token) this.token = undefined;
      return this.send(path, body, await this.authToken());
    }
  }

  /** POSTs to the endpoint that answered last, then each other one; rejects when none answers. */
  private async send(path: string, body: object, token: string | undefined): Promise<unknown> {
    if (this.closed) throw new EtcdError('etcd client is closed', 'unavailable');
    const text = JSON.stringify(body);
    const failures: string[] = [];
    for (let i = 0; i < this.endpoints.length; i++) {
      const index = (this.current + i) % this.endpoints.length;
      const endpoint = this.endpoints[index];
      let status: number;
      let answer: string;
      try {
        ({ status, answer } = await this.post(endpoint, path, text, token));
      } catch (err) {
        failures.push(`${endpoint.origin}: ${describeNetError(err as Error)}`);
        continue;
      }
      this.current = index;
      // 503 and friends: this member cannot serve (no leader, shutting down); another might.
      if (status >= 500 && status !== 501) {
        failures.push(`${endpoint.origin}: HTTP ${status}: ${gatewayMessage(answer)}`);
        continue;
      }
      if (status !== 200) throw new EtcdError(`${endpoint.origin}${path}: HTTP ${status}: ${gatewayMessage(answer)}`, 'rejected');
      try {
        return JSON.parse(answer);
      } catch {
        throw new EtcdError(`${endpoint.origin}${path}: answer is not JSON: ${JSON.stringify(answer.slice(0, 200))}`, 'rejected');
      }
    }
    throw new EtcdError(`etcd unreachable (${failures.join('; ')})`, 'unavailable');
  }

  private post(endpoint: URL, path: string, text: string, token: string | undefined, retried = false): Promise<{ status: number; answer: string }> {
    return new Promise((resolve, reject) => {
      const req = this.request(endpoint, path, text);
      if (token !== undefined) req.setHeader('authorization', token);
      req.setTimeout(this.requestTimeoutMs, () => req.destroy(new Error(`no answer within ${this.requestTimeoutMs} ms`)));
      req.on('error', (err: NodeJS.ErrnoException) => {
        // A kept-alive connection the server closed meanwhile (etcd restarted): one fresh try.
        if (!retried && req.reusedSocket && (err.code === 'ECONNRESET' || err.code === 'EPIPE')) {
          this.post(endpoint, path, text, token, true).then(resolve, reject);
          return;
        }
        reject(err);
      });
      req.on('response', (res) => collect(res).then((answer) => resolve({ status: res.statusCode ?? 0, answer }), reject));
      req.end(text);
    });
  }

  private request(endpoint: URL, path: string, text: string): http.ClientRequest {
    const isHttps = endpoint.protocol === 'https:';
    const options: http.RequestOptions = {
      host: endpoint.hostname.replace(/^\[|\]$/g, ''),
      port: endpoint.port || (isHttps ? 443 : 80),
      path,
      method: 'POST',
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) },
      agent: isHttps ? this.httpsAgent : this.httpAgent,
    };
    return isHttps ? https.request(options) : http.request(options);
  }
}

/** etcd's answers when a token has expired or was never valid on this server (simple tokens die with a restart). */
export function isAuthTokenProblem(message: string): boolean {
  return /invalid auth token|auth token is not provided|user name is empty/.test(message);
}

function collect(res: http.IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    res.on('data', (c: Buffer) => chunks.push(c));
    res.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    res.on('error', reject);
  });
}

/** The gateway's error body is {"error": "...", "code": N, "message": "..."}. */
function gatewayMessage(text: string): string {
  try {
    const e = JSON.parse(text) as { message?: string; error?: string };
    return e.message ?? e.error ?? text;
  } catch {
    return text.slice(0, 200);
  }
}

function describeNetError(err: Error): string {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ECONNREFUSED') return 'connection refused';
  if (code === 'ECONNRESET') return 'connection reset';
  if (code === 'EHOSTUNREACH' || code === 'ENETUNREACH') return 'no route to host';
  return code ? `${err.message}` : err.message;
}
