// The image, built here and run as kubelet runs the DaemonSet: `npm run image`'s
// script builds the Containerfile on the offline base (Debian + Node.js 24,
// cached); two testbed nodes each run the manifest's pod template with podman
// (the install-cni init container, then the agent), translated field by field
// (test/support/pod-spec-podman.ts): its command and args, env from the
// downward API, hostPath volumes on the node's own root, the ConfigMap, the
// service account, the capabilities and no_new_privs, the node's network
// namespace for hostNetwork. The agents talk to the API-server stand-in; pods
// are then created through the CNI plugin the init container installed, run
// as the node's runtime runs it, and reach each other across the nodes.
// Everything is removed in after(), also on failure: containers (by label,
// SIGTERM first), the image's tag, namespaces, files.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createCluster, REFERENCE_PLUGIN_DIR, type Cluster, type PodInfo } from '../../src/testbed/cluster.js';
import { ping } from '../../src/testbed/measure.js';
import { addNetworkList, delNetworkList, loadConfList, sandboxAddress, type Attachment, type CniResult, type ConfList } from '../../src/cni/chain.js';
import { CONFLIST_FILE } from '../../src/cni/install.js';
import { only, readManifest, repoRoot, type Json } from '../support/deploy-manifest.js';
import { kubeletNode } from '../support/kube-standin-kit.js';
import { healthGet, KUBE_PORT, KUBE_UNDERLAY_IP, StandInProcess } from '../support/kube-nodes.js';
import { eventually, tcpTransfer } from '../support/pod-traffic.js';
import { podmanContainers, type PodmanContainer } from '../support/pod-spec-podman.js';
import { buildImage, OWNER_LABEL, podman, removeContainers, requirePodman, untagImage } from '../support/podman.js';
import { nodeViewRunner, prepareNodeRoot } from '../support/node-root.js';

const P = 'flannel.alpha.coreos.com';
const NODES = [1, 2];
const t = suite('the image, built here, runs the DaemonSet pod spec on two nodes; pods through its CNI plugin reach each other');
let cluster: Cluster | undefined;
let api: StandInProcess;
let image: string | undefined;
const agentContainers = new Map<number, PodmanContainer>();
const pods = new Map<number, PodInfo>();
const attachments: Array<{ node: number; list: ConfList; att: Attachment; result?: CniResult }> = [];

const root = (i: number) => join(cluster!.tempDir, `root-n${i}`);
const netnsPath = (i: number) => `/run/netns/${cluster!.node(i).ns}`;
const runner = (i: number) => nodeViewRunner(netnsPath(i), root(i), [join(root(i), 'opt/cni/bin'), REFERENCE_PLUGIN_DIR]);

t.before(async () => {
  console.log(`    ${requirePodman()}`);
  await removeContainers('dead'); // what a killed earlier run left
  const version = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')).version as string;
  const name = `localhost/flannel-udp:${version}-test-${process.pid}`;
  image = name; // recorded first: untagged in after() even if the build half-fails
  const built = await buildImage(name);
  const steps = (built.log.match(/ STEP \d+\/\d+: /g) ?? []).length;
  const cached = (built.log.match(/--> Using cache /g) ?? []).length;
  const base = /image-base: cached/.test(built.log) ? 'cached base' : 'base built first';
  console.log(`    image ${name} built in ${built.seconds.toFixed(1)} s (${base}; ${cached} of ${steps} steps from podman's cache)`);
  cluster = await createCluster({ nodes: NODES.length, podsPerNode: 0, dataplane: 'none' });
  api = await StandInProcess.start(cluster);
  for (const i of NODES) await api.admin.createNode(kubeletNode(`node-${i}`, cluster.node(i).underlayIp, `10.244.${i}.0/24`));
});

t.after(async () => {
  if (cluster) {
    for (const a of attachments.reverse()) await delNetworkList(runner(a.node), a.list, a.att, a.result).catch(() => undefined);
  }
  await removeContainers(process.pid).catch(() => undefined);
  if (image) await untagImage(image);
  await cluster?.destroy();
});

