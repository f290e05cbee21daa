// `flannel-udp install-cni`: what kube-flannel's init containers do on every
// node (install-cni-plugin copies the flannel binary to /opt/cni/bin,
// install-cni copies cni-conf.json to /etc/cni/net.d/10-flannel.conflist),
// with this project's plugin in place of flannel's Go binary.
//
// The installed `flannel` is a two-line shell script that execs node, both by
// absolute path, on the compiled plugin (dist/src/cni/main.js): runtimes exec
// plugins by path with an environment of their own, so neither `node` on PATH
// (#!/usr/bin/env node) nor a relative import may be relied on. It is tied to
// this checkout and this node binary: run install-cni again after moving either.
// In a container (the DaemonSet's init container) --runtime-dir first copies
// node and the plugin onto the host (runtime-bundle.ts), and --conf-source
// installs the ConfigMap's cni-conf.json, checked, instead of the built-in list.
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfListError, checkFlannelConfList } from './conflist-check.js';
import { installRuntimeBundle, planRuntimeBundle, pruneRuntimeBundles } from './runtime-bundle.js';
import { parseFlags, renderFlagHelp, type FlagGroup } from '../cli-flags.js';

export const DEFAULT_BIN_DIR = '/opt/cni/bin';
export const DEFAULT_CONF_DIR = '/etc/cni/net.d';
export const PLUGIN_FILE = 'flannel';
export const CONFLIST_FILE = '10-flannel.conflist';
/** The compiled plugin this module belongs to. */
export const pluginMainPath = fileURLToPath(new URL('./main.js', import.meta.url));

/**
 * The network configuration kube-flannel.yml ships (its cni-conf.json): the
 * flannel meta-plugin delegating to bridge with hairpin mode and a default
 * route, then portmap for hostPort mappings.
 */
export function flannelConfList(): Record<string, unknown> {
  return {
    name: 'cbr0',
    cniVersion: '0.3.1',
    plugins: [
      { type: 'flannel', delegate: { hairpinMode: true, isDefaultGateway: true } },
      { type: 'portmap', capabilities: { portMappings: true } },
    ],
  };
}

export function confListText(list: unknown = flannelConfList()): string {
  return JSON.stringify(list, null, 2) + '\n';
}

function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

export function pluginScript(nodePath: string, mainPath: string): string {
  return [
    '#!/bin/sh',
    '# flannel CNI plugin of flannel-udp, installed by `flannel-udp install-cni`.',
    '# Absolute paths: runtimes exec plugins with their own environment and PATH.',
    `exec ${shellQuote(nodePath)} ${shellQuote(mainPath)} "$@"`,
    '',
  ].join('\n');
}

export interface InstallOptions {
  binDir: string;
  confDir: string;
  force: boolean;
  /** Default: the node running this. */
  nodePath?: string;
  /** Default: the compiled plugin next to this module. */
  mainPath?: string;
  /** The conflist to install, checked by checkFlannelConfList; default flannelConfList(). */
  confList?: unknown;
  /** Copy node and the compiled tree holding mainPath here, and run the plugin from that copy. */
  runtimeDir?: string;
}

export type FileAction = 'installed' | 'unchanged' | 'replaced';

export interface InstallReport {
  plugin: { path: string; action: FileAction };
  confList: { path: string; action: FileAction };
  /** With runtimeDir: the bundle the plugin runs from, and older bundles removed. */
  runtime?: { path: string; action: 'installed' | 'unchanged'; removed: string[] };
  /** Configuration files in confDir that a runtime would pick before ours (it takes the first by name). */
  shadowing: string[];
}

export class InstallConflictError extends Error {
  override name = 'InstallConflictError';
}

type Existing = 'absent' | 'same' | 'different';

function compareFile(path: string, wanted: string, sameContent: (existing: string) => boolean): Existing {
  let existing: string;
  try {
    existing = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'absent';
    throw err;
  }
  return existing === wanted || sameContent(existing) ? 'same' : 'different';
}

function sameJson(wanted: string) {
  return (existing: string) => {
    try {
      return JSON.stringify(JSON.parse(existing)) === JSON.stringify(JSON.parse(wanted));
    } catch {
      return false;
    }
  };
}

/** Rename into place, so a runtime never executes or reads a half-written file. */
function writeAtomic(path: string, text: string, mode: number): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
  const temp = join(dirname(path), `.${PLUGIN_FILE}-install.${process.pid}.tmp`);
  try {
    writeFileSync(temp, text, { mode });
    renameSync(temp, path);
  } catch (err) {
    if (existsSync(temp)) unlinkSync(temp);
    throw err;
  }
}

/**
 * Installs both files, or neither: every conflict is found before anything
 * is written. Same content already there is left alone (idempotent); a
 * different file is replaced only with `force`.
 */
