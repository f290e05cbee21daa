// --ip-masq, as flanneld does it (pkg/trafficmngr/iptables): pods reach
// addresses outside the cluster network masqueraded behind the node's own
// address, while traffic inside the cluster network keeps its pod addresses.
// The rules live in their own chain of the nat table, jumped to from
// POSTROUTING, with flannel's chain name and comment so an operator (or
// flanneld) recognises them:
//
//   -A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG
//   -A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 … -j RETURN           kube-proxy marked it: it masquerades
//   -A FLANNEL-POSTRTG -s <node subnet> -d <network> … -j RETURN           pod → pod: keep the source
//   -A FLANNEL-POSTRTG -s <network> -d <node subnet> … -j RETURN           pod → pod, arriving
//   -A FLANNEL-POSTRTG ! -s <network> -d <node subnet> … -j RETURN         outside → a pod here (e.g. a NodePort)
//   -A FLANNEL-POSTRTG -s <network> ! -d 224.0.0.0/4 … -j MASQUERADE --random-fully   pod → outside
//   -A FLANNEL-POSTRTG ! -s <network> -d <network> … -j MASQUERADE --random-fully     host → a remote pod
//
// The chain is filled with one iptables-restore --noflush (atomic: no moment
// with half the rules), checked every resync period (default 5 s, flanneld's
// --iptables-resync) and rebuilt whole when anything is missing, because the
// order matters. stop() removes the jump and the chain.
//
// IPv6 (a dual-stack or IPv6-only node), as flanneld's masqIP6Rules: the same
// chain and rules in ip6tables' nat table with the IPv6 network and subnet,
// ff00::/8 (multicast) in place of 224.0.0.0/4; kept the same way.
//
// Every iptables runs in the command helper (command-runner.ts), a child
// process started with the rules, before the workers: the agent never forks
// after its workers start, not even every resync period.

import { execFile } from 'node:child_process';
import { CommandRunner } from './command-runner.js';
import { type Cidr, formatCidr } from './ipv4-address.js';
import { type Cidr6, formatCidr6 } from './ipv6-address.js';
import { describeFdError } from '../observe/connection-limits.js';

export const MASQ_CHAIN = 'FLANNEL-POSTRTG';
const COMMENT = ['-m', 'comment', '--comment', 'flanneld masq'];
/** kube-proxy's masquerade mark */
const KUBE_PROXY_MARK = '0x4000/0x4000';

export interface IptablesRule {
  table: 'nat' | 'filter';
  chain: string;
  /** the rule after `-A <chain>` */
  spec: string[];
}

export class IpMasqError extends Error {
  override name = 'IpMasqError';
}

/** flannel's masquerade rules for one node (pure, for tests and the log). */
export function masqRules(network: Cidr, subnet: Cidr, randomFully = true): IptablesRule[] {
  return masqRulesFor(formatCidr(network), formatCidr(subnet), '224.0.0.0/4', randomFully);
}

/** flannel's IPv6 masquerade rules (masqIP6Rules): the IPv4 ones with the IPv6 network and subnet, multicast ff00::/8. */
export function masq6Rules(network: Cidr6, subnet: Cidr6, randomFully = true): IptablesRule[] {
  return masqRulesFor(formatCidr6(network), formatCidr6(subnet), 'ff00::/8', randomFully);
}

function masqRulesFor(cluster: string, pods: string, multicast: string, randomFully: boolean): IptablesRule[] {
  const masq = randomFully ? ['-j', 'MASQUERADE', '--random-fully'] : ['-j', 'MASQUERADE'];
  const rule = (...spec: string[]): IptablesRule => ({ table: 'nat', chain: MASQ_CHAIN, spec });
  return [
    { table: 'nat', chain: 'POSTROUTING', spec: [...COMMENT, '-j', MASQ_CHAIN] },
    rule('-m', 'mark', '--mark', KUBE_PROXY_MARK, ...COMMENT, '-j', 'RETURN'),
    rule('-s', pods, '-d', cluster, ...COMMENT, '-j', 'RETURN'),
    rule('-s', cluster, '-d', pods, ...COMMENT, '-j', 'RETURN'),
    rule('!', '-s', cluster, '-d', pods, ...COMMENT, '-j', 'RETURN'),
    rule('-s', cluster, '!', '-d', multicast, ...COMMENT, ...masq),
    rule('!', '-s', cluster, '-d', cluster, ...COMMENT, ...masq),
  ];
}

/** The chain's rules as iptables-restore input; declaring the chain under --noflush empties it first. */
export function chainRestoreInput(rules: readonly IptablesRule[], chain = MASQ_CHAIN, table = 'nat'): string {
  const quote = (a: string) => (/^[\w./:!-]+$/.test(a) ? a : `"${a}"`);
  const lines = [`*${table}`, `:${chain} - [0:0]`];
  for (const r of rules) if (r.chain === chain) lines.push(`-A ${chain} ${r.spec.map(quote).join(' ')}`);
  lines.push('COMMIT', '');
  return lines.join('\n');
}

