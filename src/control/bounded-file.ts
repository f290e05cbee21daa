// Reads of the files the agent is pointed at (the leases file, subnet.env,
// net-conf.json) that cannot wedge or bloat it, whatever the path names:
//   - opened non-blocking: opening a FIFO for reading otherwise waits for a
//     writer forever, and that wait sits in a libuv pool thread that
//     process.exit() then joins, so not even SIGTERM could end the agent;
//   - only a regular file (fstat on the descriptor, so a symlink to a FIFO or
//     a device is caught and nothing can be swapped in between);
//   - at most maxBytes (/dev/zero or a runaway generator cannot take the heap);
//   - asynchronously: the event loop keeps serving signals and probes.
// The CNI plugin has its own twin (cni/bounded-read.ts), throwing CNI errors.
import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs';
import { open } from 'node:fs/promises';

/** Why a file could not be read; `reason` is stable for callers and tests. */
export class BoundedFileError extends Error {
  override name = 'BoundedFileError';
  constructor(
    readonly path: string,
    readonly reason: 'missing' | 'not-regular' | 'too-large' | 'unreadable',
    /** the message without the path */
    readonly detail: string,
  ) {
    super(`${path}: ${detail}`);
  }
}

export interface BoundedFile {
  text: string;
  /** inode, size and times of what was read: equal identities mean an unchanged file */
  identity: string;
}

function kindOf(st: { isFIFO(): boolean; isCharacterDevice(): boolean; isBlockDevice(): boolean; isDirectory(): boolean; isSocket(): boolean }): string {
  if (st.isFIFO()) return 'a FIFO (named pipe)';
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'a device';
  if (st.isDirectory()) return 'a directory';
  if (st.isSocket()) return 'a socket';
  return 'not a regular file';
}

/** "8 MiB" for the messages. */
export function formatBytes(n: number): string {
  if (n >= 1 << 20 && n % (1 << 20) === 0) return `${n >> 20} MiB`;
  if (n >= 1024 && n % 1024 === 0) return `${n >> 10} KiB`;
  return `${n} bytes`;
}

/**
 * The UTF-8 text of the regular file at `path`, at most `maxBytes` long.
 * `what` names the file in messages ("the leases file"). Errors name the
 * path and the reason, never the content.
 */
export async function readBoundedFile(path: string, maxBytes: number, what: string): Promise<BoundedFile> {
  let fh;
  try {
    fh = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT') throw new BoundedFileError(path, 'missing', `cannot read ${what}: no such file`);
    // ENXIO: a unix socket (or a device nobody drives) cannot be opened at all.
    if (e.code === 'ENXIO') throw new BoundedFileError(path, 'not-regular', `${what} is a socket or a device, not a regular file`);
    const reason = e.code === 'EACCES' ? 'permission denied' : e.code === 'EISDIR' ? 'is a directory' : (e.code ?? e.message);
    throw new BoundedFileError(path, 'unreadable', `cannot read ${what}: ${reason}`);
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new BoundedFileError(path, 'not-regular', `${what} is ${kindOf(st)}, not a regular file`);
    const limitText = `the limit is ${formatBytes(maxBytes)}`;
    if (st.size > maxBytes) throw new BoundedFileError(path, 'too-large', `${what} is ${st.size} bytes; ${limitText}`);
    // Sized from fstat, grown if the file grows while read, never past one
    // byte over the limit: that byte is how a growing file is noticed.
    let buffer = Buffer.allocUnsafe(Math.min(st.size, maxBytes) + 1);
    let length = 0;
    for (;;) {
      if (length === buffer.length) {
        if (length > maxBytes) throw new BoundedFileError(path, 'too-large', `${what} grew past ${formatBytes(maxBytes)} while being read; ${limitText}`);
        const bigger = Buffer.allocUnsafe(Math.min(buffer.length * 2, maxBytes + 1));
        buffer.copy(bigger, 0, 0, length);
        buffer = bigger;
      }
      const { bytesRead } = await fh.read(buffer, length, buffer.length - length, null);
      if (bytesRead === 0) break;
      length += bytesRead;
    }
    // A file that changed while read gets its read length in the identity: the next look reads it again.
    const size = length === st.size ? st.size : `${st.size}/${length}`;
    return { text: buffer.toString('utf8', 0, length), identity: `${st.ino}:${size}:${st.mtimeMs}:${st.ctimeMs}` };
  } catch (err) {
    if (err instanceof BoundedFileError) throw err;
    const e = err as NodeJS.ErrnoException;
    throw new BoundedFileError(path, 'unreadable', `cannot read ${what}: ${e.code ?? e.message}`);
  } finally {
    await fh.close().catch(() => undefined);
  }
}

/**
 * The same checks, synchronously, for the few files read once at start
 * before the event loop has anything to serve (etcd's TLS certificates).
 */
export function readBoundedFileSync(path: string, maxBytes: number, what: string): Buffer {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT') throw new BoundedFileError(path, 'missing', `cannot read ${what}: no such file`);
    if (e.code === 'ENXIO') throw new BoundedFileError(path, 'not-regular', `${what} is a socket or a device, not a regular file`);
    throw new BoundedFileError(path, 'unreadable', `cannot read ${what}: ${e.code === 'EACCES' ? 'permission denied' : (e.code ?? e.message)}`);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new BoundedFileError(path, 'not-regular', `${what} is ${kindOf(st)}, not a regular file`);
    if (st.size > maxBytes) throw new BoundedFileError(path, 'too-large', `${what} is ${st.size} bytes; the limit is ${formatBytes(maxBytes)}`);
    const buffer = Buffer.alloc(maxBytes + 1);
    let length = 0;
    for (;;) {
      const n = readSync(fd, buffer, length, buffer.length - length, null);
      if (n === 0) break;
      length += n;
      if (length > maxBytes) throw new BoundedFileError(path, 'too-large', `${what} grew past ${formatBytes(maxBytes)} while being read`);
    }
    return Buffer.from(buffer.subarray(0, length));
  } catch (err) {
    if (err instanceof BoundedFileError) throw err;
    const e = err as NodeJS.ErrnoException;
    throw new BoundedFileError(path, 'unreadable', `cannot read ${what}: ${e.code ?? e.message}`);
  } finally {
    closeSync(fd);
  }
}