export function installCni(opts: InstallOptions): InstallReport {
  const pluginPath = join(opts.binDir, PLUGIN_FILE);
  const confListPath = join(opts.confDir, CONFLIST_FILE);
  const nodePath = opts.nodePath ?? process.execPath;
  const mainPath = resolve(opts.mainPath ?? pluginMainPath);
  // dist/src: the plugin's imports reach into src/control, so the whole compiled tree goes.
  const bundle = opts.runtimeDir === undefined ? undefined : planRuntimeBundle(resolve(opts.runtimeDir), nodePath, dirname(dirname(mainPath)), mainPath);
  const script = bundle ? pluginScript(bundle.nodePath, bundle.mainPath) : pluginScript(nodePath, mainPath);
  const confText = confListText(opts.confList);

  const pluginState = compareFile(pluginPath, script, () => false);
  const confState = compareFile(confListPath, confText, sameJson(confText));
  const conflicts: string[] = [];
  if (pluginState === 'different') conflicts.push(`${pluginPath} exists and is not this plugin (another flannel CNI plugin?)`);
  if (confState === 'different') conflicts.push(`${confListPath} exists with a different configuration`);
  if (conflicts.length > 0 && !opts.force) {
    throw new InstallConflictError(`not replacing existing files (nothing was written; --force replaces them):\n  ${conflicts.join('\n  ')}`);
  }

  // The bundle first: the script must never point at files not yet there.
  const bundleAction = bundle ? installRuntimeBundle(bundle) : undefined;
  if (pluginState !== 'same') writeAtomic(pluginPath, script, 0o755);
  if (confState !== 'same') writeAtomic(confListPath, confText, 0o644);
  const runtime = bundle && bundleAction ? { path: bundle.dir, action: bundleAction, removed: pruneRuntimeBundles(bundle.runtimeDir, bundle.name) } : undefined;
  const action = (s: Existing): FileAction => (s === 'same' ? 'unchanged' : s === 'absent' ? 'installed' : 'replaced');
  const shadowing = readdirSync(opts.confDir)
    .filter((f) => /\.(conf|conflist|json)$/.test(f) && f < CONFLIST_FILE)
    .sort();
  return { plugin: { path: pluginPath, action: action(pluginState) }, confList: { path: confListPath, action: action(confState) }, ...(runtime ? { runtime } : {}), shadowing };
}

export const INSTALL_FLAGS: readonly FlagGroup[] = [
  {
    title: '',
    flags: [
      { name: 'bin-dir', type: 'string', value: 'DIR', default: DEFAULT_BIN_DIR, help: 'where the runtime looks for CNI plugins' },
      { name: 'conf-dir', type: 'string', value: 'DIR', default: DEFAULT_CONF_DIR, help: 'where the runtime reads network configurations' },
      { name: 'conf-source', type: 'string', value: 'FILE', help: 'install this conflist (kube-flannel\'s cni-conf.json) instead of the built-in one; it is checked first: a list whose first plugin is a flannel configuration the plugin accepts' },
      { name: 'runtime-dir', type: 'string', value: 'DIR', help: 'copy node and the compiled plugin into DIR and run the plugin from there: for a container installing onto its host, with DIR a host directory mounted at the same path (older copies in DIR are removed)' },
      { name: 'force', type: 'boolean', help: `replace an existing flannel plugin or ${CONFLIST_FILE} that differs` },
      { name: 'help', type: 'boolean', short: 'h', help: 'this text' },
    ],
  },
];

export const INSTALL_HELP = `Usage: flannel-udp install-cni [--bin-dir DIR] [--conf-dir DIR] [--conf-source FILE]
                              [--runtime-dir DIR] [--force]

Installs this project's flannel CNI plugin as DIR/flannel (a shell script
running node on ${pluginMainPath}) and kube-flannel's network configuration as
${CONFLIST_FILE}, so that a container runtime (kubelet's) wires pods with the
reference bridge, host-local and portmap plugins from flannel's subnet.env.

${renderFlagHelp(INSTALL_FLAGS)}
Safe to repeat: files that already have the same content are left alone.
bridge, host-local and portmap must be in the bin dir too (Debian's
containernetworking-plugins puts them in /usr/lib/cni).
`;

/** The CLI command; user errors print one line to stderr and exit 2. */
export async function installCniCommand(argv: string[]): Promise<void> {
  const fail = (msg: string): void => {
    process.stderr.write(`flannel-udp install-cni: ${msg}\n`);
    process.exitCode = 2;
  };
  // A bad flag throws CommandLineError: the CLI prints `flannel-udp: install-cni: …` and exits 2.
  const values = parseFlags('install-cni', argv, INSTALL_FLAGS) as { 'bin-dir'?: string; 'conf-dir'?: string; 'conf-source'?: string; 'runtime-dir'?: string; force?: boolean; help?: boolean };
  if (values.help) {
    process.stdout.write(INSTALL_HELP);
    return;
  }
  if (!existsSync(pluginMainPath)) return fail(`${pluginMainPath} is missing (npm run build)`);
  let confList: unknown;
  if (values['conf-source'] !== undefined) {
    const source = values['conf-source'];
    let text: string;
    try {
      text = readFileSync(source, 'utf8');
    } catch (err) {
      return fail(`--conf-source: cannot read ${source}: ${(err as Error).message}`);
    }
    try {
      confList = checkFlannelConfList(text, source);
    } catch (err) {
      if (err instanceof ConfListError) return fail(`--conf-source: ${err.message} (nothing was written)`);
      throw err;
    }
  }
  try {
    const report = installCni({
      binDir: values['bin-dir'] ?? DEFAULT_BIN_DIR,
      confDir: values['conf-dir'] ?? DEFAULT_CONF_DIR,
      force: values.force ?? false,
      confList,
      runtimeDir: values['runtime-dir'],
    });
    if (report.runtime) process.stdout.write(`${report.runtime.action.padEnd(9)} ${report.runtime.path}\n`);
    process.stdout.write(`${report.plugin.action.padEnd(9)} ${report.plugin.path}\n${report.confList.action.padEnd(9)} ${report.confList.path}\n`);
    for (const r of report.runtime?.removed ?? []) process.stdout.write(`removed   ${r}\n`);
    for (const f of report.shadowing) {
      process.stderr.write(`flannel-udp install-cni: warning: ${f} sorts before ${CONFLIST_FILE}; a runtime uses the first configuration by name, so it uses ${f}\n`);
    }
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e instanceof InstallConflictError || e.code === 'EACCES' || e.code === 'EROFS' || e.code === 'ENOTDIR') return fail(e.message);
    throw err;
  }
}
