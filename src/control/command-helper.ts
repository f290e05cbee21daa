// The agent's command helper: a child process, started before the forwarding
// workers, that runs the few commands the agent needs later (iptables for
// --ip-masq, every resync period) so the agent itself never forks again once
// its workers run (ip6tables too, for the IPv6 rules of a dual-stack node). A fork marks every page of the forking process
// copy-on-write, the workers' warmed packet memory included, and the next
// packets then paid a page fault per page they wrote (docs/design.md,
// "Latency after idle"). The helper's own forks cost the agent nothing.
//
// Protocol: one JSON object per line each way. Request {id, cmd, args,
// input?}; reply {id, stdout, stderr, error} where error is null or
// {message, code} with execFile's code (the exit status, or an errno name
// when the command could not start). It exits when its stdin closes, so it
// never outlives the agent, even after kill -9, and ignores the signals sent
// to the agent's process group, so the agent can still clean up on SIGTERM.
import { execFile } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

/** What the helper runs: nothing else, whatever it is asked. */
export const HELPER_COMMANDS: readonly string[] = ['iptables', 'iptables-restore', 'ip6tables', 'ip6tables-restore'];

export interface HelperRequest {
  id: number;
  cmd: string;
  args: string[];
  input?: string;
}

export interface HelperReply {
  id: number;
  stdout: string;
  stderr: string;
  error: { message: string; code: string | number | null } | null;
}

function reply(r: HelperReply): void {
  process.stdout.write(JSON.stringify(r) + '\n');
}

function serve(line: string): void {
  let req: HelperRequest;
  try {
    req = JSON.parse(line) as HelperRequest;
  } catch {
    return; // not from the agent
  }
  const id = req.id;
  if (!HELPER_COMMANDS.includes(req.cmd) || !Array.isArray(req.args) || !req.args.every((a) => typeof a === 'string')) {
    reply({ id, stdout: '', stderr: '', error: { message: `the command helper does not run ${String(req.cmd)}`, code: 'EPERM' } });
    return;
  }
  const child = execFile(req.cmd, req.args, { timeout: 30_000 }, (err, stdout, stderr) => {
    const e = err as (Error & { code?: string | number }) | null;
    reply({ id, stdout, stderr, error: e ? { message: e.message, code: e.code ?? null } : null });
  });
  if (req.input !== undefined) child.stdin?.end(req.input);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  // Signals to the agent's process group (SIGTERM from a supervisor, Ctrl-C) are the agent's to act on:
  // it still needs the helper to remove its rules, and closes the pipe when it is done.
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(signal, () => undefined);
  createInterface({ input: process.stdin }).on('line', serve).on('close', () => process.exit(0));
}
