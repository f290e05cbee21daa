// A loopback TCP proxy a test can break on purpose, to put a real network
// fault between a client and a real server: 'reset' closes every connection
// and resets new ones (a crashed or unreachable peer), 'blackhole' keeps
// connections open but delivers nothing (a silent partition), 'pass' heals.
import { createConnection, createServer, type Server, type Socket } from 'node:net';

export type ProxyMode = 'pass' | 'reset' | 'blackhole';

export class TcpProxy {
  private mode: ProxyMode = 'pass';
  private readonly pairs = new Set<[Socket, Socket]>();
  /** Connections reset on arrival in 'reset' mode: a test waits on it to see the client retry. */
  refused = 0;

  private constructor(
    private readonly server: Server,
    readonly port: number,
    readonly targetPort: number,
  ) {}

  static async start(targetPort: number, targetHost = '127.0.0.1'): Promise<TcpProxy> {
    let proxy!: TcpProxy;
    const server = createServer((client) => proxy.accept(client, targetHost));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    proxy = new TcpProxy(server, (server.address() as { port: number }).port, targetPort);
    return proxy;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  set(mode: ProxyMode): void {
    const was = this.mode;
    this.mode = mode;
    // Connections that lost data in a blackhole are poisoned: end them too.
    if (mode === 'reset' || (mode === 'pass' && was === 'blackhole')) this.destroyAll();
  }

  async close(): Promise<void> {
    this.destroyAll();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(client: Socket, host: string): void {
    if (this.mode === 'reset') {
      this.refused++;
      client.resetAndDestroy();
      return;
    }
    const upstream = createConnection({ host, port: this.targetPort });
    const pair: [Socket, Socket] = [client, upstream];
    this.pairs.add(pair);
    const forward = (from: Socket, to: Socket) =>
      from.on('data', (chunk) => {
        if (this.mode === 'pass') to.write(chunk);
      });
    forward(client, upstream);
    forward(upstream, client);
    const end = () => {
      this.pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    for (const s of pair) {
      s.on('error', end);
      s.on('close', end);
    }
  }

  private destroyAll(): void {
    for (const [a, b] of this.pairs) {
      a.resetAndDestroy();
      b.destroy();
    }
    this.pairs.clear();
  }
}
