// A real etcd server for tests (Debian's etcd-server package): on loopback
// with free ports, or inside one of a test's own network namespaces on an
// address there. Each has its own data dir; stop() and start() again keep the
// data (to test an outage), destroy() removes process and dir. Every server
// still alive when the test process exits is killed and its dir removed.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import https from 'node:https';
import http from 'node:http';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { OutputLog, run, type CapturedChild, isRunning } from '../../src/testbed/exec.js';

export interface EtcdServerOptions {
  /** Address to serve clients on; default 127.0.0.1. */
  host?: string;
  /** Default: a free loopback port (2379 inside a namespace, which has its own ports). */
  clientPort?: number;
  /** Run inside this network namespace (the test must own it). */
  netns?: string;
  /** Parent of the data dir; default the system temp dir. */
  dir?: string;
  /**
   * Serve https with this certificate (signed by caFile); with clientCertAuth, also require
   * client certificates signed by caFile. The certificate must allow client use too: the
   * readiness probe presents it.
   */
  tls?: { caFile: string; certFile: string; keyFile: string; clientCertAuth?: boolean };
  /** How long to wait for /health; default 20 s. */
  readyTimeoutMs?: number;
}

const live = new Set<EtcdServer>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // Only synchronous work runs in 'exit': kill and remove.
  process.on('exit', () => {
    for (const server of live) server.destroySync();
  });
}