export interface IpMasqOptions {
  network: Cidr;
  subnet: Cidr;
  /** how often the rules are checked and restored; default 5 s */
  resyncMs?: number;
  log: (line: string) => void;
  /** Another chain kept the same way (forward-rules.ts); default: the masquerade rules. */
  ruleSet?: RuleSet;
  /** The command helper to run iptables in, shared by the agent's rule sets; default: one of its own. */
  runner?: CommandRunner;
}

/** Runs a command as execFile would: resolves its stdout, rejects with `code` = exit status or errno name. */
export type RunCommand = (cmd: string, args: string[], input?: string) => Promise<string>;

/**
 * One chain of ours and the jumps to it, kept by IpMasq's mechanism: installed
 * atomically, re-checked every resync period, rebuilt when anything is
 * missing, removed on a clean exit.
 */
export interface RuleSet {
  table: 'nat' | 'filter';
  chain: string;
  /** every rule: jumps from built-in chains first, then the chain's own */
  rules: IptablesRule[];
  /** the flag, for errors and the log: '--ip-masq' */
  flag: string;
  /** the start log line */
  describe: string;
  /** 6: the rules are ip6tables' (ip6tables, ip6tables-restore); default 4 */
  family?: 4 | 6;
}

/** The masquerade rules for a node's IPv6 subnet, kept in ip6tables like the IPv4 ones. */
export function masq6RuleSet(network: Cidr6, subnet: Cidr6): RuleSet {
  return {
    table: 'nat',
    chain: MASQ_CHAIN,
    rules: masq6Rules(network, subnet),
    flag: '--ip-masq',
    family: 6,
    describe: `ip-masq: ${MASQ_CHAIN} in ip6tables' nat table: pods in ${formatCidr6(subnet)} reach addresses outside ${formatCidr6(network)} masqueraded behind this node`,
  };
}

/** The program names for a rule set's family. */
function programs(family: 4 | 6 | undefined): { iptables: string; restore: string } {
  return family === 6 ? { iptables: 'ip6tables', restore: 'ip6tables-restore' } : { iptables: 'iptables', restore: 'iptables-restore' };
}

export class IpMasq {
  private readonly rules: IptablesRule[];
  private readonly set: RuleSet;
  private timer: NodeJS.Timeout | undefined;
  private checking: Promise<void> = Promise.resolve();
  private stopped = false;
  private lastError = '';
  private readonly runner: CommandRunner;
  private readonly ownsRunner: boolean;
  private readonly exec: RunCommand;

  constructor(private readonly opts: IpMasqOptions) {
    this.runner = opts.runner ?? new CommandRunner(opts.log);
    this.ownsRunner = opts.runner === undefined;
    this.exec = helperExec(this.runner);
    this.set = opts.ruleSet ?? {
      table: 'nat',
      chain: MASQ_CHAIN,
      rules: masqRules(opts.network, opts.subnet),
      flag: '--ip-masq',
      describe:
        `ip-masq: ${MASQ_CHAIN} in the nat table: pods in ${formatCidr(opts.subnet)} reach addresses outside ${formatCidr(opts.network)} ` +
        'masqueraded behind this node',
    };
    this.rules = this.set.rules;
  }

  /** The command helper's pid (for tests and the log). */
  get helperPid(): number | undefined {
    return this.runner.pid;
  }

  /** Starts the command helper and installs the rules: call before the workers start. */
  async start(): Promise<void> {
    this.runner.start();
    try {
      await this.install();
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      const program = programs(this.set.family).iptables;
      if (e.code === 'ENOENT') throw new IpMasqError(`${this.set.flag} needs ${program}${this.set.family === 6 ? ' for the IPv6 rules' : ''}: apt-get install iptables (scripts/setup.sh does)`);
      throw new IpMasqError(`${this.set.flag}: installing the ${this.set.chain} rules failed: ${e.message}`);
    }
    this.opts.log(`${this.set.describe}; rules re-checked every ${(this.opts.resyncMs ?? 5000) / 1000} s`);
    this.timer = setInterval(() => {
      this.checking = this.checking.then(() => this.ensure());
    }, this.opts.resyncMs ?? 5000);
  }

  /** A restart exit (agent.ts): stops checking and leaves the rules in place for the next agent. */
  async detach(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    await this.checking;
    if (this.ownsRunner) await this.runner.close();
  }

