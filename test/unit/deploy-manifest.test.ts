// deploy/kube-flannel-udp.yml, checked offline: every object against the
// Kubernetes OpenAPI schemas (kubernetes-models) and for unknown fields (as
// kube-apiserver's strict field validation), the RBAC rules exactly flannel's,
// the ConfigMap's cni-conf.json and net-conf.json through our own parsers, the
// DaemonSet wired as kube-flannel's, and the init container's install-cni run
// for real with the manifest's arguments into a temp directory.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Namespace } from 'kubernetes-models/v1/Namespace';
import { ServiceAccount } from 'kubernetes-models/v1/ServiceAccount';
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { ClusterRole } from 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRole';
import { ClusterRoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRoleBinding';
import { DaemonSet } from 'kubernetes-models/apps/v1/DaemonSet';
import { unknownFields } from '../support/kube-strict-fields.js';
import { container, loadManifest, only, readManifest, repoRoot, type Json } from '../support/deploy-manifest.js';
import { checkFlannelConfList } from '../../src/cni/conflist-check.js';
import { pluginConfig } from '../../src/cni/chain.js';
import { parseFlannelNetConf } from '../../src/cni/flannel-conf.js';
import { CONFLIST_FILE } from '../../src/cni/install.js';
import { parseNetworkConfig } from '../../src/control/network-config.js';
import { formatCidr } from '../../src/control/ipv4-address.js';

const repo = repoRoot;
const cliPath = join(repo, 'dist/src/cli.js');

const { text, objects } = readManifest();
const kindOf = (kind: string): Json => only(objects, kind);

const MODELS: Record<string, { model: new (o: any) => { validate(): void }; type: string }> = {
  'v1/Namespace': { model: Namespace, type: 'V1Namespace' },
  'v1/ServiceAccount': { model: ServiceAccount, type: 'V1ServiceAccount' },
  'v1/ConfigMap': { model: ConfigMap, type: 'V1ConfigMap' },
  'rbac.authorization.k8s.io/v1/ClusterRole': { model: ClusterRole, type: 'V1ClusterRole' },
  'rbac.authorization.k8s.io/v1/ClusterRoleBinding': { model: ClusterRoleBinding, type: 'V1ClusterRoleBinding' },
  'apps/v1/DaemonSet': { model: DaemonSet, type: 'V1DaemonSet' },
};

/** Every problem with one object: schema errors and unknown fields. */
function problems(obj: Json): string[] {
  const entry = MODELS[`${obj.apiVersion}/${obj.kind}`];
  if (!entry) return [`${obj.apiVersion} ${obj.kind}: not a kind this manifest should hold`];
  const out: string[] = [];
  try {
    new entry.model(obj).validate();
  } catch (err) {
    out.push(`schema: ${(err as Error).message}`);
  }
  for (const f of unknownFields(obj, entry.type)) out.push(`unknown field ${f}`);
  return out;
}

const daemonSet = kindOf('DaemonSet');
const podSpec = daemonSet.spec.template.spec as Json;
const agent = container(podSpec, 'kube-flannel-udp');
const init = container(podSpec, 'install-cni', true);
const configMap = kindOf('ConfigMap');

test('the YAML stream reads the same as YAML 1.1 and 1.2, objects in kube-flannel.yml order', () => {
  assert.equal(loadManifest(text, '1.2'), objects);
  assert.equal(
    objects.map((o) => o.kind),
    ['Namespace', 'ServiceAccount', 'ClusterRole', 'ClusterRoleBinding', 'ConfigMap', 'DaemonSet'],
  );
});

test('every object validates against the Kubernetes OpenAPI schemas and has no unknown field', () => {
  for (const obj of objects) assert.equal(problems(obj), [], `${obj.kind} ${obj.metadata?.name}`);
});

test('the validation is not vacuous: a misspelt field, a wrong type and a missing field are each caught', () => {
  const misspelt = structuredClone(daemonSet);
  misspelt.spec.template.spec.hostNetwrok = true;
  assert.equal(problems(misspelt), ['unknown field spec.template.spec.hostNetwrok']);
  const wrongType = structuredClone(daemonSet);
  wrongType.spec.template.spec.containers[0].livenessProbe.httpGet.port = true;
  assert.match(problems(wrongType).join('\n'), /schema: .*livenessProbe\/httpGet\/port/);
  const missing = structuredClone(daemonSet);
  delete missing.spec.selector;
  assert.match(problems(missing).join('\n'), /must have required property selector/);
  const cm = structuredClone(configMap);
  cm.data.extra = 1;
  assert.match(problems(cm).join('\n'), /data\/extra must be string/);
});

test('names agree: one namespace for everything namespaced, the binding ties our role to our service account', () => {
  const ns = kindOf('Namespace').metadata.name;
  for (const o of objects.filter((x) => ['ServiceAccount', 'ConfigMap', 'DaemonSet'].includes(x.kind))) assert.is(o.metadata.namespace, ns, o.kind);
  const sa = kindOf('ServiceAccount').metadata.name;
  const binding = kindOf('ClusterRoleBinding');
  assert.equal(binding.roleRef, { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: kindOf('ClusterRole').metadata.name });
  assert.equal(binding.subjects, [{ kind: 'ServiceAccount', name: sa, namespace: ns }]);
  assert.is(podSpec.serviceAccountName, sa);
  // The DaemonSet's selector selects its own pods.
  for (const [k, v] of Object.entries(daemonSet.spec.selector.matchLabels)) assert.is(daemonSet.spec.template.metadata.labels[k], v);
  assert.is(podSpec.volumes.find((v: Json) => v.name === 'flannel-cfg').configMap.name, configMap.metadata.name);
  // Our own names, so flannel's objects can stay while switching over (README, "Kubernetes").
  for (const o of objects) assert.not.ok(['flannel', 'kube-flannel', 'kube-flannel-cfg', 'kube-flannel-ds'].includes(o.metadata.name), `${o.kind} ${o.metadata.name} collides with kube-flannel.yml`);
});

test("the ClusterRole grants exactly flannel's: pods get; nodes get, list, watch; nodes/status patch", () => {
  const rules = (kindOf('ClusterRole').rules as Json[]).flatMap((r) =>
    (r.apiGroups as string[]).flatMap((g) => (r.resources as string[]).flatMap((res) => (r.verbs as string[]).map((v) => `${g || 'core'} ${res} ${v}`))),
  );
  assert.equal(rules.sort(), ['core nodes get', 'core nodes list', 'core nodes watch', 'core nodes/status patch', 'core pods get']);
  for (const r of kindOf('ClusterRole').rules as Json[]) assert.not.ok('resourceNames' in r || 'nonResourceURLs' in r);
});

test("cni-conf.json is kube-flannel's cbr0 list and our flannel plugin accepts it", () => {
  const source = configMap.data['cni-conf.json'] as string;
  const list = checkFlannelConfList(source, 'cni-conf.json');
  assert.equal(JSON.parse(source), {
    name: 'cbr0',
    cniVersion: '0.3.1',
    plugins: [
      { type: 'flannel', delegate: { hairpinMode: true, isDefaultGateway: true } },
      { type: 'portmap', capabilities: { portMappings: true } },
    ],
  });
  // What the runtime hands the flannel plugin, parsed as the plugin parses it.
  const conf = parseFlannelNetConf(pluginConfig(list, list.plugins[0]!, { containerId: 'c', netns: '/proc/1/ns/net', ifName: 'eth0' }), list.cniVersion);
  assert.is(conf.name, 'cbr0');
  assert.equal(conf.delegate, { hairpinMode: true, isDefaultGateway: true });
  assert.is(conf.subnetFile, '/run/flannel/subnet.env');
});

test('net-conf.json is a network config our parser accepts: 10.244.0.0/16 over the udp backend', () => {
  const config = parseNetworkConfig(configMap.data['net-conf.json'], 'net-conf.json');
  assert.is(formatCidr(config.network), '10.244.0.0/16');
  assert.is(config.backendType, 'udp');
  assert.is(config.subnetLen, 24);
  assert.equal(config.notes, []);
});

test('the DaemonSet: host network, node-critical, every taint tolerated, Linux nodes', () => {
  assert.is(podSpec.hostNetwork, true);
  assert.is(podSpec.priorityClassName, 'system-node-critical');
  assert.equal(podSpec.tolerations, [{ operator: 'Exists' }], 'no key and no effect: every taint');
  const terms = podSpec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms;
  assert.equal(terms, [{ matchExpressions: [{ key: 'kubernetes.io/os', operator: 'In', values: ['linux'] }] }]);
});

test('the agent: kube subnet manager, masquerade, health port 8081 probed at /healthz and /readyz, its node from the downward API', () => {
  assert.equal(agent.command, ['/app/bin/flannel-udp']);
  assert.is(agent.args[0], 'up');
  for (const flag of ['--kube-subnet-mgr', '--ip-masq', '--healthz-port=8081']) assert.ok(agent.args.includes(flag), flag);
  const port = Number(/^--healthz-port=(\d+)$/.exec(agent.args.find((a: string) => a.startsWith('--healthz-port=')))![1]);
  assert.equal(agent.livenessProbe.httpGet, { path: '/healthz', port });
  assert.equal(agent.readinessProbe.httpGet, { path: '/readyz', port });
  const env = Object.fromEntries((agent.env as Json[]).map((e) => [e.name, e.valueFrom?.fieldRef?.fieldPath]));
  assert.equal(env, { NODE_NAME: 'spec.nodeName', POD_NAME: 'metadata.name', POD_NAMESPACE: 'metadata.namespace', POD_IP: 'status.podIP' });
  // Kubernetes expands $(VAR) in args from the container's env: the public IP is the host-network pod's, the node's.
  assert.ok(agent.args.includes('--public-ip=$(POD_IP)'));
  assert.ok(agent.resources.requests.cpu && agent.resources.requests.memory, 'resource requests');
  assert.equal(Object.keys(agent.resources.limits), ['memory'], 'a memory limit only: a CPU limit throttles the data plane');
  const mib = (q: string) => Number(/^(\d+)Mi$/.exec(q)![1]);
  // test/integration/memory-limit.test.ts runs a transfer under the limit; the request is what an agent uses.
  assert.ok(mib(agent.resources.limits.memory) >= mib(agent.resources.requests.memory), 'limit >= request');
});

test("every flag the containers pass is one the CLI documents in its --help (the agent's and install-cni's)", () => {
  for (const [c, command] of [[agent, 'up'], [init, 'install-cni']] as const) {
    assert.is(c.args[0], command);
    const help = spawnSync(process.execPath, [cliPath, command, '--help'], { encoding: 'utf8' });
    assert.is(help.status, 0, help.stderr);
    for (const arg of c.args.slice(1) as string[]) {
      const flag = /^(--[a-z0-9-]+)/.exec(arg)?.[1];
      assert.ok(flag, `${command}: "${arg}" is not a --flag`);
      assert.ok(new RegExp(`^\\s+(-\\w, )?${flag}\\b`, 'm').test(help.stdout), `${command} --help does not document ${flag}`);
    }
  }
});

test('least privilege: not privileged, NET_ADMIN and NET_RAW only for the agent, nothing for install-cni', () => {
  assert.equal(agent.securityContext, {
    privileged: false,
    allowPrivilegeEscalation: false,
    capabilities: { drop: ['ALL'], add: ['NET_ADMIN', 'NET_RAW'] },
  });
  assert.equal(init.securityContext, { privileged: false, allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] } });
  assert.not.ok(podSpec.hostPID || podSpec.hostIPC, 'no host PID or IPC namespace');
});

