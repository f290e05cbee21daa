// Runs inside a test's namespace: starts the real --ip-masq rules (IpMasq)
// with a fast resync, then fills this process's descriptor table (the agent's
// own: its iptables run in the command helper, which has its own). Prints every log
// line, then "released" after closing the descriptors again once two whole
// resyncs have checked the rules, and exits after IpMasq has stopped.
import { openSync, closeSync } from 'node:fs';
import { CommandRunner } from '../../src/control/command-runner.js';
import { IpMasq, masqRules } from '../../src/control/ip-masq.js';
import { makeCidr, parseIPv4 } from '../../src/control/ipv4-address.js';

const log = (line: string) => process.stdout.write(`${line}\n`);
const network = makeCidr(parseIPv4('10.244.0.0'), 16);
const subnet = makeCidr(parseIPv4('10.244.1.0'), 24);
// The resync's checks (iptables -C), counted once they have answered while the table is full.
const runner = new CommandRunner(log);
let full = false;
let checksWhileFull = 0;
const run = runner.run.bind(runner);
runner.run = (cmd, args, input) => {
  const counts = full && args.includes('-C');
  return run(cmd, args, input).finally(() => {
    if (counts && full) checksWhileFull++;
  });
};
const masq = new IpMasq({ network, subnet, resyncMs: 200, log, runner });
await masq.start();
const held: number[] = [];
try {
  for (;;) held.push(openSync('/dev/null', 'r'));
} catch {
  full = true;
  log(`holding ${held.length} descriptors: the table is full`);
}
// Two whole resyncs with the table full (every rule checked twice), then give the descriptors back.
const wanted = 2 * masqRules(network, subnet).length;
for (const deadline = Date.now() + 20_000; checksWhileFull < wanted; ) {
  if (Date.now() > deadline) {
    for (const fd of held) closeSync(fd);
    log(`only ${checksWhileFull} of ${wanted} rule checks answered in 20 s with the table full`);
    process.exit(1);
  }
  await new Promise((r) => setTimeout(r, 20));
}
full = false;
for (const fd of held) closeSync(fd);
log(`released after ${checksWhileFull} rule checks`);
await masq.stop();
await runner.close();
