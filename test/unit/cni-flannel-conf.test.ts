// The delegate configuration the flannel plugin builds from its own
// configuration and subnet.env: flannel's rules (flannel_linux.go doCmdAdd,
// getDelegateIPAM), checked key by key. Pure; no root needed.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseSubnetFile } from '../../src/control/subnet-file.js';
import { buildDelegateConf, parseFlannelNetConf } from '../../src/cni/flannel-conf.js';
import { CniError } from '../../src/cni/spec.js';
import { withExplicitGateways } from '../../src/cni/plugin.js';

const SUBNET = parseSubnetFile('FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n');
const NO_MASQ = { ...SUBNET, ipMasq: false };

/** What the runtime sends for kube-flannel's conflist: the flannel entry plus the list's name and version. */
const KUBE_FLANNEL = { cniVersion: '0.3.1', name: 'cbr0', type: 'flannel', delegate: { hairpinMode: true, isDefaultGateway: true } };

function conf(config: Record<string, unknown>, version = String(config.cniVersion)) {
  return parseFlannelNetConf(config, version);
}

test('kube-flannel.yml configuration: bridge cni0 with host-local over FLANNEL_SUBNET', () => {
  const d = buildDelegateConf(conf(KUBE_FLANNEL), SUBNET);
  assert.equal(d, {
    cniVersion: '0.3.1',
    name: 'cbr0',
    type: 'bridge',
    bridge: 'cni0',
    mtu: 1472,
    ipMasq: false,
    isGateway: true,
    hairpinMode: true,
    isDefaultGateway: true,
    ipam: { type: 'host-local', ranges: [[{ subnet: '10.244.1.0/24' }]], routes: [{ dst: '10.244.0.0/16' }] },
  });
});

test("dual-stack subnet.env: host-local gets a range per family and routes to both networks, as flannel's plugin builds them", () => {
  const dual = parseSubnetFile(
    'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:1::1/64\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n',
  );
  const d = buildDelegateConf(conf({ ...KUBE_FLANNEL, ipam: { routes: [{ dst: '192.168.0.0/16' }] } }), dual);
  assert.equal(d.ipam, {
    routes: [{ dst: '192.168.0.0/16' }, { dst: '10.244.0.0/16' }, { dst: 'fd00:10:244::/56' }],
    type: 'host-local',
    ranges: [[{ subnet: '10.244.1.0/24' }], [{ subnet: 'fd00:10:244:1::/64' }]],
  });
  // Broken IPv6 values (the parser keeps them as text): a configuration error naming the key.
  const broken = { ...dual, ipv6: { enabled: true, network: 'fd00:10:244::/56', subnet: 'fd00:10:244:1::1/129' } };
  assert.throws(() => buildDelegateConf(conf(KUBE_FLANNEL), broken), (e: Error) => e instanceof CniError && /FLANNEL_IPV6_SUBNET=fd00:10:244:1::1\/129/.test(e.message));
});

test('IPv6-only subnet.env (no FLANNEL_SUBNET): host-local gets the IPv6 range only, never the zero IPv4 0.0.0.0/0', () => {
  const v6only = parseSubnetFile('FLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:1::1/64\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n');
  assert.is(v6only.ipv6Only, true);
  const d = buildDelegateConf(conf(KUBE_FLANNEL), v6only);
  assert.equal(d.ipam, { type: 'host-local', ranges: [[{ subnet: 'fd00:10:244:1::/64' }]], routes: [{ dst: 'fd00:10:244::/56' }] });
});

test('defaults: subnetFile and dataDir are flannel\'s', () => {
  const c = conf(KUBE_FLANNEL);
  assert.is(c.subnetFile, '/run/flannel/subnet.env');
  assert.is(c.dataDir, '/var/lib/cni/flannel');
  const custom = conf({ ...KUBE_FLANNEL, subnetFile: '/tmp/s.env', dataDir: '/tmp/d' });
  assert.is(custom.subnetFile, '/tmp/s.env');
  assert.is(custom.dataDir, '/tmp/d');
});

test('ipMasq is the opposite of FLANNEL_IPMASQ: whoever masquerades, only one does', () => {
  assert.is(buildDelegateConf(conf(KUBE_FLANNEL), SUBNET).ipMasq, false);
  assert.is(buildDelegateConf(conf(KUBE_FLANNEL), NO_MASQ).ipMasq, true);
});

