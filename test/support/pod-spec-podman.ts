// What kubelet does with the DaemonSet's pod template, translated to
// `podman run` for one node of the testbed: the same command and args ($(VAR)
// expanded as kubelet expands them), env (the downward API's fields filled in),
// volume mounts (hostPath volumes under the node's own root directory, since
// the testbed's nodes share one host; configMap volumes as files), the
// service account kubelet mounts, and the security context (capabilities,
// no_new_privs, privileged). hostNetwork becomes the node's network
// namespace. Every field of the template is either translated or listed as
// scheduling-only; anything else is refused by name, so a manifest change
// cannot be silently left out of the test.
import { closeSync, mkdirSync, openSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Json } from './deploy-manifest.js';

/** Pod-spec fields that decide where and when a pod runs, not how its containers run. */
const SCHEDULING_ONLY = new Set(['affinity', 'priorityClassName', 'tolerations', 'serviceAccountName', 'nodeSelector']);
const POD_FIELDS = new Set([...SCHEDULING_ONLY, 'hostNetwork', 'initContainers', 'containers', 'volumes', 'terminationGracePeriodSeconds', 'automountServiceAccountToken']);
/** Probes and ports are the caller's (kubelet's) to act on; imagePullPolicy has nothing to pull here. */
const CONTAINER_FIELDS = new Set(['name', 'image', 'imagePullPolicy', 'command', 'args', 'env', 'resources', 'securityContext', 'volumeMounts', 'ports', 'livenessProbe', 'readinessProbe']);

export interface PodmanNode {
  /** the node's name (spec.nodeName) */
  name: string;
  /** the node's network namespace, e.g. /run/netns/<ns> */
  netnsPath: string;
  /** status.podIP and status.hostIP: with hostNetwork, the node's own address */
  ip: string;
  /** The node's "/": hostPath volumes resolve under it. */
  root: string;
}

export interface PodmanPod {
  name: string;
  namespace: string;
  image: string;
  /** ConfigMap name → its data, for configMap volumes. */
  configMaps: Record<string, Record<string, string>>;
  /** What kubelet mounts at /var/run/secrets/kubernetes.io/serviceaccount (token, ca.crt, namespace). */
  serviceAccountDir: string;
  /** KUBERNETES_SERVICE_HOST / _PORT, which kubelet sets in every container. */
  apiHost: string;
  apiPort: number;
  /** Where configMap volumes are written. */
  scratchDir: string;
  /** Added as --label to every container, for cleanup by label. */
  labels: Record<string, string>;
}

export interface HttpProbe {
  path: string;
  port: number;
}

export interface PodmanContainer {
  name: string;
  init: boolean;
  /** `podman run` arguments after `run`, up to and including the image and its args. */
  args: string[];
  readiness?: HttpProbe;
  liveness?: HttpProbe;
}

const SA_MOUNT = '/var/run/secrets/kubernetes.io/serviceaccount';

