// The HTTP layer of our Kubernetes client (kube-client.ts), over node:https
// and node:http only: one JSON request with a deadline and a bounded body,
// and the watch stream, split into its newline-delimited JSON events with a
// bounded line. Everything the API server answers that is not a 2xx becomes a
// KubeApiError with the HTTP status and the message of its metav1.Status.
//
// No connection reuse: the agent makes a handful of requests at start and one
// watch every 5-10 minutes, so a keep-alive pool would only add stale-socket
// retries. Each request is its own connection, as with the maintained client
// this replaced (it made a new agent per request).

import https from 'node:https';
import http from 'node:http';
import { formatBytes } from './bounded-file.js';

export class KubeApiError extends Error {
  override name = 'KubeApiError';
  constructor(
    message: string,
    /** HTTP status, 0 when the server was not reached */
    readonly status: number,
  ) {
    super(message);
  }
}

/** What every request to one API server carries: TLS material and headers, fresh for this request. */
export interface KubeRequestBase {
  /** the server's URL; the request path is appended (a path prefix in it is kept) */
  server: string;
  headers: Record<string, string>;
  tls: { ca?: Buffer; cert?: Buffer; key?: Buffer; rejectUnauthorized: boolean; servername?: string };
}

export interface KubeCall {
  method: 'GET' | 'PATCH';
  /** path and query, e.g. /api/v1/nodes?watch=true */
  path: string;
  /** the request body (JSON text) and its media type */
  body?: { text: string; contentType: string };
  /** names the call in errors: "listing nodes" */
  what: string;
}

/** The status line's number and the API server's own words (its Status object's message), else the reason phrase. */
function statusError(what: string, status: number, body: Buffer | undefined): KubeApiError {
  let detail = http.STATUS_CODES[status] ?? `HTTP ${status}`;
  if (body !== undefined && body.length > 0) {
    try {
      const parsed = JSON.parse(body.toString('utf8')) as { message?: unknown };
      if (typeof parsed?.message === 'string' && parsed.message !== '') detail = parsed.message;
    } catch {
      /* not a Status: the reason phrase */
    }
  }
  return new KubeApiError(`${what}: ${status} ${detail}`, status);
}

function networkError(what: string, method: string, url: URL, err: Error): KubeApiError {
  const code = (err as NodeJS.ErrnoException).code;
  const message = err.message.split('\n')[0];
  const text = code && !message.includes(code) ? `${message} (${code})` : message;
  return new KubeApiError(`${what}: ${method} ${url.origin}${url.pathname}: ${text}`, 0);
}

function open(base: KubeRequestBase, call: KubeCall): { url: URL; req: http.ClientRequest } {
  const url = new URL(base.server.replace(/\/+$/, '') + call.path);
  const headers: Record<string, string> = { ...base.headers, Accept: 'application/json' };
  if (call.body) {
    headers['Content-Type'] = call.body.contentType;
    headers['Content-Length'] = String(Buffer.byteLength(call.body.text));
  }
  const options: https.RequestOptions = { method: call.method, headers, agent: false };
  let req: http.ClientRequest;
  if (url.protocol === 'https:') {
    const { ca, cert, key, rejectUnauthorized, servername } = base.tls;
    req = https.request(url, { ...options, ca, cert, key, rejectUnauthorized, ...(servername ? { servername } : {}) });
  } else if (url.protocol === 'http:') {
    req = http.request(url, options);
  } else {
    throw new KubeApiError(`${call.what}: ${url.href}: not an http(s):// URL`, 0);
  }
  return { url, req };
}

/**
 * One request; the parsed JSON of a 2xx answer. Rejects with a KubeApiError:
 * the status for an answer that is not 2xx, 0 when there was none in time,
 * the status too when a 2xx body is over maxBodyBytes or not JSON.
 */
