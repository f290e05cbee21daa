// `flannel-udp install-cni`, always into temp dirs (never /opt/cni or
// /etc/cni on the machine running the tests): both files written, repeated
// runs are no-ops, a different existing file is kept unless --force, and the
// installed `flannel` really runs as a CNI plugin. No root needed.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CONFLIST_FILE, InstallConflictError, installCni, pluginMainPath } from '../../src/cni/install.js';
import { checkFlannelConfList, ConfListError } from '../../src/cni/conflist-check.js';

const cliPath = resolve(dirname(fileURLToPath(import.meta.url)), '../../src/cli.js');
let dir: string;
let binDir: string;
let confDir: string;

test.before.each(() => {
  dir = mkdtempSync(join(tmpdir(), 'cni-install-test-'));
  binDir = join(dir, 'opt/cni/bin');
  confDir = join(dir, 'etc/cni/net.d');
});
test.after.each(() => rmSync(dir, { recursive: true, force: true }));

const install = (force = false) => installCni({ binDir, confDir, force });
const plugin = () => join(binDir, 'flannel');
const conflist = () => join(confDir, CONFLIST_FILE);

function cli(...args: string[]) {
  return spawnSync(process.execPath, [cliPath, 'install-cni', ...args], { encoding: 'utf8' });
}

test("writes the plugin (executable) and kube-flannel's conflist, creating the directories", () => {
  const report = install();
  assert.is(report.plugin.action, 'installed');
  assert.is(report.confList.action, 'installed');
  assert.is(statSync(plugin()).mode & 0o777, 0o755);
  assert.is(statSync(conflist()).mode & 0o777, 0o644);
  assert.equal(JSON.parse(readFileSync(conflist(), 'utf8')), {
    name: 'cbr0',
    cniVersion: '0.3.1',
    plugins: [
      { type: 'flannel', delegate: { hairpinMode: true, isDefaultGateway: true } },
      { type: 'portmap', capabilities: { portMappings: true } },
    ],
  });
  const script = readFileSync(plugin(), 'utf8');
  assert.ok(script.startsWith('#!/bin/sh\n'));
  assert.ok(script.includes(`exec '${process.execPath}' '${pluginMainPath}' "$@"`), script);
});

test('the installed flannel runs as a CNI plugin with an empty environment (no PATH)', () => {
  install();
  const version = spawnSync(plugin(), [], { env: { CNI_COMMAND: 'VERSION' }, encoding: 'utf8' });
  assert.is(version.status, 0, version.stderr);
  assert.ok(JSON.parse(version.stdout).supportedVersions.includes('1.0.0'));
  const add = spawnSync(plugin(), [], { env: { CNI_COMMAND: 'ADD' }, input: '{"cniVersion":"0.3.1"}', encoding: 'utf8' });
  assert.is(add.status, 1);
  assert.is(JSON.parse(add.stdout).code, 4);
});

test('idempotent: a second run changes nothing, also when the conflist was only reformatted', () => {
  install();
  const before = readFileSync(plugin(), 'utf8');
  let report = install();
  assert.is(report.plugin.action, 'unchanged');
  assert.is(report.confList.action, 'unchanged');
  writeFileSync(conflist(), JSON.stringify(JSON.parse(readFileSync(conflist(), 'utf8'))));
  report = install();
  assert.is(report.confList.action, 'unchanged');
  assert.is(readFileSync(plugin(), 'utf8'), before);
});

test('a different conflist is not clobbered: nothing is written, the message says why and how', () => {
  mkdirSync(confDir, { recursive: true });
  writeFileSync(conflist(), '{"name":"mine","cniVersion":"1.0.0","plugins":[{"type":"bridge"}]}\n');
  try {
    install();
    assert.unreachable('installed over a different conflist');
  } catch (err) {
    assert.instance(err, InstallConflictError);
    assert.match((err as Error).message, /10-flannel\.conflist exists with a different configuration/);
    assert.match((err as Error).message, /--force/);
  }
  assert.match(readFileSync(conflist(), 'utf8'), /"mine"/);
  assert.not.ok(existsSync(plugin()), 'all or nothing: the plugin was not installed either');
});

