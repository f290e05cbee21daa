// Addresses, MTU and routes of the TUN device, set with iproute2 exactly as a
// person would type them (and as flannel's udp backend does through netlink):
// a learner can read every step in the agent's log and repeat it by hand.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { formatCidr, formatIPv4, makeCidr, parseIPv4, type Cidr } from './ipv4-address.js';
import { networkConflicts, type HostAddress, type HostRoute } from './network-guard.js';
import { type Cidr6, cidr6Contains, formatCidr6, formatIPv6, parseCidr6 } from './ipv6-address.js';

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
  /** Dual-stack: this node's IPv6 subnet and the IPv6 network, configured the same way. */
  ipv6?: { subnet: Cidr6; network: Cidr6 };
  /** An IPv6-only node: no IPv4 address or route (subnet and network are the zero 0.0.0.0/0). */
  ipv6Only?: boolean;
}

/** The commands configureTun runs, for the log and the docs. */
export function tunCommands(a: TunAddressing): string[][] {
  const address = `${formatIPv4(a.subnet.network)}/${a.network.prefixLength}`;
  const network = `${formatIPv4(a.network.network)}/${a.network.prefixLength}`;
  const v6 = a.ipv6;
  return [
    ...(a.ipv6Only ? [] : [['addr', 'add', address, 'dev', a.tunName]]),
    // No duplicate address detection: the address is this node's by its lease.
    // (addrgenmode none comes first of all, in configureTun: see enableIpv6.)
    ...(v6 ? [['-6', 'addr', 'add', ipv6TunAddress(v6), 'dev', a.tunName, 'nodad']] : []),
    ['link', 'set', 'dev', a.tunName, 'mtu', String(a.mtu), 'up'],
    // Explicit, like flannel: the kernel adds this route with the address,
    // unless another device already had one for the same prefix. Replaced
    // only when absent or on our device (configureTun checks first).
    ...(a.ipv6Only ? [] : [['route', 'replace', network, 'dev', a.tunName, 'scope', 'link', 'src', formatIPv4(a.subnet.network)]]),
    ...(v6 ? [['-6', 'route', 'replace', formatCidr6(v6.network), 'dev', a.tunName, 'src', formatIPv6(v6.subnet.network)]] : []),
  ];
}

/** As for IPv4: the subnet's network address with the whole IPv6 network's prefix length (fd00:10:244:1::/48). */
function ipv6TunAddress(v6: { subnet: Cidr6; network: Cidr6 }): string {
  return `${formatIPv6(v6.subnet.network)}/${v6.network.prefixLength}`;
}

/** This node's IPv6 addresses (link-local left out), as `ip -j -6 addr` reports them. */
async function hostIpv6Addresses(): Promise<{ address: Cidr6; dev: string }[]> {
  const links = JSON.parse(await ip(['-j', '-6', 'addr', 'show'])) as { ifname: string; addr_info?: { family: string; local: string; prefixlen: number; scope?: string }[] }[];
  return links.flatMap((l) =>
    (l.addr_info ?? []).filter((a) => a.family === 'inet6' && a.scope !== 'link').map((a) => ({ address: parseCidr6(`${a.local}/128`), dev: l.ifname })),
  );
}

/**
 * The IPv6 counterpart of checkNetworkFitsHost: the IPv6 network must not
 * hold an address of this node outside its own IPv6 subnet (on a device other
 * than the TUN), nor replace another device's route for the same prefix.
 */
export async function checkIpv6NetworkFitsHost(a: { tunName: string; ipv6: { subnet: Cidr6; network: Cidr6 } }): Promise<void> {
  const problems: string[] = [];
  const net = formatCidr6(a.ipv6.network);
  const addresses = await hostIpv6Addresses();
  // As for IPv4 (network-guard.ts): a device whose addresses all lie inside the network is pod-side (cni0).
  const hostSide = new Set(addresses.filter((h) => !cidr6Contains(a.ipv6.network, h.address.network)).map((h) => h.dev));
  for (const h of addresses) {
    if (h.dev === a.tunName || !hostSide.has(h.dev) || cidr6Contains(a.ipv6.subnet, h.address.network)) continue;
    if (cidr6Contains(a.ipv6.network, h.address.network)) problems.push(`IPv6 network ${net} contains ${formatIPv6(h.address.network)}, an address of this node (${h.dev})`);
  }
  for (const holder of await ipv6RouteHolders(a.ipv6.network, a.tunName)) {
    problems.push(`IPv6 network ${net} would replace this node's route "${holder}", which flannel-udp did not create`);
  }
  if (problems.length > 0) {
    throw new NetworkConflictError(
      `refusing to route the IPv6 pod network into ${a.tunName}, it would take this node off its network: ${problems.join('; ')}. ` +
        'Fix the IPv6Network in the network config (or FLANNEL_IPV6_NETWORK in the subnet file).',
    );
  }
}

