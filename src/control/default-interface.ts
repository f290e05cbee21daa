// flanneld's choice of public interface when none is given (no --iface, no
// --public-ip): the interface of the IPv4 default route, and its first IPv4
// address. Read from /proc/net/route (this network namespace's table), which
// the kernel writes as one line per route: Iface, Destination, Gateway, Flags,
// RefCnt, Use, Metric, Mask… with addresses in hex, host byte order.

import { readFileSync } from 'node:fs';
import { networkInterfaces } from 'node:os';

const RTF_UP = 0x1;

/** The interface of the default route with the lowest metric, or undefined. */
export function defaultRouteInterface(procNetRoute: string): string | undefined {
  let best: { iface: string; metric: number } | undefined;
  for (const line of procNetRoute.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 8) continue;
    const [iface, destination, , flags, , , metric, mask] = f;
    if (destination !== '00000000' || mask !== '00000000') continue;
    if ((parseInt(flags, 16) & RTF_UP) === 0) continue;
    const m = Number(metric);
    if (best === undefined || m < best.metric) best = { iface, metric: m };
  }
  return best?.iface;
}

/** The default-route interface and its first IPv4 address; throws with what to pass instead. */
export function defaultInterfaceAddress(): { iface: string; address: string } {
  let table = '';
  try {
    table = readFileSync('/proc/net/route', 'utf8');
  } catch {
    // no procfs: handled as "no default route"
  }
  const iface = defaultRouteInterface(table);
  if (iface === undefined) throw new Error('no IPv4 default route to take the public interface from: give --iface or --public-ip');
  const v4 = networkInterfaces()[iface]?.find((a) => a.family === 'IPv4');
  if (!v4) throw new Error(`the default route's interface ${iface} has no IPv4 address: give --iface or --public-ip`);
  return { iface, address: v4.address };
}

/** flanneld's --iface (repeatable, a name or an address), --iface-regex (repeatable) and --iface-can-reach. */
export interface InterfaceChoice {
  ifaces: readonly string[];
  regexes: readonly string[];
  canReach?: string;
}

export interface ChosenInterface {
  iface: string;
  address: string;
  /** which flag matched, for the log: '--iface eth1' */
  by: string;
}

type Interfaces = ReturnType<typeof networkInterfaces>;

function firstIPv4(addrs: Interfaces[string]): string | undefined {
  return addrs?.find((a) => a.family === 'IPv4')?.address;
}

/**
 * As flanneld picks its external interface: every --iface in order (an IPv4
 * address names the interface that holds it, and is the address used; a
 * name gives its first IPv4 address), then every --iface-regex in order
 * (against each interface's IPv4 addresses, then its name), then
 * --iface-can-reach (the interface and source address of `ip route get`).
 * The first match wins; `tried` collects why the others did not.
 */
export async function chooseInterface(
  choice: InterfaceChoice,
  interfaces: Interfaces = networkInterfaces(),
  routeGet: (ip: string) => Promise<{ dev?: string; prefsrc?: string }> = ipRouteGet,
): Promise<ChosenInterface> {
  const tried: string[] = [];
  for (const want of choice.ifaces) {
    if (/^\d{1,3}(\.\d{1,3}){3}$/.test(want)) {
      const holder = Object.entries(interfaces).find(([, addrs]) => addrs?.some((a) => a.family === 'IPv4' && a.address === want));
      if (holder) return { iface: holder[0], address: want, by: `--iface ${want}` };
      tried.push(`--iface ${want}: no interface has this address`);
      continue;
    }
    const addrs = interfaces[want];
    const v4 = firstIPv4(addrs);
    if (v4) return { iface: want, address: v4, by: `--iface ${want}` };
    tried.push(addrs ? `--iface ${want}: no IPv4 address` : `--iface ${want}: no such interface`);
  }
  for (const source of choice.regexes) {
    let re: RegExp;
    try {
      re = new RegExp(source);
    } catch (err) {
      throw new Error(`--iface-regex ${source}: ${(err as Error).message}`);
    }
    let found: ChosenInterface | undefined;
    for (const [name, addrs] of Object.entries(interfaces)) {
      const byAddress = addrs?.find((a) => a.family === 'IPv4' && re.test(a.address));
      if (byAddress) found = { iface: name, address: byAddress.address, by: `--iface-regex ${source}` };
      else if (re.test(name) && firstIPv4(addrs)) found = { iface: name, address: firstIPv4(addrs) as string, by: `--iface-regex ${source}` };
      if (found) return found;
    }
    tried.push(`--iface-regex ${source}: no interface address or name matches`);
  }
  if (choice.canReach !== undefined) {
    try {
      const route = await routeGet(choice.canReach);
      const address = route.prefsrc ?? (route.dev ? firstIPv4(interfaces[route.dev]) : undefined);
      if (route.dev && address) return { iface: route.dev, address, by: `--iface-can-reach ${choice.canReach}` };
      tried.push(`--iface-can-reach ${choice.canReach}: the route has no interface with an IPv4 address`);
    } catch (err) {
      tried.push(`--iface-can-reach ${choice.canReach}: ${(err as Error).message}`);
    }
  }
  throw new Error(`no interface matches: ${tried.join('; ')}`);
}

async function ipRouteGet(ip: string): Promise<{ dev?: string; prefsrc?: string }> {
  const { ip: runIp } = await import('./routes.js');
  const routes = JSON.parse(await runIp(['-j', 'route', 'get', ip])) as { dev?: string; prefsrc?: string }[];
  return routes[0] ?? {};
}
