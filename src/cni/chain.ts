// The runtime's side of CNI, the part kubelet's container runtime (through
// libcni) does with /etc/cni/net.d/10-flannel.conflist: run every plugin of
// the list in order for ADD (each getting the list's name and cniVersion, the
// previous plugin's result as prevResult, and the runtimeConfig keys it
// declared in `capabilities`), in reverse order for DEL, and CHECK each with
// the cached ADD result. The namespace testbed creates its pods with this,
// so they are wired exactly as a kubelet would have them wired.
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { findPlugin } from './delegate.js';
import { parseVersion, SUPPORTED_VERSIONS, versionHasCheck, type Command } from './spec.js';

type Json = Record<string, unknown>;

export interface PluginConf extends Json {
  type: string;
  capabilities?: Record<string, boolean>;
}

export interface ConfList {
  cniVersion: string;
  name: string;
  disableCheck?: boolean;
  plugins: PluginConf[];
}

/** A CNI result (the parts we read; the rest is kept as the plugin printed it). */
export interface CniResult extends Json {
  cniVersion: string;
  interfaces?: Array<{ name: string; mac?: string; sandbox?: string }>;
  ips?: Array<{ version?: string; address: string; gateway?: string; interface?: number }>;
  routes?: Array<{ dst: string; gw?: string }>;
}

/** One hostPort mapping, as kubelet passes a pod's hostPorts to portmap (CONVENTIONS.md "portMappings"). */
export interface PortMapping {
  hostPort: number;
  containerPort: number;
  protocol: 'tcp' | 'udp' | 'sctp';
  hostIP?: string;
}

/** How one plugin is started: where to look for it and how to run it (e.g. inside a node's namespace). */
export interface PluginRunner {
  /** CNI_PATH: directories searched for plugin executables, in order. */
  cniPath: readonly string[];
  exec(path: string, env: NodeJS.ProcessEnv, stdin: string): Promise<{ code: number; stdout: string; stderr: string }>;
}

/** What the runtime knows about the container. */
export interface Attachment {
  containerId: string;
  /** Path of the container's network namespace, e.g. /var/run/netns/<name>; may be '' for DEL. */
  netns: string;
  ifName: string;
  /** CNI_ARGS, "K=V;K=V". */
  args?: string;
  /** Capability arguments, e.g. {portMappings: [...]}: each plugin gets the ones it declares. */
  capabilityArgs?: Json;
}

export class PluginError extends Error {
  override name = 'PluginError';
  constructor(
    readonly plugin: string,
    readonly command: Command,
    /** The plugin's CNI error code, or undefined when it printed none. */
    readonly code: number | undefined,
    readonly cniMessage: string,
    readonly stderr: string,
  ) {
    super(`CNI ${command} by plugin "${plugin}" failed${code !== undefined ? ` (code ${code})` : ''}: ${cniMessage}`);
  }
}

export function parseConfList(text: string, source = 'conflist'): ConfList {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    throw new Error(`${source}: not JSON: ${(err as Error).message}`);
  }
  const list = v as Partial<ConfList>;
  if (!list || typeof list !== 'object') throw new Error(`${source}: expected a JSON object`);
  if (typeof list.name !== 'string' || list.name === '') throw new Error(`${source}: "name" is missing`);
  if (typeof list.cniVersion !== 'string' || !parseVersion(list.cniVersion)) throw new Error(`${source}: "cniVersion" is missing or not a version`);
  if (!Array.isArray(list.plugins) || list.plugins.length === 0) throw new Error(`${source}: "plugins" must be a non-empty list`);
  for (const [i, p] of list.plugins.entries()) {
    if (!p || typeof p !== 'object' || typeof p.type !== 'string' || p.type === '') throw new Error(`${source}: plugins[${i}] has no "type"`);
  }
  return list as ConfList;
}

export function loadConfList(path: string): ConfList {
  return parseConfList(readFileSync(path, 'utf8'), path);
}

/**
 * The configuration one plugin of the list gets on stdin (SPEC.md "Network
 * Configuration Lists"): its own entry with the list's name and cniVersion,
 * runtimeConfig holding only the capabilities it declared, and prevResult.
 */
export function pluginConfig(list: ConfList, plugin: PluginConf, att: Attachment, prevResult?: CniResult): Json {
  const conf: Json = { ...structuredClone(plugin), name: list.name, cniVersion: list.cniVersion };
  const runtimeConfig: Json = {};
  for (const [cap, enabled] of Object.entries(plugin.capabilities ?? {})) {
    if (enabled && att.capabilityArgs && cap in att.capabilityArgs) runtimeConfig[cap] = att.capabilityArgs[cap];
  }
  if (Object.keys(runtimeConfig).length > 0) conf.runtimeConfig = runtimeConfig;
  if (prevResult !== undefined) conf.prevResult = prevResult;
  return conf;
}

