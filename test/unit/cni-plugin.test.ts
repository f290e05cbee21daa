// The flannel CNI plugin's protocol handling, in-process and with a fake
// `bridge` (a shell script that records what it was given) in a temp dir:
// environment checks, versions, errors, what is saved and when, what the
// delegate gets. No root and no namespaces; the integration test
// (test/integration/cni-plugin.test.ts) runs the same plugin with the real
// reference plugins.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runPlugin, type PluginOutcome } from '../../src/cni/plugin.js';
import { pluginMainPath } from '../../src/cni/install.js';

const SUBNET_ENV = 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n';
const RESULT = '{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/var/run/netns/x"}],"ips":[{"address":"10.244.1.2/24","gateway":"10.244.1.1","interface":0}],"routes":[{"dst":"10.244.0.0/16"}]}';

// Records stdin and the CNI_* environment per command; FAKE_BRIDGE picks a failure.
const FAKE_BRIDGE = `#!/bin/sh
dir=$(dirname "$0")
cat > "$dir/stdin.$CNI_COMMAND"
env | grep '^CNI_' | sort > "$dir/env.$CNI_COMMAND"
echo run >> "$dir/runs.$CNI_COMMAND"
case "$FAKE_BRIDGE" in
  fail) echo '{"cniVersion":"1.0.0","code":7,"msg":"fake failure"}'; exit 1 ;;
  crash) echo 'panic: fake crash' >&2; exit 2 ;;
esac
echo "fake bridge $CNI_COMMAND" >&2
[ "$CNI_COMMAND" = ADD ] && echo '${RESULT}'
exit 0
`;

let dir: string;
let binDir: string;
let dataDir: string;
let subnetFile: string;

test.before.each(() => {
  dir = mkdtempSync(join(tmpdir(), 'cni-plugin-test-'));
  binDir = join(dir, 'bin');
  dataDir = join(dir, 'data');
  subnetFile = join(dir, 'subnet.env');
  spawnSync('mkdir', ['-p', binDir]);
  writeFileSync(join(binDir, 'bridge'), FAKE_BRIDGE);
  chmodSync(join(binDir, 'bridge'), 0o755);
  writeFileSync(subnetFile, SUBNET_ENV);
});
test.after.each(() => {
  rmSync(dir, { recursive: true, force: true });
});

function config(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { cniVersion: '1.0.0', name: 'cbr0', type: 'flannel', delegate: { hairpinMode: true, isDefaultGateway: true }, subnetFile, dataDir, ...extra };
}

function env(command: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH,
    CNI_COMMAND: command,
    CNI_CONTAINERID: 'pod-1',
    CNI_NETNS: '/var/run/netns/pod-1',
    CNI_IFNAME: 'eth0',
    CNI_PATH: `${join(dir, 'nowhere')}:${binDir}`,
    ...extra,
  };
}

function call(command: string, conf: Record<string, unknown> | string = config(), extraEnv: Record<string, string> = {}): PluginOutcome {
  const logs: string[] = [];
  return runPlugin({ env: env(command, extraEnv), stdin: typeof conf === 'string' ? conf : JSON.stringify(conf), log: (l) => logs.push(l) });
}

function cniError(outcome: PluginOutcome): { cniVersion: string; code: number; msg: string; details?: string } {
  assert.is.not(outcome.exitCode, 0, `expected an error, got ${outcome.stdout}`);
  return JSON.parse(outcome.stdout);
}

const saved = () => join(dataDir, 'pod-1');
const delegateRuns = (command: string) => (existsSync(join(binDir, `runs.${command}`)) ? readFileSync(join(binDir, `runs.${command}`), 'utf8').split('\n').filter(Boolean).length : 0);
const delegateStdin = (command: string) => JSON.parse(readFileSync(join(binDir, `stdin.${command}`), 'utf8'));

test('VERSION lists the supported spec versions, whatever stdin holds', () => {
  const r = runPlugin({ env: { CNI_COMMAND: 'VERSION' }, stdin: '' });
  assert.is(r.exitCode, 0);
  assert.equal(JSON.parse(r.stdout), { cniVersion: '1.0.0', supportedVersions: ['0.3.0', '0.3.1', '0.4.0', '1.0.0'] });
});

test('the compiled plugin answers VERSION as a process (what a runtime runs)', () => {
  const r = spawnSync(process.execPath, [pluginMainPath], { env: { CNI_COMMAND: 'VERSION' }, input: '{"cniVersion":"0.3.1"}', encoding: 'utf8' });
  assert.is(r.status, 0, r.stderr);
  assert.ok(JSON.parse(r.stdout).supportedVersions.includes('0.3.1'));
});