/** Routes for exactly this IPv6 prefix on devices other than the TUN, as text. */
async function ipv6RouteHolders(network: Cidr6, tunName: string): Promise<string[]> {
  const routes = JSON.parse(await ip(['-j', '-6', 'route', 'show', 'table', 'main', 'exact', formatCidr6(network)])) as { dst: string; dev?: string; type?: string }[];
  return routes.filter((r) => r.dev !== tunName && r.type !== 'unreachable').map((r) => `${r.dst}${r.dev ? ` dev ${r.dev}` : ''}`);
}

/** Routing the Network into the TUN would take over this node's own traffic: refused, with every reason. */
export class NetworkConflictError extends Error {
  override name = 'NetworkConflictError';
}

function parseRouteDst(dst: string): Cidr {
  if (dst === 'default') return makeCidr(0, 0);
  const [addr, len] = dst.split('/');
  return makeCidr(parseIPv4(addr), len === undefined ? 32 : Number(len));
}

/** This node's IPv4 addresses, as `ip -j -4 addr` reports them. */
export async function hostAddresses(): Promise<HostAddress[]> {
  const links = JSON.parse(await ip(['-j', '-4', 'addr', 'show'])) as { ifname: string; addr_info?: { family: string; local: string }[] }[];
  return links.flatMap((l) => (l.addr_info ?? []).filter((a) => a.family === 'inet').map((a) => ({ address: parseIPv4(a.local), dev: l.ifname })));
}

/** This node's IPv4 routes of the main table, as `ip -j -4 route` reports them. */
export async function hostRoutes(filter: string[] = []): Promise<HostRoute[]> {
  const routes = JSON.parse(await ip(['-j', '-4', 'route', 'show', 'table', 'main', ...filter])) as { dst: string; dev?: string; gateway?: string; type?: string }[];
  const out: HostRoute[] = [];
  for (const r of routes) {
    let dst: Cidr;
    try {
      dst = parseRouteDst(r.dst);
    } catch {
      continue; // nothing IPv4 to compare
    }
    const text = [r.type && r.type !== 'unicast' ? r.type : '', r.dst, r.gateway ? `via ${r.gateway}` : '', r.dev ? `dev ${r.dev}` : ''].filter((w) => w !== '').join(' ');
    out.push({ dst, dev: r.dev, gateway: r.gateway ? parseIPv4(r.gateway) : undefined, text });
  }
  return out;
}

/** Throws NetworkConflictError when the Network would cover this node's addresses, routes or gateways. */
export async function checkNetworkFitsHost(a: Pick<TunAddressing, 'tunName' | 'subnet' | 'network'> & { publicIp: number }): Promise<void> {
  const problems = networkConflicts(a.network, a.subnet, {
    tunName: a.tunName,
    publicIp: a.publicIp,
    addresses: await hostAddresses(),
    routes: await hostRoutes(),
  });
  if (problems.length > 0) {
    throw new NetworkConflictError(
      `refusing to route the pod network into ${a.tunName}, it would take this node off its network: ${problems.join('; ')}. ` +
        'Fix the Network in the network config (or FLANNEL_NETWORK in the subnet file).',
    );
  }
}

/**
 * What differs between a device kept from an earlier agent and what this
 * agent would configure: its IPv4 addresses, MTU, link state and the
 * Network's route. Empty: the device can be used as it is.
 */
