// The CNI plugin as a runtime runs it (a process: stdin, environment, stdout,
// exit code) against configurations that name the wrong files or carry
// hostile input (issue 15, defect 6): every answer is a CNI error object with
// the right code, quickly, and no content of an arbitrary file is quoted.
// The spawnSync timeouts are liveness bounds (a hang fails the test), not
// timing assertions.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pluginMainPath } from '../../src/cni/install.js';
import { jsonDepthExceeds } from '../../src/cni/spec.js';

let dir: string;

test.before.each(() => {
  dir = mkdtempSync(join(tmpdir(), 'cni-hardening-'));
  writeFileSync(join(dir, 'subnet.env'), 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n');
});
test.after.each(() => {
  rmSync(dir, { recursive: true, force: true });
});

function plugin(stdin: string | Buffer, command = 'ADD') {
  const r = spawnSync(process.execPath, [pluginMainPath], {
    env: { PATH: process.env.PATH, CNI_COMMAND: command, CNI_CONTAINERID: 'c1', CNI_NETNS: '/var/run/netns/none', CNI_IFNAME: 'eth0', CNI_PATH: join(dir, 'bin') },
    input: stdin,
    encoding: 'utf8',
    timeout: 20_000,
    maxBuffer: 1 << 20,
  });
  assert.is(r.error, undefined, `the plugin did not answer: ${r.error?.message}`);
  let answer: { code?: number; msg?: string; details?: string; cniVersion?: string } = {};
  try {
    answer = JSON.parse(r.stdout);
  } catch {
    assert.unreachable(`not a CNI JSON answer: ${JSON.stringify(r.stdout.slice(0, 300))}; stderr ${r.stderr.slice(-300)}`);
  }
  return { status: r.status, answer, stdout: r.stdout, stderr: r.stderr };
}

const conf = (extra: Record<string, unknown>) => JSON.stringify({ cniVersion: '1.0.0', name: 'cbr0', type: 'flannel', dataDir: join(dir, 'data'), subnetFile: join(dir, 'subnet.env'), ...extra });

test('subnetFile: /dev/zero is refused as a device (code 5), without reading it', () => {
  const r = plugin(conf({ subnetFile: '/dev/zero' }));
  assert.is(r.status, 1);
  assert.is(r.answer.code, 5);
  assert.match(r.answer.msg!, /\/dev\/zero: flannel's subnet file is a device, not a regular file/);
});

test('subnetFile: a FIFO is refused (code 5) instead of waiting for a writer forever', () => {
  const fifo = join(dir, 'fifo');
  assert.is(spawnSync('mkfifo', [fifo]).status, 0, 'mkfifo');
  const r = plugin(conf({ subnetFile: fifo }));
  assert.is(r.answer.code, 5);
  assert.match(r.answer.msg!, /is a FIFO \(named pipe\), not a regular file/);
});

test('subnetFile: a directory, and a regular file far too large, are I/O errors (code 5)', () => {
  assert.match(plugin(conf({ subnetFile: dir })).answer.msg!, /is a directory/);
  const big = join(dir, 'big.env');
  writeFileSync(big, 'FLANNEL_MTU=1472\n'.repeat(10_000));
  const r = plugin(conf({ subnetFile: big }));
  assert.is(r.answer.code, 5);
  assert.match(r.answer.msg!, /big\.env: flannel's subnet file is 170000 bytes; the limit is 64 KiB/);
});

test('subnetFile pointing at some other file: code 7, and none of its content in the answer or the log', () => {
  const secretLine = 'root:$6$Sup3rS3cretHash$abcdef:19000:0:99999:7:::';
  const other = join(dir, 'shadow-like');
  writeFileSync(other, `${secretLine}\ndaemon:*:19000:0:99999:7:::\n`);
  const r = plugin(conf({ subnetFile: other }));
  assert.is(r.answer.code, 7);
  assert.match(r.answer.msg!, /line 1 is not a FLANNEL_ key=value line/);
  for (const text of [r.stdout, r.stderr]) assert.not.ok(text.includes('Sup3rS3cret') || text.includes('root:'), text);
  // A real subnet file with a bad flannel value still says what is wrong with it.
  writeFileSync(join(dir, 'subnet.env'), 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=big\nFLANNEL_IPMASQ=true\n');
  assert.match(plugin(conf({})).answer.msg!, /FLANNEL_MTU: "big" is not an integer MTU/);
});

test('an unusable dataDir (a file) is an I/O error, code 5, not 999', () => {
  const file = join(dir, 'not-a-dir');
  writeFileSync(file, 'x');
  mkBridge();
  const r = plugin(conf({ dataDir: file }));
  assert.is(r.answer.code, 5, JSON.stringify(r.answer));
  assert.match(r.answer.msg!, /cannot save the delegate configuration/);
});

test('50 MB of "[" on stdin: a decoding error (code 6), not a 40 s parse', () => {
  const r = plugin(Buffer.alloc(50 * 1024 * 1024, '['));
  assert.is(r.status, 1);
  assert.is(r.answer.code, 6);
  assert.match(r.answer.msg!, /is 52428800 bytes, more than 1048576/);
});

test('deep nesting within the size bound is refused before JSON.parse (code 6)', () => {
  const deep = `{"cniVersion":"1.0.0","name":"cbr0","x":${'['.repeat(500_000)}${']'.repeat(500_000)}}`;
  const r = plugin(deep);
  assert.is(r.answer.code, 6);
  assert.match(r.answer.msg!, /nested more than 64 levels deep/);
});

test('the depth scan: strings and escapes do not count, real nesting does', () => {
  assert.not.ok(jsonDepthExceeds('{"a":"[[[[[[[[[[","b":"\\"[[["}', 2));
  assert.ok(jsonDepthExceeds('{"a":[[1]]}', 2));
  assert.not.ok(jsonDepthExceeds('{"a":[[1]]}', 3));
  assert.not.ok(jsonDepthExceeds('[{},{},{},{}]', 2));
});

function mkBridge(): void {
  spawnSync('mkdir', ['-p', join(dir, 'bin')]);
  writeFileSync(join(dir, 'bin', 'bridge'), '#!/bin/sh\necho "{}"\n', { mode: 0o755 });
}

test.run();