test('missing environment variables: code 4, naming every one', () => {
  const e = cniError(runPlugin({ env: { CNI_COMMAND: 'ADD', CNI_IFNAME: 'eth0' }, stdin: JSON.stringify(config()) }));
  assert.is(e.code, 4);
  assert.is(e.msg, 'required env variables [CNI_CONTAINERID CNI_NETNS CNI_PATH] missing');
  assert.is(e.cniVersion, '1.0.0');
  assert.is(cniError(runPlugin({ env: {}, stdin: '' })).code, 4);
  assert.match(cniError(runPlugin({ env: { CNI_COMMAND: 'GC' }, stdin: '' })).msg, /unknown CNI_COMMAND: GC/);
});

test('DEL does not need CNI_NETNS (the runtime may have lost the namespace)', () => {
  assert.is(call('ADD').exitCode, 0);
  const r = call('DEL', config(), { CNI_NETNS: '' });
  assert.is(r.exitCode, 0, r.stdout);
});

test('a container ID that could escape dataDir, or a bad interface name, is refused (code 4)', () => {
  for (const id of ['../etc', 'a/b', '.hidden', '']) {
    const e = cniError(call('ADD', config(), { CNI_CONTAINERID: id }));
    assert.is(e.code, 4, id);
  }
  assert.match(cniError(call('ADD', config(), { CNI_IFNAME: 'a-very-long-ifname' })).msg, /CNI_IFNAME/);
  assert.is(delegateRuns('ADD'), 0);
});

test('versions: unsupported or missing cniVersion is code 1, unparsable JSON code 6; errors carry the configuration\'s version', () => {
  const old = cniError(call('ADD', config({ cniVersion: '0.2.0' })));
  assert.is(old.code, 1);
  assert.is(old.cniVersion, '0.2.0');
  assert.is(cniError(call('ADD', config({ cniVersion: undefined }))).code, 1);
  assert.is(cniError(call('ADD', '{not json')).code, 6);
  assert.is(cniError(call('ADD', config({ cniVersion: '0.3.1', name: '' }))).cniVersion, '0.3.1');
});

test('ADD: the delegate gets the built configuration and the same environment; its result is passed through', () => {
  const r = call('ADD', config(), { CNI_ARGS: 'K8S_POD_NAME=web' });
  assert.is(r.exitCode, 0);
  assert.is(r.stdout.trim(), RESULT);
  const d = delegateStdin('ADD');
  assert.is(d.type, 'bridge');
  assert.is(d.name, 'cbr0');
  assert.is(d.cniVersion, '1.0.0');
  assert.is(d.mtu, 1472);
  assert.is(d.ipMasq, false);
  assert.is(d.isGateway, true);
  assert.is(d.hairpinMode, true);
  assert.is(d.isDefaultGateway, true);
  assert.equal(d.ipam.ranges, [[{ subnet: '10.244.1.0/24' }]]);
  assert.equal(d.ipam.routes, [{ dst: '10.244.0.0/16' }]);
  const delegateEnv = readFileSync(join(binDir, 'env.ADD'), 'utf8');
  for (const line of ['CNI_COMMAND=ADD', 'CNI_CONTAINERID=pod-1', 'CNI_NETNS=/var/run/netns/pod-1', 'CNI_IFNAME=eth0', 'CNI_ARGS=K8S_POD_NAME=web']) {
    assert.ok(delegateEnv.includes(line), `${line} missing from the delegate's environment:\n${delegateEnv}`);
  }
});

test('ADD saves exactly what the delegate got, under dataDir/<container ID>, readable by root only', () => {
  assert.is(call('ADD').exitCode, 0);
  assert.equal(JSON.parse(readFileSync(saved(), 'utf8')), delegateStdin('ADD'));
  assert.is(statSync(saved()).mode & 0o777, 0o600);
  assert.is(statSync(dataDir).mode & 0o777, 0o700);
});

test('ADD without a subnet file: "try again later" (code 11) naming the file; nothing saved, no delegate run', () => {
  rmSync(subnetFile);
  const e = cniError(call('ADD'));
  assert.is(e.code, 11);
  assert.ok(e.msg.includes(subnetFile), e.msg);
  assert.not.ok(existsSync(saved()));
  assert.is(delegateRuns('ADD'), 0);
});

for (const key of ['FLANNEL_NETWORK', 'FLANNEL_SUBNET', 'FLANNEL_MTU', 'FLANNEL_IPMASQ']) {
  test(`ADD with a subnet file missing ${key}: code 7 naming it; nothing saved, no delegate run`, () => {
    writeFileSync(subnetFile, SUBNET_ENV.split('\n').filter((l) => !l.startsWith(`${key}=`)).join('\n'));
    const e = cniError(call('ADD'));
    assert.is(e.code, 7);
    assert.match(e.msg, new RegExp(`missing ${key}`));
    assert.ok(e.msg.includes(subnetFile), e.msg);
    assert.not.ok(existsSync(saved()));
    assert.is(delegateRuns('ADD'), 0);
  });
}

test('ADD with a broken value: code 7 with the line and key', () => {
  writeFileSync(subnetFile, SUBNET_ENV.replace('FLANNEL_MTU=1472', 'FLANNEL_MTU=big'));
  const e = cniError(call('ADD'));
  assert.is(e.code, 7);
  assert.match(e.msg, /subnet\.env:3: FLANNEL_MTU/);
  assert.not.ok(existsSync(saved()));
});

