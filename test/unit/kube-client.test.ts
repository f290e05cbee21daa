// Our own Kubernetes client (kube-client.ts, kube-config.ts, kube-http.ts)
// where the API-server stand-in cannot take it: every kubeconfig field we
// read and every one we refuse, TLS with a CA and a client certificate made
// by openssl, a token file changed between requests, and the watch stream's
// wire edge cases from a scripted server on loopback (chunks split mid-line
// and mid-character, an oversized line, 410, a connection cut mid-stream).
// The stand-in tests (kube-subnet-manager.test.ts) cover the API semantics.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import https from 'node:https';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { KubeApiError, KubeClient, type WatchEventType } from '../../src/control/kube-client.js';
import { inClusterSettings, loadKubeSettings, parseKubeconfig } from '../../src/control/kube-config.js';
import { kubeRequest, LineSplitter } from '../../src/control/kube-http.js';
import { runTool } from '../support/required-tool.js';

let dir: string;
const b64 = (s: string | Buffer) => Buffer.from(s).toString('base64');

function kubeconfigYaml(cluster: string, user: string, extra = ''): string {
  return `apiVersion: v1
kind: Config
clusters:
- name: c1
  cluster:
${cluster}
users:
- name: u1
  user:
${user}
contexts:
- name: ctx
  context:
    cluster: c1
    user: u1
current-context: ctx
${extra}`;
}

