// Thin wrappers around child_process for the namespace testbed: one-shot
// commands that fail loudly, and long-running processes whose output is kept
// so that a failure can show what the process said before it went wrong.
import { execFile, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { createWriteStream, type WriteStream } from 'node:fs';
import { EventEmitter } from 'node:events';
import { requireTools } from './tools.js';

export interface RunOptions {
  timeoutMs?: number;
  /** Written to the command's stdin, which is then closed. */
  input?: string;
  env?: NodeJS.ProcessEnv;
  /** Resolve with the exit code instead of throwing on a non-zero exit (ping does this on loss). */
  allowFailure?: boolean;
}

export interface RunResult {
  stdout: string;
  stderr: string;
  /** 0 on success; only non-zero when allowFailure was set. */
  code: number;
}

/** Quotes a command line for error messages only; never passed to a shell. */
export function formatCommand(cmd: string, args: readonly string[]): string {
  return [cmd, ...args].map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
}

/** Runs cmd; a program that is not installed rejects with its name and Debian package (src/testbed/tools.ts). */
export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  try {
    requireTools(cmd);
  } catch (err) {
    return Promise.reject(err);
  }
  return new Promise((resolve, reject) => {
    const child = execFile(
      cmd,
      args,
      { timeout: opts.timeoutMs ?? 60_000, env: opts.env, maxBuffer: 64 * 1024 * 1024, killSignal: 'SIGKILL' },
      (err, stdout, stderr) => {
        if (!err) return resolve({ stdout, stderr, code: 0 });
        const code = typeof err.code === 'number' ? err.code : -1;
        if (opts.allowFailure && code > 0) return resolve({ stdout, stderr, code });
        const why = err.killed ? `timed out after ${opts.timeoutMs ?? 60_000} ms` : `exit ${err.code ?? err.signal}`;
        const detail = (stderr || stdout || err.message).trim();
        reject(new Error(`command failed (${why}): ${formatCommand(cmd, args)}${detail ? `\n${detail}` : ''}`));
      },
    );
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}

export function runInNetns(ns: string, cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  // Checked here: inside the namespace a missing program is only `ip`'s exit 255.
  try {
    requireTools(cmd);
  } catch (err) {
    return Promise.reject(err);
  }
  return run('ip', ['netns', 'exec', ns, cmd, ...args], opts);
}

/**
 * Keeps the last `capacity` lines a process printed (stdout and stderr
 * interleaved as they arrive) and announces each new line, so waitForLine can
 * look at what was already printed as well as what comes next.
 */
export class OutputLog extends EventEmitter {
  private readonly lines: string[] = [];
  private readonly partial = new Map<string, string>();
  private file: WriteStream | undefined;

  constructor(
    readonly capacity = 1000,
    readonly filePath?: string,
  ) {
    super();
    if (filePath) this.file = createWriteStream(filePath, { flags: 'a' });
  }

  /** Feeds a chunk from one stream; lines are split per stream so stdout and stderr never interleave mid-line. */
  write(stream: string, chunk: Buffer | string): void {
    this.file?.write(chunk);
    const text = (this.partial.get(stream) ?? '') + chunk.toString();
    const parts = text.split('\n');
    this.partial.set(stream, parts.pop() ?? '');
    for (const line of parts) this.push(line);
  }

  /** Flushes unterminated last lines once the process has gone. */
  close(): void {
    for (const rest of this.partial.values()) if (rest) this.push(rest);
    this.partial.clear();
    this.file?.end();
    this.file = undefined;
  }

  snapshot(): readonly string[] {
    return this.lines.slice();
  }

  text(): string {
    return this.lines.join('\n');
  }

  /** The last lines, for error messages that should stay readable. */
  tail(count = 40): string {
    return this.lines.slice(-count).join('\n');
  }

  private push(line: string): void {
    this.lines.push(line);
    if (this.lines.length > this.capacity) this.lines.shift();
    this.emit('line', line);
  }
}

export type CapturedChild = ChildProcess & {
  readonly log: OutputLog;
  /** The command line as started, for messages. */
  readonly commandLine: string;
  /** Resolves once the process has exited and its output is flushed. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
};

export interface SpawnCaptureOptions {
  /** Also append the raw output to this file. */
  logFile?: string;
  logLines?: number;
  env?: NodeJS.ProcessEnv;
}

/**
 * Starts cmd in its own process group (so the whole group can be signalled,
 * and a Ctrl-C aimed at the test runner reaches our cleanup first rather than
 * racing it) and captures its output.
 */
export function spawnCaptured(cmd: string, args: readonly string[], opts: SpawnCaptureOptions = {}): CapturedChild {
  requireTools(cmd); // thrown here, by name and package, rather than a 'spawn failed: ENOENT' line in the log
  const spawnOpts: SpawnOptions = { stdio: ['ignore', 'pipe', 'pipe'], detached: true, env: opts.env };
  const child = spawn(cmd, args, spawnOpts);
  const log = new OutputLog(opts.logLines, opts.logFile);
  child.stdout?.on('data', (d: Buffer) => log.write('stdout', d));
  child.stderr?.on('data', (d: Buffer) => log.write('stderr', d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    // 'close' (not 'exit') waits for the pipes to drain, so the log is complete.
    child.once('close', (code, signal) => {
      log.close();
      resolve({ code, signal });
    });
    child.once('error', (err) => {
      log.write('stderr', `spawn failed: ${err.message}\n`);
      log.close();
      resolve({ code: null, signal: null });
    });
  });
  return Object.assign(child, { log, exited, commandLine: formatCommand(cmd, args) });
}

export function spawnInNetns(ns: string, cmd: string, args: readonly string[], opts: SpawnCaptureOptions = {}): CapturedChild {
  // `ip netns exec` execs the command after setns, so the pid is the command's own.
  requireTools(cmd);
  return spawnCaptured('ip', ['netns', 'exec', ns, cmd, ...args], opts);
}

export function isRunning(child: ChildProcess): boolean {
  return child.pid !== undefined && child.exitCode === null && child.signalCode === null;
}

/** Signals the child's whole process group; quietly ignores a group that is already gone. */
export function signalGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    try {
      child.kill(signal);
    } catch {
      /* already gone */
    }
  }
}

