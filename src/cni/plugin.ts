// The flannel CNI meta-plugin: what runs when a container runtime executes
// /opt/cni/bin/flannel. It configures nothing itself. It reads the node's
// subnet.env, turns it into a configuration for the reference `bridge` plugin
// (with `host-local` IPAM), saves that per container, and runs bridge with it:
//
//   runtime ─ADD─▶ flannel ─ADD─▶ bridge ─ADD─▶ host-local
//                     │  reads /run/flannel/subnet.env
//                     └─ saves <dataDir>/<container ID> for DEL
//
// ADD, DEL and CHECK are answered as flannel's own plugin answers them
// (flannel-io/cni-plugin), with two additions: CHECK is delegated to bridge
// instead of always succeeding, and a DEL whose saved configuration is gone
// rebuilds it from subnet.env so host-local can still release the address.
//
// runPlugin is the whole protocol as a function of (environment, stdin) so
// that tests can run it in-process; main.ts wires it to the real ones.
import { readRegularFile } from './bounded-read.js';
import { parseSubnetFile, SubnetFileError, type SubnetConfig } from '../control/subnet-file.js';
import { buildDelegateConf, parseFlannelNetConf, type FlannelNetConf } from './flannel-conf.js';
import { execPlugin, findPlugin, readDelegateConf, removeDelegateConf, saveDelegateConf, type DelegateOutcome } from './delegate.js';
import {
  CniError,
  configVersion,
  CURRENT_VERSION,
  ErrorCode,
  jsonDepthExceeds,
  parseConfigJson,
  parseVersion,
  readCniEnvironment,
  SUPPORTED_VERSIONS,
  versionHasCheck,
  type CniEnvironment,
} from './spec.js';

export interface PluginIo {
  env: NodeJS.ProcessEnv;
  stdin: string;
  /** Unstructured log lines; main.ts sends them to stderr, which runtimes keep. */
  log?: (line: string) => void;
  /** Runs the delegate; tests may replace it. */
  exec?: (path: string, stdin: string, env: NodeJS.ProcessEnv) => DelegateOutcome;
}

export interface PluginOutcome {
  stdout: string;
  exitCode: number;
}

type Json = Record<string, unknown>;

export function runPlugin(io: PluginIo): PluginOutcome {
  const log = io.log ?? (() => undefined);
  // Errors carry the configuration's version when it has a usable one.
  let errorVersion = CURRENT_VERSION;
  try {
    const claimed = jsonDepthExceeds(io.stdin) ? undefined : (JSON.parse(io.stdin) as Json | null)?.cniVersion;
    if (parseVersion(claimed)) errorVersion = claimed as string;
  } catch {
    // not JSON: reported below, if the command needs a configuration at all
  }
  try {
    const env = readCniEnvironment(io.env);
    if (env.command === 'VERSION') {
      return ok(JSON.stringify({ cniVersion: CURRENT_VERSION, supportedVersions: SUPPORTED_VERSIONS }) + '\n');
    }
    const config = parseConfigJson(io.stdin);
    const version = configVersion(config);
    if (env.command === 'CHECK' && !versionHasCheck(version)) {
      // Spec 0.3.x has no CHECK; the reference library answers exactly this.
      throw new CniError(ErrorCode.IncompatibleVersion, 'config version does not allow CHECK', `CHECK exists from CNI spec 0.4.0 on; the configuration says ${version}`);
    }
    const conf = parseFlannelNetConf(config, version);
    const plugin = new FlannelPlugin(env, io.env, conf, log, io.exec ?? execPlugin);
    if (env.command === 'ADD') return plugin.add();
    if (env.command === 'DEL') return plugin.del();
    return plugin.check(config.prevResult);
  } catch (err) {
    const e = err instanceof CniError ? err : new CniError(ErrorCode.Internal, (err as Error).message ?? String(err));
    log(`flannel: ${e.message}${e.details ? ` (${e.details})` : ''}`);
    return { stdout: JSON.stringify(e.toJson(errorVersion)) + '\n', exitCode: 1 };
  }
}

function ok(stdout: string): PluginOutcome {
  return { stdout, exitCode: 0 };
}

/** flannel writes four short lines; anything this large is some other file. */
export const MAX_SUBNET_FILE_BYTES = 64 * 1024;

/** Reads subnet.env; a missing file is "try again later" (flanneld not up yet), a broken one an invalid configuration. */
export function loadSubnetEnv(path: string): SubnetConfig {
  const text = readRegularFile(path, MAX_SUBNET_FILE_BYTES, "flannel's subnet file");
  if (text === undefined) {
    throw new CniError(
      ErrorCode.TryAgainLater,
      `${path}: no such file: flannel's subnet file is written once this node has a subnet lease (is flanneld or the flannel-udp agent running?)`,
    );
  }
  try {
    return parseSubnetFile(text, path);
  } catch (err) {
    if (!(err instanceof SubnetFileError)) throw err;
    // The detail quotes the file's line. Shown only where it is a flannel key's
    // value: a subnetFile pointing at some other file (/etc/shadow) must not
    // have its content copied into the runtime's logs.
    if (err.key.startsWith('FLANNEL_')) throw new CniError(ErrorCode.InvalidConfig, `invalid flannel subnet file: ${err.message}`);
    const where = err.line > 0 ? `line ${err.line} is not a FLANNEL_ key=value line` : 'it has none of the FLANNEL_ keys';
    throw new CniError(ErrorCode.InvalidConfig, `invalid flannel subnet file ${path}: ${where} (is subnetFile the right file?)`);
  }
}