export function kubeRequest(base: KubeRequestBase, call: KubeCall, limits: { timeoutMs: number; maxBodyBytes: number }): Promise<unknown> {
  return new Promise((resolve, reject) => {
    let url: URL;
    let req: http.ClientRequest;
    try {
      ({ url, req } = open(base, call));
    } catch (err) {
      return reject(err);
    }
    let settled = false;
    const fail = (err: KubeApiError) => {
      if (settled) return;
      settled = true;
      clearTimeout(deadline);
      req.destroy();
      reject(err);
    };
    // One deadline for the whole exchange, answer body included (a server that trickles is as stuck as one that is silent).
    const deadline = setTimeout(() => fail(new KubeApiError(`${call.what}: ${call.method} ${url.origin}${url.pathname}: no complete answer in ${limits.timeoutMs / 1000} s`, 0)), limits.timeoutMs);
    req.on('error', (err) => fail(networkError(call.what, call.method, url, err)));
    req.on('response', (res) => {
      const status = res.statusCode ?? 0;
      const chunks: Buffer[] = [];
      let length = 0;
      res.on('data', (chunk: Buffer) => {
        length += chunk.length;
        if (length > limits.maxBodyBytes) {
          return fail(new KubeApiError(`${call.what}: the answer (HTTP ${status}) is over ${formatBytes(limits.maxBodyBytes)}, the limit`, status));
        }
        chunks.push(chunk);
      });
      res.on('error', (err) => fail(res.complete ? networkError(call.what, call.method, url, err) : new KubeApiError(`${call.what}: the connection closed in the middle of the answer (HTTP ${status}, ${err.message})`, 0)));
      res.on('close', () => {
        if (!res.complete) fail(new KubeApiError(`${call.what}: the connection closed in the middle of the answer (HTTP ${status})`, 0));
      });
      res.on('end', () => {
        if (settled) return;
        const body = Buffer.concat(chunks, length);
        if (status < 200 || status > 299) return fail(statusError(call.what, status, body));
        let parsed: unknown;
        try {
          parsed = JSON.parse(body.toString('utf8'));
        } catch (err) {
          return fail(new KubeApiError(`${call.what}: the answer (HTTP ${status}) is not JSON: ${(err as Error).message}`, status));
        }
        settled = true;
        clearTimeout(deadline);
        resolve(parsed);
      });
    });
    req.end(call.body?.text);
  });
}

/**
 * Newline-delimited records out of arbitrary chunks. Splits on the byte 0x0A,
 * which never occurs inside a multi-byte UTF-8 sequence, and decodes whole
 * lines only, so a chunk boundary anywhere (mid-line, mid-character) is
 * harmless. A line longer than maxLineBytes is an error, found before it is
 * buffered whole.
 */
export class LineSplitter {
  private pending: Buffer[] = [];
  private pendingBytes = 0;

  constructor(private readonly maxLineBytes: number) {}

  /** Calls onLine for every complete non-empty line; returns an error text for an oversized line (then stop feeding). */
  push(chunk: Buffer, onLine: (line: string) => void): string | undefined {
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(0x0a, start);
      const end = nl < 0 ? chunk.length : nl;
      if (this.pendingBytes + (end - start) > this.maxLineBytes) {
        return `a line over ${formatBytes(this.maxLineBytes)}, the limit`;
      }
      if (nl < 0) {
        if (end > start) {
          this.pending.push(chunk.subarray(start));
          this.pendingBytes += end - start;
        }
        return undefined;
      }
      let line: string;
      if (this.pendingBytes === 0) {
        line = chunk.toString('utf8', start, nl);
      } else {
        this.pending.push(chunk.subarray(start, nl));
        line = Buffer.concat(this.pending, this.pendingBytes + (nl - start)).toString('utf8');
        this.pending = [];
        this.pendingBytes = 0;
      }
      start = nl + 1;
      if (line.trim() !== '') onLine(line);
    }
  }

  /** Bytes of a last line that never got its newline. */
  get leftover(): number {
    return this.pendingBytes;
  }
}

