// Every node of the cluster, kept current the way client-go's informer does:
//
//   list   GET /api/v1/nodes                       -> all nodes at resourceVersion R
//   watch  GET /api/v1/nodes?watch=true&resourceVersion=R&allowWatchBookmarks=true&timeoutSeconds=T
//          ADDED/MODIFIED/DELETED apply to the map; BOOKMARK only moves R on
//
// The watch ends normally after T seconds (chosen at random in 5..10 min, as
// client-go does, so nodes do not reconnect in step); it is restarted from the
// last resourceVersion seen, without a list. A failure (the API server gone,
// restarting) is reported once; the map stays (the data plane forwards on with
// the leases last seen) and the watch is retried from the same
// resourceVersion with backoff. A 410 Gone (an HTTP 410, or an ERROR event
// with a Status of code 410: R is older than the API server's watch window,
// after a compaction or a restart) means events were lost: list again. A
// stream silent for longer than T plus a margin is dead (a partition) and is
// dropped.

import { KubeApiError, type KubeClient, type WatchEventType } from './kube-client.js';
import type { KubeNode } from './kube-annotations.js';
import { WakeableSleep } from './wakeable-sleep.js';
import { jittered } from './jitter.js';

export interface NodeWatchOptions {
  log: (line: string) => void;
  /** reported when the API server is lost (once per outage) */
  onError: (err: Error) => void;
  initialBackoffMs?: number;
  maxBackoffMs?: number;
  /** watch timeout range in seconds; default 300..600 (client-go's) */
  minWatchSeconds?: number;
}

/** `changed`: the node a watch event changed (or deleted); undefined after a list, when any may have. */
export type NodesListener = (changed?: string) => void;

export class NodeWatch {
  private readonly nodes = new Map<string, KubeNode>();
  private readonly listeners = new Set<NodesListener>();
  private resourceVersion = '';
  private stopped = false;
  private stopWatch: (() => void) | undefined;
  /** ends the current watchOnce() (stop() needs its promise settled; an aborted stream reports nothing) */
  private endWatch: (() => void) | undefined;
  private loop: Promise<void> | undefined;
  private readonly pause = new WakeableSleep();
  private downSince: number | undefined;
  /** counters for logs and tests */
  readonly counts = { lists: 0, watches: 0, expired: 0 };

  constructor(
    private readonly client: KubeClient,
    private readonly opts: NodeWatchOptions,
  ) {}

  /** Lists once (rejecting if the API server cannot be read), then watches in the background. */
  async start(): Promise<void> {
    await this.list();
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.endWatch?.();
    this.pause.wake();
    await this.loop;
  }

  get(name: string): KubeNode | undefined {
    return this.nodes.get(name);
  }

  all(): KubeNode[] {
    return [...this.nodes.values()];
  }

  /** Called after every change of the map (and after every list). */
  subscribe(listener: NodesListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private async list(): Promise<void> {
    const { items, resourceVersion } = await this.client.listNodes();
    this.counts.lists++;
    this.nodes.clear();
    for (const n of items) if (n.metadata?.name) this.nodes.set(n.metadata.name, n);
    this.resourceVersion = resourceVersion;
    this.markUp();
    this.notify();
  }

  private async run(): Promise<void> {
    const initial = this.opts.initialBackoffMs ?? 250;
    const max = this.opts.maxBackoffMs ?? 10_000;
    let backoff = initial;
    let relist = false;
    while (!this.stopped) {
      if (relist) {
        try {
          await this.list();
          relist = false;
        } catch (err) {
          this.markDown(err as Error);
          await this.sleep(backoff);
          backoff = Math.min(backoff * 2, max);
          continue;
        }
      }
      const end = await this.watchOnce();
      if (this.stopped) return;
      if (end === 'timeout') {
        backoff = initial;
      } else if (end === 'expired') {
        // Events were lost: only a list can tell what changed meanwhile.
        this.counts.expired++;
        this.opts.log(`kube: watch of nodes from resourceVersion ${this.resourceVersion} expired (410 Gone); listing again`);
        relist = true;
      } else {
        // As client-go: watch again from the same resourceVersion; the server answers 410 if it cannot replay from there.
        this.markDown(end);
        await this.sleep(backoff);
        backoff = Math.min(backoff * 2, max);
      }
    }
  }

  /** One watch stream, until it ends: normally, with 410, or with an error. */
  private watchOnce(): Promise<'timeout' | 'expired' | Error> {
    const minSeconds = this.opts.minWatchSeconds ?? 300;
    const timeoutSeconds = Math.floor(minSeconds * (1 + Math.random()));
    return new Promise((resolve) => {
      let settled = false;
      let silence: NodeJS.Timeout | undefined;
      const finish = (r: 'timeout' | 'expired' | Error) => {
        if (settled) return;
        settled = true;
        clearTimeout(silence);
        this.stopWatch?.();
        this.stopWatch = undefined;
        this.endWatch = undefined;
        resolve(r);
      };
      // The server ends the stream after timeoutSeconds; silence well beyond that is a dead connection.
      const armSilence = () => {
        clearTimeout(silence);
        silence = setTimeout(() => finish(new Error(`no word from the watch for ${timeoutSeconds + 30} s`)), (timeoutSeconds + 30) * 1000);
        silence.unref?.();
      };
      armSilence();
      this.endWatch = () => finish('timeout');
      this.counts.watches++;
      void this.client
        .watchNodes(this.resourceVersion, timeoutSeconds, {
          onConnected: () => {
            if (!settled) this.markUp();
          },
          onEvent: (type: WatchEventType, obj) => {
            if (settled) return;
            armSilence();
            if (type === 'ERROR') {
              // The server ends the stream after an ERROR event; do not wait for it.
              if (obj.code === 410) return finish('expired');
              return finish(new KubeApiError(`watch error event: ${obj.code ?? '?'} ${obj.reason ?? ''} ${obj.message ?? ''}`, obj.code ?? 0));
            }
            const rv = obj.metadata?.resourceVersion;
            if (rv) this.resourceVersion = rv;
            if (type === 'BOOKMARK') return;
            const name = obj.metadata?.name;
            if (!name) return;
            if (type === 'DELETED') this.nodes.delete(name);
            else this.nodes.set(name, obj);
            this.notify(name);
          },
          onEnd: (err) => {
            if (err?.status === 410) return finish('expired');
            if (err === undefined) return finish('timeout');
            finish(err);
          },
        })
        .then((stop) => {
          if (settled) stop();
          else this.stopWatch = stop;
        });
    });
  }

  private notify(changed?: string): void {
    for (const l of this.listeners) {
      try {
        l(changed);
      } catch (err) {
        this.opts.onError(err as Error);
      }
    }
  }

  private markDown(err: Error): void {
    if (this.stopped || this.downSince !== undefined) return;
    this.downSince = Date.now();
    this.opts.onError(
      new KubeApiError(
        `the Kubernetes API server is unreachable (${err.message}); forwarding continues with the nodes last seen, retrying with backoff`,
        err instanceof KubeApiError ? err.status : 0,
      ),
    );
  }

  private markUp(): void {
    if (this.downSince === undefined) return;
    const seconds = ((Date.now() - this.downSince) / 1000).toFixed(1);
    this.downSince = undefined;
    this.opts.log(`kube: API server reachable again after ${seconds} s; ${this.nodes.size} node(s), watching from resourceVersion ${this.resourceVersion}`);
  }

  /** Jittered (half to all of ms): after an API server restart the agents' watches and lists come back spread out. */
  private sleep(ms: number): Promise<void> {
    return this.pause.sleep(jittered(ms));
  }
}
