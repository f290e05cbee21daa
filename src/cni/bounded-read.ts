// Reads for the CNI plugin that cannot hang or exhaust it, whatever path a
// configuration names: the agent's bounded reader (control/bounded-file.ts:
// only regular files, checked with fstat after a non-blocking open, and at
// most `maxBytes`), with its failures as CNI I/O errors (code 5) that name
// the file, never its content.
import { BoundedFileError, readBoundedFileSync } from '../control/bounded-file.js';
import { CniError, ErrorCode } from './spec.js';

/** The file's text, or undefined when it does not exist. */
export function readRegularFile(path: string, maxBytes: number, what: string): string | undefined {
  try {
    return readBoundedFileSync(path, maxBytes, what).toString('utf8');
  } catch (err) {
    if (!(err instanceof BoundedFileError)) throw err;
    if (err.reason === 'missing') return undefined;
    throw new CniError(ErrorCode.IoFailure, err.message);
  }
}
