// The `up` flags of kube mode (flanneld --kube-subnet-mgr and its companions),
// as one FlagGroup of up's table, and their checks. Kept out of cli.ts so
// kube mode stays in files of its own.

import { DEFAULT_ANNOTATION_PREFIX } from './kube-annotations.js';
import type { FlagGroup } from '../cli-flags.js';

/** kube-flannel.yml mounts net-conf.json from its ConfigMap here. */
export const DEFAULT_NET_CONFIG_PATH = '/etc/kube-flannel/net-conf.json';
/** The kube block of `up`'s flag table (up-flags.ts): the parser and --help come from it. */
export const KUBE_FLAGS: FlagGroup = {
  title: 'Kubernetes options for up (flanneld --kube-subnet-mgr):',
  flags: [
    { name: 'kube-subnet-mgr', type: 'boolean',
      help: "take this node's subnet from its spec.podCIDR, publish the lease as flannel's node annotations, follow the other nodes' leases by watching the API server; writes --subnet-file. The node is NODE_NAME, or POD_NAME's in POD_NAMESPACE" },
    { name: 'kubeconfig-file', type: 'string', value: 'FILE', default: "the pod's service account (in-cluster)", help: 'kubeconfig to reach the API server' },
    { name: 'kube-api-url', type: 'string', value: 'URL', help: "the API server's URL (replaces the kubeconfig's server)" },
    { name: 'kube-annotation-prefix', type: 'string', value: 'PREFIX', default: DEFAULT_ANNOTATION_PREFIX, help: "prefix of flannel's node annotations" },
    { name: 'net-config-path', type: 'string', value: 'FILE', default: DEFAULT_NET_CONFIG_PATH,
      help: "the network config, flannel's net-conf.json (Network, Backend.Type udp|vxlan, Backend.Port, Backend.VNI)" },
    { name: 'set-node-network-unavailable', type: 'boolean', default: 'true',
      help: "as flanneld: once forwarding is up, set the node's NetworkUnavailable condition to False (reason FlannelIsUp) through the nodes/status subresource; =false leaves the condition to someone else" },
  ],
};

export interface KubeFlagValues {
  'kube-subnet-mgr'?: boolean;
  'kubeconfig-file'?: string;
  'kube-api-url'?: string;
  'kube-annotation-prefix'?: string;
  'net-config-path'?: string;
  'set-node-network-unavailable'?: boolean;
}

export class KubeFlagError extends Error {
  override name = 'KubeFlagError';
}

/** AgentOptions.kube, or undefined without --kube-subnet-mgr (whose companions are then refused). */
export function parseKubeFlags(
  values: KubeFlagValues,
): { kubeconfigFile?: string; apiUrl?: string; annotationPrefix: string; netConfigPath: string; setNodeNetworkUnavailable: boolean } | undefined {
  if (!values['kube-subnet-mgr']) {
    for (const f of ['kubeconfig-file', 'kube-api-url', 'kube-annotation-prefix', 'net-config-path', 'set-node-network-unavailable'] as const) {
      if (values[f] !== undefined) throw new KubeFlagError(`--${f} needs --kube-subnet-mgr`);
    }
    return undefined;
  }
  const apiUrl = values['kube-api-url'];
  if (apiUrl !== undefined && !/^https?:\/\/[^/]+/.test(apiUrl)) throw new KubeFlagError(`--kube-api-url: "${apiUrl}" is not an http(s):// URL`);
  return {
    kubeconfigFile: values['kubeconfig-file'],
    apiUrl,
    annotationPrefix: values['kube-annotation-prefix'] ?? DEFAULT_ANNOTATION_PREFIX,
    netConfigPath: values['net-config-path'] ?? DEFAULT_NET_CONFIG_PATH,
    setNodeNetworkUnavailable: values['set-node-network-unavailable'] ?? true,
  };
}
