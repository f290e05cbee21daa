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
// Everything here is pure: node JSON in, leases and patches out.

import { type Cidr, cidrCovers, formatCidr, makeCidr, parseCidr } from './ipv4-address.js';
import { type Lease, formatSubnetKey, parseLeaseAttrs } from './lease.js';

export const DEFAULT_ANNOTATION_PREFIX = 'flannel.alpha.coreos.com';

export interface AnnotationNames {
  kubeSubnetManager: string;
  backendType: string;
  backendData: string;
  publicIp: string;
  publicIpOverwrite: string;
  nodePublicIp: string;
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
  const list = node.spec?.podCIDRs ?? [];
  const name = node.metadata?.name ?? '?';
  if (list.length > 2) throw new KubeAnnotationError(`node "${name}": spec.podCIDRs has ${list.length} entries; one IPv4, or one IPv4 and one IPv6, are allowed`);
  const candidates = list.length > 0 ? list : node.spec?.podCIDR ? [node.spec.podCIDR] : [];
  for (const text of candidates) {
    if (text.includes(':')) continue; // the IPv6 half of a dual-stack node: flannel-udp carries IPv4
    let c: Cidr;
    try {
      c = parseCidr(text);
    } catch (err) {
      throw new KubeAnnotationError(`node "${name}": pod CIDR "${text}": ${(err as Error).message}`);
    }
    return makeCidr(c.network, c.prefixLength);
  }
  return undefined;
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
  const patch: Record<string, string> = {};
  for (const [k, v] of Object.entries(want)) if (current[k] !== v) patch[k] = v;
  return Object.keys(patch).length > 0 ? patch : undefined;
}

/** The node's public IP chosen by the operator (node-public-ip), if any. */
export function annotatedNodePublicIp(node: KubeNode, names: AnnotationNames): string | undefined {
  const v = node.metadata?.annotations?.[names.nodePublicIp];
  return v !== undefined && v !== '' ? v : undefined;
}

/**
 * A node as a flannel lease, or undefined when it is not flannel's (no
 * kube-subnet-manager=true). Throws for a flannel node whose annotations or
 * pod CIDR cannot be read; the caller skips it with a log line.
 */
export function nodeToLease(node: KubeNode, names: AnnotationNames): Lease | undefined {
  const a = node.metadata?.annotations ?? {};
  if (a[names.kubeSubnetManager] !== 'true') return undefined;
  const name = node.metadata?.name ?? '?';
  const subnet = nodePodCidr(node);
  if (subnet === undefined) throw new KubeAnnotationError(`node "${name}": annotated as flannel's but has no IPv4 spec.podCIDR`);
  let backendData: unknown = null;
  const dataText = a[names.backendData];
  if (dataText !== undefined && dataText !== '') {
    try {
      backendData = JSON.parse(dataText);
    } catch {
      throw new KubeAnnotationError(`node "${name}": ${names.backendData} is not JSON: ${JSON.stringify(dataText.slice(0, 120))}`);
    }
  }
  try {
    // The same validation as a lease read from etcd or the leases file.
    return parseLeaseAttrs(formatSubnetKey(subnet), { PublicIP: a[names.publicIp], BackendType: a[names.backendType], BackendData: backendData });
  } catch (err) {
    throw new KubeAnnotationError(`node "${name}": ${(err as Error).message}`);
  }
}
