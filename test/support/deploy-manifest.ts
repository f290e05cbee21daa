// deploy/kube-flannel-udp.yml as objects, for the tests that check it.
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';

export type Json = Record<string, any>;

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
export const manifestPath = join(repoRoot, 'deploy/kube-flannel-udp.yml');

/** Kubernetes reads manifests with YAML 1.1 scalars (yes/no/on/off are booleans); callers compare both readings. */
export function loadManifest(text: string, version: '1.1' | '1.2' = '1.1'): Json[] {
  const docs = parseAllDocuments(text, { version, uniqueKeys: true });
  if (!Array.isArray(docs)) throw new Error('not a YAML stream');
  return docs
    .map((d, i) => {
      if (d.errors.length > 0) throw new Error(`document ${i}: ${d.errors.map((e) => e.message).join('; ')}`);
      if (d.warnings.length > 0) throw new Error(`document ${i}: ${d.warnings.map((e) => e.message).join('; ')}`);
      return d.toJS() as Json;
    })
    .filter((o) => o !== null);
}

export function readManifest(): { text: string; objects: Json[] } {
  const text = readFileSync(manifestPath, 'utf8');
  return { text, objects: loadManifest(text) };
}

/** The one object of this kind. */
export function only(objects: Json[], kind: string): Json {
  const found = objects.filter((o) => o.kind === kind);
  if (found.length !== 1) throw new Error(`${found.length} objects of kind ${kind} in ${manifestPath}`);
  return found[0]!;
}

export function container(podSpec: Json, name: string, init = false): Json {
  const list = (init ? podSpec.initContainers : podSpec.containers) as Json[] | undefined;
  const c = list?.find((x) => x.name === name);
  if (!c) throw new Error(`no ${init ? 'init container' : 'container'} ${name}`);
  return c;
}