t('install-cni, then the agent, from the image with the pod template; both nodes ready, subnet.env and the plugin on each node', async () => {
  const { objects } = readManifest();
  const ds = only(objects, 'DaemonSet');
  const cm = only(objects, 'ConfigMap');
  const spec = ds.spec.template.spec as Json;
  await Promise.all(
    NODES.map(async (i) => {
      const node = cluster!.node(i);
      prepareNodeRoot(root(i));
      const podName = `kube-flannel-udp-ds-n${i}`;
      // The DaemonSet controller's pod, for the agent's own lookups.
      await api.admin.ok('POST', '/api/v1/namespaces/kube-flannel-udp/pods', {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: podName, namespace: 'kube-flannel-udp' },
        spec: { nodeName: `node-${i}`, containers: [{ name: 'kube-flannel-udp', image: image! }] },
      });
      const containers = podmanContainers(spec, { name: `node-${i}`, netnsPath: netnsPath(i), ip: node.underlayIp, root: root(i) }, {
        name: podName,
        namespace: 'kube-flannel-udp',
        image: image!,
        configMaps: { [cm.metadata.name]: cm.data },
        serviceAccountDir: api.serviceAccountDir(),
        apiHost: KUBE_UNDERLAY_IP,
        apiPort: KUBE_PORT,
        scratchDir: join(cluster!.tempDir, `pod-n${i}`),
        labels: { [OWNER_LABEL]: String(process.pid) },
      });
      for (const c of containers.filter((x) => x.init)) {
        const r = await podman(['run', '--rm', ...c.args], { timeoutMs: 120_000, allowFailure: true });
        assert.is(r.code, 0, `init container ${c.name} on node ${i}:\n${r.stdout}${r.stderr}`);
      }
      const agent = containers.find((x) => !x.init)!;
      agentContainers.set(i, agent);
      await podman(['run', '--detach', ...agent.args]);
      // kubelet's readiness probe, from the node (hostNetwork: the node's address space).
      const probe = agent.readiness!;
      const ready = await eventually(async () => (await healthGet(cluster!, node.ns, probe.port, probe.path).catch(() => ({ status: 0 }))).status === 200, 60_000);
      if (!ready) assert.unreachable(`node ${i}: readiness probe ${probe.path} never 200; agent log:\n${await logs(agent.name)}`);
    }),
  );
  for (const i of NODES) {
    assert.is(
      readFileSync(join(root(i), 'run/flannel/subnet.env'), 'utf8'),
      `FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.${i}.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n`,
    );
    const plugin = readFileSync(join(root(i), 'opt/cni/bin/flannel'), 'utf8');
    const nodeBin = /exec '(\/opt\/flannel-udp\/[^']+\/node)'/.exec(plugin)?.[1];
    assert.ok(nodeBin, plugin);
    assert.ok(existsSync(join(root(i), nodeBin!)), `the image's node copied to the node: ${nodeBin}`);
    const n = await api.admin.getNode(`node-${i}`);
    assert.is(n.metadata.annotations[`${P}/public-ip`], cluster!.node(i).underlayIp, '--public-ip=$(POD_IP) expanded to the node address');
    const name = agentContainers.get(i)!.name;
    assert.match((await podman(['exec', name, 'node', '--version'])).stdout, /^v24\./, "the image's Node.js 24");
    const peer = NODES.find((j) => j !== i)!;
    const leaseSeen = await eventually(async () => (await logs(name)).includes(`lease added: 10.244.${peer}.0-24 -> 192.0.2.${peer}`), 10_000);
    assert.ok(leaseSeen, `node ${i} sees node ${peer}'s lease:\n${await logs(name)}`);
  }
});

t('pods created through the installed CNI plugin ping each other across the nodes; a transfer arrives intact', async () => {
  for (const i of NODES) {
    const list = loadConfList(join(root(i), 'etc/cni/net.d', CONFLIST_FILE));
    const { ns, index, netnsPath: podNetns } = await cluster!.addPodNamespace(i);
    const att: Attachment = { containerId: ns, netns: podNetns, ifName: 'eth0' };
    const record: { node: number; list: ConfList; att: Attachment; result?: CniResult } = { node: i, list, att };
    attachments.push(record);
    const result = await addNetworkList(runner(i), list, att);
    record.result = result;
    const { ip, gateway } = sandboxAddress(result, 'eth0');
    assert.match(ip, new RegExp(`^10\\.244\\.${i}\\.\\d+$`));
    assert.is(gateway, `10.244.${i}.1`);
    pods.set(i, { node: i, index, ns, ip, containerId: ns, hostVeth: '', result });
  }
  for (const [a, b] of [[1, 2], [2, 1]] as const) {
    const r = await ping(cluster!, pods.get(a)!.ns, pods.get(b)!.ip, { count: 3, intervalS: 0.2 });
    assert.is(r.received, 3, `pod${a} → pod${b} (${pods.get(b)!.ip}): ${JSON.stringify(r)}`);
  }
  const bytes = 32 * 1024 * 1024;
  const r = await tcpTransfer(cluster!, pods.get(1)!, pods.get(2)!, bytes);
  assert.is(r.received.bytes, bytes);
  assert.is(r.received.sha256, r.sent.sha256);
});

t('podman stop (SIGTERM, as kubelet stops a pod): the agent exits with 0 within the grace period', async () => {
  const name = agentContainers.get(2)!.name;
  await podman(['stop', '--time', '30', name], { timeoutMs: 60_000 });
  const state = (await podman(['inspect', '--format', '{{.State.ExitCode}}', name])).stdout.trim();
  assert.is(state, '0', await logs(name));
});

async function logs(name: string): Promise<string> {
  const r = await podman(['logs', name], { allowFailure: true }).catch((e: Error) => ({ stdout: '', stderr: e.message }));
  return r.stdout + r.stderr;
}

t.run();
