// The DaemonSet's securityContext is enough, and no more than enough: each
// container's process is started here the way a container runtime starts it
// from the manifest (root; the capability bounding set reduced to what
// `capabilities` leaves; no_new_privs for allowPrivilegeEscalation: false),
// using util-linux's setpriv. The agent then runs a two-node namespace cluster
// with --ip-masq and pods ping across it; install-cni, with no capability,
// installs onto root-owned directories. A control run with NET_ADMIN taken
// away shows the restriction is real.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCluster, agentCliPath, type Cluster } from '../../src/testbed/cluster.js';
import { ping } from '../../src/testbed/measure.js';
import { runInNetns, stopChild, waitForLine, type CapturedChild } from '../../src/testbed/exec.js';
import { container, only, readManifest, type Json } from '../support/deploy-manifest.js';

const { objects } = readManifest();
const podSpec = only(objects, 'DaemonSet').spec.template.spec as Json;
const agentSpec = container(podSpec, 'kube-flannel-udp');
const initSpec = container(podSpec, 'install-cni', true);

/** Linux capability numbers (include/uapi/linux/capability.h) of the ones the manifest may name. */
const CAP_BITS: Record<string, number> = { NET_ADMIN: 12, NET_RAW: 13 };

/** setpriv arguments that give a root process what this securityContext gives it in a container. */
function setprivFor(securityContext: Json): string[] {
  assert.is(securityContext.privileged, false);
  assert.equal(securityContext.capabilities.drop, ['ALL'], 'the runtime default set is dropped first');
  const add = (securityContext.capabilities.add ?? []) as string[];
  const bounding = ['-all', ...add.map((c) => `+${c.toLowerCase()}`)].join(',');
  return [`--bounding-set=${bounding}`, '--inh-caps=-all', ...(securityContext.allowPrivilegeEscalation === false ? ['--no-new-privs'] : [])];
}

function effectiveCaps(pid: number): bigint {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').find((l) => l.startsWith('CapEff:'));
  return BigInt(`0x${line!.split(/\s+/)[1]}`);
}

function requireRootAndSetpriv(): void {
  if (process.getuid?.() !== 0) throw new Error('needs root: it runs processes with a reduced capability set and builds network namespaces');
  if (spawnSync('setpriv', ['--version']).status !== 0) throw new Error('needs setpriv (util-linux)');
}

const caps = suite("the DaemonSet's capabilities: the agent needs NET_ADMIN and NET_RAW and nothing else");
let cluster: Cluster | undefined;
const agents: CapturedChild[] = [];

caps.before(async () => {
  requireRootAndSetpriv();
  cluster = await createCluster({ nodes: 2, dataplane: 'none' });
});

caps.after(async () => {
  for (const a of agents) await stopChild(a, 'SIGTERM', 5000).catch(() => undefined);
  await cluster?.destroy();
});

function startAgent(c: Cluster, i: number, setpriv: string[]): CapturedChild {
  const node = c.node(i);
  const extra = (agentSpec.args as string[]).filter((a) => a === '--ip-masq');
  assert.equal(extra, ['--ip-masq'], 'the manifest masquerades');
  const child = c.spawn(node.ns, 'setpriv', [
    ...setpriv, '--', process.execPath, agentCliPath, 'up',
    '--subnet-file', node.subnetFile, '--leases', c.leasesFile, '--public-ip', node.underlayIp, ...extra,
  ]);
  agents.push(child);
  return child;
}

caps('control: without NET_ADMIN the agent cannot start, and says why', async () => {
  const c = cluster!;
  const withoutAdmin = setprivFor({ ...agentSpec.securityContext, capabilities: { drop: ['ALL'], add: ['NET_RAW'] } });
  const child = startAgent(c, 1, withoutAdmin);
  const { code } = await child.exited;
  assert.is.not(code, 0);
  assert.match(child.log.tail(), /EPERM|not permitted|permission/i);
});

caps("with the manifest's securityContext the agent forwards, masquerades, and holds exactly NET_ADMIN and NET_RAW", async () => {
  const c = cluster!;
  const setpriv = setprivFor(agentSpec.securityContext);
  const started = [startAgent(c, 1, setpriv), startAgent(c, 2, setpriv)];
  for (const a of started) await waitForLine(a, /flannel-udp agent ready/, 30_000);
  const wanted = (agentSpec.securityContext.capabilities.add as string[]).reduce((m, name) => m | (1n << BigInt(CAP_BITS[name]!)), 0n);
  for (const a of started) assert.is(effectiveCaps(a.pid!).toString(16), wanted.toString(16), 'CapEff of the agent');
  const there = await ping(c, c.pod(1).ns, c.pod(2).ip, { count: 5 });
  const back = await ping(c, c.pod(2).ns, c.pod(1).ip, { count: 5 });
  assert.is(there.lossPct, 0, 'pod1 -> pod2');
  assert.is(back.lossPct, 0, 'pod2 -> pod1');
  const { stdout } = await runInNetns(c.node(1).ns, 'iptables', ['-w', '-t', 'nat', '-S', 'POSTROUTING']);
  assert.match(stdout, /-j FLANNEL-POSTRTG/, 'the masquerade rules were installed with these capabilities');
});

caps.run();

const install = suite("install-cni with the init container's securityContext: no capability at all");

install('installs onto root-owned host directories as root without any capability', () => {
  requireRootAndSetpriv();
  const root = mkdtempSync(join(tmpdir(), 'deploy-caps-'));
  try {
    // kubelet creates DirectoryOrCreate hostPaths 0755 root; the ConfigMap is projected read-only.
    for (const d of ['opt/cni/bin', 'etc/cni/net.d', 'opt/flannel-udp', 'etc/kube-flannel']) mkdirSync(join(root, d), { recursive: true, mode: 0o755 });
    const cm = only(objects, 'ConfigMap');
    writeFileSync(join(root, 'etc/kube-flannel/cni-conf.json'), cm.data['cni-conf.json']);
    chmodSync(join(root, 'etc/kube-flannel/cni-conf.json'), 0o444);
    const args = (initSpec.args as string[]).slice(1).map((a) => a.replace(/=\//, `=${root}/`));
    const r = spawnSync('setpriv', [...setprivFor(initSpec.securityContext), '--', process.execPath, agentCliPath, 'install-cni', ...args], { encoding: 'utf8' });
    assert.is(r.status, 0, r.stderr);
    assert.ok(statSync(join(root, 'opt/cni/bin/flannel')).mode & 0o100);
    assert.ok(existsSync(join(root, 'etc/cni/net.d/10-flannel.conflist')));
    const probe = spawnSync('setpriv', [...setprivFor(initSpec.securityContext), '--', 'grep', '^CapEff:', '/proc/self/status'], { encoding: 'utf8' });
    assert.match(probe.stdout, /^CapEff:\s+0+$/m, 'the same setpriv really leaves no capability');
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

install.run();
