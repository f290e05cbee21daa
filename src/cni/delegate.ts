// The two things the flannel plugin does besides building a configuration:
// keep each container's delegate configuration on disk, and run the delegate.
//
// Saved configurations: <dataDir>/<container ID>, one JSON file each, written
// at ADD (before the delegate runs, so a crash mid-ADD still leaves DEL what it
// needs) and removed after a successful DEL. DEL must undo exactly what ADD
// did, and by then subnet.env may say something else (flanneld restarted with
// a new lease, a new MTU) or be gone; the saved file is what ADD used.
import { accessSync, constants, mkdirSync, renameSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { readRegularFile } from './bounded-read.js';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { CniError, ErrorCode } from './spec.js';

export function savedConfPath(dataDir: string, containerId: string): string {
  return join(dataDir, containerId);
}

/**
 * Written aside and renamed into place, so a reader (a DEL racing a crashed
 * ADD) sees the whole file or none. The container ID has been validated: no
 * '/', never starting with '.', so the dot-prefixed temp name cannot collide.
 */
export function saveDelegateConf(dataDir: string, containerId: string, text: string): void {
  const path = savedConfPath(dataDir, containerId);
  const temp = join(dataDir, `.${containerId}.${process.pid}.tmp`);
  try {
    // Inside the try: a dataDir that is a file or not writable is an I/O error (code 5) too.
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    writeFileSync(temp, text, { mode: 0o600 });
    renameSync(temp, path);
  } catch (err) {
    try {
      unlinkSync(temp);
    } catch {
      /* never written */
    }
    throw new CniError(ErrorCode.IoFailure, `cannot save the delegate configuration to ${path}: ${(err as Error).message}`);
  }
}

/** A saved configuration is one delegate configuration; far below this. */
export const MAX_SAVED_CONF_BYTES = 1024 * 1024;

/** The saved text, or undefined when there is none. */
export function readDelegateConf(dataDir: string, containerId: string): string | undefined {
  return readRegularFile(savedConfPath(dataDir, containerId), MAX_SAVED_CONF_BYTES, 'the saved delegate configuration');
}

export function removeDelegateConf(dataDir: string, containerId: string): void {
  try {
    unlinkSync(savedConfPath(dataDir, containerId));
  } catch {
    // Already gone: DEL is idempotent.
  }
}

/** CNI_PATH lookup, as libcni's invoke.FindInPath: the first executable file named `type`. */
export function findPlugin(type: string, dirs: readonly string[]): string {
  if (type === '' || type.includes('/') || type === '.' || type === '..') {
    throw new CniError(ErrorCode.InvalidConfig, `delegate type ${JSON.stringify(type)} is not a plugin name`);
  }
  for (const dir of dirs) {
    const candidate = join(dir, type);
    try {
      if (!statSync(candidate).isFile()) continue;
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  throw new CniError(ErrorCode.InvalidEnvironment, `failed to find plugin "${type}" in CNI_PATH [${dirs.join(' ')}]`);
}

export interface DelegateOutcome {
  /** Exit code; a delegate killed by a signal counts as 1. */
  code: number;
  signal: string | null;
  stdout: string;
  stderr: string;
}

/** Runs a plugin with `env` (the caller's, CNI_* included) and `stdin`, and waits for it. */
export function execPlugin(path: string, stdin: string, env: NodeJS.ProcessEnv): DelegateOutcome {
  const r = spawnSync(path, [], { input: stdin, env, encoding: 'utf8', maxBuffer: 16 << 20, stdio: 'pipe' });
  if (r.error) {
    throw new CniError(ErrorCode.DelegateFailed, `cannot run delegate ${path}: ${r.error.message}`);
  }
  return { code: r.status ?? 1, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}
