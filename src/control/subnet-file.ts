// flannel's subnet file (/run/flannel/subnet.env): the node's lease as the
// flannel CNI plugin sees it. flanneld writes exactly these lines, in this order:
//
//   FLANNEL_NETWORK=10.244.0.0/16
//   FLANNEL_SUBNET=10.244.1.1/24        first pod IP, with the subnet's length
//   FLANNEL_IPV6_NETWORK=…              only on dual-stack clusters
//   FLANNEL_IPV6_SUBNET=…
//   FLANNEL_MTU=1450
//   FLANNEL_IPMASQ=true
//
// The CNI plugin splits each line at the first '=' and hands the rest to
// net.ParseCIDR / strconv.ParseUint *verbatim*: no trimming, no unquoting.
// So this parser is strict on purpose: a file we accept is a file the CNI
// plugin also accepts. Quoted values (FLANNEL_MTU="1450") and spaces around
// '=' are refused with a message saying why, instead of being quietly
// accepted here and breaking every pod creation on the node later.
// CRLF line ends are accepted because Go's line scanner drops the '\r' too.

import { mkdir, open, rename, stat, unlink } from 'node:fs/promises';
import { BoundedFileError, readBoundedFile } from './bounded-file.js';
import { basename, dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { type Cidr, cidrCovers, formatCidr, parseCidr } from './ipv4-address.js';

export interface SubnetConfig {
  /** FLANNEL_NETWORK: the whole pod network */
  network: Cidr;
  /** FLANNEL_SUBNET: first pod IP with the subnet length, e.g. 10.244.1.1/24 (network = this node's lease) */
  subnet: Cidr;
  mtu: number;
  ipMasq: boolean;
  /** dual-stack keys, kept as text: flannel-udp carries IPv4 only */
  ipv6: { network?: string; subnet?: string; enabled: boolean };
  /** one sentence per key we read but do not act on, for the agent to log */
  unsupported: string[];
}

export class SubnetFileError extends Error {
  readonly path: string;
  /** 1-based; 0 when the problem is not on one line (a missing key, an unreadable file) */
  readonly line: number;
  /** the key concerned, '' when the line has none */
  readonly key: string;

  constructor(path: string, line: number, key: string, detail: string) {
    const where = line > 0 ? `${path}:${line}` : path;
    super(key !== '' && line > 0 ? `${where}: ${key}: ${detail}` : `${where}: ${detail}`);
    this.name = 'SubnetFileError';
    this.path = path;
    this.line = line;
    this.key = key;
  }
}

export const DEFAULT_SUBNET_FILE = '/run/flannel/subnet.env';
/** flanneld writes six short lines; anything past this is not a subnet file. */
export const MAX_SUBNET_FILE_BYTES = 64 << 10;

const REQUIRED_KEYS = ['FLANNEL_NETWORK', 'FLANNEL_SUBNET', 'FLANNEL_MTU', 'FLANNEL_IPMASQ'] as const;
const IPV6_KEYS = new Set(['FLANNEL_IPV6_NETWORK', 'FLANNEL_IPV6_SUBNET']);
const KEY_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
// 68 is the IPv4 minimum every host must accept (RFC 791); 65535 the largest IPv4 packet.
const MIN_MTU = 68;
const MAX_MTU = 65535;

export function parseSubnetFile(text: string, path = 'subnet.env'): SubnetConfig {
  const fail = (line: number, key: string, detail: string): never => {
    throw new SubnetFileError(path, line, key, detail);
  };

  const seenAt = new Map<string, number>();
  let network: Cidr | undefined;
  let networkLine = 0;
  let subnet: Cidr | undefined;
  let subnetLine = 0;
  let mtu: number | undefined;
  let ipMasq: boolean | undefined;
  const ipv6: SubnetConfig['ipv6'] = { enabled: false };
  const unsupported: string[] = [];

  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const lineNo = i + 1;
    const raw = lines[i].endsWith('\r') ? lines[i].slice(0, -1) : lines[i];
    const trimmed = raw.trim();
    if (trimmed === '' || trimmed.startsWith('#')) continue;

    const eq = raw.indexOf('=');
    if (eq < 0) fail(lineNo, '', `expected KEY=VALUE, found ${JSON.stringify(raw)}`);
    const keyText = raw.slice(0, eq);
    const value = raw.slice(eq + 1);
    const key = keyText.trim();
    if (!KEY_NAME.test(key)) fail(lineNo, '', `expected KEY=VALUE, found ${JSON.stringify(raw)}`);
    if (keyText !== key || value !== value.trim()) {
      fail(lineNo, key, `spaces around the key or value are not allowed (flannel's CNI plugin reads KEY=VALUE verbatim)`);
    }
    if (value.length >= 2 && (value[0] === '"' || value[0] === "'") && value.endsWith(value[0])) {
      fail(
        lineNo,
        key,
        `quoted values are not allowed (flannel writes ${key}=${value.slice(1, -1)} and its CNI plugin does not unquote)`,
      );
    }
    const firstLine = seenAt.get(key);
    if (firstLine !== undefined) fail(lineNo, key, `duplicate key (first set on line ${firstLine})`);
    seenAt.set(key, lineNo);

    switch (key) {
      case 'FLANNEL_NETWORK':
        if (value.includes(',')) {
          fail(lineNo, key, `${JSON.stringify(value)}: several networks (MultiClusterCIDR) are not supported by flannel-udp`);
        }
        network = parseCidrValue(value, lineNo, key, fail);
        networkLine = lineNo;
        break;
      case 'FLANNEL_SUBNET':
        subnet = parseCidrValue(value, lineNo, key, fail);
        subnetLine = lineNo;
        break;
      case 'FLANNEL_MTU': {
        const n = /^[0-9]{1,5}$/.test(value) ? Number(value) : NaN;
        if (!(n >= MIN_MTU && n <= MAX_MTU)) {
          fail(lineNo, key, `${JSON.stringify(value)} is not an integer MTU in ${MIN_MTU}..${MAX_MTU}`);
        }
        mtu = n;
        break;
      }
      case 'FLANNEL_IPMASQ':
        // The CNI plugin treats anything but "true" as false; a typo would silently
        // turn masquerading off, so only flannel's own two spellings are accepted.
        if (value !== 'true' && value !== 'false') fail(lineNo, key, `${JSON.stringify(value)} is not true or false`);
        ipMasq = value === 'true';
        break;
      default:
        if (IPV6_KEYS.has(key)) {
          ipv6.enabled = true;
          if (key === 'FLANNEL_IPV6_NETWORK') ipv6.network = value;
          else ipv6.subnet = value;
          unsupported.push(`${key}=${value} (line ${lineNo}): IPv6 is not supported by flannel-udp yet; ignored`);
        } else if (key.startsWith('FLANNEL_')) {
          unsupported.push(`${key}=${value} (line ${lineNo}): unknown flannel key; ignored`);
        } else {
          unsupported.push(`${key}=${value} (line ${lineNo}): not a flannel key; ignored`);
        }
    }
  }

  const missing = REQUIRED_KEYS.filter((k) => !seenAt.has(k));
  if (missing.length > 0) {
    const ipv6Only = ipv6.enabled && missing.includes('FLANNEL_NETWORK') ? ' (IPv6-only networks are not supported)' : '';
    fail(0, missing[0], `missing ${missing.join(', ')}${ipv6Only}`);
  }
  // All four are set past this point; the checks above threw otherwise.
  if (!cidrCovers(network!, subnet!)) {
    fail(
      subnetLine,
      'FLANNEL_SUBNET',
      `${formatCidr(subnet!, true)} is not inside FLANNEL_NETWORK ${formatCidr(network!, true)} (line ${networkLine})`,
    );
  }
  return { network: network!, subnet: subnet!, mtu: mtu!, ipMasq: ipMasq!, ipv6, unsupported };
}

