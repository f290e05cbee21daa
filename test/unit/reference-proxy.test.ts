// The reference forwarder's pure parts (bench/reference/udp_proxy.py), run by
// python3 without root: its incremental TTL checksum patch must give what a
// full recomputation gives (but 0xFFFF for 0x0000, as flannel's proxy.c),
// and its route table must pick the longest matching prefix.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { runTool } from '../support/required-tool.js';
import { referenceProxyPath } from '../../src/testbed/cluster.js';

function python(program: string, input: unknown): unknown {
  const loader = [
    'import importlib.util, json, sys',
    `spec = importlib.util.spec_from_file_location("udp_proxy", ${JSON.stringify(referenceProxyPath)})`,
    'proxy = importlib.util.module_from_spec(spec); spec.loader.exec_module(proxy)',
    'data = json.load(sys.stdin)',
  ].join('\n');
  return JSON.parse(runTool('python3', ['-c', `${loader}\n${program}`], { input: JSON.stringify(input), encoding: 'utf8' }));
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

/** The one's-complement sum of the header's words, check field included: 0xffff when it verifies. */
function verifySum(header: number[]): number {
  let sum = 0;
  for (let i = 0; i < header.length; i += 2) sum += (header[i]! << 8) | header[i + 1]!;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

test("TTL decrement patches the header checksum as a full recomputation does, but for the one's-complement zero (RFC 1141, as flannel's proxy.c)", () => {
  const cases: number[][] = [];
  // Every TTL, and ids chosen so the stored checksum sweeps its range; then the
  // boundary: TTL 2, id 24767, where a full recomputation gives 0x0000.
  for (let ttl = 2; ttl <= 255; ttl++) for (let id = 0; id < 65536; id += 4099) cases.push(header(ttl, id, (ttl * 7) & 0xff));
  const boundary = header(2, 24767, 1); // 10.244.1.1 -> 10.244.2.2
  cases.push(boundary);
  const results = python(
    'out = []\nfor h in data:\n    b = bytearray(h)\n    ok = proxy.decrement_ttl(b)\n    out.append([ok, list(b)])\nprint(json.dumps(out))',
    cases,
  ) as Array<[boolean, number[]]>;
  assert.is(results.length, cases.length);
  let zeros = 0;
  results.forEach(([ok, after], n) => {
    const before = cases[n]!;
    const at = `ttl ${before[8]} id ${(before[4]! << 8) | before[5]!}`;
    assert.ok(ok);
    assert.is(after[8], before[8]! - 1);
    assert.is(verifySum(after), 0xffff, `${at}: the header verifies`);
    const patched = (after[10]! << 8) | after[11]!;
    const expected = fullChecksum(after);
    if (expected === 0) {
      zeros++;
      assert.is(patched, 0xffff, `${at}: -0 where the recomputation gives +0`);
    } else {
      assert.is(patched, expected, at);
    }
  });
  assert.is(fullChecksum(results[results.length - 1]![1]), 0, 'the boundary case is the one-complement zero');
  assert.ok(zeros >= 1);
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
