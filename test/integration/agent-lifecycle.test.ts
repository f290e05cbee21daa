// The agent as a process: clear errors on bad input with nothing left behind,
// a clean exit on SIGINT, a device kept for the next agent on SIGTERM and SIGKILL, `cleanup`,
// and refusal to share a TUN device with an agent that would not share it.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createCluster, agentCliPath, type Cluster } from '../../src/testbed/cluster.js';
import { waitForLine, stopChild } from '../../src/testbed/exec.js';

const lifecycle = suite('agent lifecycle');
let cluster: Cluster;

lifecycle.before(async () => {
  cluster = await createCluster({ nodes: 1, dataplane: 'none' });
});
lifecycle.after(async () => {
  await cluster?.destroy();
});

function agentArgs(subnetFile: string, extra: string[] = []): string[] {
  return [agentCliPath, 'up', '--subnet-file', subnetFile, '--leases', cluster.leasesFile, '--public-ip', cluster.node(1).underlayIp, '--workers', '1', ...extra];
}

/** Device names only: link states of the bridge settle on their own and are not ours to compare. */
async function devices(): Promise<string> {
  const { stdout } = await cluster.exec(cluster.node(1).ns, 'ip', ['-o', 'link', 'show']);
  return stdout
    .split('\n')
    .map((line) => line.split(':')[1]?.trim().split('@')[0])
    .filter(Boolean)
    .sort()
    .join(' ');
}

async function routes(): Promise<string> {
  return (await cluster.exec(cluster.node(1).ns, 'ip', ['route', 'show'])).stdout;
}