/** container mountPath -> the volume behind it. */
function mounts(container: Json): Map<string, Json> {
  const volumes = new Map((podSpec.volumes as Json[]).map((v) => [v.name, v]));
  return new Map(
    (container.volumeMounts as Json[]).map((m) => {
      const v = volumes.get(m.name);
      if (!v) throw new Error(`${container.name}: volumeMount ${m.name} has no volume`);
      return [m.mountPath.replace(/\/$/, ''), v];
    }),
  );
}

test('mounts: /dev/net/tun, /run/flannel, /run/xtables.lock and the config for the agent; the CNI directories for install-cni', () => {
  const a = mounts(agent);
  assert.equal(a.get('/dev/net/tun')?.hostPath, { path: '/dev/net/tun', type: 'CharDevice' });
  assert.equal(a.get('/run/flannel')?.hostPath, { path: '/run/flannel', type: 'DirectoryOrCreate' });
  assert.equal(a.get('/run/xtables.lock')?.hostPath, { path: '/run/xtables.lock', type: 'FileOrCreate' });
  assert.ok(a.get('/etc/kube-flannel')?.configMap, 'net-conf.json at /etc/kube-flannel/');
  const i = mounts(init);
  for (const dir of ['/opt/cni/bin', '/etc/cni/net.d', '/opt/flannel-udp']) assert.is(i.get(dir)?.hostPath?.path, dir, `${dir}: a host directory at the same path`);
  assert.ok(i.get('/etc/kube-flannel')?.configMap, 'cni-conf.json at /etc/kube-flannel/');
  const used = new Set([...(agent.volumeMounts as Json[]), ...(init.volumeMounts as Json[])].map((m) => m.name));
  assert.equal((podSpec.volumes as Json[]).map((v) => v.name).filter((n) => !used.has(n)), [], 'no unused volume');
});

