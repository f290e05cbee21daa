// The testbed's program checks (src/testbed/tools.ts): a program that is not
// installed fails by name and Debian package wherever the testbed runs it
// (run, runInNetns, spawnCaptured, spawnInNetns), before anything starts,
// every program the tests, benches and testbed run by name is in the table,
// and scripts/setup.sh installs every package the table names.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { run, runInNetns, spawnCaptured, spawnInNetns } from '../../src/testbed/exec.js';
import { hasTool, requireTools, TOOL_PACKAGES } from '../../src/testbed/tools.js';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const MISSING = 'flannel-udp-no-such-program';

/** Runs `fn` with PATH set to `path` alone. */
function withPath<T>(path: string, fn: () => T): T {
  const saved = process.env.PATH;
  process.env.PATH = path;
  try {
    return fn();
  } finally {
    process.env.PATH = saved;
  }
}

test('a missing program is refused by name and Debian package, before anything runs', async () => {
  for (const [what, call] of [
    ['run', () => run(MISSING, [])],
    ['runInNetns', () => runInNetns('no-such-ns', MISSING, [])],
  ] as const) {
    try {
      await call();
      assert.unreachable(`${what} resolved`);
    } catch (err) {
      assert.match((err as Error).message, new RegExp(`^this needs ${MISSING} \\(Debian package unknown: add it to TOOL_PACKAGES`), what);
    }
  }
  assert.throws(() => spawnCaptured(MISSING, []), new RegExp(`this needs ${MISSING}`));
  assert.throws(() => spawnInNetns('no-such-ns', MISSING, []), new RegExp(`this needs ${MISSING}`));
  // A known program missing from PATH: its package is named.
  const empty = mkdtempSync(join(tmpdir(), 'tools-'));
  try {
    assert.ok(hasTool('sh'), 'sh is found on the real PATH (and cached)');
    withPath(empty, () => {
      assert.not.ok(hasTool('sh'), 'the cache is per PATH');
      assert.not.ok(hasTool('sockperf'));
      assert.throws(() => requireTools('sockperf'), /^this needs sockperf \(Debian package sockperf; scripts\/setup\.sh installs it\)$/);
    });
    // A path is checked as a path.
    assert.not.ok(hasTool(join(empty, 'iperf3')));
    writeFileSync(join(empty, 'iperf3'), '#!/bin/sh\n', { mode: 0o755 });
    assert.ok(hasTool(join(empty, 'iperf3')));
  } finally {
    rmSync(empty, { recursive: true, force: true });
  }
});

test('a program that is there passes the check and runs', async () => {
  requireTools('sh', process.execPath);
  const r = await run('sh', ['-c', 'echo ok']);
  assert.is(r.stdout, 'ok\n');
});

test('every program run by name in test/, bench/ and src/testbed/ has its Debian package in TOOL_PACKAGES', () => {
  // Calls whose command is a string literal: exec(ns, 'iperf3', …), spawn(…, 'ping', …), run('ip', …), runTool('etcdctl', …).
  const call = /\b(?:exec|spawn|run|runInNetns|spawnInNetns|spawnCaptured|runTool|execFileSync|execFile|spawnSync)\((?:[\w.!()[\]]+, )?'([a-z][a-z0-9_.-]*)'/g;
  // Not looked up here: npm (comes with Node.js), dpkg (every Debian system), our own bin/ programs, and 'udp' (a socket type, not a program).
  const notPrograms = new Set(['udp', 'npm', 'flannel-udp', 'flannel-cni', 'dpkg']);
  const seen = new Map<string, string>();
  const walk = (dir: string): void => {
    for (const name of readdirSync(dir)) {
      const path = join(dir, name);
      if (statSync(path).isDirectory()) walk(path);
      else if (name.endsWith('.ts') && name !== 'testbed-tools.test.ts') for (const m of readFileSync(path, 'utf8').matchAll(call)) if (!seen.has(m[1])) seen.set(m[1], path);
    }
  };
  for (const dir of ['test', 'bench', 'src/testbed']) walk(join(repo, dir));
  const missing = [...seen].filter(([tool]) => !notPrograms.has(tool) && !(tool in TOOL_PACKAGES));
  assert.equal(missing, [], `programs run by name with no Debian package in src/testbed/tools.ts: ${missing.map(([t, f]) => `${t} (${f})`).join(', ')}`);
  assert.ok(seen.has('iperf3') && seen.has('ip') && seen.has('ping'), `the scan found too little: ${[...seen.keys()].join(' ')}`);
});

test('scripts/setup.sh installs the package of every program in TOOL_PACKAGES (or it is Essential in Debian)', () => {
  const setup = readFileSync(join(repo, 'scripts/setup.sh'), 'utf8');
  const listed = /^packages=\(([^)]*)\)/m.exec(setup);
  assert.ok(listed, 'no packages=(…) line in scripts/setup.sh');
  const installed = new Set(listed[1].trim().split(/\s+/));
  const essential = new Set(['bash', 'coreutils', 'dash', 'libc-bin', 'tar', 'util-linux']);
  const missing = [...new Set(Object.values(TOOL_PACKAGES))].filter((p) => !installed.has(p) && !essential.has(p));
  assert.equal(missing, [], `in TOOL_PACKAGES but not installed by scripts/setup.sh: ${missing.join(', ')}`);
});

test.run();