/** Runs one plugin; its parsed stdout (a result, or undefined when it printed nothing). */
export async function invokePlugin(runner: PluginRunner, command: Command, conf: Json, att: Attachment): Promise<CniResult | undefined> {
  const type = String(conf.type);
  const path = findPlugin(type, runner.cniPath);
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('CNI_')) env[k] = v;
  Object.assign(env, {
    CNI_COMMAND: command,
    CNI_CONTAINERID: att.containerId,
    CNI_IFNAME: att.ifName,
    CNI_ARGS: att.args ?? '',
    CNI_PATH: runner.cniPath.join(':'),
  });
  if (att.netns !== '') env.CNI_NETNS = att.netns;
  const r = await runner.exec(path, env, JSON.stringify(conf));
  let parsed: Json | undefined;
  try {
    parsed = r.stdout.trim() === '' ? undefined : (JSON.parse(r.stdout) as Json);
  } catch {
    parsed = undefined;
  }
  if (r.code !== 0) {
    const msg = parsed && typeof parsed.msg === 'string' ? `${parsed.msg}${parsed.details ? `; ${parsed.details}` : ''}` : (r.stderr || r.stdout).trim() || `exit ${r.code}`;
    throw new PluginError(type, command, typeof parsed?.code === 'number' ? parsed.code : undefined, msg, r.stderr);
  }
  if (r.stdout.trim() !== '' && parsed === undefined) throw new PluginError(type, command, undefined, `printed something that is not JSON: ${r.stdout.slice(0, 200)}`, r.stderr);
  return parsed as CniResult | undefined;
}

/** ADD through the whole list; the last plugin's result is the container's result (cache it for CHECK and DEL). */
export async function addNetworkList(runner: PluginRunner, list: ConfList, att: Attachment): Promise<CniResult> {
  let result: CniResult | undefined;
  for (const plugin of list.plugins) {
    result = await invokePlugin(runner, 'ADD', pluginConfig(list, plugin, att, result), att);
    if (result === undefined) throw new PluginError(plugin.type, 'ADD', undefined, 'succeeded without printing a result', '');
  }
  return result!;
}

/** CHECK every plugin against the cached result; lists older than 0.4.0 have no CHECK, as libcni refuses too. */
export async function checkNetworkList(runner: PluginRunner, list: ConfList, att: Attachment, cachedResult: CniResult): Promise<void> {
  if (!versionHasCheck(list.cniVersion)) throw new Error(`configuration list version ${list.cniVersion} does not support the CHECK command`);
  if (list.disableCheck) return;
  for (const plugin of list.plugins) await invokePlugin(runner, 'CHECK', pluginConfig(list, plugin, att, cachedResult), att);
}

/** DEL in reverse order, each with the cached result if there is one. */
export async function delNetworkList(runner: PluginRunner, list: ConfList, att: Attachment, cachedResult?: CniResult): Promise<void> {
  for (const plugin of [...list.plugins].reverse()) await invokePlugin(runner, 'DEL', pluginConfig(list, plugin, att, cachedResult), att);
}

/** VERSION of one plugin: {cniVersion, supportedVersions}. */
export async function pluginVersions(runner: PluginRunner, type: string): Promise<{ cniVersion: string; supportedVersions: string[] }> {
  const r = await invokePlugin(runner, 'VERSION', { cniVersion: SUPPORTED_VERSIONS.at(-1)!, type }, { containerId: '', netns: '', ifName: '' });
  return r as unknown as { cniVersion: string; supportedVersions: string[] };
}

/** Runs a plugin in this process's own network namespace. */
export const localRunner = (cniPath: readonly string[]): PluginRunner => ({
  cniPath,
  exec: (path, env, stdin) =>
    new Promise((resolve) => {
      const child = execFile(path, [], { env, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
        resolve({ code, stdout, stderr });
      });
      child.stdin?.end(stdin);
    }),
});

/** The sandbox interface's first IPv4 address in a result: {ip, prefixLength, gateway}. */
export function sandboxAddress(result: CniResult, ifName: string): { ip: string; prefixLength: number; gateway?: string; mac?: string } {
  const ifIndex = result.interfaces?.findIndex((i) => i.name === ifName && i.sandbox) ?? -1;
  const entry = result.ips?.find((ip) => (ifIndex < 0 || ip.interface === ifIndex) && !ip.address.includes(':'));
  if (!entry) throw new Error(`the CNI result has no IPv4 address for ${ifName}: ${JSON.stringify(result)}`);
  const [ip, length] = entry.address.split('/');
  return { ip: ip!, prefixLength: Number(length), gateway: entry.gateway, mac: ifIndex >= 0 ? result.interfaces![ifIndex]!.mac : undefined };
}

/** The host-side interface (the veth end on the bridge): an interface without a sandbox that is not the bridge. */
export function hostInterface(result: CniResult, bridge: string): string | undefined {
  return result.interfaces?.find((i) => !i.sandbox && i.name !== bridge)?.name;
}
