// flannel's lease as Kubernetes node annotations (flanneld --kube-subnet-mgr,
// pkg/subnet/kube). A node's lease is its spec.podCIDR plus these annotations,
// all under one prefix (--kube-annotation-prefix, flannel.alpha.coreos.com):
//
//   flannel.alpha.coreos.com/kube-subnet-manager  "true"  (the node's lease is flannel's)
//   flannel.alpha.coreos.com/backend-type         "udp" | "vxlan"
//   flannel.alpha.coreos.com/backend-data         the BackendData JSON as text: "null", {"VNI":1,"VtepMAC":"…"}
//   flannel.alpha.coreos.com/public-ip            where peers send this node's packets
//   flannel.alpha.coreos.com/public-ip-overwrite  set by the operator: publish this instead (a NAT's address)
//   flannel.alpha.coreos.com/node-public-ip       set by the operator: this node's public IP (overrides --public-ip)
//
// Dual-stack (EnableIPv6), flannel's annotations.go: the node's spec.podCIDRs
// holds one CIDR per family, and the IPv6 half of the lease is published as
//   flannel.alpha.coreos.com/public-ipv6            this node's IPv6 underlay address, when it has one
//   flannel.alpha.coreos.com/public-ipv6-overwrite  set by the operator: publish this instead
//   flannel.alpha.coreos.com/node-public-ipv6       set by the operator: this node's public IPv6 (overrides --public-ipv6)
//   flannel.alpha.coreos.com/backend-v6-data        the BackendV6Data JSON as text (vxlan: flannel-v6.1's VNI and VtepMAC)
// An IPv6-only node (EnableIPv4 false) has only an IPv6 pod CIDR; its lease
// key has the zero IPv4 half, "0.0.0.0-0&fd00:10:244:2::-64".
//
// Everything here is pure: node JSON in, leases and patches out.

import { type Cidr, cidrCovers, formatCidr, makeCidr, parseCidr } from './ipv4-address.js';
import { type Cidr6, cidr6Covers, formatCidr6, makeCidr6, parseCidr6 } from './ipv6-address.js';
import { type Lease, formatSubnetKey, parseLeaseAttrs } from './lease.js';
import type { NetworkConfig } from './network-config.js';

export const DEFAULT_ANNOTATION_PREFIX = 'flannel.alpha.coreos.com';

export interface AnnotationNames {
  kubeSubnetManager: string;
  backendType: string;
  backendData: string;
  publicIp: string;
  publicIpOverwrite: string;
  nodePublicIp: string;
  backendV6Data: string;
  publicIpv6: string;
  publicIpv6Overwrite: string;
  nodePublicIpv6: string;
}

export class KubeAnnotationError extends Error {
  override name = 'KubeAnnotationError';
}

/**
 * The annotation keys for a prefix, with flannel's rules: at most one slash;
 * "example.com" becomes "example.com/"; "example.com/flannel" becomes
 * "example.com/flannel-"; the result must be a DNS name, a slash and an
 * optional lowercase name part.
 */
export function annotationNames(prefix: string): AnnotationNames {
  let p = prefix;
  const slashes = p.split('/').length - 1;
  if (slashes > 1) throw new KubeAnnotationError(`--kube-annotation-prefix "${prefix}": at most one slash is allowed`);
  if (slashes === 0) p += '/';
  if (!p.endsWith('/') && !p.endsWith('-')) p += '-';
  if (!/^(?:[a-z0-9_-]+\.)+[a-z0-9_-]+\/(?:[a-z0-9_-]+-)?$/.test(p)) {
    throw new KubeAnnotationError(`--kube-annotation-prefix "${prefix}": expected a DNS name and an optional name part, like flannel.alpha.coreos.com or example.com/flannel`);
  }
  return {
    kubeSubnetManager: `${p}kube-subnet-manager`,
    backendType: `${p}backend-type`,
    backendData: `${p}backend-data`,
    publicIp: `${p}public-ip`,
    publicIpOverwrite: `${p}public-ip-overwrite`,
    nodePublicIp: `${p}node-public-ip`,
    backendV6Data: `${p}backend-v6-data`,
    publicIpv6: `${p}public-ipv6`,
    publicIpv6Overwrite: `${p}public-ipv6-overwrite`,
    nodePublicIpv6: `${p}node-public-ipv6`,
  };
}