const brokenFiles: Array<[string, string, RegExp]> = [
  ['missing FLANNEL_SUBNET', 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n', /FLANNEL_SUBNET/],
  ['bad CIDR', 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.300/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n', /:2: FLANNEL_SUBNET/],
  ['bad MTU', 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=big\nFLANNEL_IPMASQ=false\n', /:3: FLANNEL_MTU/],
];

for (const [name, text, expected] of brokenFiles) {
  lifecycle(`a subnet file with ${name} is refused with the key and line, and nothing is created`, async () => {
    const file = join(cluster.tempDir, `broken-${name.replace(/\W+/g, '-')}.env`);
    writeFileSync(file, text);
    const before = { devices: await devices(), routes: await routes() };
    const r = await cluster.exec(cluster.node(1).ns, process.execPath, agentArgs(file), { allowFailure: true, timeoutMs: 20_000 });
    assert.is.not(r.code, 0, 'must exit non-zero');
    assert.match(r.stderr, expected);
    assert.not.match(r.stderr, /\n\s+at /, 'a user error prints no stack trace');
    assert.is(await devices(), before.devices, 'no device left behind');
    assert.is(await routes(), before.routes, 'no route left behind');
  });
}

lifecycle('a broken leases file is refused before any device is created', async () => {
  const leases = join(cluster.tempDir, 'broken-leases.json');
  writeFileSync(leases, '{"10.244.2.0-24": {"PublicIP": "not-an-ip"}}');
  const args = agentArgs(cluster.node(1).subnetFile).map((a) => (a === cluster.leasesFile ? leases : a));
  const r = await cluster.exec(cluster.node(1).ns, process.execPath, args, { allowFailure: true, timeoutMs: 20_000 });
  assert.is.not(r.code, 0);
  assert.match(r.stderr, /PublicIP/);
  assert.not.match(await devices(), /flannel0/);
});

lifecycle('a second agent that would not share the device (--persist-tun off) is refused; SIGINT removes the device and its route and exits 0', async () => {
  const agent = cluster.spawn(cluster.node(1).ns, process.execPath, agentArgs(cluster.node(1).subnetFile));
  await waitForLine(agent, /flannel-udp agent ready/, 15_000);
  assert.match(await devices(), /flannel0/);
  assert.match(await routes(), /10\.244\.0\.0\/16 dev flannel0/);

  const second = await cluster.exec(cluster.node(1).ns, process.execPath, agentArgs(cluster.node(1).subnetFile, ['--persist-tun', 'off']), {
    allowFailure: true,
    timeoutMs: 20_000,
  });
  assert.is.not(second.code, 0, 'the second agent must not start');
  assert.match(second.stderr, /flannel0 already exists/);
  assert.match(await devices(), /flannel0/, 'the first agent keeps its device');

  const exit = await stopChild(agent, 'SIGINT');
  assert.is(exit.code, 0, `agent output:\n${agent.log.tail()}`);
  assert.not.match(await devices(), /flannel0/);
  assert.not.match(await routes(), /flannel0/);
});

lifecycle('SIGTERM and SIGKILL leave flannel0 with its address and route; the next agent attaches without a command; a changed subnet is configured again; cleanup removes it all', async () => {
  const ns = cluster.node(1).ns;
  const first = cluster.spawn(ns, process.execPath, agentArgs(cluster.node(1).subnetFile, ['--ip-masq']));
  await waitForLine(first, /flannel-udp agent ready/, 15_000);
  const routesBefore = await routes();
  assert.is((await stopChild(first, 'SIGTERM')).code, 0, first.log.tail());
  assert.match(await devices(), /flannel0/, 'flannel0 stays after SIGTERM');
  // The same routes; with no agent attached the kernel marks the device's as linkdown (its carrier is off).
  const unmarked = async () => (await routes()).replace(/ linkdown/g, '');
  assert.is(await unmarked(), routesBefore, 'the routes stay as they were');
  const filter = (await cluster.exec(ns, 'iptables', ['-w', '-S'])).stdout;
  assert.match(filter, /-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD/, 'the forward rules stay');
  assert.match((await cluster.exec(ns, 'iptables', ['-w', '-t', 'nat', '-S'])).stdout, /-j FLANNEL-POSTRTG/, 'the masquerade rules stay');

  const second = cluster.spawn(ns, process.execPath, agentArgs(cluster.node(1).subnetFile, ['--ip-masq']));
  await waitForLine(second, /flannel-udp agent ready/, 15_000);
  assert.match(second.log.text(), /flannel0: left by a previous agent; attaching to it/);
  assert.match(second.log.text(), /flannel0: kept from the previous agent with its address, MTU and route/);
  assert.not.match(second.log.text(), /ip addr add/, 'nothing configured again');
  assert.is((await stopChild(second, 'SIGKILL')).signal, 'SIGKILL');
  assert.match(await devices(), /flannel0/, 'flannel0 stays after SIGKILL');
  assert.is(await unmarked(), routesBefore);

  const moved = join(cluster.tempDir, 'moved.env');
  writeFileSync(moved, 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.7.1/24\nFLANNEL_MTU=1400\nFLANNEL_IPMASQ=false\n');
  const third = cluster.spawn(ns, process.execPath, agentArgs(moved));
  await waitForLine(third, /flannel-udp agent ready/, 15_000);
  assert.match(third.log.text(), /configuration changed \(address 10\.244\.1\.0\/16 \(want 10\.244\.7\.0\/16\); MTU 1472 \(want 1400\)\)/);
  const addr = (await cluster.exec(ns, 'ip', ['-o', '-4', 'addr', 'show', 'dev', 'flannel0'])).stdout;
  assert.match(addr, /inet 10\.244\.7\.0\/16/);
  assert.not.match(addr, /10\.244\.1\.0/);
  assert.match(await routes(), /10\.244\.0\.0\/16 dev flannel0 scope link src 10\.244\.7\.0/);

  const refused = await cluster.exec(ns, process.execPath, [agentCliPath, 'cleanup'], { allowFailure: true, timeoutMs: 20_000 });
  assert.is(refused.code, 2, 'cleanup refuses a device an agent runs on');
  assert.match(refused.stderr, /an agent still runs on flannel0/);
  assert.is((await stopChild(third, 'SIGTERM')).code, 0);
  const cleaned = await cluster.exec(ns, process.execPath, [agentCliPath, 'cleanup'], { timeoutMs: 20_000 });
  assert.match(cleaned.stderr, /removed flannel0/);
  assert.not.match(await devices(), /flannel0/);
  assert.not.match(await routes(), /flannel0/);
  assert.not.match((await cluster.exec(ns, 'iptables', ['-w', '-S'])).stdout, /FLANNEL-FWD/);
  assert.not.match((await cluster.exec(ns, 'iptables', ['-w', '-t', 'nat', '-S'])).stdout, /FLANNEL-POSTRTG/);
});

lifecycle('--help documents every flag of up', async () => {
  const r = await cluster.exec(cluster.node(1).ns, process.execPath, [agentCliPath, '--help']);
  for (const flag of ['--subnet-file', '--leases', '--public-ip', '--iface', '--port', '--workers', '--tun']) {
    assert.ok(r.stdout.includes(flag), `--help lacks ${flag}`);
  }
});

lifecycle.run();
