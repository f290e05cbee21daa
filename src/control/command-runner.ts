// The agent's side of the command helper (command-helper.ts): start it before
// the workers, then run commands through it as execFile would, with the same
// errors (code = exit status, or the errno name when the command could not
// start). If the helper dies it is started again on the next command, and the
// log says that this was a fork after the workers started.
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { HelperReply, HelperRequest } from './command-helper.js';

const HELPER_PATH = fileURLToPath(new URL('./command-helper.js', import.meta.url));

export interface CommandResult {
  stdout: string;
  stderr: string;
}

interface Pending {
  resolve: (r: CommandResult) => void;
  reject: (e: Error) => void;
}

export class CommandRunner {
  private child: ChildProcess | undefined;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private closed = false;
  private starts = 0;

  constructor(private readonly log: (line: string) => void) {}

  /** Starts the helper now (the one fork the agent makes for it): call before the workers start. */
  start(): void {
    if (this.child || this.closed) return;
    this.starts++;
    if (this.starts > 1) this.log(`command helper: restarting it (a fork of the agent after its workers started; start ${this.starts})`);
    // Its own small heap: it holds a few lines of iptables output at a time.
    const child = spawn(process.execPath, ['--max-old-space-size=32', HELPER_PATH], { stdio: ['pipe', 'pipe', 'inherit'] });
    this.child = child;
    createInterface({ input: child.stdout! }).on('line', (line) => this.settle(line));
    child.stdin!.on('error', () => undefined); // a dead helper: its exit handler rejects what is pending
    child.on('error', (err) => this.lost(child, `could not start: ${err.message}`));
    child.on('exit', (code, signal) => this.lost(child, `exited (${signal ?? `code ${code}`})`));
  }

  /** Runs cmd (one of HELPER_COMMANDS) in the helper; rejects as execFile would, with the same `code`. */
  run(cmd: string, args: string[], input?: string): Promise<CommandResult> {
    if (this.closed) return Promise.reject(new Error(`${cmd}: the command helper is closed`));
    if (!this.child) this.start();
    const id = this.nextId++;
    const req: HelperRequest = input === undefined ? { id, cmd, args } : { id, cmd, args, input };
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.child!.stdin!.write(JSON.stringify(req) + '\n');
    });
  }

  /** Ends the helper (closing its stdin makes it exit) once nothing is pending. */
  async close(): Promise<void> {
    this.closed = true;
    const child = this.child;
    if (!child) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.stdin!.end();
    await exited;
  }

  /** The helper's pid, or undefined while none runs. */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  private settle(line: string): void {
    let r: HelperReply;
    try {
      r = JSON.parse(line) as HelperReply;
    } catch {
      return;
    }
    const p = this.pending.get(r.id);
    if (!p) return;
    this.pending.delete(r.id);
    if (r.error === null) p.resolve({ stdout: r.stdout, stderr: r.stderr });
    else p.reject(Object.assign(new Error(r.error.message), { code: r.error.code ?? undefined, stdout: r.stdout, stderr: r.stderr }));
  }

  private lost(child: ChildProcess, why: string): void {
    if (this.child !== child) return;
    this.child = undefined;
    if (!this.closed) this.log(`command helper (pid ${child.pid ?? '-'}) ${why}`);
    for (const p of this.pending.values()) p.reject(Object.assign(new Error(`the command helper ${why}`), { code: 'EHELPER' }));
    this.pending.clear();
  }
}