export async function keptTunDifferences(a: TunAddressing): Promise<string[]> {
  const links = JSON.parse(await ip(['-j', 'addr', 'show', 'dev', a.tunName])) as { mtu?: number; flags?: string[]; addr_info?: { family: string; local: string; prefixlen: number }[] }[];
  const link = links[0];
  if (!link) return [`${a.tunName} is gone`];
  const want = `${formatIPv4(a.subnet.network)}/${a.network.prefixLength}`;
  const have = (link.addr_info ?? []).filter((x) => x.family === 'inet').map((x) => `${x.local}/${x.prefixlen}`);
  const out: string[] = [];
  if (a.ipv6Only) {
    if (have.length !== 0) out.push(`address ${have.join(',')} (want none: IPv6-only)`);
  } else if (have.length !== 1 || have[0] !== want) {
    out.push(`address ${have.join(',') || 'none'} (want ${want})`);
  }
  const have6 = (link.addr_info ?? []).filter((x) => x.family === 'inet6').map((x) => `${x.local}/${x.prefixlen}`);
  if (a.ipv6) {
    const want6 = ipv6TunAddress(a.ipv6);
    if (have6.length !== 1 || have6[0] !== want6) out.push(`IPv6 address ${have6.join(',') || 'none'} (want ${want6})`);
    const routes6 = JSON.parse(await ip(['-j', '-6', 'route', 'show', 'table', 'main', 'exact', formatCidr6(a.ipv6.network)])) as { dev?: string }[];
    if (!routes6.some((r) => r.dev === a.tunName)) out.push(`no route for ${formatCidr6(a.ipv6.network)}`);
  } else if (have6.length > 0) {
    out.push(`IPv6 address ${have6.join(',')} (want none)`);
  }
  if (link.mtu !== a.mtu) out.push(`MTU ${link.mtu} (want ${a.mtu})`);
  if (!(link.flags ?? []).includes('UP')) out.push('link down');
  if (!a.ipv6Only) {
    const route = await hostRoutes(['exact', formatCidr(a.network)]);
    if (!route.some((r) => r.dev === a.tunName)) out.push(`no route for ${formatCidr(a.network)}`);
  }
  return out;
}

/**
 * The device an earlier agent left (tun-device.ts, persistent): used as it is
 * when it matches, so a restart runs no command at all; reconfigured when the
 * subnet, Network or MTU changed (its old addresses flushed first).
 */
export async function configureKeptTun(a: TunAddressing, log: (line: string) => void): Promise<void> {
  const diff = await keptTunDifferences(a);
  if (diff.length === 0) {
    log(`${a.tunName}: kept from the previous agent with its address, MTU and route`);
    return;
  }
  log(`${a.tunName}: kept from the previous agent but the configuration changed (${diff.join('; ')}); configuring it again`);
  log(`ip addr flush dev ${a.tunName}`);
  await ip(['addr', 'flush', 'dev', a.tunName]);
  await configureTun(a, log);
}

export async function configureTun(a: TunAddressing, log: (line: string) => void): Promise<void> {
  if (a.ipv6) await enableIpv6(a.tunName, log);
  else await disableIpv6(a.tunName, log);
  for (const args of tunCommands(a)) {
    if (args[0] === '-6' && args[1] === 'route') {
      const holders = await ipv6RouteHolders(a.ipv6!.network, a.tunName);
      if (holders.length > 0) throw new NetworkConflictError(`refusing to replace the route "${holders[0]}": flannel-udp did not create it`);
    }
    if (args[0] === 'route') {
      // Never replace a route another device holds (a race since checkNetworkFitsHost, or a prefix route it did not see).
      const network = formatCidr(a.network);
      const holders = (await hostRoutes(['exact', network])).filter((r) => r.dev !== a.tunName);
      if (holders.length > 0) throw new NetworkConflictError(`refusing to replace the route "${holders[0].text}": flannel-udp did not create it`);
    }
    log(`ip ${args.join(' ')}`);
    await ip(args);
  }
}

/**
 * Dual-stack: IPv6 on, in case a kept device or the namespace default had it
 * off. addrgenmode none first, while IPv6 is still off: the device never gets
 * a link-local address, so no router solicitation is ever sent into the
 * tunnel, even when a kept device is already up.
 */
async function enableIpv6(tunName: string, log: (line: string) => void): Promise<void> {
  const { writeFile } = await import('node:fs/promises');
  log(`ip link set dev ${tunName} addrgenmode none`);
  await ip(['link', 'set', 'dev', tunName, 'addrgenmode', 'none']);
  const path = `/proc/sys/net/ipv6/conf/${tunName}/disable_ipv6`;
  try {
    await writeFile(path, '0');
    log(`sysctl net.ipv6.conf.${tunName}.disable_ipv6=0`);
  } catch (err) {
    throw new Error(`cannot enable IPv6 on ${tunName} (${path}: ${(err as Error).message}): is IPv6 disabled in this kernel?`);
  }
}

/**
 * An IPv4-only pod network (no FLANNEL_IPV6_* in the subnet file).
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
