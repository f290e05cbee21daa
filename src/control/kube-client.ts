// The few Kubernetes API calls the agent makes, through the maintained client
// (@kubernetes/client-node), with its errors turned into one KubeApiError
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

import { CoreV1Api, KubeConfig, PatchStrategy, Watch, setHeaderOptions } from '@kubernetes/client-node';
import type { KubeNode } from './kube-annotations.js';

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

function loadConfig(conn: KubeConnection): KubeConfig {
  const kc = new KubeConfig();
  if (conn.kubeconfigFile) {
    kc.loadFromFile(conn.kubeconfigFile);
    if (conn.apiUrl) {
      const current = kc.getCurrentContext();
      const clusterName = kc.getContextObject(current)?.cluster;
      kc.loadFromOptions({
        clusters: kc.clusters.map((c) => (c.name === clusterName ? { ...c, server: conn.apiUrl } : c)),
        users: kc.users,
        contexts: kc.contexts,
        currentContext: current,
      });
    }
  } else if (conn.apiUrl) {
    kc.loadFromOptions({
      clusters: [{ name: 'api', server: conn.apiUrl, skipTLSVerify: false }],
      users: [{ name: 'none' }],
      contexts: [{ name: 'api', cluster: 'api', user: 'none' }],
      currentContext: 'api',
    });
  } else {
    if (!process.env.KUBERNETES_SERVICE_HOST) {
      throw new KubeApiError(
        'not running in a Kubernetes pod (KUBERNETES_SERVICE_HOST is not set): give --kubeconfig-file or --kube-api-url',
        0,
      );
    }
    kc.loadFromCluster();
  }
  if (!kc.getCurrentCluster()) throw new KubeApiError(`${conn.kubeconfigFile ?? 'kubeconfig'}: no current cluster`, 0);
  return kc;
}

/** Any error of the client as a KubeApiError, with the API server's own message when it sent a Status. */
export function toKubeApiError(err: unknown, what: string): KubeApiError {
  const e = err as { code?: unknown; statusCode?: unknown; body?: unknown; message?: string };
  const status = typeof e.code === 'number' ? e.code : typeof e.statusCode === 'number' ? e.statusCode : 0;
  let detail = e.message ?? String(err);
  if (status !== 0) {
    let body: unknown = e.body;
    if (typeof body === 'string') {
      try {
        body = JSON.parse(body);
      } catch {
        /* not a Status */
      }
    }
    const message = (body as { message?: unknown } | undefined)?.message;
    detail = typeof message === 'string' ? message : `HTTP ${status}`;
  } else {
    detail = detail.split('\n')[0];
  }
  return new KubeApiError(`${what}: ${status !== 0 ? `${status} ` : ''}${detail}`, status);
}

export class KubeClient {
  private readonly kc: KubeConfig;
  private readonly core: CoreV1Api;
  private readonly watcher: Watch;

  constructor(conn: KubeConnection) {
    this.kc = loadConfig(conn);
    this.core = this.kc.makeApiClient(CoreV1Api);
    this.watcher = new Watch(this.kc);
  }

  describe(): string {
    return this.kc.getCurrentCluster()?.server ?? '?';
  }

  async getPodNodeName(namespace: string, name: string): Promise<string> {
    try {
      const pod = await this.core.readNamespacedPod({ name, namespace });
      return pod.spec?.nodeName ?? '';
    } catch (err) {
      throw toKubeApiError(err, `reading pod ${namespace}/${name}`);
    }
  }

  async getNode(name: string): Promise<KubeNode> {
    try {
      return (await this.core.readNode({ name })) as KubeNode;
    } catch (err) {
      throw toKubeApiError(err, `reading node ${name}`);
    }
  }

  async listNodes(): Promise<NodeList> {
    try {
      const list = await this.core.listNode({});
      return { items: list.items as KubeNode[], resourceVersion: list.metadata?.resourceVersion ?? '' };
    } catch (err) {
      throw toKubeApiError(err, 'listing nodes');
    }
  }

  /** A strategic-merge patch of nodes/{name}/status (metadata and status; flanneld's verb). */
  async patchNodeStatus(name: string, patch: unknown): Promise<KubeNode> {
    try {
      const node = await this.core.patchNodeStatus(
        { name, body: patch },
        setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch),
      );
      return node as KubeNode;
    } catch (err) {
      throw toKubeApiError(err, `patching node ${name} status`);
    }
  }

  /** Starts a watch of all nodes from resourceVersion; returns how to stop it. */
  async watchNodes(resourceVersion: string, timeoutSeconds: number, handlers: NodeWatchHandlers): Promise<() => void> {
    let ended = false;
    const end = (err: KubeApiError | undefined) => {
      if (ended) return;
      ended = true;
      handlers.onEnd(err);
    };
    try {
      const controller = await this.watcher.watch(
        '/api/v1/nodes',
        { resourceVersion, allowWatchBookmarks: true, timeoutSeconds },
        (type: string, object: unknown) => {
          if (!ended) handlers.onEvent(type as WatchEventType, object as KubeNode);
        },
        (err: unknown) => end(err ? toKubeApiError(err, 'watching nodes') : undefined),
      );
      if (!ended) handlers.onConnected();
      return () => {
        ended = true;
        controller.abort();
      };
    } catch (err) {
      end(toKubeApiError(err, 'watching nodes'));
      return () => undefined;
    }
  }
}
