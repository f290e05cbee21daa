// flanneld's way with flags (issue 22): Go's -name and --name=true|false, a
// repeatable --iface, every flag also from FLANNELD_<FLAG> (the command line
// wins, empty means unset), flanneld flags we do not take refused with what
// to use instead, and flanneld's order for choosing the interface.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { NetworkInterfaceInfo } from 'node:os';
import { CommandLineError, envName, parseFlags, parseGoBool } from '../../src/cli-flags.js';
import { FLANNELD_UNSUPPORTED, UP_FLAGS } from '../../src/up-flags.js';
import { chooseInterface } from '../../src/control/default-interface.js';
import { parseKubeFlags, KubeFlagError } from '../../src/control/kube-options.js';
import { forwardRules, forwardRuleSet, FORWARD_CHAIN } from '../../src/control/forward-rules.js';
import { chainRestoreInput } from '../../src/control/ip-masq.js';
import { makeCidr, parseIPv4 } from '../../src/control/ipv4-address.js';

const up = (argv: string[], env: NodeJS.ProcessEnv = {}) => parseFlags('up', argv, UP_FLAGS, { envPrefix: 'FLANNELD', env, unsupported: FLANNELD_UNSUPPORTED });

test("Go's booleans: --flag, --flag=true, --flag=false, -flag, and a clear error for anything else", () => {
  assert.is(up(['--ip-masq'])['ip-masq'], true);
  assert.is(up(['--ip-masq=true'])['ip-masq'], true);
  assert.is(up(['--ip-masq=false'])['ip-masq'], false);
  assert.is(up(['-ip-masq'])['ip-masq'], true);
  assert.is(up(['--iptables-forward-rules=false'])['iptables-forward-rules'], false);
  assert.is(up(['--iptables-forward-rules=1'])['iptables-forward-rules'], true);
  assert.is(up([])['iptables-forward-rules'], undefined, 'absent: the CLI applies the default (true)');
  assert.throws(() => up(['--ip-masq=yes']), (e: Error) => e instanceof CommandLineError && /--ip-masq: "yes" is not true or false/.test(e.message));
  for (const t of ['1', 't', 'T', 'TRUE', 'true', 'True']) assert.is(parseGoBool(t), true);
  for (const f of ['0', 'f', 'F', 'FALSE', 'false', 'False']) assert.is(parseGoBool(f), false);
  assert.is(parseGoBool('on'), undefined);
});

test('single-dash long flags with values, as Go takes them: -iface=eth0, -etcd-prefix /x', () => {
  const v = up(['-iface=eth0', '-etcd-prefix', '/x']);
  assert.equal(v.iface, ['eth0']);
  assert.is(v['etcd-prefix'], '/x');
  assert.is(up(['-h']).help, true, 'short flags keep working');
});

test('--iface and --iface-regex repeat, in order; --iface-can-reach takes one IP', () => {
  const v = up(['--iface', 'eth1', '--iface=10.0.0.5', '--iface-regex', '^en', '--iface-regex=^wl', '--iface-can-reach', '192.0.2.9']);
  assert.equal(v.iface, ['eth1', '10.0.0.5']);
  assert.equal(v['iface-regex'], ['^en', '^wl']);
  assert.is(v['iface-can-reach'], '192.0.2.9');
});

test('every flag from FLANNELD_<FLAG>: upper case, dashes as underscores; the command line wins; empty is unset', () => {
  assert.is(envName('FLANNELD', 'iface-can-reach'), 'FLANNELD_IFACE_CAN_REACH');
  const env = {
    FLANNELD_PUBLIC_IP: '192.0.2.7',
    FLANNELD_IFACE: 'eth3',
    FLANNELD_IP_MASQ: 'true',
    FLANNELD_IPTABLES_FORWARD_RULES: 'false',
    FLANNELD_KUBE_SUBNET_MGR: '1',
    FLANNELD_HEALTHZ_PORT: '8081',
    FLANNELD_SUBNET_FILE: '',
    FLANNELD_ETCD_PREFIX: '/from-env',
  };
  const v = up(['--etcd-prefix', '/from-flag'], env);
  assert.is(v['public-ip'], '192.0.2.7');
  assert.equal(v.iface, ['eth3'], 'one value, as flanneld appends the variable once');
  assert.is(v['ip-masq'], true);
  assert.is(v['iptables-forward-rules'], false);
  assert.is(v['kube-subnet-mgr'], true, 'a kube flag too');
  assert.is(v['healthz-port'], '8081', 'an observability flag too');
  assert.is(v['subnet-file'], undefined, 'an empty variable is unset');
  assert.is(v['etcd-prefix'], '/from-flag', 'the flag wins over the variable');
  assert.is(up(['--ip-masq=false'], { FLANNELD_IP_MASQ: 'true' })['ip-masq'], false, 'an explicit false on the command line wins too');
  assert.is(up([], { FLANNELD_HELP: 'true' }).help, undefined, '--help is never read from the environment');
  assert.throws(() => up([], { FLANNELD_IP_MASQ: 'yes' }), /FLANNELD_IP_MASQ: "yes" is not true or false/);
});

