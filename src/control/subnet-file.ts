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
//
// Dual-stack: the two IPv6 keys come together or not at all. An IPv6-only
// node (flannel's EnableIPv4 false) writes no FLANNEL_NETWORK/SUBNET: its
// SubnetConfig says ipv6Only, with the zero 0.0.0.0/0 for the IPv4 pair (Go's
// empty IP4Net, as in the lease key "0.0.0.0-0&…"), which nothing may route.

import { mkdir, open, rename, stat, unlink } from 'node:fs/promises';
import { BoundedFileError, readBoundedFile } from './bounded-file.js';
import { basename, dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { type Cidr, cidrCovers, formatCidr, makeCidr, parseCidr } from './ipv4-address.js';
import { type Cidr6, cidr6Covers, formatCidr6, parseCidr6 } from './ipv6-address.js';

export interface SubnetConfig {
  /** FLANNEL_NETWORK: the whole pod network */
  network: Cidr;
  /** FLANNEL_SUBNET: first pod IP with the subnet length, e.g. 10.244.1.1/24 (network = this node's lease) */
  subnet: Cidr;
  mtu: number;
  ipMasq: boolean;
  /** the dual-stack keys as written (what formatSubnetFile writes back) */
  ipv6: { network?: string; subnet?: string; enabled: boolean };
  /** FLANNEL_IPV6_NETWORK, parsed: the whole IPv6 pod network */
  ipv6Network?: Cidr6;
  /** FLANNEL_IPV6_SUBNET, parsed: first pod IPv6 address with the subnet length (network = this node's IPv6 lease) */
  ipv6Subnet?: Cidr6;
  /** no FLANNEL_NETWORK/FLANNEL_SUBNET: network and subnet are the zero 0.0.0.0/0 and route nothing */
  ipv6Only?: true;
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
const IPV4_KEYS = ['FLANNEL_NETWORK', 'FLANNEL_SUBNET'];
const IPV6_KEYS = ['FLANNEL_IPV6_NETWORK', 'FLANNEL_IPV6_SUBNET'];
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
  let ipv6Network: Cidr6 | undefined;
  let ipv6Subnet: Cidr6 | undefined;
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
      case 'FLANNEL_IPV6_NETWORK':
        if (value.includes(',')) {
          fail(lineNo, key, `${JSON.stringify(value)}: several networks (MultiClusterCIDR) are not supported by flannel-udp`);
        }
        ipv6Network = parseCidr6Value(value, lineNo, key, fail);
        ipv6.enabled = true;
        ipv6.network = value;
        break;
      case 'FLANNEL_IPV6_SUBNET':
        ipv6Subnet = parseCidr6Value(value, lineNo, key, fail);
        ipv6.enabled = true;
        ipv6.subnet = value;
        break;
      default:
        if (key.startsWith('FLANNEL_')) {
          unsupported.push(`${key}=${value} (line ${lineNo}): unknown flannel key; ignored`);
        } else {
          unsupported.push(`${key}=${value} (line ${lineNo}): not a flannel key; ignored`);
        }
    }
  }

  // One family may be absent as a pair (IPv6-only: no IPv4 keys); half a pair is a mistake.
  const ipv6Missing = IPV6_KEYS.filter((k) => !seenAt.has(k));
  if (ipv6Missing.length === 1) fail(0, ipv6Missing[0], `missing ${ipv6Missing[0]} (the IPv6 keys come as a pair)`);
  const ipv6Only = ipv6Missing.length === 0 && IPV4_KEYS.every((k) => !seenAt.has(k));
  const missing = REQUIRED_KEYS.filter((k) => !seenAt.has(k) && !(ipv6Only && IPV4_KEYS.includes(k)));
  if (missing.length > 0) fail(0, missing[0], `missing ${missing.join(', ')}`);
  if (ipv6Network !== undefined && !cidr6Covers(ipv6Network, ipv6Subnet!)) {
    fail(
      seenAt.get('FLANNEL_IPV6_SUBNET')!,
      'FLANNEL_IPV6_SUBNET',
      `${formatCidr6(ipv6Subnet!, true)} is not inside FLANNEL_IPV6_NETWORK ${formatCidr6(ipv6Network, true)} (line ${seenAt.get('FLANNEL_IPV6_NETWORK')})`,
    );
  }
  const dualStack = ipv6Network !== undefined ? { ipv6Network, ipv6Subnet: ipv6Subnet! } : {};
  if (ipv6Only) {
    const zero = makeCidr(0, 0);
    return { network: zero, subnet: zero, mtu: mtu!, ipMasq: ipMasq!, ipv6, ...dualStack, ipv6Only: true, unsupported };
  }
  // All four are set past this point; the checks above threw otherwise.
  if (!cidrCovers(network!, subnet!)) {
    fail(
      subnetLine,
      'FLANNEL_SUBNET',
      `${formatCidr(subnet!, true)} is not inside FLANNEL_NETWORK ${formatCidr(network!, true)} (line ${networkLine})`,
    );
  }
  return { network: network!, subnet: subnet!, mtu: mtu!, ipMasq: ipMasq!, ipv6, ...dualStack, unsupported };
}

function parseCidr6Value(
  value: string,
  line: number,
  key: string,
  fail: (line: number, key: string, detail: string) => never,
): Cidr6 {
  try {
    return parseCidr6(value);
  } catch {
    return fail(line, key, `${JSON.stringify(value)} is not a valid IPv6 CIDR`);
  }
}

/**
 * This node's IPv6 pod network and subnet, when the config has them: the
 * parsed fields, or (a config built elsewhere with only the text) the text.
 */
export function ipv6PodNetwork(cfg: SubnetConfig): { network: Cidr6; subnet: Cidr6 } | undefined {
  if (cfg.ipv6Network !== undefined && cfg.ipv6Subnet !== undefined) return { network: cfg.ipv6Network, subnet: cfg.ipv6Subnet };
  if (!cfg.ipv6.enabled || cfg.ipv6.network === undefined || cfg.ipv6.subnet === undefined) return undefined;
  return { network: parseCidr6(cfg.ipv6.network), subnet: parseCidr6(cfg.ipv6.subnet) };
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
  // flannel's WriteSubnetFile: the IPv4 pair unless IPv4 is off, the IPv6 pair when on, then MTU and masquerade.
  const lines = cfg.ipv6Only ? [] : [`FLANNEL_NETWORK=${formatCidr(cfg.network)}`, `FLANNEL_SUBNET=${formatCidr(cfg.subnet, true)}`];
  if (cfg.ipv6.enabled) {
    const network = cfg.ipv6.network ?? (cfg.ipv6Network && formatCidr6(cfg.ipv6Network));
    const subnet = cfg.ipv6.subnet ?? (cfg.ipv6Subnet && formatCidr6(cfg.ipv6Subnet, true));
    if (network !== undefined) lines.push(`FLANNEL_IPV6_NETWORK=${network}`);
    if (subnet !== undefined) lines.push(`FLANNEL_IPV6_SUBNET=${subnet}`);
  }
  if (cfg.ipv6Only && lines.length < 2) throw new Error('cannot write an IPv6-only subnet file without FLANNEL_IPV6_NETWORK and FLANNEL_IPV6_SUBNET');
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
