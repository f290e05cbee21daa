// The runtime side (src/cni/chain.ts) that the testbed creates pods with: what
// each plugin of a conflist gets on stdin, in which order, and how failures
// come back. Fake plugins (shell scripts) record their input; no root needed.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  addNetworkList,
  checkNetworkList,
  delNetworkList,
  localRunner,
  parseConfList,
  pluginConfig,
  PluginError,
  pluginVersions,
  sandboxAddress,
  type ConfList,
} from '../../src/cni/chain.js';
import { flannelConfList } from '../../src/cni/install.js';

const KUBE_FLANNEL = flannelConfList() as unknown as ConfList;
const ATT = { containerId: 'c1', netns: '/var/run/netns/c1', ifName: 'eth0' };
const RESULT = {
  cniVersion: '0.3.1',
  interfaces: [{ name: 'cni0', mac: 'aa' }, { name: 'veth1', mac: 'bb' }, { name: 'eth0', mac: 'cc', sandbox: '/var/run/netns/c1' }],
  ips: [{ version: '4', address: '10.244.1.2/24', gateway: '10.244.1.1', interface: 2 }],
};

let dir: string;
test.before.each(() => {
  dir = mkdtempSync(join(tmpdir(), 'cni-chain-test-'));
});
test.after.each(() => rmSync(dir, { recursive: true, force: true }));

/** A plugin that logs "<name> <command>" and its stdin, then prints `answer` (or fails when FAIL_<name> is set). */
function fakePlugin(name: string, answer: string): void {
  const path = join(dir, name);
  writeFileSync(
    path,
    `#!/bin/sh
cat > "${dir}/stdin.${name}.$CNI_COMMAND"
echo "${name} $CNI_COMMAND $CNI_CONTAINERID \${CNI_NETNS:-nonetns}" >> "${dir}/calls"
if [ -n "$FAIL_${name}" ]; then echo '{"code":11,"msg":"busy","details":"try later"}'; exit 1; fi
if [ "$CNI_COMMAND" = ADD ] || [ "$CNI_COMMAND" = VERSION ]; then echo '${answer}'; fi
`,
  );
  chmodSync(path, 0o755);
}
const calls = () => readFileSync(join(dir, 'calls'), 'utf8').trim().split('\n');
const stdinOf = (name: string, command: string) => JSON.parse(readFileSync(join(dir, `stdin.${name}.${command}`), 'utf8'));

test('each plugin gets the list name and version; runtimeConfig only for declared capabilities', () => {
  const mappings = [{ hostPort: 8080, containerPort: 80, protocol: 'tcp' as const }];
  const att = { ...ATT, capabilityArgs: { portMappings: mappings, bandwidth: { rate: 1 } } };
  const flannel = pluginConfig(KUBE_FLANNEL, KUBE_FLANNEL.plugins[0]!, att);
  assert.equal(flannel, { type: 'flannel', delegate: { hairpinMode: true, isDefaultGateway: true }, name: 'cbr0', cniVersion: '0.3.1' });
  const portmap = pluginConfig(KUBE_FLANNEL, KUBE_FLANNEL.plugins[1]!, att, RESULT);
  assert.equal(portmap.runtimeConfig, { portMappings: mappings });
  assert.equal(portmap.prevResult, RESULT);
  assert.is(portmap.name, 'cbr0');
});

test('ADD runs the plugins in order, each with the previous result; DEL in reverse with the cached result', async () => {
  fakePlugin('flannel', JSON.stringify(RESULT));
  fakePlugin('portmap', JSON.stringify({ ...RESULT, fromPortmap: true }));
  const runner = localRunner([join(dir, 'missing'), dir]);
  const result = await addNetworkList(runner, KUBE_FLANNEL, ATT);
  assert.is(result.fromPortmap, true, "the list's result is the last plugin's");
  assert.not.ok('prevResult' in stdinOf('flannel', 'ADD'));
  assert.equal(stdinOf('portmap', 'ADD').prevResult, RESULT);
  await delNetworkList(runner, KUBE_FLANNEL, { ...ATT, netns: '' }, result);
  assert.equal(calls(), ['flannel ADD c1 /var/run/netns/c1', 'portmap ADD c1 /var/run/netns/c1', 'portmap DEL c1 nonetns', 'flannel DEL c1 nonetns']);
  assert.equal(stdinOf('flannel', 'DEL').prevResult, result);
});

