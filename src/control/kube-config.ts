// Where the API server is and how to authenticate to it, as flanneld finds it
// (client-go's clientcmd.BuildConfigFromFlags):
//   - a kubeconfig file (--kubeconfig-file): its current-context's cluster and
//     user; --kube-api-url replaces that cluster's server;
//   - --kube-api-url alone: that server, no credentials, the system's CAs;
//   - neither: the pod's service account (in-cluster), at
//     https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT with the
//     token and ca.crt kubelet mounts.
//
// Supported in a kubeconfig, with client-go's precedence: cluster server,
// certificate-authority(-data), insecure-skip-tls-verify, tls-server-name;
// user token, tokenFile, client-certificate(-data), client-key(-data),
// username/password, as (impersonation). Files are named relative to the
// kubeconfig's directory, and read again for every request: a rotated token
// (bound service-account tokens expire within the hour) or certificate is
// used as soon as it is on disk. What a kubeconfig may hold that we do not
// implement (exec credential plugins, auth-provider, proxy-url, the other
// impersonation fields) is refused with the field's name: never a request
// without the credentials the user meant to give.
//
// A kubeconfig written as JSON (JSON is YAML) is read with JSON.parse; YAML
// with the `yaml` package, loaded only then, as YAML 1.1 (sigs.k8s.io/yaml
// reads kubeconfigs with go-yaml, whose booleans are 1.1's).

import { createRequire } from 'node:module';
import { dirname, isAbsolute, join } from 'node:path';
import { isIPv6 } from 'node:net';
import { readBoundedFileSync } from './bounded-file.js';
import { KubeApiError } from './kube-http.js';

/** Where kubelet mounts the service account's token, ca.crt and namespace. */
export const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';
/** A kubeconfig bigger than this is not one (embedded certificates make them a few KiB). */
export const MAX_KUBECONFIG_BYTES = 4 << 20;
/** Tokens, CA bundles, certificates and keys. */
export const MAX_CREDENTIAL_FILE_BYTES = 1 << 20;

/** Inline bytes (the kubeconfig's -data fields, a token), or a file read again for each request. */
export type Material = { data: Buffer } | { file: string; what: string };

export type KubeAuth =
  | { kind: 'none' }
  | { kind: 'token'; token: Material }
  | { kind: 'basic'; username: string; password: string };

export interface KubeSettings {
  /** the API server's URL, without a trailing slash */
  server: string;
  ca?: Material;
  cert?: Material;
  key?: Material;
  insecureSkipTlsVerify: boolean;
  tlsServerName?: string;
  auth: KubeAuth;
  /** Impersonate-User */
  impersonate?: string;
}

type Obj = Record<string, unknown>;

