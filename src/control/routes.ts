// Addresses, MTU and routes of the TUN device, set with iproute2 exactly as a
// person would type them (and as flannel's udp backend does through netlink):
// a learner can read every step in the agent's log and repeat it by hand.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { formatIPv4, type Cidr } from './ipv4-address.js';

const execFileAsync = promisify(execFile);

export async function ip(args: string[]): Promise<string> {
  try {
    const { stdout } = await execFileAsync('ip', args, { timeout: 10_000 });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string; code?: string };
    if (e.code === 'ENOENT') throw new Error('the `ip` command (iproute2) is not installed: apt-get install iproute2');
    throw new Error(`ip ${args.join(' ')}: ${(e.stderr ?? e.message).trim()}`);
  }
}

export interface TunAddressing {
  tunName: string;
  /** This node's subnet (FLANNEL_SUBNET); the device gets its network address... */
  subnet: Cidr;
  /** ...with the whole cluster network's prefix (FLANNEL_NETWORK), and a route for it. */
  network: Cidr;
  mtu: number;
}

/** The commands configureTun runs, for the log and the docs. */
export function tunCommands(a: TunAddressing): string[][] {
  const address = `${formatIPv4(a.subnet.network)}/${a.network.prefixLength}`;
  const network = `${formatIPv4(a.network.network)}/${a.network.prefixLength}`;
  return [
    ['addr', 'add', address, 'dev', a.tunName],
    ['link', 'set', 'dev', a.tunName, 'mtu', String(a.mtu), 'up'],
    // Explicit, like flannel: the kernel adds this route with the address,
    // unless another device already had one for the same prefix.
    ['route', 'replace', network, 'dev', a.tunName, 'scope', 'link', 'src', formatIPv4(a.subnet.network)],
  ];
}

export async function configureTun(a: TunAddressing, log: (line: string) => void): Promise<void> {
  await disableIpv6(a.tunName, log);
  for (const args of tunCommands(a)) {
    log(`ip ${args.join(' ')}`);
    await ip(args);
  }
}

/**
 * The pod network is IPv4 only (FLANNEL_IPV6_* is reported as unsupported).
 * Left on, the kernel would give the device a link-local address and send
 * router solicitations and MLD reports into it, which the data plane can only
 * drop. Done before the link comes up, so not one such packet is sent.
 */
async function disableIpv6(tunName: string, log: (line: string) => void): Promise<void> {
  const { writeFile } = await import('node:fs/promises');
  const path = `/proc/sys/net/ipv6/conf/${tunName}/disable_ipv6`;
  try {
    await writeFile(path, '1');
    log(`sysctl net.ipv6.conf.${tunName}.disable_ipv6=1`);
  } catch {
    // No IPv6 in this kernel or namespace: nothing to disable.
  }
}