test("flanneld's flags that up does not take are refused with what to use instead, on the command line and from the environment", () => {
  const refused = (argv: string[], env: NodeJS.ProcessEnv, pattern: RegExp) =>
    assert.throws(() => up(argv, env), (e: Error) => e instanceof CommandLineError && pattern.test(e.message), `${argv.join(' ')} ${JSON.stringify(env)}`);
  refused(['-v=2'], {}, /flanneld's --v is not supported: .*flannel-udp stats/);
  refused(['--v', '2'], {}, /--v is not supported/);
  refused(['--version'], {}, /run `flannel-udp --version`/);
  refused(['--kube-config-file=/k'], {}, /the flag is --kubeconfig-file/);
  assert.is(up(['--public-ipv6', '2001:db8::1'])['public-ipv6'], '2001:db8::1');
  assert.is(up([], { FLANNELD_PUBLIC_IPV6: '2001:db8::1' })['public-ipv6'], '2001:db8::1');
  // Every hint says what to do, and none shadows a flag we take.
  const ours = new Set(UP_FLAGS.flatMap((g) => g.flags.map((f) => f.name)));
  for (const [name, hint] of Object.entries(FLANNELD_UNSUPPORTED)) {
    assert.not.ok(ours.has(name), `${name} is both taken and refused`);
    assert.ok(hint.length > 10, name);
  }
});

test("every flag of flanneld's main.go is either taken by up or refused with a hint", () => {
  const flanneld = [
    'etcd-endpoints', 'etcd-prefix', 'etcd-keyfile', 'etcd-certfile', 'etcd-cafile', 'etcd-username', 'etcd-password',
    'iface', 'iface-regex', 'iface-can-reach', 'subnet-file', 'public-ip', 'public-ipv6', 'subnet-lease-renew-margin',
    'ip-masq', 'kube-subnet-mgr', 'kube-api-url', 'kube-annotation-prefix', 'kubeconfig-file', 'version', 'healthz-ip',
    'healthz-port', 'iptables-resync', 'iptables-forward-rules', 'net-config-path', 'set-node-network-unavailable',
    'v', 'vmodule', 'log_backtrace_at',
  ];
  const ours = new Set(UP_FLAGS.flatMap((g) => g.flags.map((f) => f.name)));
  for (const f of flanneld) assert.ok(ours.has(f) || FLANNELD_UNSUPPORTED[f] !== undefined, `flanneld's --${f} is neither taken nor refused with a hint`);
});

test('--set-node-network-unavailable: true by default, =false turns it off, and it needs --kube-subnet-mgr', () => {
  assert.is(parseKubeFlags({ 'kube-subnet-mgr': true })!.setNodeNetworkUnavailable, true);
  assert.is(parseKubeFlags({ 'kube-subnet-mgr': true, 'set-node-network-unavailable': false })!.setNodeNetworkUnavailable, false);
  const v = up(['--kube-subnet-mgr', '--set-node-network-unavailable=false']);
  assert.is(parseKubeFlags(v as never)!.setNodeNetworkUnavailable, false);
  assert.throws(() => parseKubeFlags({ 'set-node-network-unavailable': false }), (e: Error) => e instanceof KubeFlagError && /needs --kube-subnet-mgr/.test(e.message));
});

const v4 = (address: string): NetworkInterfaceInfo => ({ address, netmask: '255.255.255.0', family: 'IPv4', mac: '00:00:00:00:00:00', internal: false, cidr: `${address}/24` });
const v6 = (address: string): NetworkInterfaceInfo => ({ address, netmask: 'ffff:ffff:ffff:ffff::', family: 'IPv6', mac: '00:00:00:00:00:00', internal: false, cidr: `${address}/64`, scopeid: 0 });
const HOST = { lo: [v4('127.0.0.1')], eth0: [v4('192.0.2.10')], eth1: [v6('2001:db8::5'), v4('198.51.100.20'), v4('198.51.100.21')], ens5: [v4('203.0.113.30')], v6only: [v6('2001:db8::9')] };
const noRoute = async (): Promise<never> => {
  throw new Error('no route');
};

test("the interface, as flanneld picks it: every --iface in order (name or address), then every --iface-regex, then --iface-can-reach", async () => {
  assert.equal(await chooseInterface({ ifaces: ['eth1'], regexes: [] }, HOST, noRoute), { iface: 'eth1', address: '198.51.100.20', by: '--iface eth1' }, "a name: its first IPv4 address");
  assert.equal(await chooseInterface({ ifaces: ['198.51.100.21'], regexes: [] }, HOST, noRoute), { iface: 'eth1', address: '198.51.100.21', by: '--iface 198.51.100.21' }, 'an address: the interface holding it, and that address');
  assert.equal((await chooseInterface({ ifaces: ['wlan9', 'v6only', 'ens5', 'eth0'], regexes: ['^eth'] }, HOST, noRoute)).iface, 'ens5', 'the first --iface that exists with IPv4 wins, before any regex');
  assert.equal(await chooseInterface({ ifaces: ['wlan9'], regexes: ['^203\\.0\\.113\\.', '^eth'] }, HOST, noRoute), { iface: 'ens5', address: '203.0.113.30', by: '--iface-regex ^203\\.0\\.113\\.' }, 'a regex against the addresses');
  assert.equal((await chooseInterface({ ifaces: [], regexes: ['^ens'] }, HOST, noRoute)).address, '203.0.113.30', 'a regex against the names');
  const route = async (ip: string) => (ip === '198.51.100.99' ? { dev: 'eth1', prefsrc: '198.51.100.21' } : {});
  assert.equal(await chooseInterface({ ifaces: ['nope'], regexes: ['^nomatch$'], canReach: '198.51.100.99' }, HOST, route), { iface: 'eth1', address: '198.51.100.21', by: '--iface-can-reach 198.51.100.99' });
  await chooseInterface({ ifaces: ['wlan9', '10.9.9.9', 'v6only'], regexes: ['^nomatch$'], canReach: '10.1.1.1' }, HOST, noRoute).then(
    () => assert.unreachable('nothing matches'),
    (err: Error) => {
      assert.match(err.message, /--iface wlan9: no such interface/);
      assert.match(err.message, /--iface 10\.9\.9\.9: no interface has this address/);
      assert.match(err.message, /--iface v6only: no IPv4 address/);
      assert.match(err.message, /--iface-regex \^nomatch\$: no interface address or name matches/);
      assert.match(err.message, /--iface-can-reach 10\.1\.1\.1: no route/);
    },
  );
  await chooseInterface({ ifaces: [], regexes: ['(['] }, HOST, noRoute).then(
    () => assert.unreachable(),
    (err: Error) => assert.match(err.message, /--iface-regex \(\[: Invalid regular expression/),
  );
});

test("flanneld's forward rules: FLANNEL-FWD accepts the cluster network both ways, jumped to from FORWARD, with flannel's comment", () => {
  const network = makeCidr(parseIPv4('10.244.0.0'), 16);
  assert.equal(
    forwardRules(network).map((r) => `-t ${r.table} -A ${r.chain} ${r.spec.join(' ')}`),
    [
      '-t filter -A FORWARD -m comment --comment flanneld forward -j FLANNEL-FWD',
      '-t filter -A FLANNEL-FWD -s 10.244.0.0/16 -m comment --comment flanneld forward -j ACCEPT',
      '-t filter -A FLANNEL-FWD -d 10.244.0.0/16 -m comment --comment flanneld forward -j ACCEPT',
    ],
  );
  const set = forwardRuleSet(network);
  assert.is(set.chain, FORWARD_CHAIN);
  assert.is(
    chainRestoreInput(set.rules, set.chain, set.table),
    '*filter\n:FLANNEL-FWD - [0:0]\n-A FLANNEL-FWD -s 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT\n-A FLANNEL-FWD -d 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT\nCOMMIT\n',
  );
});

test.run();