test("install-cni with the init container's own arguments, host paths under a temp root: plugin, conflist and runtime installed", () => {
  assert.equal(init.command, ['/app/bin/flannel-udp']);
  assert.is(init.args[0], 'install-cni');
  const root = mkdtempSync(join(tmpdir(), 'deploy-install-cni-'));
  try {
    const i = mounts(init);
    // Every path argument must be inside a mount, or the install would land in the container's own filesystem.
    const pathArgs = (init.args as string[]).slice(1).filter((a) => a.includes('=/'));
    assert.ok(pathArgs.length >= 4);
    for (const a of pathArgs) {
      const path = a.slice(a.indexOf('=') + 1);
      assert.ok([...i.keys()].some((m) => path === m || path.startsWith(`${m}/`)), `${a} is not on a mounted volume`);
    }
    // The ConfigMap as the kubelet projects it.
    mkdirSync(join(root, 'etc/kube-flannel'), { recursive: true });
    for (const [k, v] of Object.entries(configMap.data as Record<string, string>)) writeFileSync(join(root, 'etc/kube-flannel', k), v);
    const args = (init.args as string[]).slice(1).map((a) => a.replace(/=\//, `=${root}/`));
    const r = spawnSync(process.execPath, [cliPath, 'install-cni', ...args], { encoding: 'utf8' });
    assert.is(r.status, 0, r.stderr);
    const conflist = join(root, 'etc/cni/net.d', CONFLIST_FILE);
    assert.equal(JSON.parse(readFileSync(conflist, 'utf8')), JSON.parse(configMap.data['cni-conf.json']));
    const plugin = join(root, 'opt/cni/bin/flannel');
    assert.ok(statSync(plugin).mode & 0o100);
    assert.match(readFileSync(plugin, 'utf8'), new RegExp(`exec '${root}/opt/flannel-udp/node-[^/]+/node' '${root}/opt/flannel-udp/node-[^/]+/src/cni/main\\.js'`));
    const version = spawnSync(plugin, [], { env: { CNI_COMMAND: 'VERSION' }, encoding: 'utf8' });
    assert.is(version.status, 0, version.stderr);
    assert.ok(JSON.parse(version.stdout).supportedVersions.includes('0.3.1'));
    // --force is in the manifest: flannel's own plugin binary and conflist are replaced, as flannel's init containers do.
    writeFileSync(plugin, '\x7fELF flannel-io cni-plugin');
    const again = spawnSync(process.execPath, [cliPath, 'install-cni', ...args], { encoding: 'utf8' });
    assert.is(again.status, 0, again.stderr);
    assert.match(again.stdout, /replaced +.*\/opt\/cni\/bin\/flannel/);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
  assert.not.ok(existsSync(root));
});

test.run();
