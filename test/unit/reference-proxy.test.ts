// The reference forwarder's pure parts (bench/reference/udp_proxy.py), run by
// python3 without root: its incremental TTL checksum patch must give what a
// full recomputation gives, for every TTL and checksum value that matters,
// and its route table must pick the longest matching prefix.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { referenceProxyPath } from '../../src/testbed/cluster.js';

function python(program: string, input: unknown): unknown {
  const loader = [
    'import importlib.util, json, sys',
    `spec = importlib.util.spec_from_file_location("udp_proxy", ${JSON.stringify(referenceProxyPath)})`,
    'proxy = importlib.util.module_from_spec(spec); spec.loader.exec_module(proxy)',
    'data = json.load(sys.stdin)',
  ].join('\n');
  let out: string;
  try {
    out = execFileSync('python3', ['-c', `${loader}\n${program}`], { input: JSON.stringify(input), encoding: 'utf8' });
  } catch (err) {
    throw new Error(`python3 could not run the reference forwarder's functions (install python3; scripts/setup.sh does): ${(err as Error).message}`);
  }
  return JSON.parse(out);
}

/** The IPv4 header checksum computed from scratch: one's-complement sum of 16-bit words, check field zero. */
function fullChecksum(header: number[]): number {
  let sum = 0;
  for (let i = 0; i < header.length; i += 2) if (i !== 10) sum += (header[i]! << 8) | header[i + 1]!;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

function header(ttl: number, id: number, src: number): number[] {
  const h = [0x45, 0, 0, 84, id >> 8, id & 0xff, 0x40, 0, ttl, 1, 0, 0, 10, 244, 1, src, 10, 244, 2, 2];
  const c = fullChecksum(h);
  h[10] = c >> 8;
  h[11] = c & 0xff;
  return h;
}

test('TTL decrement patches the header checksum exactly as a full recomputation', () => {
  const cases: number[][] = [];
  // Every TTL, and ids chosen so the stored checksum sweeps its whole range, wrap-arounds included.
  for (let ttl = 2; ttl <= 255; ttl++) for (let id = 0; id < 65536; id += 4099) cases.push(header(ttl, id, (ttl * 7) & 0xff));
  const results = python(
    'out = []\nfor h in data:\n    b = bytearray(h)\n    ok = proxy.decrement_ttl(b)\n    out.append([ok, list(b)])\nprint(json.dumps(out))',
    cases,
  ) as Array<[boolean, number[]]>;
  assert.is(results.length, cases.length);
  results.forEach(([ok, after], n) => {
    const before = cases[n]!;
    assert.ok(ok);
    assert.is(after[8], before[8]! - 1);
    const expected = fullChecksum(after);
    assert.is((after[10]! << 8) | after[11]!, expected, `ttl ${before[8]} id ${(before[4]! << 8) | before[5]!}`);
  });
});

test('TTL 1 and 0 are not forwarded and the header is left alone', () => {
  const results = python(
    'out = []\nfor h in data:\n    b = bytearray(h)\n    out.append([proxy.decrement_ttl(b), list(b)])\nprint(json.dumps(out))',
    [header(1, 7, 1), header(0, 7, 1)],
  ) as Array<[boolean, number[]]>;
  assert.equal(results, [
    [false, header(1, 7, 1)],
    [false, header(0, 7, 1)],
  ]);
});

test('routes: longest prefix first; bad specifications are refused', () => {
  const order = python(
    'print(json.dumps([r[2] for r in proxy.parse_routes(data)]))',
    ['10.244.0.0/16=192.0.2.9', '10.244.2.0/24=192.0.2.2', '10.0.0.0/8=192.0.2.8'],
  );
  assert.equal(order, [24, 16, 8]);
  const errors = python(
    'out = []\nfor spec in data:\n    try:\n        proxy.parse_routes([spec]); out.append(None)\n    except ValueError as e:\n        out.append(str(e))\nprint(json.dumps(out))',
    ['10.244.2.0/24', '10.244.2.1/24=192.0.2.2', '10.244.2.0/24=nowhere'],
  ) as Array<string | null>;
  for (const e of errors) assert.type(e, 'string');
});

test.run();