function parseCidrValue(
  value: string,
  line: number,
  key: string,
  fail: (line: number, key: string, detail: string) => never,
): Cidr {
  try {
    return parseCidr(value);
  } catch {
    return fail(line, key, `${JSON.stringify(value)} is not a valid IPv4 CIDR`);
  }
}

/** The exact text flanneld writes (see the header), so flannel's CNI plugin reads ours unchanged. */
export function formatSubnetFile(cfg: SubnetConfig): string {
  if (!Number.isInteger(cfg.mtu) || cfg.mtu < MIN_MTU || cfg.mtu > MAX_MTU) {
    throw new Error(`cannot write FLANNEL_MTU=${cfg.mtu}: not an integer in ${MIN_MTU}..${MAX_MTU}`);
  }
  const lines = [`FLANNEL_NETWORK=${formatCidr(cfg.network)}`, `FLANNEL_SUBNET=${formatCidr(cfg.subnet, true)}`];
  if (cfg.ipv6.enabled) {
    if (cfg.ipv6.network !== undefined) lines.push(`FLANNEL_IPV6_NETWORK=${cfg.ipv6.network}`);
    if (cfg.ipv6.subnet !== undefined) lines.push(`FLANNEL_IPV6_SUBNET=${cfg.ipv6.subnet}`);
  }
  lines.push(`FLANNEL_MTU=${cfg.mtu}`, `FLANNEL_IPMASQ=${cfg.ipMasq}`);
  return lines.join('\n') + '\n';
}

/**
 * Readers (the CNI plugin runs at any moment) must see the old file or the new
 * one, never half of one: write a temp file in the same directory (rename is
 * only atomic within one filesystem), fsync it, rename over the target, then
 * fsync the directory so the rename itself survives a crash.
 */
export async function writeSubnetFileAtomic(path: string, cfg: SubnetConfig): Promise<void> {
  const text = formatSubnetFile(cfg);
  const dir = dirname(path);
  await mkdir(dir, { recursive: true, mode: 0o755 });

  // Keep the permissions of a file someone already tuned, like flanneld does.
  let mode = 0o644;
  try {
    mode = (await stat(path)).mode & 0o777;
  } catch {
    // no existing file: default mode
  }

  const tempPath = join(dir, `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  const file = await open(tempPath, 'wx', mode);
  try {
    try {
      await file.writeFile(text, 'utf8');
      await file.chmod(mode); // open()'s mode is filtered by the umask
      await file.sync();
    } finally {
      await file.close();
    }
    await rename(tempPath, path);
  } catch (err) {
    await unlink(tempPath).catch(() => {});
    throw err;
  }

  const dirHandle = await open(dir, 'r');
  try {
    await dirHandle.sync();
  } catch {
    // Some filesystems refuse fsync on a directory; the rename has still happened.
  } finally {
    await dirHandle.close();
  }
}

/** Only a regular file, at most MAX_SUBNET_FILE_BYTES, never blocking (bounded-file.ts). */
export async function readSubnetFile(path: string): Promise<SubnetConfig> {
  let text: string;
  try {
    ({ text } = await readBoundedFile(path, MAX_SUBNET_FILE_BYTES, 'the subnet file'));
  } catch (err) {
    const detail = err instanceof BoundedFileError ? err.detail : (err as Error).message;
    throw new SubnetFileError(path, 0, '', detail);
  }
  return parseSubnetFile(text, path);
}