class FlannelPlugin {
  constructor(
    private readonly env: CniEnvironment,
    private readonly processEnv: NodeJS.ProcessEnv,
    private readonly conf: FlannelNetConf,
    private readonly log: (line: string) => void,
    private readonly exec: (path: string, stdin: string, env: NodeJS.ProcessEnv) => DelegateOutcome,
  ) {}

  add(): PluginOutcome {
    const { containerId } = this.env;
    const subnet = loadSubnetEnv(this.conf.subnetFile);
    const delegate = buildDelegateConf(this.conf, subnet);
    // Found before anything is saved: a missing plugin leaves nothing behind.
    const path = findPlugin(delegate.type as string, this.env.path);
    const text = JSON.stringify(delegate);
    saveDelegateConf(this.conf.dataDir, containerId, text);
    this.log(`flannel: ADD ${containerId}: ${delegate.type} with ${text}`);
    // On failure the saved file stays: the runtime answers a failed ADD with a
    // DEL, which needs it to undo whatever the delegate got done.
    return this.delegate(path, text);
  }

  del(): PluginOutcome {
    const { containerId } = this.env;
    const saved = this.savedDelegate();
    let delegate: Json;
    if (saved) {
      delegate = saved;
    } else {
      // No saved file (lost, or ADD never got that far): what ADD would have
      // used is the next best thing, so host-local can release the address.
      let subnet: SubnetConfig;
      try {
        subnet = loadSubnetEnv(this.conf.subnetFile);
      } catch (err) {
        this.log(`flannel: DEL ${containerId}: no saved configuration and ${(err as Error).message}; nothing to do`);
        return ok('');
      }
      delegate = buildDelegateConf(this.conf, subnet);
      this.log(`flannel: DEL ${containerId}: no saved configuration; rebuilt it from ${this.conf.subnetFile}`);
    }
    const path = findPlugin(delegate.type as string, this.env.path);
    const outcome = this.delegate(path, JSON.stringify(delegate));
    if (outcome.exitCode === 0) removeDelegateConf(this.conf.dataDir, containerId);
    return outcome;
  }

  check(prevResult: unknown): PluginOutcome {
    if (prevResult === null || typeof prevResult !== 'object') {
      throw new CniError(ErrorCode.InvalidConfig, 'CHECK needs "prevResult", the result of the ADD (the runtime adds it)');
    }
    let delegate = this.savedDelegate();
    if (!delegate) {
      delegate = buildDelegateConf(this.conf, loadSubnetEnv(this.conf.subnetFile));
      this.log(`flannel: CHECK ${this.env.containerId}: no saved configuration; checking against ${this.conf.subnetFile}`);
    }
    // The configuration ADD used, in the version (and with the result) of this request.
    const request = { ...delegate, cniVersion: this.conf.cniVersion, prevResult: withExplicitGateways(prevResult as Json) };
    return this.delegate(findPlugin(delegate.type as string, this.env.path), JSON.stringify(request));
  }

  /** The saved delegate configuration, or undefined if there is none or it is unusable. */
  private savedDelegate(): Json | undefined {
    const text = readDelegateConf(this.conf.dataDir, this.env.containerId);
    if (text === undefined) return undefined;
    try {
      const conf = parseConfigJson(text, 'saved delegate configuration');
      if (typeof conf.type === 'string') return conf;
    } catch {
      // fall through
    }
    this.log(`flannel: saved configuration for ${this.env.containerId} is unreadable; ignoring it`);
    return undefined;
  }

  /** Runs the delegate with our own environment and passes its answer through. */
  private delegate(path: string, stdin: string): PluginOutcome {
    const r = this.exec(path, stdin, this.processEnv);
    if (r.stderr) this.log(r.stderr.trimEnd());
    if (r.code === 0) return ok(r.stdout);
    if (isCniError(r.stdout)) return { stdout: r.stdout, exitCode: r.code };
    const how = r.signal ? `was killed by ${r.signal}` : `exited ${r.code}`;
    throw new CniError(ErrorCode.DelegateFailed, `delegate ${path} ${how} without a CNI error`, (r.stderr || r.stdout).trim().slice(-2000) || undefined);
  }
}

function isCniError(stdout: string): boolean {
  try {
    const v = JSON.parse(stdout) as unknown;
    return v !== null && typeof v === 'object' && typeof (v as Json).code === 'number';
  } catch {
    return false;
  }
}

/**
 * The result with every IPv4 route that has no "gw" given the gateway of the
 * result's IPv4 address. That is the route ADD installed (a route without gw
 * goes via the address's gateway), but the bridge plugin before
 * containernetworking/plugins v1.3.0 (PR #887; Debian 12 ships 1.1.1) looks
 * for a gateway-less route in CHECK and so fails on flannel's own
 * {dst: FLANNEL_NETWORK} route right after a successful ADD.
 */
export function withExplicitGateways(result: Json): Json {
  const ips = Array.isArray(result.ips) ? (result.ips as Json[]) : [];
  const gateways = new Set(ips.map((ip) => ip.gateway).filter((gw): gw is string => typeof gw === 'string' && !gw.includes(':')));
  if (gateways.size !== 1 || !Array.isArray(result.routes)) return result;
  const [gateway] = gateways;
  const routes = (result.routes as Json[]).map((r) =>
    r.gw === undefined && typeof r.dst === 'string' && !r.dst.includes(':') ? { ...r, gw: gateway } : r,
  );
  return { ...result, routes };
}
