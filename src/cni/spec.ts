// The parts of the CNI specification (github.com/containernetworking/cni,
// SPEC.md) that both sides of the protocol need: spec versions, the
// well-known error codes, the error object a plugin prints on stdout, and the
// checks the reference library (pkg/skel) makes on the environment before a
// plugin runs. Pure functions and data, no I/O.

/**
 * Versions this plugin accepts in a network configuration's cniVersion.
 * 0.3.0 is where chaining (prevResult) and the current result format begin;
 * kube-flannel.yml still ships 0.3.1. 0.1.0/0.2.0 predate both and are refused
 * with code 1, as the spec asks for a version the plugin does not support.
 */
export const SUPPORTED_VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0'] as const;
export const CURRENT_VERSION = '1.0.0';

/** Well-known error codes (SPEC.md "Error"); 100+ are the plugin's own. */
export const ErrorCode = {
  IncompatibleVersion: 1,
  UnsupportedField: 2,
  UnknownContainer: 3,
  InvalidEnvironment: 4,
  IoFailure: 5,
  DecodingFailure: 6,
  InvalidConfig: 7,
  TryAgainLater: 11,
  /** ours: the delegate failed without printing a CNI error of its own */
  DelegateFailed: 100,
  /** anything unforeseen; the reference library (pkg/types ErrInternal) uses the same number */
  Internal: 999,
} as const;

export type Command = 'ADD' | 'DEL' | 'CHECK' | 'VERSION';
export const COMMANDS: readonly Command[] = ['ADD', 'DEL', 'CHECK', 'VERSION'];

/** What a plugin prints on stdout (and exits non-zero) when it fails. */
export interface CniErrorJson {
  cniVersion: string;
  code: number;
  msg: string;
  details?: string;
}

export class CniError extends Error {
  override name = 'CniError';
  constructor(
    readonly code: number,
    msg: string,
    readonly details?: string,
  ) {
    super(msg);
  }

  toJson(cniVersion: string): CniErrorJson {
    return { cniVersion, code: this.code, msg: this.message, ...(this.details ? { details: this.details } : {}) };
  }
}

/** "0.3.1" → [0, 3, 1]; undefined when the text is not a plain x.y.z version. */
export function parseVersion(text: unknown): [number, number, number] | undefined {
  if (typeof text !== 'string') return undefined;
  const m = /^(\d+)\.(\d+)\.(\d+)$/.exec(text);
  return m ? [Number(m[1]), Number(m[2]), Number(m[3])] : undefined;
}

/** a ≥ b for two valid versions. */
export function versionAtLeast(a: string, b: string): boolean {
  const x = parseVersion(a);
  const y = parseVersion(b);
  if (!x || !y) throw new Error(`not a CNI version: ${!x ? a : b}`);
  for (let i = 0; i < 3; i++) if (x[i] !== y[i]) return x[i]! > y[i]!;
  return true;
}

/** CHECK exists from spec 0.4.0 on. */
export function versionHasCheck(version: string): boolean {
  return versionAtLeast(version, '0.4.0');
}

/**
 * The environment a plugin is called with (SPEC.md "Parameters"). Which
 * variables each command needs is the reference library's rule: DEL may come
 * without a network namespace (the runtime may have lost it already).
 */
export interface CniEnvironment {
  command: Command;
  containerId: string;
  netns: string;
  ifName: string;
  args: string;
  path: string[];
}

const REQUIRED: Record<Command, readonly string[]> = {
  ADD: ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME', 'CNI_PATH'],
  CHECK: ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME', 'CNI_PATH'],
  DEL: ['CNI_CONTAINERID', 'CNI_IFNAME', 'CNI_PATH'],
  VERSION: [],
};

// libcni's rules (pkg/utils): the container ID becomes a file name (our saved
// delegate config, host-local's reservations), so it must not contain '/'.
const CONTAINER_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
const IFNAME_MAX = 15; // IFNAMSIZ - 1

