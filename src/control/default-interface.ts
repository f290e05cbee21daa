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