function file(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

// ---- kubeconfig ----

const config = suite('kubeconfig');
config.before(() => {
  dir = mkdtempSync(join(tmpdir(), `fut-kube-client-${process.pid}-`));
});
config.after(() => rmSync(dir, { recursive: true, force: true }));

config('kubeadm style: every -data field, YAML; the current context picks cluster and user', () => {
  const yaml = `apiVersion: v1
kind: Config
clusters:
- name: other
  cluster:
    server: https://192.0.2.9:6443
- name: kubernetes
  cluster:
    certificate-authority-data: ${b64('CA PEM')}
    server: https://192.0.2.1:6443/
    tls-server-name: kubernetes
users:
- name: kubernetes-admin
  user:
    client-certificate-data: ${b64('CERT PEM')}
    client-key-data: ${b64('KEY PEM')}
    as: system:serviceaccount:kube-flannel-udp:flannel-udp
contexts:
- name: other@other
  context: {cluster: other, user: kubernetes-admin}
- context:
    cluster: kubernetes
    user: kubernetes-admin
  name: kubernetes-admin@kubernetes
current-context: kubernetes-admin@kubernetes
preferences: {}
`;
  const s = parseKubeconfig(yaml, '/etc/k/admin.conf');
  assert.is(s.server, 'https://192.0.2.1:6443', 'trailing slash dropped');
  assert.equal(s.ca, { data: Buffer.from('CA PEM') });
  assert.equal(s.cert, { data: Buffer.from('CERT PEM') });
  assert.equal(s.key, { data: Buffer.from('KEY PEM') });
  assert.is(s.tlsServerName, 'kubernetes');
  assert.is(s.insecureSkipTlsVerify, false);
  assert.equal(s.auth, { kind: 'none' });
  assert.is(s.impersonate, 'system:serviceaccount:kube-flannel-udp:flannel-udp');
});

config('files relative to the kubeconfig, checked at start; tokenFile wins over token; --kube-api-url replaces the server', () => {
  mkdirSync(join(dir, 'sub'), { recursive: true });
  file('sub/ca.pem', 'CA');
  file('sub/token', 'tok\n');
  const yaml = kubeconfigYaml('    server: https://192.0.2.1:6443\n    certificate-authority: ca.pem', '    token: inline\n    tokenFile: token');
  const path = file('sub/kubeconfig', yaml);
  const s = loadKubeSettings({ kubeconfigFile: path, apiUrl: 'https://127.0.0.1:7443' });
  assert.is(s.server, 'https://127.0.0.1:7443');
  assert.equal(s.ca, { file: join(dir, 'sub/ca.pem'), what: 'the certificate-authority' });
  assert.equal(s.auth, { kind: 'token', token: { file: join(dir, 'sub/token'), what: 'the tokenFile' } });
  // token alone; the maintained client's spelling token-file; username/password (basic).
  assert.equal(parseKubeconfig(kubeconfigYaml('    server: https://a:1', '    token: " abc "'), 'k').auth, { kind: 'token', token: { data: Buffer.from('abc') } });
  assert.equal(parseKubeconfig(kubeconfigYaml('    server: https://a:1', `    token-file: ${join(dir, 'sub/token')}`), 'k').auth, {
    kind: 'token',
    token: { file: join(dir, 'sub/token'), what: 'the tokenFile' },
  });
  assert.equal(parseKubeconfig(kubeconfigYaml('    server: https://a:1', '    username: admin\n    password: secret'), 'k').auth, { kind: 'basic', username: 'admin', password: 'secret' });
  // YAML 1.1 booleans, as go-yaml reads them; JSON is read too.
  assert.is(parseKubeconfig(kubeconfigYaml('    server: https://a:1\n    insecure-skip-tls-verify: yes', '    token: t'), 'k').insecureSkipTlsVerify, true);
  const json = JSON.stringify({ clusters: [{ name: 'c', cluster: { server: 'http://127.0.0.1:8080' } }], contexts: [{ name: 'x', context: { cluster: 'c' } }], 'current-context': 'x' });
  assert.equal(parseKubeconfig(json, 'k.json'), { server: 'http://127.0.0.1:8080', insecureSkipTlsVerify: false, auth: { kind: 'none' } });
});

config('refused, each naming the field and what to use instead: never a request without the credentials meant', () => {
  const server = '    server: https://192.0.2.1:6443';
  const cases: [string, RegExp][] = [
    [kubeconfigYaml(server, '    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: aws'), /users\[0\]\.user\.exec: credential plugins are not supported .*use a service-account token \(token or tokenFile\), a client certificate, or run in-cluster/],
    [kubeconfigYaml(server, '    auth-provider:\n      name: oidc'), /users\[0\]\.user\.auth-provider: auth providers \(gcp, azure, oidc\) are not supported/],
    [kubeconfigYaml(`${server}\n    proxy-url: http://proxy:3128`, '    token: t'), /clusters\[0\]\.cluster\.proxy-url: proxies are not supported/],
    [kubeconfigYaml(server, '    as: a\n    as-groups: [g]'), /users\[0\]\.user\.as-groups: only "as"/],
    [kubeconfigYaml(server, `    client-certificate-data: ${b64('x')}`), /client-certificate and client-key go together/],
    [kubeconfigYaml(server, '    token: t\n    username: u'), /more than one authentication method/],
    [kubeconfigYaml(server, '    password: p'), /password without username/],
    [kubeconfigYaml(`${server}\n    insecure-skip-tls-verify: true\n    certificate-authority-data: ${b64('x')}`, '    token: t'), /certificate-authority with insecure-skip-tls-verify/],
    [kubeconfigYaml(`${server}\n    insecure-skip-tls-verify: maybe`, '    token: t'), /insecure-skip-tls-verify must be true or false/],
    [kubeconfigYaml(`${server}\n    certificate-authority: missing.pem`, '    token: t'), /clusters\[0\]\.cluster\.certificate-authority: no such file/],
    [kubeconfigYaml(`${server}\n    certificate-authority-data: "not base64!"`, '    token: t'), /certificate-authority-data is not base64/],
    [kubeconfigYaml('    insecure-skip-tls-verify: false', '    token: t'), /clusters\[0\]\.cluster\.server is missing \(or give --kube-api-url\)/],
    [kubeconfigYaml('    server: ftp://x', '    token: t'), /is not an http\(s\):\/\/ URL/],
    [kubeconfigYaml(server, '    token: 5'), /users\[0\]\.user\.token must be a string/],
    [kubeconfigYaml(server, '    token: t').replace('current-context: ctx', ''), /no current-context/],
    [kubeconfigYaml(server, '    token: t').replace('current-context: ctx', 'current-context: nope'), /current-context "nope" is not among the contexts/],
    [kubeconfigYaml(server, '    token: t').replace('cluster: c1', 'cluster: c9'), /cluster "c9" of context "ctx" is not among the clusters/],
    [kubeconfigYaml(server, '    token: t').replace('user: u1', 'user: u9'), /user "u9" of context "ctx" is not among the users/],
    [kubeconfigYaml(server, '    token: t').replace('- name: u1', '- name: c1\n  cluster: {server: "https://b:1"}\n- name: u1').replace('users:', 'clusters:\n- name: c1\n  cluster: {server: "https://c:1"}\nusers:'), /"c1" appears twice|Map keys must be unique/],
    ['clusters: [a: b', /not a kubeconfig \(YAML\)/],
    ['- a list', /not a kubeconfig \(expected a mapping/],
  ];
  for (const [text, pattern] of cases) {
    try {
      parseKubeconfig(text, '/k/config');
      assert.unreachable(`accepted:\n${text}`);
    } catch (err) {
      if (!(err instanceof KubeApiError)) throw err;
      assert.match(err.message, pattern);
      assert.ok(err.message.startsWith('/k/config: '), err.message);
      assert.is(err.status, 0);
    }
  }
  assert.throws(() => loadKubeSettings({ kubeconfigFile: join(dir, 'nope') }), /nope: cannot read the kubeconfig: no such file/);
});

config("in-cluster: the service account's files, https to the kubernetes Service (IPv6 bracketed), HOST and PORT required", () => {
  const s = inClusterSettings({ KUBERNETES_SERVICE_HOST: '10.96.0.1', KUBERNETES_SERVICE_PORT: '443' }, '/sa');
  assert.equal(s, {
    server: 'https://10.96.0.1:443',
    ca: { file: '/sa/ca.crt', what: "the service account's CA" },
    insecureSkipTlsVerify: false,
    auth: { kind: 'token', token: { file: '/sa/token', what: "the service account's token" } },
  });
  assert.is(inClusterSettings({ KUBERNETES_SERVICE_HOST: 'fd00:10:96::1', KUBERNETES_SERVICE_PORT: '443' }, '/sa').server, 'https://[fd00:10:96::1]:443');
  assert.throws(() => inClusterSettings({ KUBERNETES_SERVICE_PORT: '443' }, '/sa'), /not running in a Kubernetes pod \(KUBERNETES_SERVICE_HOST is not set\): give --kubeconfig-file or --kube-api-url/);
  assert.throws(() => inClusterSettings({ KUBERNETES_SERVICE_HOST: '10.96.0.1' }, '/sa'), /KUBERNETES_SERVICE_PORT is not set/);
});

config.run();

// ---- TLS and tokens against local servers ----

const tls = suite('TLS, client certificates, tokens');
let pkiDir: string;
const ssl = (...args: string[]) => runTool('openssl', args, { cwd: pkiDir, stdio: ['ignore', 'ignore', 'pipe'] });
const pem = (n: string) => readFileSync(join(pkiDir, n), 'utf8');

tls.before(() => {
  pkiDir = mkdtempSync(join(tmpdir(), `fut-kube-pki-${process.pid}-`));
  dir = pkiDir; // the kubeconfigs and tokens of these tests
  ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '1', '-subj', '/CN=test-ca');
  // The server's certificate names only DNS:kubernetes, so 127.0.0.1 needs tls-server-name.
  writeFileSync(join(pkiDir, 'server.cnf'), 'subjectAltName=DNS:kubernetes\nextendedKeyUsage=serverAuth\n');
  ssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=kube-apiserver');
  ssl('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.pem', '-days', '1', '-extfile', 'server.cnf');
  writeFileSync(join(pkiDir, 'client.cnf'), 'extendedKeyUsage=clientAuth\n');
  ssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'client.key', '-out', 'client.csr', '-subj', '/O=system:nodes/CN=system:node:n1');
  ssl('x509', '-req', '-in', 'client.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'client.pem', '-days', '1', '-extfile', 'client.cnf');
  ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'other.key', '-out', 'other.pem', '-days', '1', '-subj', '/CN=someone else');
});
tls.after(() => rmSync(pkiDir, { recursive: true, force: true }));

