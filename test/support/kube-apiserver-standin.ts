// A STAND-IN FOR KUBE-APISERVER, written for the tests. No package on npm or
// Debian provides a real kube-apiserver, so the agent's kube mode is tested
// against this: exactly the part of the API the agent uses, with the real
// API server's semantics and strictness, so that code which works here works
// against a cluster:
//
//   HTTPS only (a certificate from a CA the test made with openssl), and
//   every request needs "Authorization: Bearer <token>"          else 401
//   RBAC: each token is a user; ServiceAccount users get exactly the rules of
//   the ClusterRoles bound to them in the manifest (deploy/kube-flannel-udp.yml),
//   the admin token is system:masters                             else 403
//   GET    /api/v1/nodes                       list, with metadata.resourceVersion
//   GET    /api/v1/nodes?watch=true&resourceVersion=R[&allowWatchBookmarks=true][&timeoutSeconds=T]
//          a stream of {"type":…,"object":…} lines: ADDED, MODIFIED, DELETED
//          after R, BOOKMARK now and then; R older than the event window (it
//          was compacted, or the server restarted) gets an ERROR event with a
//          Status of code 410 (reason Expired) and the stream ends, as the real
//          server does. No R (or "0"): ADDED for every node, then live events.
//   GET    /api/v1/nodes/{name}                                    404 if none
//   POST   /api/v1/nodes                       (409 if it exists)
//   PATCH  /api/v1/nodes/{name}                spec and metadata; status is ignored
//   PATCH  /api/v1/nodes/{name}/status         status and metadata; spec is ignored
//          application/strategic-merge-patch+json (conditions and addresses
//          merge by "type") or application/merge-patch+json; anything else 415;
//          a metadata.resourceVersion in the patch is a precondition: 409 Conflict
//          if the node has moved on. spec.podCIDR may be set once, not changed (422).
//   DELETE /api/v1/nodes/{name}
//   GET    /api/v1/namespaces/{ns}/pods/{name}, POST /api/v1/namespaces/{ns}/pods
//   Anything else: 404; bad JSON: 400; a body with the wrong Content-Type: 415;
//   an Accept that excludes JSON: 406; a watch parameter that does not parse: 400;
//   a method the path does not have: 405. Errors are metav1.Status objects.
//
// Not implemented (the agent does not use them, and they are refused rather
// than half done): label and field selectors (400), JSON patch (415), PUT
// (405), pagination (limit/continue: 400), other resources and API groups.
//
// State can be kept in a file, so a restarted stand-in (a new process) has the
// same nodes and resourceVersion but, like a restarted kube-apiserver, an
// empty watch window: every watch from before the restart gets 410.

import https from 'node:https';
import http from 'node:http';
import { existsSync, readFileSync, renameSync, writeFileSync, rmSync } from 'node:fs';
import type { Socket } from 'node:net';
import { loadAllYaml } from '@kubernetes/client-node';

export interface Identity {
  user: string;
  groups: string[];
}

export interface PolicyRule {
  apiGroups?: string[];
  resources?: string[];
  verbs: string[];
  resourceNames?: string[];
}

export interface RequestRecord {
  user: string;
  verb: string;
  resource: string;
  name: string;
  namespace: string;
  status: number;
}

export interface StandInOptions {
  host: string;
  /** 0: any free port */
  port: number;
  tls: { cert: string; key: string };
  /** bearer token → identity */
  tokens: Record<string, Identity>;
  /** YAML documents with ClusterRoles and ClusterRoleBindings (the deploy manifest) */
  rbacYaml: string;
  /** The same API over plain HTTP on a unix socket (for a test in another network namespace); auth and RBAC still apply. */
  unixSocket?: string;
  /** keep nodes, pods and the resourceVersion here across restarts */
  stateFile?: string;
  /** events kept for watches to resume from; default 1000 */
  watchWindow?: number;
  /** BOOKMARK interval on watches that allow them; default 1 s (the real server: about a minute) */
  bookmarkMs?: number;
  /** every request, decided */
  onRequest?: (r: RequestRecord) => void;
}