function isObject(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** What the agent was given: --kubeconfig-file, --kube-api-url. */
export interface KubeConnectionFlags {
  kubeconfigFile?: string;
  apiUrl?: string;
}

/** The settings for the flags, from the kubeconfig, the URL or the pod's service account (env: the process's). */
export function loadKubeSettings(conn: KubeConnectionFlags, env: NodeJS.ProcessEnv = process.env): KubeSettings {
  if (conn.kubeconfigFile) {
    let text: string;
    try {
      text = readBoundedFileSync(conn.kubeconfigFile, MAX_KUBECONFIG_BYTES, 'the kubeconfig').toString('utf8');
    } catch (err) {
      throw new KubeApiError((err as Error).message, 0);
    }
    return parseKubeconfig(text, conn.kubeconfigFile, conn.apiUrl);
  }
  if (conn.apiUrl) return { server: checkServer(conn.apiUrl, '--kube-api-url'), insecureSkipTlsVerify: false, auth: { kind: 'none' } };
  return inClusterSettings(env, SERVICE_ACCOUNT_DIR);
}

/** As client-go's rest.InClusterConfig: https to the kubernetes Service, the mounted token and CA. */
export function inClusterSettings(env: NodeJS.ProcessEnv, dir: string): KubeSettings {
  for (const name of ['KUBERNETES_SERVICE_HOST', 'KUBERNETES_SERVICE_PORT']) {
    if (!env[name]) throw new KubeApiError(`not running in a Kubernetes pod (${name} is not set): give --kubeconfig-file or --kube-api-url`, 0);
  }
  const host = env.KUBERNETES_SERVICE_HOST!;
  const server = `https://${isIPv6(host) ? `[${host}]` : host}:${env.KUBERNETES_SERVICE_PORT}`;
  return {
    server: checkServer(server, 'KUBERNETES_SERVICE_HOST/PORT'),
    ca: { file: join(dir, 'ca.crt'), what: "the service account's CA" },
    insecureSkipTlsVerify: false,
    // Read for each request, not at start: kubelet may rotate it (bound tokens), or mount it late.
    auth: { kind: 'token', token: { file: join(dir, 'token'), what: "the service account's token" } },
  };
}

function checkServer(server: string, where: string): string {
  let url: URL;
  try {
    url = new URL(server);
  } catch {
    throw new KubeApiError(`${where}: server "${server}" is not a URL`, 0);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new KubeApiError(`${where}: server "${server}" is not an http(s):// URL`, 0);
  if (url.search || url.hash) throw new KubeApiError(`${where}: server "${server}" may not have a query or fragment`, 0);
  return server.replace(/\/+$/, '');
}

function parseDocument(text: string, file: string): unknown {
  if (/^\s*\{/.test(text)) {
    try {
      return JSON.parse(text);
    } catch {
      /* not JSON after all: YAML says why */
    }
  }
  // Loaded here, synchronously, only for YAML kubeconfigs: in-cluster agents never pay for the parser.
  const YAML = createRequire(import.meta.url)('yaml') as typeof import('yaml');
  try {
    return YAML.parse(text, { version: '1.1', uniqueKeys: true, maxAliasCount: 100 });
  } catch (err) {
    throw new KubeApiError(`${file}: not a kubeconfig (YAML): ${(err as Error).message.split('\n')[0]}`, 0);
  }
}

/** The settings of a kubeconfig's current context; apiUrl, when given, replaces its cluster's server. */
export function parseKubeconfig(text: string, file: string, apiUrl?: string): KubeSettings {
  const doc = parseDocument(text, file);
  const fail = (message: string): never => {
    throw new KubeApiError(`${file}: ${message}`, 0);
  };
  if (!isObject(doc)) fail('not a kubeconfig (expected a mapping with clusters, users, contexts, current-context)');
  const config = doc as Obj;
  const str = (o: Obj, key: string, where: string): string | undefined => {
    const v = o[key];
    if (v === undefined || v === null || v === '') return undefined;
    if (typeof v !== 'string') fail(`${where}.${key} must be a string`);
    return v as string;
  };
  const named = (list: string): Map<string, { index: number; body: Obj }> => {
    const v = config[list];
    const out = new Map<string, { index: number; body: Obj }>();
    if (v === undefined || v === null) return out;
    if (!Array.isArray(v)) fail(`${list} must be a list`);
    const inner = list.slice(0, -1); // clusters -> cluster
    (v as unknown[]).forEach((entry, index) => {
      if (!isObject(entry)) fail(`${list}[${index}] must be a mapping`);
      const e = entry as Obj;
      const name = str(e, 'name', `${list}[${index}]`);
      if (name === undefined) fail(`${list}[${index}].name is missing`);
      if (out.has(name!)) fail(`${list}: "${name}" appears twice`);
      const body = e[inner] ?? {};
      if (!isObject(body)) fail(`${list}[${index}].${inner} must be a mapping`);
      out.set(name!, { index, body: body as Obj });
    });
    return out;
  };
  const clusters = named('clusters');
  const users = named('users');
  const contexts = named('contexts');

  const current = str(config, 'current-context', '');
  if (current === undefined) fail('no current-context (flannel-udp uses the current context; set it with kubectl config use-context)');
  const context = contexts.get(current!);
  if (!context) fail(`current-context "${current}" is not among the contexts`);
  const cw = `contexts[${context!.index}].context`;
  const clusterName = str(context!.body, 'cluster', cw);
  if (clusterName === undefined) fail(`${cw}.cluster is missing`);
  const cluster = clusters.get(clusterName!);
  if (!cluster) fail(`cluster "${clusterName}" of context "${current}" is not among the clusters`);
  const userName = str(context!.body, 'user', cw);
  const user = userName === undefined ? undefined : users.get(userName);
  if (userName !== undefined && !user) fail(`user "${userName}" of context "${current}" is not among the users`);

  const base = dirname(file);
  const path = (p: string) => (isAbsolute(p) ? p : join(base, p));
  /** -data (base64) wins over the file, as client-go; the file is checked now and read again for each request. */
  const material = (o: Obj, where: string, fileKey: string, dataKey: string | undefined, what: string): Material | undefined => {
    const data = dataKey === undefined ? undefined : str(o, dataKey, where);
    if (data !== undefined) {
      if (!/^[A-Za-z0-9+/=\s]+$/.test(data)) fail(`${where}.${dataKey} is not base64`);
      return { data: Buffer.from(data, 'base64') };
    }
    const f = str(o, fileKey, where);
    if (f === undefined) return undefined;
    const full = path(f);
    try {
      readBoundedFileSync(full, MAX_CREDENTIAL_FILE_BYTES, `${where}.${fileKey}`);
    } catch (err) {
      fail((err as Error).message);
    }
    return { file: full, what };
  };

  const c = cluster!.body;
  const cwhere = `clusters[${cluster!.index}].cluster`;
  if (c['proxy-url'] !== undefined) fail(`${cwhere}.proxy-url: proxies are not supported by flannel-udp's Kubernetes client; give the API server's own address (the DaemonSet's in-cluster config needs none)`);
  const insecure = c['insecure-skip-tls-verify'] ?? false;
  if (typeof insecure !== 'boolean') fail(`${cwhere}.insecure-skip-tls-verify must be true or false`);
  const ca = material(c, cwhere, 'certificate-authority', 'certificate-authority-data', 'the certificate-authority');
  if (insecure && ca) fail(`${cwhere}: certificate-authority with insecure-skip-tls-verify: the CA would be ignored; give one of them (as client-go, which refuses it too)`);
  let server = str(c, 'server', cwhere);
  if (apiUrl) server = apiUrl;
  if (server === undefined) fail(`${cwhere}.server is missing (or give --kube-api-url)`);

  let auth: KubeAuth = { kind: 'none' };
  let cert: Material | undefined;
  let key: Material | undefined;
  let impersonate: string | undefined;
  if (user) {
    const u = user.body;
    const uwhere = `users[${user.index}].user`;
    if (u.exec !== undefined) {
      fail(`${uwhere}.exec: credential plugins are not supported by flannel-udp's Kubernetes client; use a service-account token (token or tokenFile), a client certificate, or run in-cluster`);
    }
    if (u['auth-provider'] !== undefined) {
      fail(`${uwhere}.auth-provider: auth providers (gcp, azure, oidc) are not supported by flannel-udp's Kubernetes client; use a service-account token (token or tokenFile), a client certificate, or run in-cluster`);
    }
    for (const k of ['as-groups', 'as-uid', 'as-user-extra']) {
      if (u[k] !== undefined) fail(`${uwhere}.${k}: only "as" (Impersonate-User) is supported by flannel-udp's Kubernetes client`);
    }
    cert = material(u, uwhere, 'client-certificate', 'client-certificate-data', 'the client-certificate');
    key = material(u, uwhere, 'client-key', 'client-key-data', 'the client-key');
    if ((cert === undefined) !== (key === undefined)) fail(`${uwhere}: client-certificate and client-key go together; one of them is missing`);
    const token = str(u, 'token', uwhere);
    // client-go spells it tokenFile; the maintained JavaScript client read token-file.
    const tokenFileKey = u.tokenFile !== undefined ? 'tokenFile' : 'token-file';
    const tokenFile = material(u, uwhere, tokenFileKey, undefined, 'the tokenFile');
    const username = str(u, 'username', uwhere);
    const password = str(u, 'password', uwhere);
    if ((username !== undefined || password !== undefined) && (token !== undefined || tokenFile !== undefined)) {
      fail(`${uwhere}: username/password and a token: more than one authentication method (as client-go, refused)`);
    }
    // tokenFile wins over token, as client-go ("the last successfully read value takes precedence").
    if (tokenFile) auth = { kind: 'token', token: tokenFile };
    else if (token !== undefined) auth = { kind: 'token', token: { data: Buffer.from(token.trim()) } };
    else if (username !== undefined) auth = { kind: 'basic', username, password: password ?? '' };
    else if (password !== undefined) fail(`${uwhere}: password without username`);
    impersonate = str(u, 'as', uwhere);
  }
  return {
    server: checkServer(server!, apiUrl ? '--kube-api-url' : `${file}: ${cwhere}`),
    ...(ca ? { ca } : {}),
    ...(cert ? { cert, key } : {}),
    insecureSkipTlsVerify: insecure as boolean,
    ...(str(c, 'tls-server-name', cwhere) ? { tlsServerName: str(c, 'tls-server-name', cwhere) } : {}),
    auth,
    ...(impersonate ? { impersonate } : {}),
  };
}