/** A port nobody listens on right now (there is a small window before etcd takes it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

export class EtcdServer {
  readonly url: string;
  readonly dataDir: string;
  private child: CapturedChild | undefined;
  private readonly args: string[];
  private destroyed = false;

  private constructor(
    readonly opts: EtcdServerOptions,
    readonly host: string,
    readonly clientPort: number,
    peerPort: number,
  ) {
    const scheme = opts.tls ? 'https' : 'http';
    this.url = `${scheme}://${host}:${clientPort}`;
    this.dataDir = mkdtempSync(join(opts.dir ?? tmpdir(), `fut-etcd-${process.pid}-`));
    const peer = `http://127.0.0.1:${peerPort}`;
    this.args = [
      '--name', 'fut',
      '--data-dir', join(this.dataDir, 'data'),
      '--listen-client-urls', this.url,
      '--advertise-client-urls', this.url,
      '--listen-peer-urls', peer,
      '--initial-advertise-peer-urls', peer,
      '--initial-cluster', `fut=${peer}`,
      '--initial-cluster-state', 'new',
      '--logger', 'zap',
      '--log-outputs', 'stderr',
      ...(opts.tls
        ? ['--cert-file', opts.tls.certFile, '--key-file', opts.tls.keyFile, '--trusted-ca-file', opts.tls.caFile,
           ...(opts.tls.clientCertAuth ? ['--client-cert-auth'] : [])]
        : []),
    ];
  }

  static async start(opts: EtcdServerOptions = {}): Promise<EtcdServer> {
    await checkEtcdInstalled();
    installExitHook();
    const host = opts.host ?? '127.0.0.1';
    const clientPort = opts.clientPort ?? (opts.netns ? 2379 : await freePort());
    const peerPort = opts.netns ? 2380 : await freePort();
    const server = new EtcdServer(opts, host, clientPort, peerPort);
    live.add(server);
    try {
      await server.start();
    } catch (err) {
      await server.destroy();
      throw err;
    }
    return server;
  }

  /** (Re)starts the process on the same data dir and waits until it answers /health. */
  async start(): Promise<void> {
    if (this.destroyed) throw new Error('etcd server destroyed');
    if (this.child && isRunning(this.child)) return;
    const [cmd, args] = this.opts.netns ? ['ip', ['netns', 'exec', this.opts.netns, 'etcd', ...this.args]] : ['etcd', this.args];
    // Not detached: a Ctrl-C on the terminal reaches etcd along with the test runner.
    const proc = spawn(cmd as string, args as string[], { stdio: ['ignore', 'pipe', 'pipe'] });
    const log = new OutputLog(400, join(this.dataDir, 'etcd.log'));
    proc.stdout?.on('data', (d: Buffer) => log.write('stdout', d));
    proc.stderr?.on('data', (d: Buffer) => log.write('stderr', d));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
      proc.once('close', (code, signal) => {
        log.close();
        resolve({ code, signal });
      });
      proc.once('error', (err) => {
        log.write('stderr', `spawn failed: ${err.message}\n`);
        log.close();
        resolve({ code: null, signal: null });
      });
    });
    this.child = Object.assign(proc, { log, exited, commandLine: `etcd ${this.args.join(' ')}` });
    await this.waitHealthy(this.opts.readyTimeoutMs ?? 20_000);
  }

  /** Stops the process (SIGTERM, then SIGKILL); the data stays for start(). */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const child = this.child;
    if (!child) return;
    // Signal the pid directly: it is ours (not detached, so no group of its own).
    if (isRunning(child)) {
      child.kill(signal);
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await child.exited;
      clearTimeout(timer);
    }
    this.child = undefined;
  }

  /** SIGSTOP / SIGCONT: etcd keeps its connections open but answers nothing (a silent partition). */
  async pause(): Promise<void> {
    const pid = this.child?.pid;
    if (pid === undefined) return;
    this.child!.kill('SIGSTOP');
    // Delivery is asynchronous: wait until the kernel shows the process stopped (state T).
    for (let i = 0; i < 100; i++) {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      if (stat.slice(stat.lastIndexOf(')') + 2).startsWith('T')) return;
      await new Promise((r) => setTimeout(r, 10));
    }
    throw new Error(`etcd (pid ${pid}) did not stop on SIGSTOP`);
  }

  resume(): void {
    this.child?.kill('SIGCONT');
  }

  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.resume();
    await this.stop().catch(() => undefined);
    this.destroyed = true;
    rmSync(this.dataDir, { recursive: true, force: true });
    live.delete(this);
  }

  destroySync(): void {
    if (this.child && isRunning(this.child)) {
      try {
        this.child.kill('SIGKILL');
      } catch {
        /* gone */
      }
    }
    this.destroyed = true;
    rmSync(this.dataDir, { recursive: true, force: true });
    live.delete(this);
  }

  logTail(lines = 30): string {
    return this.child?.log.tail(lines) ?? '';
  }

  private async waitHealthy(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let last = '';
    for (;;) {
      const child = this.child!;
      if (!isRunning(child) && child.exitCode !== null) {
        throw new Error(`etcd exited (code ${child.exitCode}) before becoming healthy:\n${child.log.tail(20)}`);
      }
      try {
        if (await this.healthy()) return;
        last = 'not healthy yet';
      } catch (err) {
        last = (err as Error).message;
      }
      if (Date.now() > deadline) throw new Error(`etcd at ${this.url} not healthy within ${timeoutMs} ms (${last}):\n${child.log.tail(20)}`);
      await new Promise((r) => setTimeout(r, 150));
    }
  }

  /** GET /health, from inside the namespace when there is one. */
  private async healthy(): Promise<boolean> {
    if (this.opts.netns) {
      const script = `fetch(${JSON.stringify(`${this.url}/health`)}).then(r=>r.text()).then(t=>{process.stdout.write(t)},e=>{process.stdout.write('')})`;
      const { stdout } = await run('ip', ['netns', 'exec', this.opts.netns, process.execPath, '-e', script], { timeoutMs: 10_000 });
      return /"health":\s*"true"/.test(stdout);
    }
    const tls = this.opts.tls;
    const body = await new Promise<string>((resolve, reject) => {
      const options = {
        host: this.host,
        port: this.clientPort,
        path: '/health',
        timeout: 2000,
        ...(tls ? { ca: readFileSync(tls.caFile), cert: readFileSync(tls.certFile), key: readFileSync(tls.keyFile) } : {}),
      };
      const req = (tls ? https : http).get(options, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => resolve(text));
      });
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.on('error', reject);
    });
    return /"health":\s*"true"/.test(body);
  }
}

async function checkEtcdInstalled(): Promise<void> {
  try {
    await run('etcd', ['--version'], { timeoutMs: 10_000 });
  } catch (err) {
    throw new Error(`the tests need a real etcd server (Debian package etcd-server; scripts/setup.sh installs it): ${(err as Error).message}`);
  }
}
