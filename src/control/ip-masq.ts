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
// Every iptables runs in the command helper (command-runner.ts), a child
// process started with the rules, before the workers: the agent never forks
// after its workers start, not even every resync period.

import { CommandRunner } from './command-runner.js';
import { type Cidr, formatCidr } from './ipv4-address.js';
import { describeFdError } from '../observe/connection-limits.js';

export const MASQ_CHAIN = 'FLANNEL-POSTRTG';
const COMMENT = ['-m', 'comment', '--comment', 'flanneld masq'];
/** kube-proxy's masquerade mark */
const KUBE_PROXY_MARK = '0x4000/0x4000';

export interface IptablesRule {
  table: 'nat';
  chain: string;
  /** the rule after `-A <chain>` */
  spec: string[];
}

export class IpMasqError extends Error {
  override name = 'IpMasqError';
}

/** flannel's masquerade rules for one node (pure, for tests and the log). */
export function masqRules(network: Cidr, subnet: Cidr, randomFully = true): IptablesRule[] {
  const cluster = formatCidr(network);
  const pods = formatCidr(subnet);
  const masq = randomFully ? ['-j', 'MASQUERADE', '--random-fully'] : ['-j', 'MASQUERADE'];
  const rule = (...spec: string[]): IptablesRule => ({ table: 'nat', chain: MASQ_CHAIN, spec });
  return [
    { table: 'nat', chain: 'POSTROUTING', spec: [...COMMENT, '-j', MASQ_CHAIN] },
    rule('-m', 'mark', '--mark', KUBE_PROXY_MARK, ...COMMENT, '-j', 'RETURN'),
    rule('-s', pods, '-d', cluster, ...COMMENT, '-j', 'RETURN'),
    rule('-s', cluster, '-d', pods, ...COMMENT, '-j', 'RETURN'),
    rule('!', '-s', cluster, '-d', pods, ...COMMENT, '-j', 'RETURN'),
    rule('-s', cluster, '!', '-d', '224.0.0.0/4', ...COMMENT, ...masq),
    rule('!', '-s', cluster, '-d', cluster, ...COMMENT, ...masq),
  ];
}

/** The chain's rules as iptables-restore input; declaring the chain under --noflush empties it first. */
export function chainRestoreInput(rules: readonly IptablesRule[]): string {
  const quote = (a: string) => (/^[\w./:!-]+$/.test(a) ? a : `"${a}"`);
  const lines = ['*nat', `:${MASQ_CHAIN} - [0:0]`];
  for (const r of rules) if (r.chain === MASQ_CHAIN) lines.push(`-A ${MASQ_CHAIN} ${r.spec.map(quote).join(' ')}`);
  lines.push('COMMIT', '');
  return lines.join('\n');
}

export interface IpMasqOptions {
  network: Cidr;
  subnet: Cidr;
  /** how often the rules are checked and restored; default 5 s */
  resyncMs?: number;
  log: (line: string) => void;
}

export class IpMasq {
  private readonly rules: IptablesRule[];
  private timer: NodeJS.Timeout | undefined;
  private checking: Promise<void> = Promise.resolve();
  private stopped = false;
  private lastError = '';
  private readonly runner: CommandRunner;