interface Seen {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: string;
  clientCN?: string;
}

/** An HTTPS server that wants a client certificate from the CA (kube-apiserver's --client-ca-file), answering node reads. */
async function tlsServer(): Promise<{ url: string; seen: Seen[]; close: () => Promise<void> }> {
  const seen: Seen[] = [];
  const server = https.createServer({ cert: pem('server.pem'), key: pem('server.key'), ca: pem('ca.pem'), requestCert: true, rejectUnauthorized: false }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const socket = req.socket as import('node:tls').TLSSocket;
      const peer = socket.getPeerCertificate();
      seen.push({ method: req.method!, url: req.url!, headers: req.headers, body: Buffer.concat(chunks).toString(), clientCN: socket.authorized ? String(peer.subject?.CN) : undefined });
      if (!socket.authorized && !req.headers.authorization) {
        res.writeHead(401, { 'Content-Type': 'application/json' }).end(JSON.stringify({ kind: 'Status', status: 'Failure', message: 'Unauthorized', reason: 'Unauthorized', code: 401 }));
        return;
      }
      res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify({ kind: 'Node', metadata: { name: 'n1', resourceVersion: '7' } }));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return { url: `https://127.0.0.1:${port}`, seen, close: () => new Promise<void>((r) => server.close(() => r())) };
}