test('another flannel binary in the bin dir is not clobbered either', () => {
  mkdirSync(binDir, { recursive: true });
  writeFileSync(plugin(), '\x7fELF flannel-io cni-plugin');
  assert.throws(() => install(), /flannel exists and is not this plugin/);
  assert.is(readFileSync(plugin(), 'utf8'), '\x7fELF flannel-io cni-plugin');
});

test('--force replaces both', () => {
  mkdirSync(confDir, { recursive: true });
  mkdirSync(binDir, { recursive: true });
  writeFileSync(conflist(), '{}');
  writeFileSync(plugin(), 'old');
  const report = install(true);
  assert.is(report.plugin.action, 'replaced');
  assert.is(report.confList.action, 'replaced');
  assert.is(JSON.parse(readFileSync(conflist(), 'utf8')).name, 'cbr0');
});

test('configurations sorting before ours are reported (a runtime takes the first by name)', () => {
  mkdirSync(confDir, { recursive: true });
  writeFileSync(join(confDir, '05-other.conflist'), '{}');
  writeFileSync(join(confDir, '99-later.conf'), '{}');
  assert.equal(install().shadowing, ['05-other.conflist']);
});

test('the CLI command: prints what it did, exit 2 with a clear line on a conflict, --force overrides', () => {
  let r = cli('--bin-dir', binDir, '--conf-dir', confDir);
  assert.is(r.status, 0, r.stderr);
  assert.match(r.stdout, /^installed +.*\/flannel\ninstalled +.*10-flannel\.conflist\n$/);
  r = cli('--bin-dir', binDir, '--conf-dir', confDir);
  assert.match(r.stdout, /^unchanged/);
  writeFileSync(conflist(), '{"name":"other"}');
  r = cli('--bin-dir', binDir, '--conf-dir', confDir);
  assert.is(r.status, 2);
  assert.match(r.stderr, /^flannel-udp install-cni: not replacing existing files/);
  assert.not.match(r.stderr, /\n\s+at /, 'no stack trace');
  r = cli('--bin-dir', binDir, '--conf-dir', confDir, '--force');
  assert.is(r.status, 0, r.stderr);
  assert.match(r.stdout, /replaced +.*10-flannel\.conflist/);
  r = cli('--bogus');
  assert.is(r.status, 2);
  assert.match(cli('--help').stdout, /--bin-dir DIR[\s\S]*--conf-dir DIR[\s\S]*--force/);
});

const kubeFlannelCniConf = {
  name: 'cbr0',
  cniVersion: '0.3.1',
  plugins: [
    { type: 'flannel', delegate: { hairpinMode: true, isDefaultGateway: true } },
    { type: 'portmap', capabilities: { portMappings: true } },
  ],
};

test('--conf-source installs the given list after checking it', () => {
  const source = join(dir, 'cni-conf.json');
  const mine = { ...kubeFlannelCniConf, name: 'podnet', cniVersion: '1.0.0' };
  writeFileSync(source, JSON.stringify(mine));
  const r = cli('--bin-dir', binDir, '--conf-dir', confDir, '--conf-source', source);
  assert.is(r.status, 0, r.stderr);
  assert.equal(JSON.parse(readFileSync(conflist(), 'utf8')), mine);
  assert.is(cli('--bin-dir', binDir, '--conf-dir', confDir, '--conf-source', source).stdout.split('\n')[1], `unchanged ${conflist()}`);
});

