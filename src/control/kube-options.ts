// The `up` flags of kube mode (flanneld --kube-subnet-mgr and its companions),
// as node:util parseArgs declares them, their help text, and their checks.
// Kept out of cli.ts so the command line's option table can take them as one block.

import { DEFAULT_ANNOTATION_PREFIX } from './kube-annotations.js';

/** kube-flannel.yml mounts net-conf.json from its ConfigMap here. */
export const DEFAULT_NET_CONFIG_PATH = '/etc/kube-flannel/net-conf.json';
export const KUBE_FLAGS = {
  'kube-subnet-mgr': { type: 'boolean' },
  'kubeconfig-file': { type: 'string' },
  'kube-api-url': { type: 'string' },
  'kube-annotation-prefix': { type: 'string' },
  'net-config-path': { type: 'string' },
} as const;

export const KUBE_HELP = `Kubernetes options for up (flanneld --kube-subnet-mgr):
  --kube-subnet-mgr    take this node's subnet from its spec.podCIDR, publish the
                       lease as flannel's node annotations, follow the other nodes'
                       leases by watching the API server; writes --subnet-file.
                       The node is NODE_NAME, or POD_NAME's in POD_NAMESPACE
  --kubeconfig-file FILE  kubeconfig to reach the API server [default: the pod's
                       service account (in-cluster)]
  --kube-api-url URL   the API server's URL (replaces the kubeconfig's server)
  --kube-annotation-prefix PREFIX
                       [default: ${DEFAULT_ANNOTATION_PREFIX}]
  --net-config-path FILE  the network config, flannel's net-conf.json
                       (Network, Backend.Type udp|vxlan, Backend.Port, Backend.VNI)
                       [default: ${DEFAULT_NET_CONFIG_PATH}]
`;

export interface KubeFlagValues {
  'kube-subnet-mgr'?: boolean;
  'kubeconfig-file'?: string;
  'kube-api-url'?: string;
  'kube-annotation-prefix'?: string;
  'net-config-path'?: string;
}

export class KubeFlagError extends Error {
  override name = 'KubeFlagError';
}

/** AgentOptions.kube, or undefined without --kube-subnet-mgr (whose companions are then refused). */
export function parseKubeFlags(values: KubeFlagValues): { kubeconfigFile?: string; apiUrl?: string; annotationPrefix: string; netConfigPath: string } | undefined {
  if (!values['kube-subnet-mgr']) {
    for (const f of ['kubeconfig-file', 'kube-api-url', 'kube-annotation-prefix', 'net-config-path'] as const) {
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
  };
}