export function readCniEnvironment(env: NodeJS.ProcessEnv): CniEnvironment {
  const commandText = env.CNI_COMMAND ?? '';
  if (commandText === '') throw new CniError(ErrorCode.InvalidEnvironment, 'required env variables [CNI_COMMAND] missing');
  if (!(COMMANDS as readonly string[]).includes(commandText)) {
    throw new CniError(ErrorCode.InvalidEnvironment, `unknown CNI_COMMAND: ${commandText} (expected ${COMMANDS.join(', ')})`);
  }
  const command = commandText as Command;
  const missing = REQUIRED[command].filter((name) => !env[name]);
  if (missing.length > 0) throw new CniError(ErrorCode.InvalidEnvironment, `required env variables [${missing.join(' ')}] missing`);

  const containerId = env.CNI_CONTAINERID ?? '';
  if (command !== 'VERSION' && !CONTAINER_ID.test(containerId)) {
    throw new CniError(
      ErrorCode.InvalidEnvironment,
      `CNI_CONTAINERID ${JSON.stringify(containerId)} has invalid characters (allowed: letters, digits, _ . -, not first)`,
    );
  }
  const ifName = env.CNI_IFNAME ?? '';
  if (command !== 'VERSION') {
    const why =
      ifName.length > IFNAME_MAX
        ? `is longer than ${IFNAME_MAX} characters`
        : ifName === '.' || ifName === '..'
          ? 'is not a valid interface name'
          : /[/:\s]/.test(ifName)
            ? "contains '/', ':' or whitespace"
            : '';
    if (why) throw new CniError(ErrorCode.InvalidEnvironment, `CNI_IFNAME ${JSON.stringify(ifName)} ${why}`);
  }
  return {
    command,
    containerId,
    netns: env.CNI_NETNS ?? '',
    ifName,
    args: env.CNI_ARGS ?? '',
    path: (env.CNI_PATH ?? '').split(':').filter((p) => p !== ''),
  };
}

/**
 * The cniVersion of a network configuration, checked against what we support.
 * A configuration without one is 0.1.0, as the reference library reads it.
 */
export function configVersion(config: Record<string, unknown>): string {
  const raw = config.cniVersion;
  const version = raw === undefined || raw === '' ? '0.1.0' : raw;
  if (typeof version !== 'string' || !parseVersion(version)) {
    throw new CniError(ErrorCode.DecodingFailure, `cniVersion ${JSON.stringify(raw)} is not a version like "1.0.0"`);
  }
  if (!(SUPPORTED_VERSIONS as readonly string[]).includes(version)) {
    throw new CniError(
      ErrorCode.IncompatibleVersion,
      'incompatible CNI versions',
      `config is "${version}", plugin supports ${JSON.stringify(SUPPORTED_VERSIONS)}`,
    );
  }
  return version;
}

/** Deeper than this is no CNI configuration (a conflist entry with prevResult nests about 6). */
export const MAX_JSON_DEPTH = 64;

/**
 * The deepest nesting of arrays and objects in `text`, stopping as soon as it
 * passes `limit`: one pass over the characters, strings skipped, so 50 MB of
 * "[" is refused in milliseconds instead of being handed to JSON.parse.
 */
export function jsonDepthExceeds(text: string, limit = MAX_JSON_DEPTH): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) {
      if (++depth > limit) return true;
    } else if (c === 0x5d || c === 0x7d) depth--;
  }
  return false;
}

/** Parses a JSON object from stdin; anything else is code 6 (decoding failure). */
export function parseConfigJson(text: string, what = 'network configuration'): Record<string, unknown> {
  if (jsonDepthExceeds(text)) throw new CniError(ErrorCode.DecodingFailure, `failed to load ${what}: nested more than ${MAX_JSON_DEPTH} levels deep`);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new CniError(ErrorCode.DecodingFailure, `failed to load ${what}: ${(err as Error).message}`);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new CniError(ErrorCode.DecodingFailure, `failed to load ${what}: expected a JSON object`);
  }
  return value as Record<string, unknown>;
}
