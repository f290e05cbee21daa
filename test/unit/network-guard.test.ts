// The check that keeps a wide Network from taking the node's own addresses,
// routes and gateways into the tunnel (issue 15, defect 1). Pure: the
// addresses and routes are given as `ip -j` would report them.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { makeCidr, parseCidr, parseIPv4 } from '../../src/control/ipv4-address.js';
import { networkConflicts, type HostAddress, type HostRoute } from '../../src/control/network-guard.js';

const cidr = (t: string) => {
  const c = parseCidr(t);
  return makeCidr(c.network, c.prefixLength);
};
const own = cidr('10.244.1.0/24');
const addresses: HostAddress[] = [
  { address: parseIPv4('127.0.0.1'), dev: 'lo' },
  { address: parseIPv4('192.0.2.2'), dev: 'eth0' },
  { address: parseIPv4('10.244.1.1'), dev: 'cni0' },
];
const routes: HostRoute[] = [
  { dst: cidr('0.0.0.0/0'), gateway: parseIPv4('192.0.2.1'), dev: 'eth0', text: 'default via 192.0.2.1 dev eth0' },
  { dst: cidr('192.0.2.0/24'), dev: 'eth0', text: '192.0.2.0/24 dev eth0' },
  { dst: cidr('10.244.1.0/24'), dev: 'cni0', text: '10.244.1.0/24 dev cni0' },
];

const PUBLIC = parseIPv4('192.0.2.2');
const host = (addresses: HostAddress[], routes: HostRoute[], publicIp = PUBLIC) => ({ tunName: 'flannel0', publicIp, addresses, routes });

test('a usual pod network fits: the own subnet (cni0) inside it is expected', () => {
  assert.equal(networkConflicts(cidr('10.244.0.0/16'), own, host(addresses, routes)), []);
});

test('a pod-side bridge still holding an older subnet\'s gateway (the node\'s lease changed) is not a conflict', () => {
  const moved = cidr('10.244.9.0/24');
  assert.equal(networkConflicts(cidr('10.244.0.0/16'), moved, host(addresses, routes)), []);
});

test('0.0.0.0/0 covers the default route and every address of the node', () => {
  const p = networkConflicts(cidr('0.0.0.0/0'), own, host(addresses, routes));
  assert.ok(p.some((l) => /would replace this node's route "default via 192\.0\.2\.1 dev eth0"/.test(l)), p.join('\n'));
  assert.ok(p.some((l) => /contains 192\.0\.2\.2, an address of this node \(eth0\)/.test(l)), p.join('\n'));
  assert.ok(p.some((l) => /contains 127\.0\.0\.1/.test(l)), p.join('\n'));
});

test('a network holding the underlay, or only the default gateway, is refused', () => {
  assert.ok(networkConflicts(cidr('192.0.0.0/8'), own, host(addresses, routes)).length >= 2);
  const gw: HostRoute[] = [{ dst: cidr('0.0.0.0/0'), gateway: parseIPv4('172.16.9.1'), dev: 'eth1', text: 'default via 172.16.9.1 dev eth1' }];
  const p = networkConflicts(cidr('172.16.0.0/16'), own, host([{ address: parseIPv4('192.0.2.2'), dev: 'eth1' }], gw));
  assert.equal(p, ['Network 172.16.0.0/16 contains 172.16.9.1, the gateway of this node\'s route "default via 172.16.9.1 dev eth1"']);
});

test('routes and addresses on the agent\'s own TUN do not count', () => {
  const tun: HostRoute[] = [{ dst: cidr('10.244.0.0/16'), dev: 'flannel0', text: '10.244.0.0/16 dev flannel0' }];
  assert.equal(networkConflicts(cidr('10.244.0.0/16'), own, host([{ address: parseIPv4('10.244.1.0'), dev: 'flannel0' }], tun)), []);
  // The Network's exact prefix on another device, even a pod-side one, would be replaced.
  const other: HostRoute[] = [{ dst: cidr('10.244.0.0/16'), dev: 'wg0', text: '10.244.0.0/16 dev wg0' }];
  assert.match(networkConflicts(cidr('10.244.0.0/16'), own, host([{ address: parseIPv4('10.244.200.1'), dev: 'wg0' }], other)).join(), /would replace this node's route "10\.244\.0\.0\/16 dev wg0", which flannel-udp did not create/);
});

test.run();