/** The parts of a v1.Node this agent reads (the API returns much more). */
export interface KubeNode {
  metadata?: { name?: string; resourceVersion?: string; annotations?: Record<string, string> | null };
  spec?: { podCIDR?: string; podCIDRs?: string[] | null };
}

/**
 * The node's IPv4 pod subnet: spec.podCIDRs (the IPv4 one of a dual-stack
 * pair) or else spec.podCIDR; undefined when none is assigned. Host bits are
 * dropped, as Go's net.ParseCIDR does.
 */
export function nodePodCidr(node: KubeNode): Cidr | undefined {
  return nodePodCidrs(node).ipv4;
}

/**
 * Both pod subnets of a node: spec.podCIDRs (at most one per family, as the
 * API server allows), else spec.podCIDR, whichever family it is.
 */
export function nodePodCidrs(node: KubeNode): { ipv4?: Cidr; ipv6?: Cidr6 } {
  const list = node.spec?.podCIDRs ?? [];
  const name = node.metadata?.name ?? '?';
  if (list.length > 2) throw new KubeAnnotationError(`node "${name}": spec.podCIDRs has ${list.length} entries; one IPv4, or one IPv4 and one IPv6, are allowed`);
  const candidates = list.length > 0 ? list : node.spec?.podCIDR ? [node.spec.podCIDR] : [];
  const out: { ipv4?: Cidr; ipv6?: Cidr6 } = {};
  for (const text of candidates) {
    const family = text.includes(':') ? 'ipv6' : 'ipv4';
    if (out[family] !== undefined) {
      throw new KubeAnnotationError(`node "${name}": spec.podCIDRs ${JSON.stringify(list)} has two ${family === 'ipv6' ? 'IPv6' : 'IPv4'} CIDRs; one per family is allowed`);
    }
    try {
      if (family === 'ipv6') {
        const c = parseCidr6(text);
        out.ipv6 = makeCidr6(c.network, c.prefixLength);
      } else {
        const c = parseCidr(text);
        out.ipv4 = makeCidr(c.network, c.prefixLength);
      }
    } catch (err) {
      throw new KubeAnnotationError(`node "${name}": pod CIDR "${text}": ${(err as Error).message}`);
    }
  }
  return out;
}

/**
 * This node's subnet, or the error flannel users most often hit, worded so
 * that it says what to fix.
 */
export function ownSubnet(node: KubeNode, network: Cidr, netConfPath: string): { subnet: Cidr } | { problem: string } {
  const name = node.metadata?.name ?? '?';
  let cidr: Cidr | undefined;
  try {
    cidr = nodePodCidr(node);
  } catch (err) {
    return { problem: (err as Error).message };
  }
  if (cidr === undefined) {
    return {
      problem:
        `node "${name}" has no spec.podCIDR: the pod network needs kube-controller-manager to allocate node CIDRs ` +
        `(--allocate-node-cidrs=true --cluster-cidr=${formatCidr(network)}, e.g. kubeadm init --pod-network-cidr=${formatCidr(network)}), ` +
        `or the node's spec.podCIDR set by hand`,
    };
  }
  if (!cidrCovers(network, cidr)) {
    return {
      problem:
        `node "${name}" has spec.podCIDR ${formatCidr(cidr)}, outside the Network ${formatCidr(network)} of ${netConfPath}: ` +
        `kube-controller-manager's --cluster-cidr must equal net-conf.json's Network (or fix Network to match it)`,
    };
  }
  return { subnet: cidr };
}