tls('a CA file and a client certificate (files and -data); tls-server-name; a wrong CA or no tls-server-name is refused', async () => {
  const srv = await tlsServer();
  try {
    const cfg = (cluster: string, user: string) => file(`kc-${Math.random().toString(36).slice(2)}`, kubeconfigYaml(`    server: ${srv.url}\n${cluster}`, user));
    const cert = `    client-certificate: ${join(pkiDir, 'client.pem')}\n    client-key: ${join(pkiDir, 'client.key')}`;
    const viaFiles = new KubeClient({ kubeconfigFile: cfg(`    certificate-authority: ${join(pkiDir, 'ca.pem')}\n    tls-server-name: kubernetes`, cert) });
    assert.is((await viaFiles.getNode('n1')).metadata?.resourceVersion, '7');
    assert.is(srv.seen.at(-1)!.clientCN, 'system:node:n1', 'the client certificate was presented and verified');
    assert.is(srv.seen.at(-1)!.headers.authorization, undefined, 'no token invented');
    const viaData = new KubeClient({
      kubeconfigFile: cfg(
        `    certificate-authority-data: ${b64(pem('ca.pem'))}\n    tls-server-name: kubernetes`,
        `    client-certificate-data: ${b64(pem('client.pem'))}\n    client-key-data: ${b64(pem('client.key'))}`,
      ),
    });
    await viaData.getNode('n1');
    assert.is(srv.seen.at(-1)!.clientCN, 'system:node:n1');
    // Without the client certificate: the server's 401 (its Status message), with the status.
    const noCert = new KubeClient({ kubeconfigFile: cfg(`    certificate-authority: ${join(pkiDir, 'ca.pem')}\n    tls-server-name: kubernetes`, '    {}') });
    const e401 = await noCert.getNode('n1').then(() => undefined, (e: KubeApiError) => e);
    assert.instance(e401, KubeApiError);
    assert.is(e401!.status, 401);
    assert.is(e401!.message, 'reading node n1: 401 Unauthorized');
    // The wrong CA, or the right one without the name the certificate has: not reached (0), and why.
    for (const [cluster, pattern] of [
      [`    certificate-authority: ${join(pkiDir, 'other.pem')}\n    tls-server-name: kubernetes`, /self-signed|unable to verify|UNABLE_TO_VERIFY|SELF_SIGNED/i],
      [`    certificate-authority: ${join(pkiDir, 'ca.pem')}`, /ERR_TLS_CERT_ALTNAME_INVALID|does not match certificate's altnames|IP: 127\.0\.0\.1 is not in the cert's list/],
    ] as const) {
      const before = srv.seen.length;
      const err = await new KubeClient({ kubeconfigFile: cfg(cluster, cert) }).getNode('n1').then(() => undefined, (e: KubeApiError) => e);
      assert.instance(err, KubeApiError);
      assert.is(err!.status, 0);
      assert.match(err!.message, /^reading node n1: GET https:\/\/127\.0\.0\.1:\d+\/api\/v1\/nodes\/n1: /);
      assert.match(err!.message, pattern);
      assert.is(srv.seen.length, before, 'no request got through');
    }
    // insecure-skip-tls-verify: no verification (the user asked for it).
    await new KubeClient({ kubeconfigFile: cfg('    insecure-skip-tls-verify: true', cert) }).getNode('n1');
  } finally {
    await srv.close();
  }
});

