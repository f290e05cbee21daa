// What tests need around the kube-apiserver stand-in: a CA and a serving
// certificate made by openssl, tokens for the agent's service account and
// for an admin, a kubeconfig as kubeadm writes one, node objects as kubelet
// registers them, and an admin client (HTTPS, or HTTP over the stand-in's
// unix socket from another network namespace).
import { runTool } from './required-tool.js';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import https from 'node:https';
import http from 'node:http';
import { ADMIN, type Identity, serviceAccount } from './kube-apiserver-standin.js';

export const MANIFEST = new URL('../../../deploy/kube-flannel-udp.yml', import.meta.url).pathname;
/** The DaemonSet's ServiceAccount in the manifest. */
export const AGENT_SA = { namespace: 'kube-flannel-udp', name: 'flannel-udp' };

/** The config file of kube-apiserver-standin-main.ts. */
export interface StandInProcessConfig {
  host: string;
  port: number;
  certFile: string;
  keyFile: string;
  tokens: Record<string, Identity>;
  manifestFile: string;
  unixSocket: string;
  stateFile: string;
  bookmarkMs?: number;
}

export const SERVING_LINE = 'kube-apiserver stand-in serving';
export const STANDIN_MAIN = new URL('./kube-apiserver-standin-main.js', import.meta.url).pathname;

export interface KubePki {
  caFile: string;
  ca: string;
  certFile: string;
  keyFile: string;
  cert: string;
  key: string;
  /** a CA that did not sign the server certificate */
  otherCaFile: string;
}

/** A CA and a server certificate for the given IP addresses, in dir. */
export function makeKubePki(dir: string, ips: string[]): KubePki {
  const ssl = (...args: string[]) => runTool('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '1', '-subj', '/CN=kubernetes');
  writeFileSync(join(dir, 'ext.cnf'), `subjectAltName=${ips.map((ip) => `IP:${ip}`).join(',')},DNS:kubernetes\nextendedKeyUsage=serverAuth\n`);
  ssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'apiserver.key', '-out', 'apiserver.csr', '-subj', '/CN=kube-apiserver');
  ssl('x509', '-req', '-in', 'apiserver.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'apiserver.pem', '-days', '1', '-extfile', 'ext.cnf');
  ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'other.key', '-out', 'other.pem', '-days', '1', '-subj', '/CN=someone else');
  const f = (n: string) => join(dir, n);
  return {
    caFile: f('ca.pem'),
    ca: readFileSync(f('ca.pem'), 'utf8'),
    certFile: f('apiserver.pem'),
    keyFile: f('apiserver.key'),
    cert: readFileSync(f('apiserver.pem'), 'utf8'),
    key: readFileSync(f('apiserver.key'), 'utf8'),
    otherCaFile: f('other.pem'),
  };
}

export interface KubeTokens {
  agent: string;
  admin: string;
  /** a valid user bound to no role */
  nobody: string;
  identities: Record<string, Identity>;
}

export function makeTokens(): KubeTokens {
  const t = () => randomBytes(16).toString('hex');
  const agent = t();
  const admin = t();
  const nobody = t();
  return {
    agent,
    admin,
    nobody,
    identities: {
      [agent]: serviceAccount(AGENT_SA.namespace, AGENT_SA.name),
      [admin]: ADMIN,
      [nobody]: serviceAccount('default', 'default'),
    },
  };
}

/** A kubeconfig with a bearer token, as for a service account outside the cluster. */
export function writeKubeconfig(path: string, server: string, caFile: string, token: string): void {
  const kubeconfig = {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'test', cluster: { server, 'certificate-authority': caFile } }],
    users: [{ name: 'flannel-udp', user: { token } }],
    contexts: [{ name: 'test', context: { cluster: 'test', user: 'flannel-udp' } }],
    'current-context': 'test',
  };
  writeFileSync(path, JSON.stringify(kubeconfig, null, 2)); // JSON is YAML
}

/** A node as kubelet registers it (NetworkUnavailable=True until the network plugin says otherwise). */
export function kubeletNode(name: string, internalIp: string, podCIDR?: string): Record<string, unknown> {
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name, labels: { 'kubernetes.io/hostname': name, 'kubernetes.io/os': 'linux' }, annotations: { 'node.alpha.kubernetes.io/ttl': '0' } },
    spec: podCIDR ? { podCIDR, podCIDRs: [podCIDR] } : {},
    status: {
      addresses: [{ type: 'InternalIP', address: internalIp }, { type: 'Hostname', address: name }],
      conditions: [{ type: 'NetworkUnavailable', status: 'True', reason: 'NoRouteCreated', message: 'Node created without a route' }],
    },
  };
}

export interface AdminResponse {
  status: number;
  body: any;
}

/** Requests to the stand-in with a token: over HTTPS (url + ca) or plain HTTP on its unix socket. */
export class KubeAdminClient {
  constructor(
    private readonly target: { url: string; ca: string } | { socketPath: string },
    private readonly token: string,
  ) {}

  request(method: string, path: string, body?: unknown, contentType = 'application/json'): Promise<AdminResponse> {
    const data = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
    const headers: Record<string, string> = { Authorization: `Bearer ${this.token}`, Accept: 'application/json' };
    if (data !== undefined) headers['Content-Type'] = contentType;
    return new Promise((resolve, reject) => {
      const done = (res: http.IncomingMessage) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown = text;
          try {
            parsed = JSON.parse(text);
          } catch {
            /* not JSON */
          }
          resolve({ status: res.statusCode ?? 0, body: parsed });
        });
      };
      const req =
        'socketPath' in this.target
          ? http.request({ socketPath: this.target.socketPath, path, method, headers, agent: false }, done)
          : https.request(new URL(path, this.target.url), { method, headers, ca: this.target.ca, agent: false }, done);
      req.on('error', reject);
      req.setTimeout(10_000, () => req.destroy(new Error(`${method} ${path}: no answer in 10 s`)));
      if (data !== undefined) req.write(data);
      req.end();
    });
  }

  async ok(method: string, path: string, body?: unknown, contentType?: string): Promise<any> {
    const r = await this.request(method, path, body, contentType);
    if (r.status < 200 || r.status > 299) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body;
  }

  createNode(node: Record<string, unknown>): Promise<any> {
    return this.ok('POST', '/api/v1/nodes', node);
  }

  getNode(name: string): Promise<any> {
    return this.ok('GET', `/api/v1/nodes/${name}`);
  }

  /** A merge patch of the node (spec and metadata), as `kubectl patch node --type merge`. */
  patchNode(name: string, patch: unknown): Promise<any> {
    return this.ok('PATCH', `/api/v1/nodes/${name}`, patch, 'application/merge-patch+json');
  }

  deleteNode(name: string): Promise<any> {
    return this.ok('DELETE', `/api/v1/nodes/${name}`);
  }
}