test('--conf-source refuses a list the runtime or the flannel plugin would reject, writing nothing', () => {
  const source = join(dir, 'cni-conf.json');
  const cases: Array<[unknown, RegExp]> = [
    ['{"name": "cbr0",', /not JSON/],
    [{ ...kubeFlannelCniConf, name: undefined }, /"name" is missing/],
    [{ ...kubeFlannelCniConf, cniVersion: '0.2.0' }, /cniVersion "0\.2\.0" is not one the flannel plugin speaks/],
    [{ ...kubeFlannelCniConf, plugins: [{ type: 'bridge' }] }, /no plugin of type "flannel"/],
    [{ ...kubeFlannelCniConf, plugins: [...kubeFlannelCniConf.plugins].reverse() }, /must be the first/],
    [{ ...kubeFlannelCniConf, plugins: [{ type: 'flannel', delegate: { name: 'x' } }] }, /must not have 'name' field/],
    [{ ...kubeFlannelCniConf, plugins: [{ type: 'flannel', delegate: { ipam: {} } }] }, /must not have 'ipam' field/],
  ];
  for (const [conf, message] of cases) {
    writeFileSync(source, typeof conf === 'string' ? conf : JSON.stringify(conf));
    const r = cli('--bin-dir', binDir, '--conf-dir', confDir, '--conf-source', source);
    assert.is(r.status, 2, JSON.stringify(conf));
    assert.match(r.stderr, /^flannel-udp install-cni: --conf-source: /);
    assert.match(r.stderr, message);
    assert.match(r.stderr, /nothing was written/);
    assert.not.ok(existsSync(conflist()) || existsSync(plugin()), 'nothing written');
  }
  const missing = cli('--conf-source', join(dir, 'absent.json'));
  assert.is(missing.status, 2);
  assert.match(missing.stderr, /--conf-source: cannot read .*absent\.json/);
});

test("kube-flannel's own cni-conf.json passes the check", () => {
  assert.is(checkFlannelConfList(JSON.stringify(kubeFlannelCniConf)).name, 'cbr0');
  assert.throws(() => checkFlannelConfList('[]'), (e: unknown) => e instanceof ConfListError);
});

test('--runtime-dir: node and the plugin are copied there, the plugin runs from the copy, a new build replaces the old copy', () => {
  const runtimeDir = join(dir, 'opt/flannel-udp');
  let report = installCni({ binDir, confDir, force: false, runtimeDir });
  assert.ok(report.runtime, 'runtime reported');
  assert.is(report.runtime.action, 'installed');
  const bundle = report.runtime.path;
  assert.match(bundle, new RegExp(`^${runtimeDir}/node-${process.version}-${process.arch}-[0-9a-f]{16}$`));
  const script = readFileSync(plugin(), 'utf8');
  assert.ok(script.includes(`exec '${bundle}/node' '${bundle}/src/cni/main.js' "$@"`), script);
  assert.not.ok(script.includes(dirname(pluginMainPath)), 'nothing of the source tree is referenced');
  assert.is(statSync(join(bundle, 'node')).size, statSync(process.execPath).size);
  assert.is(statSync(join(bundle, 'node')).mode & 0o777, 0o755);
  // Runs from the copy with no environment: its imports resolve inside the bundle.
  const version = spawnSync(plugin(), [], { env: { CNI_COMMAND: 'VERSION' }, encoding: 'utf8' });
  assert.is(version.status, 0, version.stderr);
  assert.ok(JSON.parse(version.stdout).supportedVersions.includes('1.0.0'));

  report = installCni({ binDir, confDir, force: false, runtimeDir });
  assert.is(report.runtime?.action, 'unchanged');
  assert.is(report.plugin.action, 'unchanged');
  assert.equal(report.runtime?.removed, []);

  // An older image's bundle and an interrupted copy are removed once the script points at the current one.
  const old = join(runtimeDir, 'node-v20.0.0-x64-0123456789abcdef');
  mkdirSync(join(old, 'src'), { recursive: true });
  mkdirSync(join(runtimeDir, '.bundle-abc'));
  writeFileSync(join(runtimeDir, 'unrelated'), 'kept');
  report = installCni({ binDir, confDir, force: false, runtimeDir });
  assert.equal(report.runtime?.removed, [join(runtimeDir, '.bundle-abc'), old]);
  assert.equal(readdirSync(runtimeDir).sort(), [bundle.slice(runtimeDir.length + 1), 'unrelated']);
});

test('--runtime-dir with a conflict writes nothing, not even the bundle', () => {
  const runtimeDir = join(dir, 'opt/flannel-udp');
  mkdirSync(binDir, { recursive: true });
  writeFileSync(plugin(), '\x7fELF flannel-io cni-plugin');
  assert.throws(() => installCni({ binDir, confDir, force: false, runtimeDir }), /not this plugin/);
  assert.not.ok(existsSync(runtimeDir));
});

test.run();