tls('tokenFile: read again for every request (a rotated service-account token is used at once); empty or gone is an error, retried by the caller', async () => {
  const srv = await tlsServer();
  try {
    const tokenFile = file('token', 'first-token\n');
    const kc = file('kc-token', kubeconfigYaml(`    server: ${srv.url}\n    certificate-authority: ${join(pkiDir, 'ca.pem')}\n    tls-server-name: kubernetes`, `    tokenFile: ${tokenFile}\n    token: ignored`));
    const client = new KubeClient({ kubeconfigFile: kc });
    await client.getNode('n1');
    assert.is(srv.seen.at(-1)!.headers.authorization, 'Bearer first-token');
    writeFileSync(tokenFile, 'second-token');
    await client.getNode('n1');
    assert.is(srv.seen.at(-1)!.headers.authorization, 'Bearer second-token');
    assert.is(srv.seen.at(-1)!.headers['user-agent'], 'flannel-udp');
    writeFileSync(tokenFile, '  \n');
    await client.getNode('n1').then(() => assert.unreachable('empty token'), (e: KubeApiError) => assert.match(e.message, /^reading node n1: the tokenFile .*token is empty$/));
    rmSync(tokenFile);
    await client.getNode('n1').then(() => assert.unreachable('no token'), (e: KubeApiError) => {
      assert.is(e.status, 0);
      assert.match(e.message, /^reading node n1: .*token: cannot read the tokenFile: no such file$/);
    });
    writeFileSync(tokenFile, 'third-token');
    await client.getNode('n1');
    assert.is(srv.seen.at(-1)!.headers.authorization, 'Bearer third-token');
    // Basic auth and impersonation, as the kubeconfig says.
    const basic = new KubeClient({ kubeconfigFile: file('kc-basic', kubeconfigYaml(`    server: ${srv.url}\n    insecure-skip-tls-verify: true`, '    username: admin\n    password: "p:w"\n    as: someone')) });
    await basic.getNode('n1');
    assert.is(srv.seen.at(-1)!.headers.authorization, `Basic ${b64('admin:p:w')}`);
    assert.is(srv.seen.at(-1)!.headers['impersonate-user'], 'someone');
  } finally {
    await srv.close();
  }
});

tls.run();

// ---- the wire: requests and the watch stream, from a scripted server ----

const wire = suite('requests and the watch stream');
type Script = (req: http.IncomingMessage, res: http.ServerResponse, body: string) => void;
let script: Script = (_q, res) => res.writeHead(500).end();
let server: http.Server;
let url = '';
const sockets = new Set<Socket>();

