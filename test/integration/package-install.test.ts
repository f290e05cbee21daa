// The package as a user installs it: `npm pack` (its prepack builds the
// JavaScript) on a copy of this checkout, then `npm install -g --omit=dev` of
// the tarball into a temporary prefix, with a PATH that holds node, npm and sh
// and no compiler. The installed `flannel-udp` and `flannel-cni` commands must
// run. Needs npm and the npm registry (for koffi, as any install does); it
// removes the copy, the tarball and the prefix, also when it fails.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = fileURLToPath(new URL('../../../', import.meta.url));
// What `npm pack` needs from a checkout: the sources, the bin scripts, the manifest, lock and build configs.
const CHECKOUT_FILES = ['src', 'bin', 'package.json', 'package-lock.json', 'tsconfig.json', 'tsconfig.build.json', 'README.md'];

function which(cmd: string): string {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    const candidate = join(dir, cmd);
    if (existsSync(candidate)) return realpathSync(candidate);
  }
  throw new Error(`this test needs ${cmd} on PATH (npm comes with Node.js)`);
}

function run(cmd: string, args: string[], opts: { cwd: string; path: string; env?: Record<string, string> }): SpawnSyncReturns<string> {
  return spawnSync(cmd, args, { cwd: opts.cwd, encoding: 'utf8', timeout: 300_000, env: { ...process.env, ...opts.env, PATH: opts.path } });
}

function ok(r: SpawnSyncReturns<string>, what: string): string {
  if (r.error) throw new Error(`${what}: ${r.error.message}`);
  assert.is(r.status, 0, `${what} exited ${r.status}:\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

test('npm pack, then npm install -g --omit=dev of the tarball without a compiler: flannel-udp and flannel-cni run', () => {
  const dir = mkdtempSync(join(tmpdir(), 'flannel-udp-package-'));
  try {
    // A copy of the checkout, so prepack's rebuild of dist/src never touches the tree this suite runs from.
    const checkout = join(dir, 'checkout');
    mkdirSync(checkout);
    for (const f of CHECKOUT_FILES) cpSync(join(repo, f), join(checkout, f), { recursive: true });
    symlinkSync(join(repo, 'node_modules'), join(checkout, 'node_modules'));

    // Only node, npm and sh (npm runs package scripts with it): no cc, gcc, make, python.
    const tools = join(dir, 'tools');
    mkdirSync(tools);
    for (const t of ['node', 'npm', 'sh']) symlinkSync(which(t), join(tools, t));
    for (const compiler of ['cc', 'gcc', 'make', 'python3']) assert.not.ok(existsSync(join(tools, compiler)));

    const packed = ok(run('npm', ['pack', '--pack-destination', dir], { cwd: checkout, path: `${tools}${delimiter}${process.env.PATH}` }), 'npm pack');
    const tarball = join(dir, packed.trim().split('\n').pop()!);
    assert.match(tarball, /flannel-udp-\d+\.\d+\.\d+\.tgz$/);

    // The tarball: built JavaScript and the bin scripts, no TypeScript sources, tests or benchmarks.
    const listing = ok(run('tar', ['tzf', tarball], { cwd: dir, path: process.env.PATH! }), 'tar tzf').split('\n').filter(Boolean);
    for (const f of ['package/bin/flannel-udp', 'package/bin/flannel-cni', 'package/dist/src/cli.js', 'package/dist/src/cni/main.js', 'package/dist/src/dataplane/worker-main.js']) {
      assert.ok(listing.includes(f), `${f} missing from the tarball:\n${listing.join('\n')}`);
    }
    assert.equal(listing.filter((f) => /\.ts$|^package\/(test|bench|src)\//.test(f)), [], 'sources, tests or benchmarks in the tarball');

    const prefix = join(dir, 'prefix');
    ok(
      run('npm', ['install', '-g', '--prefix', prefix, '--omit=dev', '--allow-scripts=koffi', '--no-audit', '--no-fund', tarball], { cwd: dir, path: tools }),
      'npm install -g',
    );
    const installed = join(prefix, 'lib', 'node_modules', 'flannel-udp', 'node_modules');
    const deps = readdirSync(installed).sort();
    for (const runtime of ['koffi', 'yaml']) assert.ok(deps.includes(runtime), `${runtime} not installed: ${deps.join(' ')}`);
    // The Kubernetes client is our own (kube-client.ts); the maintained one is only the tests' schema source.
    for (const devOnly of ['raw-socket', 'pcap-parser', 'nan', 'typescript', 'uvu', 'tinybench', '@kubernetes']) assert.not.ok(deps.includes(devOnly), `${devOnly} installed with --omit=dev`);

    const path = `${join(prefix, 'bin')}${delimiter}${tools}`;
    const help = run('flannel-udp', ['--help'], { cwd: dir, path });
    assert.is(help.status, 0, help.stderr);
    assert.match(help.stdout, /Usage:[\s\S]*flannel-udp up --subnet-file FILE/);

    const bad = join(dir, 'subnet.env');
    writeFileSync(bad, 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.300/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n');
    const up = run('flannel-udp', ['up', '--subnet-file', bad, '--leases', join(dir, 'leases.json'), '--public-ip', '192.0.2.1', '--tun', `fut-pkg${process.pid % 10000}`], { cwd: dir, path });
    assert.is(up.status, 2, `${up.stdout}\n${up.stderr}`);
    assert.is(up.stderr, `flannel-udp: ${bad}:2: FLANNEL_SUBNET: "10.244.1.300/24" is not a valid IPv4 CIDR\n`);

    const cni = run('flannel-cni', [], { cwd: dir, path, env: { CNI_COMMAND: 'VERSION' } });
    assert.is(cni.status, 0, cni.stderr);
    assert.equal(JSON.parse(cni.stdout).supportedVersions, ['0.3.0', '0.3.1', '0.4.0', '1.0.0']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