test('a failing plugin stops the list; the error carries its code and message', async () => {
  fakePlugin('flannel', JSON.stringify(RESULT));
  fakePlugin('portmap', '{}');
  process.env.FAIL_flannel = '1';
  try {
    await addNetworkList(localRunner([dir]), KUBE_FLANNEL, ATT);
    assert.unreachable('ADD succeeded');
  } catch (err) {
    assert.instance(err, PluginError);
    const e = err as PluginError;
    assert.is(e.plugin, 'flannel');
    assert.is(e.code, 11);
    assert.match(e.message, /CNI ADD by plugin "flannel" failed \(code 11\): busy; try later/);
  } finally {
    delete process.env.FAIL_flannel;
  }
  assert.equal(calls(), ['flannel ADD c1 /var/run/netns/c1']);
});

test('CHECK: refused for a 0.3.1 list as libcni does, skipped with disableCheck, otherwise every plugin with the cached result', async () => {
  fakePlugin('flannel', '{}');
  fakePlugin('portmap', '{}');
  const runner = localRunner([dir]);
  await checkNetworkList(runner, KUBE_FLANNEL, ATT, RESULT).then(
    () => assert.unreachable('CHECK ran for 0.3.1'),
    (err: Error) => assert.match(err.message, /0\.3\.1 does not support the CHECK command/),
  );
  await checkNetworkList(runner, { ...KUBE_FLANNEL, cniVersion: '1.0.0', disableCheck: true }, ATT, RESULT);
  await checkNetworkList(runner, { ...KUBE_FLANNEL, cniVersion: '1.0.0' }, ATT, RESULT);
  assert.equal(calls(), ['flannel CHECK c1 /var/run/netns/c1', 'portmap CHECK c1 /var/run/netns/c1']);
  assert.equal(stdinOf('portmap', 'CHECK').prevResult, RESULT);
  assert.is(stdinOf('portmap', 'CHECK').cniVersion, '1.0.0');
});

test('VERSION of a plugin, and a plugin missing from CNI_PATH', async () => {
  fakePlugin('flannel', '{"cniVersion":"1.0.0","supportedVersions":["0.3.1","1.0.0"]}');
  assert.equal((await pluginVersions(localRunner([dir]), 'flannel')).supportedVersions, ['0.3.1', '1.0.0']);
  await pluginVersions(localRunner([dir]), 'bridge').then(
    () => assert.unreachable('found'),
    (err: Error) => assert.match(err.message, /failed to find plugin "bridge"/),
  );
});

test('sandboxAddress reads the container interface\'s address from 0.3.1 and 1.0.0 results', () => {
  assert.equal(sandboxAddress(RESULT, 'eth0'), { ip: '10.244.1.2', prefixLength: 24, gateway: '10.244.1.1', mac: 'cc' });
  const v1 = { ...RESULT, cniVersion: '1.0.0', ips: [{ address: '10.244.1.3/24', gateway: '10.244.1.1', interface: 2 }] };
  assert.is(sandboxAddress(v1, 'eth0').ip, '10.244.1.3');
  assert.throws(() => sandboxAddress({ cniVersion: '1.0.0', ips: [] }, 'eth0'), /no IPv4 address/);
});

test('parseConfList refuses what a runtime would refuse', () => {
  assert.throws(() => parseConfList('{"name":"x","plugins":[{"type":"a"}]}'), /cniVersion/);
  assert.throws(() => parseConfList('{"name":"x","cniVersion":"0.3.1","plugins":[]}'), /plugins/);
  assert.throws(() => parseConfList('{"name":"x","cniVersion":"0.3.1","plugins":[{}]}'), /plugins\[0\]/);
  assert.is(parseConfList(JSON.stringify(KUBE_FLANNEL)).plugins.length, 2);
});

test.run();