test('ADD when the delegate is not in CNI_PATH: code 4 naming CNI_PATH, nothing saved', () => {
  const e = cniError(call('ADD', config(), { CNI_PATH: join(dir, 'nowhere') }));
  assert.is(e.code, 4);
  assert.match(e.msg, /failed to find plugin "bridge" in CNI_PATH/);
  assert.not.ok(existsSync(saved()));
});

test("the delegate's own CNI error is passed through verbatim; the saved file stays for the runtime's DEL", () => {
  const r = call('ADD', config(), { FAKE_BRIDGE: 'fail' });
  assert.is(r.exitCode, 1);
  assert.equal(JSON.parse(r.stdout), { cniVersion: '1.0.0', code: 7, msg: 'fake failure' });
  assert.ok(existsSync(saved()));
});

test('a delegate that dies without a CNI error becomes one (code 100, its stderr in details)', () => {
  const e = cniError(call('ADD', config(), { FAKE_BRIDGE: 'crash' }));
  assert.is(e.code, 100);
  assert.match(e.msg, /exited 2 without a CNI error/);
  assert.match(e.details ?? '', /panic: fake crash/);
});

test('DEL uses the configuration saved at ADD, even after subnet.env changed, then removes it', () => {
  assert.is(call('ADD').exitCode, 0);
  writeFileSync(subnetFile, SUBNET_ENV.replace('10.244.1.1/24', '10.244.7.1/24').replace('1472', '1400'));
  const r = call('DEL');
  assert.is(r.exitCode, 0);
  assert.is(r.stdout, '');
  const d = delegateStdin('DEL');
  assert.equal(d.ipam.ranges, [[{ subnet: '10.244.1.0/24' }]], 'the subnet ADD used, not the new one');
  assert.is(d.mtu, 1472);
  assert.not.ok(existsSync(saved()), 'saved file removed after a successful DEL');
});

test('DEL twice: the second rebuilds from subnet.env (so host-local can still release) and succeeds', () => {
  assert.is(call('ADD').exitCode, 0);
  assert.is(call('DEL').exitCode, 0);
  assert.is(call('DEL').exitCode, 0);
  assert.is(delegateRuns('DEL'), 2);
});

test('DEL with neither a saved configuration nor a subnet file succeeds without running the delegate', () => {
  rmSync(subnetFile);
  const r = call('DEL');
  assert.is(r.exitCode, 0);
  assert.is(r.stdout, '');
  assert.is(delegateRuns('DEL'), 0);
});

test('a failed delegate DEL keeps the saved configuration, so a retry can still use it', () => {
  assert.is(call('ADD').exitCode, 0);
  assert.is(call('DEL', config(), { FAKE_BRIDGE: 'fail' }).exitCode, 1);
  assert.ok(existsSync(saved()));
  assert.is(call('DEL').exitCode, 0);
  assert.not.ok(existsSync(saved()));
});

test('an unreadable saved configuration is ignored, and DEL rebuilds it', () => {
  assert.is(call('ADD').exitCode, 0);
  writeFileSync(saved(), '{half');
  assert.is(call('DEL').exitCode, 0);
  assert.is(delegateStdin('DEL').type, 'bridge');
  assert.not.ok(existsSync(saved()));
});

test('CHECK with a 0.3.x configuration: code 1, as the spec has no CHECK before 0.4.0; no delegate run', () => {
  for (const version of ['0.3.0', '0.3.1']) {
    const e = cniError(call('CHECK', config({ cniVersion: version, prevResult: JSON.parse(RESULT) })));
    assert.is(e.code, 1);
    assert.is(e.msg, 'config version does not allow CHECK');
    assert.is(e.cniVersion, version);
  }
  assert.is(delegateRuns('CHECK'), 0);
});

for (const version of ['0.4.0', '1.0.0']) {
  test(`CHECK (${version}) is delegated with the saved configuration, this request's version and its prevResult`, () => {
    assert.is(call('ADD', config({ cniVersion: version })).exitCode, 0);
    const r = call('CHECK', config({ cniVersion: version, prevResult: JSON.parse(RESULT) }));
    assert.is(r.exitCode, 0, r.stdout);
    assert.is(r.stdout, '');
    const d = delegateStdin('CHECK');
    assert.is(d.cniVersion, version);
    assert.equal(d.ipam, delegateStdin('ADD').ipam);
    assert.equal(d.prevResult.routes, [{ dst: '10.244.0.0/16', gw: '10.244.1.1' }]);
    assert.is(call('CHECK', config({ cniVersion: version, prevResult: JSON.parse(RESULT) }), { FAKE_BRIDGE: 'fail' }).exitCode, 1);
  });
}

test('CHECK without prevResult is an invalid configuration', () => {
  assert.is(call('ADD').exitCode, 0);
  assert.is(cniError(call('CHECK')).code, 7);
});

test.run();