export interface PublishedLease {
  backendType: string;
  /** BackendData as published: null for udp, {VNI, VtepMAC} for vxlan */
  backendData: unknown;
  /** the address this node receives on (after node-public-ip) */
  publicIp: string;
  /** dual-stack: the IPv6 address this node receives on (after node-public-ipv6), when it has one */
  publicIpv6?: string;
  /** dual-stack: BackendV6Data ({VNI, VtepMAC} for vxlan); undefined: not published (udp) */
  backendV6Data?: unknown;
}

/**
 * The annotation changes that make the node carry this lease, as flanneld
 * decides them (kube.go AcquireLease): nothing when they are already right;
 * public-ip-overwrite, when set, is what public-ip says. Returns undefined
 * when no patch is needed.
 */
export function annotationPatch(node: KubeNode, names: AnnotationNames, lease: PublishedLease): Record<string, string> | undefined {
  const current = node.metadata?.annotations ?? {};
  const overwrite = current[names.publicIpOverwrite] ?? '';
  const want: Record<string, string> = {
    [names.backendType]: lease.backendType,
    // Go's json.Marshal of a json.RawMessage: compact, keys in the order written (VNI, VtepMAC).
    [names.backendData]: JSON.stringify(lease.backendData ?? null),
    [names.publicIp]: overwrite !== '' ? overwrite : lease.publicIp,
    [names.kubeSubnetManager]: 'true',
  };
  // flannel writes the IPv6 pair when the node has an IPv6 public address or IPv6 backend data; the
  // operator's public-ipv6-overwrite wins over the address, as public-ip-overwrite does for IPv4.
  if (lease.backendV6Data !== undefined) want[names.backendV6Data] = JSON.stringify(lease.backendV6Data);
  if (lease.publicIpv6 !== undefined) {
    const overwrite6 = current[names.publicIpv6Overwrite] ?? '';
    want[names.publicIpv6] = overwrite6 !== '' ? overwrite6 : lease.publicIpv6;
  }
  const patch: Record<string, string> = {};
  for (const [k, v] of Object.entries(want)) if (current[k] !== v) patch[k] = v;
  return Object.keys(patch).length > 0 ? patch : undefined;
}

/** The node's public IP chosen by the operator (node-public-ip), if any. */
export function annotatedNodePublicIp(node: KubeNode, names: AnnotationNames): string | undefined {
  const v = node.metadata?.annotations?.[names.nodePublicIp];
  return v !== undefined && v !== '' ? v : undefined;
}

/** The node's public IPv6 chosen by the operator (node-public-ipv6), if any. */
export function annotatedNodePublicIpv6(node: KubeNode, names: AnnotationNames): string | undefined {
  const v = node.metadata?.annotations?.[names.nodePublicIpv6];
  return v !== undefined && v !== '' ? v : undefined;
}

/** The parts of the network config that decide which pod CIDRs a node must have. */
export type FamilyConfig = Pick<NetworkConfig, 'network' | 'enableIPv4' | 'ipv6'>;

/**
 * This node's subnets for a dual-stack or IPv6-only config (flannel's
 * AcquireLease checks): the IPv4 pod CIDR inside Network when IPv4 is on, the
 * IPv6 one inside IPv6Network when IPv6 is on. A dual-stack config on a node
 * that has only an IPv4 pod CIDR (kube-controller-manager allocates podCIDRs
 * once: a node that joined before the cluster went dual-stack never gets an
 * IPv6 one) goes on with IPv4, with a warning, rather than taking its IPv4
 * pods down waiting for a CIDR that will not come.
 */