type Obj = Record<string, any>;

interface WatchEvent {
  rv: number;
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
  object: Obj;
}

interface Watcher {
  send(e: WatchEvent): void;
}

class HttpError extends Error {
  constructor(
    readonly code: number,
    readonly reason: string,
    message: string,
    readonly details?: Obj,
  ) {
    super(message);
  }
}

export const ADMIN: Identity = { user: 'kubernetes-admin', groups: ['system:masters', 'system:authenticated'] };

export function serviceAccount(namespace: string, name: string): Identity {
  return { user: `system:serviceaccount:${namespace}:${name}`, groups: ['system:serviceaccounts', `system:serviceaccounts:${namespace}`, 'system:authenticated'] };
}

/** ClusterRole rules bound to a user or group through ClusterRoleBindings, from YAML documents. */
export function rulesFromManifest(yaml: string): (id: Identity) => PolicyRule[] {
  const docs = (loadAllYaml(yaml) as Obj[]).filter((d) => d && typeof d === 'object');
  const roles = new Map<string, PolicyRule[]>();
  for (const d of docs) if (d.kind === 'ClusterRole') roles.set(d.metadata.name, d.rules ?? []);
  const bindings = docs.filter((d) => d.kind === 'ClusterRoleBinding');
  return (id) => {
    const rules: PolicyRule[] = [];
    for (const b of bindings) {
      if (b.roleRef?.kind !== 'ClusterRole') continue;
      const matches = (b.subjects ?? []).some(
        (s: Obj) =>
          (s.kind === 'ServiceAccount' && id.user === `system:serviceaccount:${s.namespace}:${s.name}`) ||
          (s.kind === 'User' && id.user === s.name) ||
          (s.kind === 'Group' && id.groups.includes(s.name)),
      );
      if (matches) rules.push(...(roles.get(b.roleRef.name) ?? []));
    }
    return rules;
  };
}

export function allows(rules: PolicyRule[], verb: string, resource: string, name: string): boolean {
  return rules.some(
    (r) =>
      (r.apiGroups ?? []).some((g) => g === '' || g === '*') &&
      (r.resources ?? []).some((x) => x === resource || x === '*') &&
      r.verbs.some((v) => v === verb || v === '*') &&
      (!r.resourceNames || r.resourceNames.length === 0 || (name !== '' && r.resourceNames.includes(name))),
  );
}