  constructor(private readonly opts: IpMasqOptions) {
    this.rules = masqRules(opts.network, opts.subnet);
    this.runner = new CommandRunner(opts.log);
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
      if (e.code === 'ENOENT') throw new IpMasqError('--ip-masq needs iptables: apt-get install iptables (scripts/setup.sh does)');
      throw new IpMasqError(`--ip-masq: installing the ${MASQ_CHAIN} rules failed: ${e.message}`);
    }
    this.opts.log(
      `ip-masq: ${MASQ_CHAIN} in the nat table: pods in ${formatCidr(this.opts.subnet)} reach addresses outside ${formatCidr(this.opts.network)} ` +
        `masqueraded behind this node; rules re-checked every ${(this.opts.resyncMs ?? 5000) / 1000} s`,
    );
    this.timer = setInterval(() => {
      this.checking = this.checking.then(() => this.ensure());
    }, this.opts.resyncMs ?? 5000);
  }

  /** Removes the jump and the chain. Best effort and quiet: a rule already gone is what we want. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    await this.checking;
    await this.uninstall();
    await this.runner.close();
  }

  private async install(): Promise<void> {
    // -N fails if the chain exists; either way it is there afterwards.
    await this.iptables(['-t', 'nat', '-N', MASQ_CHAIN]).catch((err: Error & { code?: string }) => {
      if (err.code === 'ENOENT') throw err;
    });
    await this.run('iptables-restore', ['--noflush', '--wait'], chainRestoreInput(this.rules));
    const jump = this.rules.find((r) => r.chain === 'POSTROUTING')!;
    if (!(await this.exists(jump))) await this.iptables(['-t', 'nat', '-A', jump.chain, ...jump.spec]);
  }

  private async ensure(): Promise<void> {
    if (this.stopped) return;
    try {
      for (const rule of this.rules) {
        if (await this.exists(rule)) continue;
        if (this.stopped) return;
        this.opts.log(`ip-masq: rule missing (${rule.chain} ${rule.spec.join(' ')}); rebuilding ${MASQ_CHAIN}`);
        await this.install();
        break;
      }
      this.lastError = '';
    } catch (err) {
      // Logged once per distinct problem, then retried quietly every period.
      const message = (err as Error).message;
      if (message !== this.lastError) this.opts.log(`ip-masq: checking the rules failed: ${message}; retrying`);
      this.lastError = message;
    }
  }

  private async uninstall(): Promise<void> {
    const jump = this.rules.find((r) => r.chain === 'POSTROUTING')!;
    // Delete every copy of the jump (an earlier crashed run may have left one too).
    for (let i = 0; i < 10 && (await this.exists(jump)); i++) {
      await this.iptables(['-t', 'nat', '-D', jump.chain, ...jump.spec]).catch(() => undefined);
    }
    await this.iptables(['-t', 'nat', '-F', MASQ_CHAIN]).catch(() => undefined);
    await this.iptables(['-t', 'nat', '-X', MASQ_CHAIN]).catch(() => undefined);
    this.opts.log(`ip-masq: removed ${MASQ_CHAIN} and its POSTROUTING jump`);
  }

  private async exists(rule: IptablesRule): Promise<boolean> {
    try {
      await this.iptables(['-t', rule.table, '-C', rule.chain, ...rule.spec]);
      return true;
    } catch (err) {
      // iptables -C exits 1 when the rule (or its chain) is not there. Anything
      // else (the command could not even start: EMFILE, EAGAIN, ENOMEM) is a
      // failure to check, reported as such, not a missing rule.
      if ((err as NodeJS.ErrnoException).code === '1') return false;
      throw err;
    }
  }
  private iptables(args: string[]): Promise<string> {
    // --wait: take the xtables lock in turn with kube-proxy and friends instead of failing.
    return this.run('iptables', ['--wait', ...args]);
  }

  private async run(cmd: string, args: string[], input?: string): Promise<string> {
    try {
      return (await this.runner.run(cmd, args, input)).stdout;
    } catch (err) {
      const e = err as Error & { code?: string | number; stderr?: string };
      if (e.code === 'ENOENT') throw e;
      // The command never ran (spawn EMFILE, EAGAIN…, or the helper died): say why.
      if (typeof e.code === 'string') throw Object.assign(new Error(`${cmd}: ${describeFdError(e as NodeJS.ErrnoException)}`), { code: e.code });
      throw Object.assign(new Error(`${cmd} ${args.join(' ')}: ${(e.stderr || e.message).trim()}`), { code: String(e.code ?? '') });
    }
  }
}
