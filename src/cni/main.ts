// Entry point of the flannel CNI plugin: the runtime's environment and stdin
// in, one JSON answer on stdout and an exit code out (see plugin.ts).
// Run by bin/flannel-cni, or by the `flannel` file `flannel-udp install-cni` writes.
//
// Every way out prints a CNI error object: stdin is read up to a bound, and
// anything thrown (even outside runPlugin) becomes code 999 with its message.
import { runPlugin } from './plugin.js';
import { CniError, CURRENT_VERSION, ErrorCode } from './spec.js';

/** A network configuration with a prevResult is a few KiB; this leaves room and still bounds memory. */
export const MAX_STDIN_BYTES = 1024 * 1024;

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  let length = 0;
  for await (const chunk of process.stdin) {
    length += (chunk as Buffer).length;
    // Past the bound the rest is read and dropped: memory stays bounded, and
    // the runtime's write ends normally instead of with EPIPE.
    if (length <= MAX_STDIN_BYTES) chunks.push(chunk as Buffer);
  }
  if (length > MAX_STDIN_BYTES) {
    throw new CniError(ErrorCode.DecodingFailure, `the network configuration on stdin is ${length} bytes, more than ${MAX_STDIN_BYTES}`);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function fail(err: unknown): void {
  const e = err instanceof CniError ? err : new CniError(ErrorCode.Internal, err instanceof Error ? err.message : String(err));
  process.stderr.write(`flannel: ${e.message}\n`);
  process.stdout.write(JSON.stringify(e.toJson(CURRENT_VERSION)) + '\n');
  process.exitCode = 1;
}

try {
  // VERSION ignores stdin, and someone trying it by hand in a terminal would
  // otherwise wait for an end of input that never comes.
  const stdin = process.env.CNI_COMMAND === 'VERSION' ? '' : await readStdin();
  const outcome = runPlugin({ env: process.env, stdin, log: (line) => process.stderr.write(`${line}\n`) });
  process.stdout.write(outcome.stdout);
  process.exitCode = outcome.exitCode;
} catch (err) {
  fail(err);
}
