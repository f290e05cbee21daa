// The few Kubernetes API calls the agent makes, over node:https with our own
// small client (kube-http.ts, kube-config.ts), every error one KubeApiError
// carrying the HTTP status. Thin on purpose: the protocol logic (list+watch,
// retries) lives in kube-lease-source.ts and kube-subnet-manager.ts.
//
//   GET   /api/v1/namespaces/{ns}/pods/{name}     once, only without NODE_NAME
//   GET   /api/v1/nodes/{name}                    at start, and again after a 409
//   GET   /api/v1/nodes                           list, at start and after a lost watch
//   GET   /api/v1/nodes?watch=true&resourceVersion=…   the long-lived watch
//   PATCH /api/v1/nodes/{name}/status             annotations, then NetworkUnavailable=False
//
// Connection settings as flanneld (clientcmd.BuildConfigFromFlags): a
// kubeconfig file, whose server --kube-api-url replaces; --kube-api-url
// alone (no credentials); or, with neither, the pod's service account.
// Why not @kubernetes/client-node, which this used before: docs/design.md.

import { readBoundedFile } from './bounded-file.js';
import { loadKubeSettings, MAX_CREDENTIAL_FILE_BYTES, type KubeSettings, type Material } from './kube-config.js';
import { KubeApiError, kubeRequest, kubeStream, type KubeCall, type KubeRequestBase } from './kube-http.js';
import type { KubeNode } from './kube-annotations.js';

export { KubeApiError } from './kube-http.js';

export interface KubeConnection {
  kubeconfigFile?: string;
  apiUrl?: string;
}

export interface NodeList {
  items: KubeNode[];
  resourceVersion: string;
}

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';

export interface NodeWatchHandlers {
  /** The server answered 200: events follow. */
  onConnected(): void;
  onEvent(type: WatchEventType, object: KubeNode & { code?: number; reason?: string; message?: string }): void;
  /** The stream ended: err undefined for a normal end (server timeout), else why. */
  onEnd(err: KubeApiError | undefined): void;
}

/** A request, answer included, that takes longer than this has failed (the callers retry with backoff). */
const REQUEST_TIMEOUT_MS = 30_000;
/** The answer to a watch (its status line) within this; the stream itself is as long as timeoutSeconds. */
const WATCH_CONNECT_TIMEOUT_MS = 30_000;
/**
 * One object: etcd refuses values over 1.5 MiB (its default --max-request-bytes),
 * so a Node, and a watch event wrapping one, fits in 4 MiB with room to spare.
 */
const MAX_OBJECT_BYTES = 4 << 20;
/**
 * A list of every node, unpaginated (as flanneld's informer asks for it):
 * about 5-20 KiB a node, so 5 000 nodes fit; over this the agent says so.
 */
const MAX_LIST_BYTES = 256 << 20;
const WATCH_EVENT_TYPES = new Set<string>(['ADDED', 'MODIFIED', 'DELETED', 'BOOKMARK', 'ERROR']);

/** Any error as a KubeApiError; ours pass through, anything else is "not reached" (0). */
export function toKubeApiError(err: unknown, what: string): KubeApiError {
  if (err instanceof KubeApiError) return err;
  return new KubeApiError(`${what}: ${(err instanceof Error ? err.message : String(err)).split('\n')[0]}`, 0);
}

async function readMaterial(m: Material, what: string): Promise<Buffer> {
  if ('data' in m) return m.data;
  try {
    return Buffer.from((await readBoundedFile(m.file, MAX_CREDENTIAL_FILE_BYTES, m.what)).text);
  } catch (err) {
    throw new KubeApiError(`${what}: ${(err as Error).message}`, 0);
  }
}

export class KubeClient {
  private readonly settings: KubeSettings;

  constructor(conn: KubeConnection) {
    this.settings = loadKubeSettings(conn);
  }

  describe(): string {
    return this.settings.server;
  }

  /** TLS material and headers for one request, the files among them read now (tokens and certificates rotate). */
  private async base(what: string): Promise<KubeRequestBase> {
    const s = this.settings;
    const headers: Record<string, string> = { 'User-Agent': 'flannel-udp' };
    const auth = s.auth;
    if (auth.kind === 'token') {
      const token = (await readMaterial(auth.token, what)).toString('utf8').trim();
      if (token === '') throw new KubeApiError(`${what}: ${'file' in auth.token ? `${auth.token.what} ${auth.token.file}` : 'the token'} is empty`, 0);
      headers.Authorization = `Bearer ${token}`;
    } else if (auth.kind === 'basic') {
      headers.Authorization = `Basic ${Buffer.from(`${auth.username}:${auth.password}`).toString('base64')}`;
    }
    if (s.impersonate) headers['Impersonate-User'] = s.impersonate;
    return {
      server: s.server,
      headers,
      tls: {
        ...(s.ca ? { ca: await readMaterial(s.ca, what) } : {}),
        ...(s.cert && s.key ? { cert: await readMaterial(s.cert, what), key: await readMaterial(s.key, what) } : {}),
        rejectUnauthorized: !s.insecureSkipTlsVerify,
        ...(s.tlsServerName ? { servername: s.tlsServerName } : {}),
      },
    };
  }