  /** Removes the jump and the chain. Best effort and quiet: a rule already gone is what we want. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    await this.checking;
    await this.uninstall();
    if (this.ownsRunner) await this.runner.close();
  }

  private async install(): Promise<void> {
    // -N fails if the chain exists; either way it is there afterwards.
    const { table, chain, family } = this.set;
    await iptables(this.exec, ['-t', table, '-N', chain], family).catch((err: Error & { code?: string }) => {
      if (err.code === 'ENOENT') throw err;
    });
    await this.exec(programs(family).restore, ['--noflush', '--wait'], chainRestoreInput(this.rules, chain, table));
    for (const jump of this.rules.filter((r) => r.chain !== chain)) {
      if (!(await this.exists(jump))) await iptables(this.exec, ['-t', table, '-A', jump.chain, ...jump.spec], family);
    }
  }

  private async ensure(): Promise<void> {
    if (this.stopped) return;
    try {
      for (const rule of this.rules) {
        if (await this.exists(rule)) continue;
        if (this.stopped) return;
        this.opts.log(`${this.set.flag.slice(2)}: rule missing (${rule.chain} ${rule.spec.join(' ')}); rebuilding ${this.set.chain}`);
        await this.install();
        break;
      }
      this.lastError = '';
    } catch (err) {
      // Logged once per distinct problem, then retried quietly every period.
      const message = (err as Error).message;
      if (message !== this.lastError) this.opts.log(`${this.set.flag.slice(2)}: checking the rules failed: ${message}; retrying`);
      this.lastError = message;
    }
  }

  private async uninstall(): Promise<void> {
    await removeChain(this.set.table, this.set.chain, this.rules.filter((r) => r.chain !== this.set.chain), this.exec, this.set.family);
    this.opts.log(`${this.set.flag.slice(2)}: removed ${this.set.chain}${this.set.family === 6 ? ' (ip6tables)' : ''} and its jump from ${this.rules.filter((r) => r.chain !== this.set.chain).map((r) => r.chain).join(', ')}`);
  }

  private async exists(rule: IptablesRule): Promise<boolean> {
    return ruleExists(rule, this.exec, this.set.family);
  }
}

/**
 * Deletes every copy of the jumps (an earlier crashed run may have left one too), then the chain. Quiet.
 * Runs iptables directly unless given the agent's command helper (`flannel-udp cleanup` has no workers to protect).
 */
export async function removeChain(table: string, chain: string, jumps: readonly IptablesRule[], exec: RunCommand = execDirect, family?: 4 | 6): Promise<void> {
  for (const jump of jumps) {
    for (let i = 0; i < 10 && (await ruleExists(jump, exec, family).catch(() => false)); i++) {
      await iptables(exec, ['-t', table, '-D', jump.chain, ...jump.spec], family).catch(() => undefined);
    }
  }
  await iptables(exec, ['-t', table, '-F', chain], family).catch(() => undefined);
  await iptables(exec, ['-t', table, '-X', chain], family).catch(() => undefined);
}

async function ruleExists(rule: IptablesRule, exec: RunCommand, family?: 4 | 6): Promise<boolean> {
  try {
    await iptables(exec, ['-t', rule.table, '-C', rule.chain, ...rule.spec], family);
    return true;
  } catch (err) {
    // iptables -C exits 1 when the rule (or its chain) is not there. Anything
    // else (the command could not even start: EMFILE, EAGAIN, ENOMEM) is a
    // failure to check, reported as such, not a missing rule.
    if ((err as NodeJS.ErrnoException).code === '1') return false;
    throw err;
  }
}

function iptables(exec: RunCommand, args: string[], family?: 4 | 6): Promise<string> {
  // --wait: take the xtables lock in turn with kube-proxy and friends instead of failing.
  return exec(programs(family).iptables, ['--wait', ...args]);
}

/** A command run in the helper, with the errors execDirect gives. */
function helperExec(runner: CommandRunner): RunCommand {
  return async (cmd, args, input) => {
    try {
      return (await runner.run(cmd, args, input)).stdout;
    } catch (err) {
      const e = err as Error & { code?: string | number; stderr?: string };
      if (e.code === 'ENOENT') throw e;
      // The command never ran (spawn EMFILE, EAGAIN…, or the helper died): say why.
      if (typeof e.code === 'string') throw Object.assign(new Error(`${cmd}: ${describeFdError(e as NodeJS.ErrnoException)}`), { code: e.code });
      throw Object.assign(new Error(`${cmd} ${args.join(' ')}: ${(e.stderr || e.message).trim()}`), { code: String(e.code ?? '') });
    }
  };
}

/** A command forked from this process: only where no worker runs (the cleanup command). */
function execDirect(cmd: string, args: string[], input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(cmd, args, { timeout: 30_000 }, (err, stdout, stderr) => {
      if (!err) return resolve(stdout);
      const e = err as Error & { code?: string | number };
      if (e.code === 'ENOENT') return reject(e);
      // The command never ran (spawn EMFILE, EAGAIN…): say why, with the descriptor count for EMFILE.
      if (typeof e.code === 'string') return reject(Object.assign(new Error(`${cmd}: ${describeFdError(e as NodeJS.ErrnoException)}`), { code: e.code }));
      reject(Object.assign(new Error(`${cmd} ${args.join(' ')}: ${(stderr || e.message).trim()}`), { code: String(e.code ?? '') }));
    });
    if (input !== undefined) child.stdin?.end(input);
  });
}
