// Unknown-field detection for Kubernetes objects, as kube-apiserver's strict
// field validation (kubectl's default --validate=strict) does it: a misspelt
// key is an error, not silently dropped. The OpenAPI schemas that
// kubernetes-models validates against allow extra properties, so the field
// lists come from @kubernetes/client-node's generated models instead (each
// class's attributeTypeMap names every field of that type and its type).
import * as k8s from '@kubernetes/client-node';

interface Attribute {
  baseName: string;
  type: string;
}
type Model = { getAttributeTypeMap(): Attribute[] };

const models = k8s as unknown as Record<string, Model | undefined>;
const OPAQUE = new Set(['string', 'number', 'boolean', 'Date', 'IntOrString', 'any', 'object']);

/** JSON paths of every key the type does not have, e.g. "spec.template.spec.hostNetwrok". */
export function unknownFields(value: unknown, type: string, path = ''): string[] {
  if (value === null || value === undefined || OPAQUE.has(type)) return [];
  const array = /^Array<(.+)>$/.exec(type);
  if (array) {
    if (!Array.isArray(value)) return [];
    return value.flatMap((v, i) => unknownFields(v, array[1]!, `${path}[${i}]`));
  }
  const map = /^\{ \[key: string\]: (.+); \}$/.exec(type);
  if (map) {
    if (typeof value !== 'object') return [];
    return Object.entries(value).flatMap(([k, v]) => unknownFields(v, map[1]!, `${path}.${k}`));
  }
  const model = models[type];
  if (!model || typeof model.getAttributeTypeMap !== 'function') throw new Error(`${path || '<root>'}: no model for type ${type}`);
  if (typeof value !== 'object' || Array.isArray(value)) return [];
  const attributes = new Map(model.getAttributeTypeMap().map((a) => [a.baseName, a.type]));
  const out: string[] = [];
  for (const [k, v] of Object.entries(value)) {
    const p = path ? `${path}.${k}` : k;
    const t = attributes.get(k);
    if (t === undefined) out.push(p);
    else out.push(...unknownFields(v, t, p));
  }
  return out;
}