export function ownSubnets(
  node: KubeNode,
  config: FamilyConfig,
  netConfPath: string,
): { subnet: Cidr; ipv6Subnet?: Cidr6; warning?: string } | { problem: string } {
  const name = node.metadata?.name ?? '?';
  let cidrs: { ipv4?: Cidr; ipv6?: Cidr6 };
  try {
    cidrs = nodePodCidrs(node);
  } catch (err) {
    return { problem: (err as Error).message };
  }
  let subnet = makeCidr(0, 0);
  if (config.enableIPv4) {
    const v4 = ownSubnet(node, config.network, netConfPath);
    if ('problem' in v4) return v4;
    subnet = v4.subnet;
  }
  const ipv6 = config.ipv6;
  if (ipv6 === undefined) return { subnet };
  const v6 = cidrs.ipv6;
  const clusterCidr = config.enableIPv4 ? `${formatCidr(config.network)},${formatCidr6(ipv6.network)}` : formatCidr6(ipv6.network);
  if (v6 === undefined) {
    const fix = `kube-controller-manager allocates one per family with --cluster-cidr=${clusterCidr}`;
    if (!config.enableIPv4) {
      return { problem: `node "${name}" has no IPv6 pod CIDR in spec.podCIDRs, and ${netConfPath} is IPv6-only (EnableIPv4 false): ${fix}` };
    }
    return { subnet, warning: `node "${name}" has no IPv6 pod CIDR in spec.podCIDRs (${fix}; a node's podCIDRs are set once, when it joins): its pods get IPv4 only` };
  }
  if (!cidr6Covers(ipv6.network, v6)) {
    return {
      problem:
        `node "${name}" has the IPv6 pod CIDR ${formatCidr6(v6)}, outside the IPv6Network ${formatCidr6(ipv6.network)} of ${netConfPath}: ` +
        `kube-controller-manager's --cluster-cidr (${clusterCidr}) must hold net-conf.json's networks (or fix IPv6Network to match it)`,
    };
  }
  return { subnet, ipv6Subnet: v6 };
}

/**
 * A node as a flannel lease, or undefined when it is not flannel's (no
 * kube-subnet-manager=true). Throws for a flannel node whose annotations or
 * pod CIDR cannot be read; the caller skips it with a log line.
 */
export function nodeToLease(node: KubeNode, names: AnnotationNames, families: { ipv6?: boolean } = {}): Lease | undefined {
  const a = node.metadata?.annotations ?? {};
  if (a[names.kubeSubnetManager] !== 'true') return undefined;
  const name = node.metadata?.name ?? '?';
  const cidrs = nodePodCidrs(node);
  // IPv6 halves are read only when this node's config enables IPv6 (flannel's nodeToLease: enableIPv6).
  const ipv6Subnet = families.ipv6 ? cidrs.ipv6 : undefined;
  if (cidrs.ipv4 === undefined && ipv6Subnet === undefined) {
    throw new KubeAnnotationError(`node "${name}": annotated as flannel's but has no ${families.ipv6 ? '' : 'IPv4 '}spec.podCIDR`);
  }
  const json = (key: string): unknown => {
    const text = a[key];
    if (text === undefined || text === '') return null;
    try {
      return JSON.parse(text);
    } catch {
      throw new KubeAnnotationError(`node "${name}": ${key} is not JSON: ${JSON.stringify(text.slice(0, 120))}`);
    }
  };
  const backendData = json(names.backendData);
  const attrs: Record<string, unknown> = { PublicIP: a[names.publicIp], BackendType: a[names.backendType], BackendData: backendData };
  if (ipv6Subnet !== undefined) {
    const v6 = a[names.publicIpv6];
    attrs.PublicIPv6 = v6 !== undefined && v6 !== '' ? v6 : null;
    attrs.BackendV6Data = json(names.backendV6Data);
  }
  try {
    // The same validation as a lease read from etcd or the leases file; an IPv6-only node's key has the zero IPv4 half.
    return parseLeaseAttrs(formatSubnetKey(cidrs.ipv4 ?? makeCidr(0, 0), ipv6Subnet), attrs);
  } catch (err) {
    throw new KubeAnnotationError(`node "${name}": ${(err as Error).message}`);
  }
}