wire.before(async () => {
  server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => script(req, res, Buffer.concat(chunks).toString()));
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.setNoDelay(true);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
wire.after(async () => {
  for (const s of sockets) s.destroy();
  await new Promise<void>((r) => server.close(() => r()));
});

const client = () => new KubeClient({ apiUrl: url });

interface WatchResult {
  connected: boolean;
  events: [WatchEventType, any][];
  end: KubeApiError | undefined;
}

function watch(rv = '5', timeoutSeconds = 300): Promise<WatchResult> {
  return new Promise((resolve) => {
    const r: WatchResult = { connected: false, events: [], end: undefined };
    void client().watchNodes(rv, timeoutSeconds, {
      onConnected: () => (r.connected = true),
      onEvent: (type, object) => r.events.push([type, object]),
      onEnd: (err) => resolve({ ...r, end: err }),
    });
  });
}

/** Writes the pieces one at a time, each after the previous left the socket, so the client sees them as separate reads. */
function writeSlowly(res: http.ServerResponse, pieces: Buffer[], then: () => void): void {
  let i = 0;
  const next = () => {
    if (i === pieces.length) return then();
    res.write(pieces[i++], () => setTimeout(next, 5));
  };
  next();
}

const node = (name: string, rv: string, extra: Record<string, string> = {}) => ({ kind: 'Node', apiVersion: 'v1', metadata: { name, resourceVersion: rv, annotations: extra } });

wire('calls: the paths, the strategic merge patch, the list; errors carry the status and the Status message', async () => {
  const seen: { method: string; url: string; type?: string; accept?: string; body: string }[] = [];
  script = (req, res, body) => {
    seen.push({ method: req.method!, url: req.url!, type: req.headers['content-type'], accept: req.headers.accept, body });
    if (req.url === '/api/v1/nodes') return res.writeHead(200).end(JSON.stringify({ kind: 'NodeList', metadata: { resourceVersion: '42' }, items: [node('a', '40'), node('b', '41')] }));
    if (req.url === '/api/v1/namespaces/kube-flannel-udp/pods/ds-abc') return res.writeHead(200).end(JSON.stringify({ kind: 'Pod', spec: { nodeName: 'n3' } }));
    if (req.url === '/api/v1/nodes/n1/status') return res.writeHead(200).end(JSON.stringify(node('n1', '43')));
    if (req.url === '/api/v1/nodes/gone') {
      return res.writeHead(404, { 'Content-Type': 'application/json' }).end(JSON.stringify({ kind: 'Status', status: 'Failure', message: 'nodes "gone" not found', reason: 'NotFound', code: 404 }));
    }
    if (req.url === '/api/v1/nodes/teapot') return res.writeHead(503).end('<html>a proxy</html>');
    if (req.url === '/api/v1/nodes/notjson') return res.writeHead(200).end('{"kind": "No');
    res.writeHead(500).end();
  };
  const c = client();
  assert.equal(await c.listNodes(), { items: [node('a', '40'), node('b', '41')], resourceVersion: '42' });
  assert.is(await c.getPodNodeName('kube-flannel-udp', 'ds-abc'), 'n3');
  const patch = { metadata: { annotations: { 'flannel.alpha.coreos.com/public-ip': '192.0.2.1' } } };
  assert.is((await c.patchNodeStatus('n1', patch)).metadata?.resourceVersion, '43');
  const p = seen.find((s) => s.method === 'PATCH')!;
  assert.is(p.url, '/api/v1/nodes/n1/status');
  assert.is(p.type, 'application/strategic-merge-patch+json');
  assert.equal(JSON.parse(p.body), patch);
  assert.ok(seen.every((s) => s.accept === 'application/json'));
  const err = (f: Promise<unknown>) => f.then(() => assert.unreachable('resolved'), (e: KubeApiError) => e) as Promise<KubeApiError>;
  const e404 = await err(c.getNode('gone'));
  assert.is(e404.status, 404);
  assert.is(e404.message, 'reading node gone: 404 nodes "gone" not found');
  const e503 = await err(c.getNode('teapot'));
  assert.is(e503.status, 503);
  assert.is(e503.message, 'reading node teapot: 503 Service Unavailable');
  assert.match((await err(c.getNode('notjson'))).message, /^reading node notjson: the answer \(HTTP 200\) is not JSON/);
  const refused = await err(new KubeClient({ apiUrl: 'http://127.0.0.1:1' }).listNodes());
  assert.is(refused.status, 0);
  assert.match(refused.message, /^listing nodes: GET http:\/\/127\.0\.0\.1:1\/api\/v1\/nodes: connect ECONNREFUSED/);
});

wire('requests are bounded: an answer over the limit, or none within the deadline, is an error', async () => {
  script = (req, res) => {
    if (req.url === '/big') return res.writeHead(200).end(`{"a": "${'x'.repeat(5000)}"}`);
    if (req.url === '/slow') return res.writeHead(200).write('{"a": '); // never ends
    res.writeHead(500).end();
  };
  const base = { server: url, headers: {}, tls: { rejectUnauthorized: true } };
  const big = await kubeRequest(base, { method: 'GET', path: '/big', what: 'big' }, { timeoutMs: 10_000, maxBodyBytes: 4096 }).then(() => undefined, (e: KubeApiError) => e);
  assert.match(big!.message, /^big: the answer \(HTTP 200\) is over 4 KiB, the limit$/);
  const slow = await kubeRequest(base, { method: 'GET', path: '/slow', what: 'slow' }, { timeoutMs: 300, maxBodyBytes: 4096 }).then(() => undefined, (e: KubeApiError) => e);
  assert.match(slow!.message, /^slow: GET http:\/\/127\.0\.0\.1:\d+\/slow: no complete answer in 0\.3 s$/);
  assert.is(slow!.status, 0);
});

wire('LineSplitter: the same lines whatever the chunking (every split point, mid-character included); an oversized line is refused', () => {
  const events = [
    { type: 'ADDED', object: node('ü-node', '6', { note: 'naïve – 東京 😀' }) },
    { type: 'MODIFIED', object: node('b', '7') },
    { type: 'BOOKMARK', object: { kind: 'Node', metadata: { resourceVersion: '8' } } },
  ];
  const stream = Buffer.from(events.map((e) => `${JSON.stringify(e)}\n`).join(''));
  const expected = events.map((e) => JSON.stringify(e));
  const emoji = stream.indexOf(Buffer.from('😀'));
  assert.ok(emoji > 0);
  for (let i = 0; i <= stream.length; i++) {
    for (const j of [i, i + 1, i + 2, emoji + 1, emoji + 2, emoji + 3, stream.length]) {
      if (j < i || j > stream.length) continue;
      const lines: string[] = [];
      const s = new LineSplitter(1 << 20);
      for (const piece of [stream.subarray(0, i), stream.subarray(i, j), stream.subarray(j)]) assert.is(s.push(piece, (l) => lines.push(l)), undefined);
      assert.equal(lines, expected, `split at ${i}, ${j}`);
      assert.is(s.leftover, 0);
    }
  }
  // One byte at a time.
  const lines: string[] = [];
  const s = new LineSplitter(1 << 20);
  for (let i = 0; i < stream.length; i++) s.push(stream.subarray(i, i + 1), (l) => lines.push(l));
  assert.equal(lines, expected);
  // Over the limit: found when the line passes it, whole or in pieces, before it is buffered whole.
  const small = new LineSplitter(100);
  assert.is(small.push(Buffer.from(`${'a'.repeat(100)}\n`), () => undefined), undefined, 'exactly the limit is fine');
  assert.is(small.push(Buffer.from('b'.repeat(60)), () => undefined), undefined);
  assert.is(small.push(Buffer.from('b'.repeat(41)), () => undefined), 'a line over 100 bytes, the limit');
});

wire('watch: the query of the old client; events across chunks split mid-line and mid-character; a clean end; ERROR 410 passed through', async () => {
  let query = '';
  const ev = (type: string, object: object) => `${JSON.stringify({ type, object })}\n`;
  const text = ev('ADDED', node('ü', '6', { note: '東京 😀' })) + ev('MODIFIED', node('b', '7')) + ev('BOOKMARK', { kind: 'Node', metadata: { resourceVersion: '8' } }) + ev('ERROR', { kind: 'Status', code: 410, reason: 'Expired', message: 'too old resource version: 5 (7)' });
  const bytes = Buffer.from(text);
  const emoji = bytes.indexOf(Buffer.from('😀'));
  const cuts = [3, 40, emoji + 1, emoji + 3, bytes.indexOf(0x0a) , bytes.indexOf(0x0a) + 1, bytes.length - 10];
  const pieces = [0, ...cuts.sort((a, b) => a - b)].map((at, i, all) => bytes.subarray(at, all[i + 1] ?? bytes.length));
  script = (req, res) => {
    query = req.url!;
    res.writeHead(200, { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked' });
    writeSlowly(res, pieces, () => res.end());
  };
  const r = await watch('5', 321);
  assert.is(query, '/api/v1/nodes?watch=true&resourceVersion=5&allowWatchBookmarks=true&timeoutSeconds=321');
  assert.ok(r.connected);
  assert.equal(r.events.map(([t]) => t), ['ADDED', 'MODIFIED', 'BOOKMARK', 'ERROR']);
  assert.is(r.events[0][1].metadata.annotations.note, '東京 😀');
  assert.is(r.events[3][1].code, 410);
  assert.is(r.end, undefined, 'a clean end');
});

wire('watch: HTTP 410 and 403 end it with the status and the message; a cut connection, a partial last line, a bad line, an oversized line are errors', async () => {
  const status = (code: number, reason: string, message: string) => JSON.stringify({ kind: 'Status', apiVersion: 'v1', status: 'Failure', message, reason, code });
  script = (_q, res) => res.writeHead(410, { 'Content-Type': 'application/json' }).end(status(410, 'Expired', 'too old resource version: 5 (9)'));
  let r = await watch();
  assert.not.ok(r.connected);
  assert.is(r.end!.status, 410);
  assert.is(r.end!.message, 'watching nodes: 410 too old resource version: 5 (9)');
  script = (_q, res) => res.writeHead(403).end(status(403, 'Forbidden', 'nodes is forbidden: User "x" cannot watch resource "nodes"'));
  r = await watch();
  assert.is(r.end!.status, 403);
  assert.match(r.end!.message, /^watching nodes: 403 nodes is forbidden/);

  const first = `${JSON.stringify({ type: 'ADDED', object: node('a', '6') })}\n`;
  // The server dies mid-stream: what arrived is delivered, then the error.
  script = (_q, res) => {
    res.writeHead(200, { 'Transfer-Encoding': 'chunked' });
    writeSlowly(res, [Buffer.from(first), Buffer.from('{"type": "MODIF')], () => res.socket!.destroy());
  };
  r = await watch();
  assert.ok(r.connected);
  assert.equal(r.events.map(([t, o]) => `${t} ${o.metadata.name}`), ['ADDED a']);
  assert.is(r.end!.status, 0);
  assert.match(r.end!.message, /^watching nodes: the connection closed in the middle of the stream/);

  script = (_q, res) => res.writeHead(200).end(`${first}{"type": "MODIFIED"`);
  r = await watch();
  assert.is(r.events.length, 1);
  assert.match(r.end!.message, /^watching nodes: the stream ended inside a line \(19 bytes without a newline\)$/);

  script = (_q, res) => res.writeHead(200).end(`${first}not json\n${first}`);
  r = await watch();
  assert.is(r.events.length, 1, 'nothing after the bad line: the watch is retried from the last resourceVersion');
  assert.match(r.end!.message, /^watching nodes: an event that is not JSON/);

  script = (_q, res) => res.writeHead(200).end(`${JSON.stringify({ type: 'SURPRISE', object: {} })}\n`);
  r = await watch();
  assert.match(r.end!.message, /^watching nodes: not a watch event \(type "SURPRISE", object object\)$/);

  // A line over 4 MiB (one Node is at most 1.5 MiB in etcd): refused before it is buffered whole.
  let written = 0;
  script = (_q, res) => {
    res.writeHead(200);
    res.write(first);
    const piece = Buffer.alloc(1 << 20, 0x61);
    const more = () => {
      if (res.destroyed || written > 16 << 20) return res.end();
      written += piece.length;
      res.write(piece, more);
    };
    more();
  };
  r = await watch();
  assert.is(r.events.length, 1);
  assert.is(r.end!.message, 'watching nodes: a line over 4 MiB, the limit');
});

wire('watch: stopping it ends the stream without an onEnd', async () => {
  let closed: () => void = () => undefined;
  const serverSawClose = new Promise<void>((r) => (closed = r));
  script = (req, res) => {
    res.writeHead(200);
    res.write(`${JSON.stringify({ type: 'ADDED', object: node('a', '6') })}\n`);
    req.socket.on('close', () => closed());
  };
  let ended = false;
  const connected = new Promise<void>((resolve) => {
    void client()
      .watchNodes('5', 300, { onConnected: () => undefined, onEvent: () => resolve(), onEnd: () => (ended = true) })
      .then((stop) => connected.then(stop));
  });
  await connected;
  await serverSawClose;
  assert.not.ok(ended);
});

wire.run();
