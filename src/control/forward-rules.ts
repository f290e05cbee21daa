// --iptables-forward-rules, as flanneld (default on): accept the cluster
// network in the filter table's FORWARD chain, because Docker and some
// distributions set its policy to DROP, which would drop every pod packet
// routed between cni0 and flannel0. flannel's chain name and comment:
//
//   -A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD
//   -A FLANNEL-FWD -s <network> -m comment --comment "flanneld forward" -j ACCEPT
//   -A FLANNEL-FWD -d <network> -m comment --comment "flanneld forward" -j ACCEPT
//
// Kept by the masquerade rules' mechanism (ip-masq.ts: installed atomically,
// re-checked every --iptables-resync, rebuilt when anything is missing),
// left in place on a restart exit and removed on a clean one, like them.
import type { CommandRunner } from './command-runner.js';
import { formatCidr, type Cidr } from './ipv4-address.js';
import { IpMasq, type IptablesRule, type RuleSet } from './ip-masq.js';

export const FORWARD_CHAIN = 'FLANNEL-FWD';
const COMMENT = ['-m', 'comment', '--comment', 'flanneld forward'];

/** flanneld's forward rules for the cluster network (pure, for tests and the log). */
export function forwardRules(network: Cidr): IptablesRule[] {
  const cluster = formatCidr(network);
  return [
    { table: 'filter', chain: 'FORWARD', spec: [...COMMENT, '-j', FORWARD_CHAIN] },
    { table: 'filter', chain: FORWARD_CHAIN, spec: ['-s', cluster, ...COMMENT, '-j', 'ACCEPT'] },
    { table: 'filter', chain: FORWARD_CHAIN, spec: ['-d', cluster, ...COMMENT, '-j', 'ACCEPT'] },
  ];
}

export function forwardRuleSet(network: Cidr): RuleSet {
  return {
    table: 'filter',
    chain: FORWARD_CHAIN,
    rules: forwardRules(network),
    flag: '--iptables-forward-rules',
    describe: `iptables-forward-rules: ${FORWARD_CHAIN} in the filter table accepts ${formatCidr(network)} in FORWARD (whatever its policy)`,
  };
}

/** The forward rules, kept like the masquerade rules: start(), detach() (restart exit), stop() (clean exit). */
export function forwardRulesKeeper(opts: { network: Cidr; subnet: Cidr; resyncMs?: number; log: (line: string) => void; runner?: CommandRunner }): IpMasq {
  return new IpMasq({ ...opts, ruleSet: forwardRuleSet(opts.network) });
}
