// Entry point of the flannel CNI plugin: the runtime's environment and stdin
// in, one JSON answer on stdout and an exit code out (see plugin.ts).
// Run by bin/flannel-cni, or by the `flannel` file `flannel-udp install-cni` writes.
import { runPlugin } from './plugin.js';

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

// VERSION ignores stdin, and someone trying it by hand in a terminal would
// otherwise wait for an end of input that never comes.
const stdin = process.env.CNI_COMMAND === 'VERSION' ? '' : await readStdin();
const outcome = runPlugin({ env: process.env, stdin, log: (line) => process.stderr.write(`${line}\n`) });
process.stdout.write(outcome.stdout);
process.exitCode = outcome.exitCode;
