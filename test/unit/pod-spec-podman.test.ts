// The translation of the DaemonSet's pod template to `podman run`, which the
// image integration test relies on: every security setting, mount, env and
// arg of the manifest comes through, $(VAR) is expanded as kubelet expands it,
// and a field the translation does not know is refused by name.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { container, only, readManifest, type Json } from '../support/deploy-manifest.js';
import { expandVars, podmanContainers, type PodmanNode, type PodmanPod } from '../support/pod-spec-podman.js';

const { objects } = readManifest();
const spec = only(objects, 'DaemonSet').spec.template.spec as Json;
const cm = only(objects, 'ConfigMap');

function translate(s: Json = spec) {
  const dir = mkdtempSync(join(tmpdir(), 'pod-spec-podman-'));
  const node: PodmanNode = { name: 'node-1', netnsPath: '/run/netns/x', ip: '192.0.2.1', root: join(dir, 'root') };
  const pod: PodmanPod = {
    name: 'ds-1',
    namespace: 'kube-flannel-udp',
    image: 'localhost/flannel-udp:t',
    configMaps: { [cm.metadata.name]: cm.data },
    serviceAccountDir: join(dir, 'sa'),
    apiHost: '192.0.2.250',
    apiPort: 6443,
    scratchDir: join(dir, 'scratch'),
    labels: { owner: '1' },
  };
  try {
    return { containers: podmanContainers(s, node, pod), dir, read: (p: string) => readFileSync(p, 'utf8') };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const pairs = (args: string[], flag: string) => args.flatMap((a, i) => (a === flag ? [args[i + 1]!] : []));

test('the agent: capabilities, no_new_privs, the node network, env from the downward API, $(POD_IP) expanded', () => {
  const { containers } = translate();
  assert.equal(containers.map((c) => [c.name, c.init]), [['ds-1-install-cni', true], ['ds-1-kube-flannel-udp', false]]);
  const agent = containers[1]!;
  const c = container(spec, 'kube-flannel-udp');
  assert.equal(pairs(agent.args, '--cap-drop'), c.securityContext.capabilities.drop);
  assert.equal(pairs(agent.args, '--cap-add'), c.securityContext.capabilities.add);
  assert.equal(pairs(agent.args, '--security-opt'), ['no-new-privileges']);
  assert.not.ok(agent.args.includes('--privileged'));
  assert.equal(pairs(agent.args, '--network'), ['ns:/run/netns/x']);
  const env = pairs(agent.args, '--env');
  for (const e of ['NODE_NAME=node-1', 'POD_NAME=ds-1', 'POD_NAMESPACE=kube-flannel-udp', 'POD_IP=192.0.2.1', 'KUBERNETES_SERVICE_HOST=192.0.2.250', 'KUBERNETES_SERVICE_PORT=6443']) {
    assert.ok(env.includes(e), e);
  }
  const image = agent.args.indexOf('localhost/flannel-udp:t');
  assert.equal(agent.args.slice(image + 1), c.args.map((a: string) => a.replace('$(POD_IP)', '192.0.2.1')));
  assert.equal(pairs(agent.args, '--entrypoint'), c.command);
  assert.equal(agent.readiness, { path: '/readyz', port: 8081 });
});

test('every volumeMount of the manifest becomes a --volume at its mountPath; the service account is mounted read-only', () => {
  const { containers } = translate();
  for (const [k, name] of [[0, 'install-cni'], [1, 'kube-flannel-udp']] as const) {
    const c = container(spec, name, k === 0);
    const vols = pairs(containers[k]!.args, '--volume');
    assert.is(vols.length, c.volumeMounts.length + 1);
    for (const m of c.volumeMounts as Json[]) assert.ok(vols.some((v) => v.split(':')[1] === m.mountPath && v.endsWith(':ro') === (m.readOnly === true)), `${name}: ${m.mountPath}`);
    assert.ok(vols.some((v) => v.endsWith(':/var/run/secrets/kubernetes.io/serviceaccount:ro')));
  }
  assert.ok(pairs(containers[1]!.args, '--volume').includes('/dev/net/tun:/dev/net/tun'), 'the character device is the host kernel\'s');
});

test('$(VAR) expansion as kubelet does it; unknown fields are refused by name', () => {
  const env = new Map([['A', 'x']]);
  assert.is(expandVars('$(A)-$(B)-$$(A)', env), 'x-$(B)-$(A)');
  assert.throws(() => translate({ ...spec, hostPID: true }), /pod spec field hostPID/);
  const containers = [{ ...spec.containers[0], stdin: true }];
  assert.throws(() => translate({ ...spec, containers }), /field stdin/);
  const sc = [{ ...spec.containers[0], securityContext: { ...spec.containers[0].securityContext, seccompProfile: { type: 'RuntimeDefault' } } }];
  assert.throws(() => translate({ ...spec, containers: sc }), /securityContext\.seccompProfile/);
});

test('limits become cgroup limits, a CPU request cpu shares', () => {
  const resources = { requests: { cpu: '250m', memory: '100Mi' }, limits: { memory: '200Mi', cpu: '1' } };
  const { containers } = translate({ ...spec, containers: [{ ...spec.containers[0], resources }] });
  const a = containers[1]!.args;
  assert.equal(pairs(a, '--memory'), [String(200 * 1024 * 1024)]);
  assert.equal(pairs(a, '--cpus'), ['1']);
  assert.equal(pairs(a, '--cpu-shares'), ['256']);
});

test.run();
