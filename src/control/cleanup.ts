// `flannel-udp cleanup`: removes what agents leave behind on purpose with
// --persist-tun on (agent.ts): the persistent TUN device (its address and
// routes go with it), the masquerade chain and the forward chain. For a node
// leaving the cluster, or a switch to another network plugin; a running
// agent's device is refused (stop it first, with SIGINT to clean up at once).
import { parseFlags, type FlagGroup } from '../cli-flags.js';
import { renderFlagHelp } from '../cli-flags.js';
import { inspectTun, removePersistentTun, validateTunName } from '../dataplane/tun-device.js';
import { MASQ_CHAIN, removeChain } from './ip-masq.js';
import { FORWARD_CHAIN } from './forward-rules.js';

export const CLEANUP_FLAGS: readonly FlagGroup[] = [
  {
    title: 'Options for cleanup:',
    flags: [
      { name: 'tun', type: 'string', value: 'NAME', default: 'flannel0', help: 'the TUN device to remove' },
      { name: 'help', type: 'boolean', short: 'h', help: 'this text' },
    ],
  },
];

const MASQ_JUMP = { table: 'nat' as const, chain: 'POSTROUTING', spec: ['-m', 'comment', '--comment', 'flanneld masq', '-j', MASQ_CHAIN] };
const FORWARD_JUMP = { table: 'filter' as const, chain: 'FORWARD', spec: ['-m', 'comment', '--comment', 'flanneld forward', '-j', FORWARD_CHAIN] };

export class CleanupError extends Error {
  override name = 'ConfigError';
}

export async function cleanup(tunName: string, log: (line: string) => void): Promise<void> {
  validateTunName(tunName);
  const state = inspectTun(tunName);
  if (state.kind === 'other') throw new CleanupError(`${tunName} is not a TUN device; not touching it`);
  if (state.kind === 'tun') {
    if (state.carrier) throw new CleanupError(`an agent still runs on ${tunName}: stop it first (SIGINT removes everything itself)`);
    removePersistentTun(tunName, state.flags);
    log(`removed ${tunName} with its address and routes`);
  } else log(`no device ${tunName}`);
  await removeChain('nat', MASQ_CHAIN, [MASQ_JUMP]);
  log(`removed ${MASQ_CHAIN} (nat) and its POSTROUTING jump, if there`);
  await removeChain('filter', FORWARD_CHAIN, [FORWARD_JUMP]);
  log(`removed ${FORWARD_CHAIN} (filter) and its FORWARD jump, if there`);
  // A dual-stack or IPv6-only node's IPv6 rules: the same chains in ip6tables.
  await removeChain('nat', MASQ_CHAIN, [MASQ_JUMP], undefined, 6);
  await removeChain('filter', FORWARD_CHAIN, [FORWARD_JUMP], undefined, 6);
  log(`removed ${MASQ_CHAIN} (nat) and ${FORWARD_CHAIN} (filter) from ip6tables, if there`);
}

export async function cleanupCommand(argv: string[]): Promise<void> {
  const values = parseFlags('cleanup', argv, CLEANUP_FLAGS) as { tun?: string; help?: boolean };
  if (values.help) {
    process.stdout.write(`Usage: flannel-udp cleanup [--tun NAME]\n\nRemoves what a stopped agent left for the next one (--persist-tun on):\nthe TUN device with its address and routes, and flannel's FLANNEL-POSTRTG\nand FLANNEL-FWD chains (iptables and ip6tables).\n\n${renderFlagHelp(CLEANUP_FLAGS)}`);
    return;
  }
  await cleanup(values.tun ?? 'flannel0', (line) => process.stderr.write(`${line}\n`));
}