/** The pod's containers, init containers first, each as a `podman run` command line. */
export function podmanContainers(spec: Json, node: PodmanNode, pod: PodmanPod): PodmanContainer[] {
  for (const k of Object.keys(spec)) if (!POD_FIELDS.has(k)) throw new Error(`pod spec field ${k} has no podman translation (test/support/pod-spec-podman.ts)`);
  if (spec.hostNetwork !== true) throw new Error('only hostNetwork pods are translated (the DaemonSet is one)');
  const volumes = new Map<string, Json>(((spec.volumes ?? []) as Json[]).map((v) => [v.name as string, v]));
  const grace = spec.terminationGracePeriodSeconds ?? 30;
  const automount = spec.automountServiceAccountToken !== false;
  const one = (c: Json, init: boolean): PodmanContainer => {
    for (const k of Object.keys(c)) if (!CONTAINER_FIELDS.has(k)) throw new Error(`container ${c.name}: field ${k} has no podman translation`);
    const env = containerEnv(c, node, pod);
    const expand = (s: string) => expandVars(s, env);
    const args = [
      '--name', `${pod.name}-${c.name}`,
      '--network', `ns:${node.netnsPath}`,
      '--stop-timeout', String(grace),
      ...Object.entries(pod.labels).flatMap(([k, v]) => ['--label', `${k}=${v}`]),
      ...securityArgs(c.securityContext ?? {}),
      ...resourceArgs(c.resources ?? {}),
      ...[...env].flatMap(([k, v]) => ['--env', `${k}=${v}`]),
      ...(automount ? ['--volume', `${pod.serviceAccountDir}:${SA_MOUNT}:ro`] : []),
      ...((c.volumeMounts ?? []) as Json[]).flatMap((m) => ['--volume', mountArg(m, volumes, node, pod)]),
    ];
    const command = (c.command ?? []) as string[];
    if (command.length > 1) throw new Error(`container ${c.name}: command with arguments; put them in args`);
    if (command.length === 1) args.push('--entrypoint', expand(command[0]!));
    args.push(pod.image, ...((c.args ?? []) as string[]).map(expand));
    return { name: `${pod.name}-${c.name}`, init, args, ...probes(c) };
  };
  return [...((spec.initContainers ?? []) as Json[]).map((c) => one(c, true)), ...((spec.containers ?? []) as Json[]).map((c) => one(c, false))];
}

function containerEnv(c: Json, node: PodmanNode, pod: PodmanPod): Map<string, string> {
  const env = new Map<string, string>([
    ['KUBERNETES_SERVICE_HOST', pod.apiHost],
    ['KUBERNETES_SERVICE_PORT', String(pod.apiPort)],
  ]);
  const fields: Record<string, string> = {
    'spec.nodeName': node.name,
    'metadata.name': pod.name,
    'metadata.namespace': pod.namespace,
    'status.podIP': node.ip,
    'status.hostIP': node.ip,
  };
  for (const e of (c.env ?? []) as Json[]) {
    if (typeof e.value === 'string') env.set(e.name, expandVars(e.value, env));
    else if (e.valueFrom?.fieldRef) {
      const v = fields[e.valueFrom.fieldRef.fieldPath];
      if (v === undefined) throw new Error(`env ${e.name}: fieldRef ${e.valueFrom.fieldRef.fieldPath} is not translated`);
      env.set(e.name, v);
    } else throw new Error(`env ${e.name}: only value and valueFrom.fieldRef are translated`);
  }
  return env;
}

/** Kubernetes' $(VAR) expansion in command, args and env values: defined names only, $$ escapes. */
export function expandVars(s: string, env: ReadonlyMap<string, string>): string {
  return s.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (m, name: string | undefined) => (m === '$$' ? '$' : (env.get(name!) ?? m)));
}

function securityArgs(sc: Json): string[] {
  const known = new Set(['privileged', 'allowPrivilegeEscalation', 'capabilities', 'readOnlyRootFilesystem', 'runAsUser', 'runAsGroup']);
  for (const k of Object.keys(sc)) if (!known.has(k)) throw new Error(`securityContext.${k} has no podman translation`);
  const out: string[] = [];
  if (sc.privileged === true) out.push('--privileged');
  if (sc.allowPrivilegeEscalation === false) out.push('--security-opt', 'no-new-privileges');
  for (const cap of (sc.capabilities?.drop ?? []) as string[]) out.push('--cap-drop', cap);
  for (const cap of (sc.capabilities?.add ?? []) as string[]) out.push('--cap-add', cap);
  if (sc.readOnlyRootFilesystem === true) out.push('--read-only');
  if (sc.runAsUser !== undefined) out.push('--user', `${sc.runAsUser}${sc.runAsGroup !== undefined ? `:${sc.runAsGroup}` : ''}`);
  return out;
}