export interface KubeStreamHandlers {
  /** The server answered 200: lines follow. */
  onConnected(): void;
  /** One line of the stream (a JSON event); may throw a KubeApiError to end the stream with it. */
  onLine(line: string): void;
  /** The end: undefined after a clean end of the answer, else why. Called once, never after the stop function. */
  onEnd(err: KubeApiError | undefined): void;
}

/**
 * A long-lived GET whose 200 answer is a stream of lines (a watch). The
 * connection must answer within connectTimeoutMs; after that, silence is the
 * caller's to judge (it knows the watch's timeoutSeconds). Returns a function
 * that ends the stream without calling onEnd.
 */
export function kubeStream(
  base: KubeRequestBase,
  call: KubeCall,
  limits: { connectTimeoutMs: number; maxLineBytes: number; maxErrorBodyBytes: number },
  handlers: KubeStreamHandlers,
): () => void {
  let ended = false;
  let req: http.ClientRequest | undefined;
  let connectTimer: NodeJS.Timeout | undefined;
  const end = (err: KubeApiError | undefined) => {
    if (ended) return;
    ended = true;
    clearTimeout(connectTimer);
    req?.destroy();
    handlers.onEnd(err);
  };
  let url: URL;
  try {
    ({ url, req } = open(base, call));
  } catch (err) {
    queueMicrotask(() => end(err as KubeApiError));
    return () => {
      ended = true;
    };
  }
  connectTimer = setTimeout(() => end(new KubeApiError(`${call.what}: ${call.method} ${url.origin}${url.pathname}: no answer in ${limits.connectTimeoutMs / 1000} s`, 0)), limits.connectTimeoutMs);
  // A watch is quiet for minutes: TCP keepalive finds a dead peer the kernel knows about.
  req.on('socket', (socket) => socket.setKeepAlive(true, 30_000));
  req.on('error', (err) => end(networkError(call.what, call.method, url, err)));
  req.on('response', (res) => {
    clearTimeout(connectTimer);
    const status = res.statusCode ?? 0;
    if (status !== 200) {
      // The error's Status, bounded; then the error with the status (a 410 among them).
      const chunks: Buffer[] = [];
      let length = 0;
      res.on('data', (chunk: Buffer) => {
        if (length < limits.maxErrorBodyBytes) chunks.push(chunk);
        length += chunk.length;
      });
      res.on('error', () => end(statusError(call.what, status, undefined)));
      res.on('end', () => end(statusError(call.what, status, length <= limits.maxErrorBodyBytes ? Buffer.concat(chunks) : undefined)));
      return;
    }
    if (ended) return;
    handlers.onConnected();
    const lines = new LineSplitter(limits.maxLineBytes);
    const onLine = (line: string) => {
      if (!ended) handlers.onLine(line);
    };
    res.on('data', (chunk: Buffer) => {
      if (ended) return;
      let problem: string | undefined;
      try {
        problem = lines.push(chunk, onLine);
      } catch (err) {
        // The handler refused the line (not an event): the stream ends with why, nothing is skipped.
        return end(err instanceof KubeApiError ? err : new KubeApiError(`${call.what}: ${(err as Error).message}`, 0));
      }
      if (problem !== undefined) end(new KubeApiError(`${call.what}: ${problem}`, 0));
    });
    res.on('error', (err) => end(res.complete ? networkError(call.what, call.method, url, err) : new KubeApiError(`${call.what}: the connection closed in the middle of the stream (${err.message})`, 0)));
    // 'close' without 'end': the connection went away inside the stream (the server died, a proxy cut it).
    res.on('close', () => {
      if (!res.complete) end(new KubeApiError(`${call.what}: the connection closed in the middle of the stream`, 0));
    });
    res.on('end', () => {
      if (lines.leftover > 0) return end(new KubeApiError(`${call.what}: the stream ended inside a line (${lines.leftover} bytes without a newline)`, 0));
      end(undefined);
    });
  });
  req.end();
  return () => {
    ended = true;
    clearTimeout(connectTimer);
    req?.destroy();
  };
}