/** SIGTERM, then SIGKILL if the process is still there after graceMs. */
export async function stopChild(child: CapturedChild, signal: NodeJS.Signals = 'SIGTERM', graceMs = 3000) {
  if (isRunning(child)) {
    signalGroup(child, signal);
    const timer = setTimeout(() => signalGroup(child, 'SIGKILL'), graceMs);
    try {
      return await child.exited;
    } finally {
      clearTimeout(timer);
    }
  }
  return child.exited;
}

/**
 * Resolves with the first line (already printed or still to come) matching
 * pattern; rejects with the output so far if the process exits first or the
 * timeout passes.
 */
export function waitForLine(child: CapturedChild, pattern: RegExp, timeoutMs: number): Promise<string> {
  const seen = child.log.snapshot().find((l) => pattern.test(l));
  if (seen !== undefined) return Promise.resolve(seen);
  return new Promise((resolve, reject) => {
    let settled = false;
    const finish = () => {
      settled = true;
      clearTimeout(timer);
      child.log.off('line', onLine);
    };
    const fail = (why: string) => {
      if (settled) return;
      finish();
      const out = child.log.tail();
      reject(new Error(`${child.commandLine}: ${why} before printing ${pattern}${out ? `; its output:\n${out}` : ' (no output)'}`));
    };
    const onLine = (line: string) => {
      if (settled || !pattern.test(line)) return;
      finish();
      resolve(line);
    };
    const timer = setTimeout(() => fail(`no match within ${timeoutMs} ms`), timeoutMs);
    child.log.on('line', onLine);
    // The log is flushed before `exited` resolves, so a final matching line has already been seen.
    void child.exited.then(({ code, signal }) => fail(`exited (${signal ?? `code ${code}`})`));
  });
}