/** Limits as the container's cgroup (memory.max, cpu.max); a CPU request as kubelet's cpu shares. Memory requests set no cgroup limit. */
function resourceArgs(r: Json): string[] {
  const out: string[] = [];
  if (r.limits?.memory !== undefined) out.push('--memory', String(bytes(r.limits.memory)));
  if (r.limits?.cpu !== undefined) out.push('--cpus', String(cpus(r.limits.cpu)));
  if (r.requests?.cpu !== undefined) out.push('--cpu-shares', String(Math.max(2, Math.round(cpus(r.requests.cpu) * 1024))));
  return out;
}

function bytes(q: string | number): number {
  const m = /^(\d+(?:\.\d+)?)(Ki|Mi|Gi|k|M|G)?$/.exec(String(q));
  if (!m) throw new Error(`memory quantity ${q} not understood`);
  const unit = { Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3, k: 1e3, M: 1e6, G: 1e9 }[m[2] ?? ''] ?? 1;
  return Math.round(Number(m[1]) * unit);
}

function cpus(q: string | number): number {
  const s = String(q);
  return s.endsWith('m') ? Number(s.slice(0, -1)) / 1000 : Number(s);
}

function mountArg(m: Json, volumes: Map<string, Json>, node: PodmanNode, pod: PodmanPod): string {
  const v = volumes.get(m.name);
  if (!v) throw new Error(`volumeMount ${m.name}: no such volume`);
  if (m.subPath !== undefined) throw new Error(`volumeMount ${m.name}: subPath is not translated`);
  const ro = m.readOnly === true ? ':ro' : '';
  if (v.hostPath) return `${hostPathSource(v.hostPath, node)}:${m.mountPath}${ro}`;
  if (v.configMap) {
    const data = pod.configMaps[v.configMap.name];
    if (!data) throw new Error(`volume ${v.name}: no ConfigMap ${v.configMap.name}`);
    const dir = join(pod.scratchDir, `configmap-${v.configMap.name}`);
    mkdirSync(dir, { recursive: true });
    for (const [file, text] of Object.entries(data)) writeFileSync(join(dir, file), text);
    return `${dir}:${m.mountPath}${ro}`;
  }
  throw new Error(`volume ${v.name}: only hostPath and configMap volumes are translated`);
}

/** kubelet's hostPath type checks, on the node's root; character devices are the one kernel's, so the host's own. */
function hostPathSource(hp: Json, node: PodmanNode): string {
  const type = hp.type ?? '';
  if (type === 'CharDevice') {
    if (!statSync(hp.path).isCharacterDevice()) throw new Error(`hostPath ${hp.path} is not a character device`);
    return hp.path;
  }
  const path = join(node.root, hp.path);
  if (type === 'DirectoryOrCreate') mkdirSync(path, { recursive: true, mode: 0o755 });
  else if (type === 'FileOrCreate') {
    mkdirSync(join(path, '..'), { recursive: true });
    closeSync(openSync(path, 'a', 0o644));
  } else if (type === 'Directory') {
    if (!statSync(path).isDirectory()) throw new Error(`hostPath ${hp.path}: not a directory`);
  } else if (type !== '') throw new Error(`hostPath type ${type} is not translated`);
  return path;
}

function probes(c: Json): { readiness?: HttpProbe; liveness?: HttpProbe } {
  const http = (p: Json | undefined): HttpProbe | undefined => {
    if (!p) return undefined;
    if (!p.httpGet) throw new Error(`container ${c.name}: only httpGet probes are translated`);
    const port = typeof p.httpGet.port === 'number' ? p.httpGet.port : ((c.ports ?? []) as Json[]).find((x) => x.name === p.httpGet.port)?.containerPort;
    if (typeof port !== 'number') throw new Error(`container ${c.name}: probe port ${p.httpGet.port} not found`);
    return { path: p.httpGet.path, port };
  };
  const readiness = http(c.readinessProbe);
  const liveness = http(c.livenessProbe);
  return { ...(readiness ? { readiness } : {}), ...(liveness ? { liveness } : {}) };
}