test("the user's delegate keys win over the defaults, but name, ipam and cniVersion are flannel's", () => {
  const d = buildDelegateConf(
    conf({ ...KUBE_FLANNEL, delegate: { mtu: 1400, ipMasq: false, isGateway: false, bridge: 'br-pods', cniVersion: '9.9.9', hairpinMode: false } }),
    NO_MASQ,
  );
  assert.is(d.mtu, 1400);
  assert.is(d.ipMasq, false);
  assert.is(d.isGateway, false);
  assert.is(d.bridge, 'br-pods');
  assert.is(d.hairpinMode, false);
  assert.is(d.cniVersion, '0.3.1');
  assert.is(d.name, 'cbr0');
});

test('another delegate type gets neither bridge nor isGateway', () => {
  const d = buildDelegateConf(conf({ ...KUBE_FLANNEL, delegate: { type: 'ipvlan', master: 'eth0' } }), SUBNET);
  assert.is(d.type, 'ipvlan');
  assert.is(d.master, 'eth0');
  assert.not.ok('bridge' in d);
  assert.not.ok('isGateway' in d);
  assert.is(d.mtu, 1472);
});

test("the flannel entry's ipam block is the base: its routes come first, ranges are always FLANNEL_SUBNET", () => {
  const d = buildDelegateConf(
    conf({ ...KUBE_FLANNEL, ipam: { dataDir: '/tmp/ipam', ranges: [[{ subnet: '192.168.0.0/24' }]], routes: [{ dst: '192.168.9.0/24', gw: '10.244.1.1' }] } }),
    SUBNET,
  );
  assert.equal(d.ipam, {
    dataDir: '/tmp/ipam',
    ranges: [[{ subnet: '10.244.1.0/24' }]],
    routes: [{ dst: '192.168.9.0/24', gw: '10.244.1.1' }, { dst: '10.244.0.0/16' }],
    type: 'host-local',
  });
});

test('runtimeConfig reaches the delegate (flannel copies it)', () => {
  const d = buildDelegateConf(conf({ ...KUBE_FLANNEL, runtimeConfig: { bandwidth: { ingressRate: 1 } } }), SUBNET);
  assert.equal(d.runtimeConfig, { bandwidth: { ingressRate: 1 } });
});

test('the input is not modified', () => {
  const input = structuredClone(KUBE_FLANNEL);
  buildDelegateConf(conf(input), SUBNET);
  assert.equal(input, KUBE_FLANNEL);
});

for (const [label, config, message] of [
  ['delegate.name', { ...KUBE_FLANNEL, delegate: { name: 'x' } }, /must not have 'name'/],
  ['delegate.ipam', { ...KUBE_FLANNEL, delegate: { ipam: {} } }, /must not have 'ipam'/],
  ['a non-string delegate.type', { ...KUBE_FLANNEL, delegate: { type: 3 } }, /\(string\) 'type'/],
  ['no name', { ...KUBE_FLANNEL, name: undefined }, /no "name"/],
  ['a delegate that is not an object', { ...KUBE_FLANNEL, delegate: [] }, /"delegate" must be an object/],
] as const) {
  test(`${label} is refused as an invalid configuration (code 7)`, () => {
    try {
      conf(config as Record<string, unknown>, '0.3.1');
      assert.unreachable('accepted');
    } catch (err) {
      assert.instance(err, CniError);
      assert.is((err as CniError).code, 7);
      assert.match((err as Error).message, message);
    }
  });
}

test('ipam.routes that are not a list of {dst} are refused', () => {
  try {
    buildDelegateConf(conf({ ...KUBE_FLANNEL, ipam: { routes: 'everything' } }), SUBNET);
    assert.unreachable('accepted');
  } catch (err) {
    assert.is((err as CniError).code, 7);
    assert.match((err as Error).message, /ipam\.routes/);
  }
});

test('CHECK: gateway-less IPv4 routes get the address\'s gateway (what ADD installed); others are left alone', () => {
  const result = {
    cniVersion: '1.0.0',
    ips: [{ address: '10.244.1.2/24', gateway: '10.244.1.1', interface: 2 }],
    routes: [{ dst: '10.244.0.0/16' }, { dst: '0.0.0.0/0', gw: '10.244.1.1' }, { dst: '192.168.0.0/16', gw: '10.244.1.9' }],
  };
  assert.equal(withExplicitGateways(result).routes, [
    { dst: '10.244.0.0/16', gw: '10.244.1.1' },
    { dst: '0.0.0.0/0', gw: '10.244.1.1' },
    { dst: '192.168.0.0/16', gw: '10.244.1.9' },
  ]);
  // Ambiguous (two gateways) or no gateway at all: unchanged.
  const two = { ...result, ips: [...result.ips, { address: '10.245.0.2/24', gateway: '10.245.0.1' }] };
  assert.equal(withExplicitGateways(two), two);
  const none = { ...result, ips: [{ address: '10.244.1.2/24' }] };
  assert.equal(withExplicitGateways(none), none);
});

test.run();
