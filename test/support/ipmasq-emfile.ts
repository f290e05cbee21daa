// Runs inside a test's namespace: starts the real --ip-masq rules (IpMasq)
// with a fast resync, then fills this process's descriptor table (the agent's
// own: its iptables run in the command helper, which has its own). Prints every log
// line, then "released" after closing the descriptors again, and exits after
// the loop has run once more and IpMasq has stopped.
import { openSync, closeSync } from 'node:fs';
import { IpMasq } from '../../src/control/ip-masq.js';
import { makeCidr, parseIPv4 } from '../../src/control/ipv4-address.js';

const log = (line: string) => process.stdout.write(`${line}\n`);
const masq = new IpMasq({ network: makeCidr(parseIPv4('10.244.0.0'), 16), subnet: makeCidr(parseIPv4('10.244.1.0'), 24), resyncMs: 200, log });
await masq.start();
const held: number[] = [];
try {
  for (;;) held.push(openSync('/dev/null', 'r'));
} catch {
  log(`holding ${held.length} descriptors: the table is full`);
}
// Two resync periods with the table full, then give the descriptors back.
await new Promise((r) => setTimeout(r, 600));
for (const fd of held) closeSync(fd);
log('released');
await new Promise((r) => setTimeout(r, 400));
await masq.stop();
