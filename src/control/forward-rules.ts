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
// A node with an IPv6 network gets the same chain in ip6tables' filter table
// for the IPv6 network (flanneld: ForwardRules(IPv6Network) via ip6tables).
import type { CommandRunner } from './command-runner.js';
import { formatCidr, type Cidr } from './ipv4-address.js';
import { type Cidr6, formatCidr6 } from './ipv6-address.js';
import { IpMasq, type IptablesRule, type RuleSet } from './ip-masq.js';

export const FORWARD_CHAIN = 'FLANNEL-FWD';
const COMMENT = ['-m', 'comment', '--comment', 'flanneld forward'];

/** flanneld's forward rules for the cluster network (pure, for tests and the log). */
export function forwardRules(network: Cidr): IptablesRule[] {
  return forwardRulesFor(formatCidr(network));
}

/** The IPv6 forward rules: the same, for the IPv6 network, in ip6tables. */
export function forward6Rules(network: Cidr6): IptablesRule[] {
  return forwardRulesFor(formatCidr6(network));
}

function forwardRulesFor(cluster: string): IptablesRule[] {
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

export function forward6RuleSet(network: Cidr6): RuleSet {
  return {
    table: 'filter',
    chain: FORWARD_CHAIN,
    rules: forward6Rules(network),
    flag: '--iptables-forward-rules',
    family: 6,
    describe: `iptables-forward-rules: ${FORWARD_CHAIN} in ip6tables' filter table accepts ${formatCidr6(network)} in FORWARD (whatever its policy)`,
  };
}