  private async call(call: KubeCall, maxBodyBytes = MAX_OBJECT_BYTES): Promise<unknown> {
    const base = await this.base(call.what);
    const body = await kubeRequest(base, call, { timeoutMs: REQUEST_TIMEOUT_MS, maxBodyBytes });
    if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new KubeApiError(`${call.what}: the answer is not a JSON object`, 200);
    return body;
  }

  async getPodNodeName(namespace: string, name: string): Promise<string> {
    const what = `reading pod ${namespace}/${name}`;
    const pod = (await this.call({ method: 'GET', path: `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods/${encodeURIComponent(name)}`, what })) as {
      spec?: { nodeName?: unknown };
    };
    const nodeName = pod.spec?.nodeName;
    return typeof nodeName === 'string' ? nodeName : '';
  }

  async getNode(name: string): Promise<KubeNode> {
    return (await this.call({ method: 'GET', path: `/api/v1/nodes/${encodeURIComponent(name)}`, what: `reading node ${name}` })) as KubeNode;
  }

  async listNodes(): Promise<NodeList> {
    const what = 'listing nodes';
    const list = (await this.call({ method: 'GET', path: '/api/v1/nodes', what }, MAX_LIST_BYTES)) as { items?: unknown; metadata?: { resourceVersion?: unknown } };
    if (!Array.isArray(list.items)) throw new KubeApiError(`${what}: the answer is not a NodeList (no items)`, 200);
    const rv = list.metadata?.resourceVersion;
    return { items: list.items as KubeNode[], resourceVersion: typeof rv === 'string' ? rv : '' };
  }

  /** A strategic-merge patch of nodes/{name}/status (metadata and status; flanneld's verb). */
  async patchNodeStatus(name: string, patch: unknown): Promise<KubeNode> {
    return (await this.call({
      method: 'PATCH',
      path: `/api/v1/nodes/${encodeURIComponent(name)}/status`,
      body: { text: JSON.stringify(patch), contentType: 'application/strategic-merge-patch+json' },
      what: `patching node ${name} status`,
    })) as KubeNode;
  }

  /** Starts a watch of all nodes from resourceVersion; returns how to stop it. */
  async watchNodes(resourceVersion: string, timeoutSeconds: number, handlers: NodeWatchHandlers): Promise<() => void> {
    const what = 'watching nodes';
    let base: KubeRequestBase;
    try {
      base = await this.base(what);
    } catch (err) {
      handlers.onEnd(toKubeApiError(err, what));
      return () => undefined;
    }
    // The query the maintained client sent, in its order.
    const query = new URLSearchParams({ watch: 'true', resourceVersion, allowWatchBookmarks: 'true', timeoutSeconds: String(timeoutSeconds) });
    return kubeStream(
      base,
      { method: 'GET', path: `/api/v1/nodes?${query}`, what },
      { connectTimeoutMs: WATCH_CONNECT_TIMEOUT_MS, maxLineBytes: MAX_OBJECT_BYTES, maxErrorBodyBytes: MAX_OBJECT_BYTES },
      {
        onConnected: () => handlers.onConnected(),
        onLine: (line) => {
          let event: { type?: unknown; object?: unknown };
          try {
            event = JSON.parse(line);
          } catch (err) {
            // Not skipped: a lost event would be a node whose lease nobody hears of. The watch
            // ends with the error and is retried from the last resourceVersion, which replays it.
            throw new KubeApiError(`${what}: an event that is not JSON (${(err as Error).message})`, 0);
          }
          const type = event?.type;
          if (typeof type !== 'string' || !WATCH_EVENT_TYPES.has(type) || typeof event.object !== 'object' || event.object === null) {
            throw new KubeApiError(`${what}: not a watch event (type ${JSON.stringify(type)}, object ${event?.object === null ? 'null' : typeof event?.object})`, 0);
          }
          handlers.onEvent(type as WatchEventType, event.object as KubeNode);
        },
        onEnd: (err) => handlers.onEnd(err),
      },
    );
  }
}