/** RFC 7386 JSON merge patch. */
export function mergePatch(target: unknown, patch: unknown): unknown {
  if (!isObject(patch)) return patch;
  const out: Obj = isObject(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

/** Lists of v1.Node that a strategic merge patch merges by key (from the API's patchMergeKey tags). */
const MERGE_KEYS: Record<string, string> = { 'status.conditions': 'type', 'status.addresses': 'type', 'spec.taints': 'key' };

/** Strategic merge patch, as far as v1.Node needs it: merge keys for its keyed lists; $-directives refused. */
export function strategicMergePatch(target: unknown, patch: unknown, path = ''): unknown {
  if (!isObject(patch)) return patch;
  const out: Obj = isObject(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (k.startsWith('$')) throw new HttpError(400, 'BadRequest', `strategic merge directive ${k} is not supported by the stand-in`);
    const p = path === '' ? k : `${path}.${k}`;
    if (v === null) {
      delete out[k];
    } else if (Array.isArray(v) && MERGE_KEYS[p] !== undefined) {
      const key = MERGE_KEYS[p];
      const list: Obj[] = Array.isArray(out[k]) ? out[k].map((x: Obj) => ({ ...x })) : [];
      for (const item of v) {
        if (!isObject(item) || item[key] === undefined) throw new HttpError(400, 'BadRequest', `${p}: every item needs its merge key "${key}"`);
        const at = list.findIndex((x) => x[key] === item[key]);
        if (at >= 0) list[at] = strategicMergePatch(list[at], item, p) as Obj;
        else list.push(item);
      }
      out[k] = list;
    } else {
      out[k] = strategicMergePatch(out[k], v, p);
    }
  }
  return out;
}

function isObject(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function status(code: number, reason: string, message: string, details?: Obj): Obj {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, ...(details ? { details } : {}), code };
}

const NAME = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;

export class KubeApiServerStandIn {
  private server: https.Server | undefined;
  private unixServer: http.Server | undefined;
  private readonly sockets = new Set<Socket>();
  private nodes = new Map<string, Obj>();
  private pods = new Map<string, Obj>();
  private rv = 1;
  /** the watch window: events after `windowStart` are all here */
  private events: WatchEvent[] = [];
  private windowStart: number;
  private readonly watchers = new Set<Watcher>();
  private readonly rulesFor: (id: Identity) => PolicyRule[];
  /** every request decided, in order */
  readonly requests: RequestRecord[] = [];
  port = 0;

  private constructor(private readonly opts: StandInOptions) {
    this.rulesFor = rulesFromManifest(opts.rbacYaml);
    if (opts.stateFile && existsSync(opts.stateFile)) {
      const state = JSON.parse(readFileSync(opts.stateFile, 'utf8'));
      this.rv = state.rv;
      this.nodes = new Map(Object.entries(state.nodes));
      this.pods = new Map(Object.entries(state.pods));
    }
    // A (re)started server can serve watches only from now on, as kube-apiserver's watch cache.
    this.windowStart = this.rv;
  }

  static async start(opts: StandInOptions): Promise<KubeApiServerStandIn> {
    const s = new KubeApiServerStandIn(opts);
    await s.listen();
    return s;
  }

  get url(): string {
    return `https://${this.opts.host}:${this.port}`;
  }

  private async listen(port = this.opts.port): Promise<void> {
    const handler = (req: http.IncomingMessage, res: http.ServerResponse) => void this.handle(req, res);
    this.server = https.createServer({ cert: this.opts.tls.cert, key: this.opts.tls.key }, handler);
    this.server.on('secureConnection', (s: Socket) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', reject);
      this.server!.listen(port, this.opts.host, () => resolve());
    });
    this.port = (this.server.address() as { port: number }).port;
    if (this.opts.unixSocket) {
      rmSync(this.opts.unixSocket, { force: true });
      this.unixServer = http.createServer(handler);
      this.unixServer.on('connection', (s: Socket) => {
        this.sockets.add(s);
        s.on('close', () => this.sockets.delete(s));
      });
      await new Promise<void>((resolve, reject) => {
        this.unixServer!.once('error', reject);
        this.unixServer!.listen(this.opts.unixSocket, () => resolve());
      });
    }
  }

  /** Stops serving and drops every connection (watch streams end abruptly, as when the process dies). */
  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    this.watchers.clear();
    await Promise.all(
      [this.server, this.unixServer].map((srv) => (srv ? new Promise<void>((r) => srv.close(() => r())) : undefined)),
    );
    this.server = undefined;
    this.unixServer = undefined;
  }

  /** What a restart does: connections dropped, the same state, an empty watch window. */
  async restart(): Promise<void> {
    await this.close();
    this.compact();
    await this.reopen();
  }

  /** Serves again on the same port after close(), with the state and watch window as they are. */
  async reopen(): Promise<void> {
    await this.listen(this.port);
  }

  /** Forgets the watch window, as etcd compaction does: watches from before now get 410 when they resume. */
  compact(): void {
    this.events = [];
    this.windowStart = this.rv;
  }

  resourceVersion(): number {
    return this.rv;
  }

  /** In-process, synchronous change of a node's annotations (as another client's write would be), for races. */
  annotateNode(name: string, annotations: Record<string, string>): void {
    const old = this.nodes.get(name);
    if (!old) throw new Error(`stand-in: no node ${name}`);
    const obj = structuredClone(old);
    obj.metadata.annotations = { ...obj.metadata.annotations, ...annotations };
    this.commit(this.nodes, name, obj, 'MODIFIED', 'nodes');
  }

  node(name: string): Obj | undefined {
    const n = this.nodes.get(name);
    return n === undefined ? undefined : structuredClone(n);
  }

  // ---- request handling ----

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'https://stand-in');
    let id: Identity | undefined;
    let verb = '';
    let resource = '';
    let name = '';
    let namespace = '';
    const record = (code: number) => {
      const r = { user: id?.user ?? '', verb, resource, name, namespace, status: code };
      this.requests.push(r);
      this.opts.onRequest?.(r);
    };
    const fail = (e: HttpError) => {
      record(e.code);
      const body = JSON.stringify(status(e.code, e.reason, e.message, e.details));
      res.writeHead(e.code, { 'Content-Type': 'application/json' }).end(body);
    };
    try {
      const auth = req.headers.authorization ?? '';
      const m = /^Bearer (\S+)$/.exec(auth);
      id = m ? this.opts.tokens[m[1]] : undefined;
      if (id === undefined) throw new HttpError(401, 'Unauthorized', 'Unauthorized');

      // JSON only (the real server also speaks protobuf and YAML, which nothing here reads): anything else is 406.
      const accept = req.headers.accept;
      if (accept !== undefined && !accept.split(',').some((t) => ['application/json', 'application/*', '*/*'].includes(t.split(';')[0].trim()))) {
        throw new HttpError(406, 'NotAcceptable', `only the following media types are accepted: application/json (stand-in), not ${accept}`);
      }
      const route = this.route(req.method ?? 'GET', url);
      ({ verb, resource, name, namespace } = route);
      const rules = id.groups.includes('system:masters') ? [{ apiGroups: ['*'], resources: ['*'], verbs: ['*'] }] : this.rulesFor(id);
      if (!allows(rules, verb, resource, name)) {
        const [res0, sub] = resource.split('/');
        const what = `${res0}${name ? ` "${name}"` : ''}`;
        const scope = namespace ? `in the namespace "${namespace}"` : 'at the cluster scope';
        throw new HttpError(
          403,
          'Forbidden',
          `${what} is forbidden: User "${id.user}" cannot ${verb} resource "${res0}"${sub ? ` (subresource "${sub}")` : ''} in API group "" ${scope}`,
          { name, kind: res0 },
        );
      }
      const body = ['POST', 'PATCH', 'PUT'].includes(req.method ?? '') ? await this.readBody(req, verb) : undefined;
      const strategic = (req.headers['content-type'] ?? '').startsWith('application/strategic-merge-patch+json');
      if (verb === 'watch') {
        record(200);
        return this.serveWatch(url, res);
      }
      const out = this.execute(route, body, strategic);
      record(out.code);
      res.writeHead(out.code, { 'Content-Type': 'application/json' }).end(JSON.stringify(out.body));
    } catch (err) {
      if (err instanceof HttpError) return fail(err);
      fail(new HttpError(500, 'InternalError', `stand-in: ${(err as Error).message}`));
    }
  }

  private route(method: string, url: URL): { verb: string; resource: string; name: string; namespace: string; kind: 'nodes' | 'pods'; sub: string } {
    const parts = url.pathname.split('/').filter((p) => p !== '');
    const notFound = () => new HttpError(404, 'NotFound', 'the server could not find the requested resource');
    if (parts[0] !== 'api' || parts[1] !== 'v1') throw notFound();
    let kind: 'nodes' | 'pods';
    let namespace = '';
    let rest: string[];
    if (parts[2] === 'nodes') {
      kind = 'nodes';
      rest = parts.slice(3);
    } else if (parts[2] === 'namespaces' && parts[3] && parts[4] === 'pods') {
      kind = 'pods';
      namespace = parts[3];
      rest = parts.slice(5);
    } else {
      throw notFound();
    }
    const name = rest[0] ?? '';
    const sub = rest[1] ?? '';
    if (rest.length > 2 || (sub !== '' && !(kind === 'nodes' && sub === 'status'))) throw notFound();
    const watch = url.searchParams.get('watch');
    for (const p of ['labelSelector', 'fieldSelector', 'limit', 'continue']) {
      if (url.searchParams.get(p)) throw new HttpError(400, 'BadRequest', `stand-in: ${p} is not implemented`);
    }
    // As the real server's query decoding: a watch parameter that does not parse is a 400, not a default.
    const timeoutSeconds = url.searchParams.get('timeoutSeconds');
    if (timeoutSeconds !== null && !/^\d+$/.test(timeoutSeconds)) throw new HttpError(400, 'BadRequest', `invalid value for timeoutSeconds: "${timeoutSeconds}"`);
    const bookmarks = url.searchParams.get('allowWatchBookmarks');
    if (bookmarks !== null && !['true', 'false', '1', '0'].includes(bookmarks)) throw new HttpError(400, 'BadRequest', `invalid value for allowWatchBookmarks: "${bookmarks}"`);
    let verb: string;
    const collection = name === '';
    switch (method) {
      case 'GET':
        verb = collection ? (watch === 'true' || watch === '1' ? 'watch' : 'list') : 'get';
        if (collection && kind === 'pods') throw new HttpError(405, 'MethodNotAllowed', 'stand-in: listing pods is not implemented');
        break;
      case 'POST':
        if (!collection || sub) throw new HttpError(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource');
        verb = 'create';
        break;
      case 'PATCH':
        if (collection) throw new HttpError(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource');
        verb = 'patch';
        break;
      case 'DELETE':
        if (collection || sub) throw new HttpError(405, 'MethodNotAllowed', 'stand-in: this delete is not implemented');
        verb = 'delete';
        break;
      default:
        throw new HttpError(405, 'MethodNotAllowed', `stand-in: ${method} is not implemented`);
    }
    return { verb, resource: sub ? `${kind}/${sub}` : kind, name, namespace, kind, sub };
  }

  private readBody(req: http.IncomingMessage, verb: string): Promise<unknown> {
    const type = (req.headers['content-type'] ?? '').split(';')[0].trim();
    const allowed = verb === 'patch' ? ['application/strategic-merge-patch+json', 'application/merge-patch+json'] : ['application/json'];
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('error', reject);
      req.on('end', () => {
        if (!allowed.includes(type)) {
          return reject(new HttpError(415, 'UnsupportedMediaType', `the body of the request was in an unknown format - accepted media types include: ${allowed.join(', ')}`));
        }
        try {
          resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')));
        } catch (err) {
          reject(new HttpError(400, 'BadRequest', `error decoding the body: ${(err as Error).message}`));
        }
      });
    });
  }

  private execute(route: ReturnType<KubeApiServerStandIn['route']>, body: unknown, strategic: boolean): { code: number; body: Obj } {
    const { verb, kind, name, namespace, sub } = route;
    const store = kind === 'nodes' ? this.nodes : this.pods;
    const key = kind === 'nodes' ? name : `${namespace}/${name}`;
    const Kind = kind === 'nodes' ? 'Node' : 'Pod';
    const notFound = () => new HttpError(404, 'NotFound', `${kind} "${name}" not found`, { name, kind });
    switch (verb) {
      case 'list': {
        const items = [...this.nodes.values()].sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
        return { code: 200, body: { kind: 'NodeList', apiVersion: 'v1', metadata: { resourceVersion: String(this.rv) }, items } };
      }
      case 'get': {
        const obj = store.get(key);
        if (!obj) throw notFound();
        return { code: 200, body: obj };
      }
      case 'create': {
        if (!isObject(body)) throw new HttpError(400, 'BadRequest', 'the body must be a JSON object');
        if (body.kind !== undefined && body.kind !== Kind) throw new HttpError(400, 'BadRequest', `the body is a ${body.kind}, not a ${Kind}`);
        const n = body.metadata?.name;
        if (typeof n !== 'string' || !NAME.test(n)) throw new HttpError(422, 'Invalid', `${Kind} "${n}" is invalid: metadata.name: Invalid value`);
        const k = kind === 'nodes' ? n : `${namespace}/${n}`;
        if (store.has(k)) throw new HttpError(409, 'AlreadyExists', `${kind} "${n}" already exists`, { name: n, kind });
        const obj: Obj = {
          ...body,
          kind: Kind,
          apiVersion: 'v1',
          metadata: { ...body.metadata, ...(kind === 'pods' ? { namespace } : {}), uid: crypto.randomUUID(), creationTimestamp: new Date().toISOString().replace(/\.\d+Z$/, 'Z') },
        };
        this.validate(undefined, obj);
        return { code: 201, body: this.commit(store, k, obj, 'ADDED', kind) };
      }
      case 'patch': {
        const old = store.get(key);
        if (!old) throw notFound();
        if (!isObject(body)) throw new HttpError(400, 'BadRequest', 'the patch must be a JSON object');
        const precondition = body.metadata?.resourceVersion;
        if (precondition !== undefined && precondition !== old.metadata.resourceVersion) {
          throw new HttpError(
            409,
            'Conflict',
            `Operation cannot be fulfilled on ${kind} "${name}": the object has been modified; please apply your changes to the latest version and try again`,
            { name, kind },
          );
        }
        let patched = (strategic ? strategicMergePatch(old, body) : mergePatch(old, body)) as Obj;
        // The status subresource changes status (and metadata), the main resource spec (and metadata): as the real strategies.
        if (kind === 'nodes') patched = sub === 'status' ? { ...patched, spec: old.spec } : { ...patched, status: old.status };
        if (patched.metadata?.name !== old.metadata.name) {
          throw new HttpError(400, 'BadRequest', `the name of the object (${patched.metadata?.name}) does not match the name on the URL (${old.metadata.name})`);
        }
        patched.metadata = { ...patched.metadata, uid: old.metadata.uid, creationTimestamp: old.metadata.creationTimestamp };
        patched.kind = Kind;
        patched.apiVersion = 'v1';
        this.validate(old, patched);
        if (JSON.stringify({ ...patched, metadata: { ...patched.metadata, resourceVersion: undefined } }) === JSON.stringify({ ...old, metadata: { ...old.metadata, resourceVersion: undefined } })) {
          return { code: 200, body: old }; // a no-op patch does not bump the resourceVersion
        }
        return { code: 200, body: this.commit(store, key, patched, 'MODIFIED', kind) };
      }
      case 'delete': {
        const old = store.get(key);
        if (!old) throw notFound();
        store.delete(key);
        this.rv++;
        const gone = { ...old, metadata: { ...old.metadata, resourceVersion: String(this.rv) } };
        if (kind === 'nodes') this.publish({ rv: this.rv, type: 'DELETED', object: gone });
        this.save();
        return { code: 200, body: gone };
      }
    }
    throw new HttpError(405, 'MethodNotAllowed', `stand-in: ${verb}`);
  }

  private validate(old: Obj | undefined, obj: Obj): void {
    if (obj.kind !== 'Node') return;
    const was = old?.spec?.podCIDR;
    const now = obj.spec?.podCIDR;
    if (was && now !== was) throw new HttpError(422, 'Invalid', `Node "${obj.metadata.name}" is invalid: spec.podCIDR: Forbidden: node updates may not change podCIDR except from "" to valid`);
    if (now !== undefined && now !== '' && !/^\d+\.\d+\.\d+\.\d+\/\d+$|:/.test(now)) {
      throw new HttpError(422, 'Invalid', `Node "${obj.metadata.name}" is invalid: spec.podCIDR: Invalid value: "${now}"`);
    }
    // The API server's dual-stack rules (ValidateNode): at most two podCIDRs, one per family, the first one being podCIDR.
    const list: unknown = obj.spec?.podCIDRs;
    if (Array.isArray(list) && list.length > 0) {
      const invalid = (detail: string) => new HttpError(422, 'Invalid', `Node "${obj.metadata.name}" is invalid: spec.podCIDRs: ${detail}`);
      if (list.length > 2) throw invalid('Too many: must have at most 2 items');
      if (list.length === 2 && String(list[0]).includes(':') === String(list[1]).includes(':')) throw invalid('Invalid value: may specify no more than one CIDR for each IP family');
      if (now !== undefined && now !== '' && now !== list[0]) throw invalid(`Invalid value: "${list[0]}": must match spec.podCIDR "${now}"`);
    }
    const annotations = obj.metadata?.annotations;
    if (annotations !== undefined && annotations !== null) {
      for (const [k, v] of Object.entries(annotations)) {
        if (typeof v !== 'string') throw new HttpError(400, 'BadRequest', `metadata.annotations["${k}"]: annotation values must be strings`);
      }
    }
  }

  private commit(store: Map<string, Obj>, key: string, obj: Obj, type: 'ADDED' | 'MODIFIED', kind: string): Obj {
    this.rv++;
    obj.metadata.resourceVersion = String(this.rv);
    store.set(key, obj);
    if (kind === 'nodes') this.publish({ rv: this.rv, type, object: obj });
    this.save();
    return obj;
  }

  private publish(e: WatchEvent): void {
    this.events.push(e);
    const max = this.opts.watchWindow ?? 1000;
    if (this.events.length > max) {
      const dropped = this.events.splice(0, this.events.length - max);
      this.windowStart = dropped[dropped.length - 1].rv;
    }
    for (const w of this.watchers) w.send(e);
  }

  private save(): void {
    const file = this.opts.stateFile;
    if (!file) return;
    writeFileSync(`${file}.tmp`, JSON.stringify({ rv: this.rv, nodes: Object.fromEntries(this.nodes), pods: Object.fromEntries(this.pods) }));
    renameSync(`${file}.tmp`, file);
  }

  private serveWatch(url: URL, res: http.ServerResponse): void {
    const rvParam = url.searchParams.get('resourceVersion') ?? '';
    const bookmarks = url.searchParams.get('allowWatchBookmarks') === 'true';
    const timeoutSeconds = Number(url.searchParams.get('timeoutSeconds') ?? '1800');
    res.writeHead(200, { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked' });
    const line = (type: string, object: Obj) => res.write(`${JSON.stringify({ type, object })}\n`);
    let from: number;
    if (rvParam === '' || rvParam === '0') {
      for (const n of this.nodes.values()) line('ADDED', n);
      from = this.rv;
    } else {
      from = Number(rvParam);
      if (!Number.isInteger(from) || from < 0) {
        line('ERROR', status(400, 'BadRequest', `invalid resource version: ${rvParam}`));
        return void res.end();
      }
      if (from < this.windowStart) {
        line('ERROR', status(410, 'Expired', `too old resource version: ${from} (${this.windowStart})`));
        return void res.end();
      }
      for (const e of this.events) if (e.rv > from) line(e.type, e.object);
    }
    let lastRv = Math.max(from, this.rv);
    const watcher: Watcher = {
      send: (e) => {
        if (e.rv <= from) return;
        lastRv = e.rv;
        line(e.type, e.object);
      },
    };
    this.watchers.add(watcher);
    const bookmark = bookmarks
      ? setInterval(() => line('BOOKMARK', { kind: 'Node', apiVersion: 'v1', metadata: { resourceVersion: String(Math.max(lastRv, this.rv)) } }), this.opts.bookmarkMs ?? 1000)
      : undefined;
    const timeout = setTimeout(() => res.end(), timeoutSeconds * 1000);
    res.on('close', () => {
      clearInterval(bookmark);
      clearTimeout(timeout);
      this.watchers.delete(watcher);
    });
  }
}
