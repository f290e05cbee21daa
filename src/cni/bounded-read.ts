// Reads for the CNI plugin that cannot hang or exhaust it, whatever path a
// configuration names: only regular files (fstat after open, so a symlink to
// a FIFO or a device is caught too), opened non-blocking (opening a FIFO
// would otherwise wait for a writer forever), and at most `maxBytes`.
// Failures are CNI I/O errors (code 5) that name the file, never its content.
import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs';
import { CniError, ErrorCode } from './spec.js';

/** The file's text, or undefined when it does not exist. */
export function readRegularFile(path: string, maxBytes: number, what: string): string | undefined {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT') return undefined;
    throw new CniError(ErrorCode.IoFailure, `${path}: cannot open ${what}: ${e.code ?? e.message}`);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) {
      const kind = st.isFIFO() ? 'a FIFO' : st.isCharacterDevice() || st.isBlockDevice() ? 'a device' : st.isDirectory() ? 'a directory' : st.isSocket() ? 'a socket' : 'not a file';
      throw new CniError(ErrorCode.IoFailure, `${path}: ${what} is ${kind}, not a regular file`);
    }
    if (st.size > maxBytes) throw new CniError(ErrorCode.IoFailure, `${path}: ${what} is ${st.size} bytes, more than the ${maxBytes} it can be`);
    // The size may change under us: read one byte past the limit to notice.
    const buffer = Buffer.alloc(maxBytes + 1);
    let length = 0;
    for (;;) {
      const n = readSync(fd, buffer, length, buffer.length - length, null);
      if (n === 0) break;
      length += n;
      if (length > maxBytes) throw new CniError(ErrorCode.IoFailure, `${path}: ${what} is more than ${maxBytes} bytes`);
    }
    return buffer.subarray(0, length).toString('utf8');
  } catch (err) {
    if (err instanceof CniError) throw err;
    const e = err as NodeJS.ErrnoException;
    throw new CniError(ErrorCode.IoFailure, `${path}: cannot read ${what}: ${e.code ?? e.message}`);
  } finally {
    closeSync(fd);
  }
}
