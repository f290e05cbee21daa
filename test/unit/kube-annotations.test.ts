// flannel's node annotations, read and written: literal values as flanneld
// writes them (from `kubectl describe node` of flannel clusters), so a node
// running flanneld and a node running flannel-udp read each other's leases.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { formatCidr, parseCidr, parseIPv4 } from '../../src/control/ipv4-address.js';
import { formatCidr6, formatIPv6 } from '../../src/control/ipv6-address.js';
import {
  annotatedNodePublicIp,
  annotatedNodePublicIpv6,
  annotationNames,
  annotationPatch,
  type KubeNode,
  nodePodCidr,
  nodePodCidrs,
  nodeToLease,
  ownSubnet,
  ownSubnets,
} from '../../src/control/kube-annotations.js';
import { BACKENDS } from '../../src/control/etcd-subnet-manager.js';
import { parseNetworkConfig } from '../../src/control/network-config.js';

const names = annotationNames('flannel.alpha.coreos.com');
const network = parseCidr('10.244.0.0/16');

/** A node as flanneld (vxlan backend) leaves it; the annotation values are verbatim. */
const FLANNELD_VXLAN_NODE: KubeNode = {
  metadata: {
    name: 'node01',
    resourceVersion: '1234',
    annotations: {
      'flannel.alpha.coreos.com/backend-data': '{"VNI":1,"VtepMAC":"72:10:2d:a2:75:8d"}',
      'flannel.alpha.coreos.com/backend-type': 'vxlan',
      'flannel.alpha.coreos.com/kube-subnet-manager': 'true',
      'flannel.alpha.coreos.com/public-ip': '192.14.218.6',
      'kubeadm.alpha.kubernetes.io/cri-socket': 'unix:///var/run/containerd/containerd.sock',
    },
  },
  spec: { podCIDR: '10.244.1.0/24', podCIDRs: ['10.244.1.0/24'] },
};

test('annotation names: flannel default prefix and flannel prefix rules', () => {
  assert.equal(names, {
    kubeSubnetManager: 'flannel.alpha.coreos.com/kube-subnet-manager',
    backendType: 'flannel.alpha.coreos.com/backend-type',
    backendData: 'flannel.alpha.coreos.com/backend-data',
    publicIp: 'flannel.alpha.coreos.com/public-ip',
    publicIpOverwrite: 'flannel.alpha.coreos.com/public-ip-overwrite',
    nodePublicIp: 'flannel.alpha.coreos.com/node-public-ip',
    backendV6Data: 'flannel.alpha.coreos.com/backend-v6-data',
    publicIpv6: 'flannel.alpha.coreos.com/public-ipv6',
    publicIpv6Overwrite: 'flannel.alpha.coreos.com/public-ipv6-overwrite',
    nodePublicIpv6: 'flannel.alpha.coreos.com/node-public-ipv6',
  });
  assert.is(annotationNames('example.com/flannel').publicIpv6Overwrite, 'example.com/flannel-public-ipv6-overwrite');
  assert.is(annotationNames('example.com/flannel').publicIp, 'example.com/flannel-public-ip');
  assert.is(annotationNames('example.com/').backendType, 'example.com/backend-type');
  assert.throws(() => annotationNames('a/b/c'), /at most one slash/);
  assert.throws(() => annotationNames('NotADomain'), /DNS name/);
  assert.throws(() => annotationNames('example.com/Upper'), /DNS name/);
});

test("a flanneld vxlan node's annotations are a vxlan lease with its VNI and VtepMAC", () => {
  const lease = nodeToLease(FLANNELD_VXLAN_NODE, names)!;
  assert.equal(lease, {
    subnet: parseCidr('10.244.1.0/24'),
    publicIp: parseIPv4('192.14.218.6'),
    backendType: 'vxlan',
    backendData: { VNI: 1, VtepMAC: '72:10:2d:a2:75:8d' },
    key: '10.244.1.0-24',
  });
});

test('a flanneld udp/host-gw node ("null" backend-data) and a node that is not flannel\'s', () => {
  const udp: KubeNode = {
    metadata: {
      name: 'node02',
      annotations: {
        'flannel.alpha.coreos.com/backend-data': 'null',
        'flannel.alpha.coreos.com/backend-type': 'udp',
        'flannel.alpha.coreos.com/kube-subnet-manager': 'true',
        'flannel.alpha.coreos.com/public-ip': '172.17.0.82',
      },
    },
    spec: { podCIDR: '10.244.2.0/24' },
  };
  assert.equal(nodeToLease(udp, names), { subnet: parseCidr('10.244.2.0/24'), publicIp: parseIPv4('172.17.0.82'), backendType: 'udp', backendData: null, key: '10.244.2.0-24' });
  assert.is(nodeToLease({ metadata: { name: 'plain', annotations: {} }, spec: { podCIDR: '10.244.3.0/24' } }, names), undefined);
  const other = annotationNames('example.com');
  assert.is(nodeToLease(FLANNELD_VXLAN_NODE, other), undefined, 'another prefix: not our lease');
});

test('broken flannel annotations are refused with the node named', () => {
  const broken = (patch: Record<string, string>, spec: KubeNode['spec'] = { podCIDR: '10.244.1.0/24' }): KubeNode => ({
    metadata: { name: 'bad', annotations: { ...FLANNELD_VXLAN_NODE.metadata!.annotations!, ...patch } },
    spec,
  });
  assert.throws(() => nodeToLease(broken({ 'flannel.alpha.coreos.com/public-ip': '192.14.218.600' }), names), /node "bad".*PublicIP/);
  assert.throws(() => nodeToLease(broken({ 'flannel.alpha.coreos.com/backend-data': '{"VNI":1,' }), names), /node "bad".*backend-data is not JSON/);
  assert.throws(() => nodeToLease(broken({ 'flannel.alpha.coreos.com/backend-type': '' }), names), /BackendType/);
  assert.throws(() => nodeToLease(broken({}, {}), names), /no IPv4 spec.podCIDR/);
});

test('pod CIDR: podCIDRs first (the IPv4 of a dual-stack pair), else podCIDR; host bits dropped', () => {
  const cidr = (spec: KubeNode['spec']) => {
    const c = nodePodCidr({ metadata: { name: 'n' }, spec });
    return c && formatCidr(c);
  };
  assert.is(cidr({ podCIDR: '10.244.7.0/24' }), '10.244.7.0/24');
  assert.is(cidr({ podCIDR: 'fd00:1::/64', podCIDRs: ['fd00:1::/64', '10.244.8.0/24'] }), '10.244.8.0/24');
  assert.is(cidr({ podCIDR: '10.244.9.5/24' }), '10.244.9.0/24');
  assert.is(cidr({}), undefined);
  assert.is(cidr({ podCIDRs: ['fd00:1::/64'] }), undefined, 'IPv6 only: nothing flannel-udp can carry');
  assert.throws(() => cidr({ podCIDRs: ['10.0.0.0/24', '10.0.1.0/24', 'fd00::/64'] }), /3 entries/);
  assert.throws(() => cidr({ podCIDR: '10.244.300.0/24' }), /node "n": pod CIDR "10.244.300.0\/24"/);
});

test("the node's own subnet, or the error that says what to fix", () => {
  const node = (spec: KubeNode['spec']): KubeNode => ({ metadata: { name: 'worker-3' }, spec });
  const ok = ownSubnet(node({ podCIDR: '10.244.3.0/24' }), network, '/etc/kube-flannel/net-conf.json');
  assert.ok('subnet' in ok && formatCidr(ok.subnet) === '10.244.3.0/24');
  const none = ownSubnet(node({}), network, '/etc/kube-flannel/net-conf.json');
  assert.ok('problem' in none);
  assert.match(none.problem, /node "worker-3" has no spec.podCIDR/);
  assert.match(none.problem, /kube-controller-manager/);
  assert.match(none.problem, /--allocate-node-cidrs=true --cluster-cidr=10\.244\.0\.0\/16/);
  const outside = ownSubnet(node({ podCIDR: '10.96.3.0/24' }), network, '/etc/kube-flannel/net-conf.json');
  assert.ok('problem' in outside);
  assert.match(outside.problem, /10\.96\.3\.0\/24, outside the Network 10\.244\.0\.0\/16 of \/etc\/kube-flannel\/net-conf\.json/);
  assert.match(outside.problem, /--cluster-cidr must equal net-conf.json's Network/);
  const wider = ownSubnet(node({ podCIDR: '10.0.0.0/8' }), network, 'net-conf.json');
  assert.ok('problem' in wider, 'a pod CIDR wider than Network is outside it too');
});

test('the annotations written are exactly what flanneld writes, and only when something differs', () => {
  const config = parseNetworkConfig('{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}');
  const backendData = BACKENDS.vxlan.backendData(config, '72:10:2d:a2:75:8d');
  const fresh: KubeNode = { metadata: { name: 'node01', annotations: {} }, spec: { podCIDR: '10.244.1.0/24' } };
  const patch = annotationPatch(fresh, names, { backendType: 'vxlan', backendData, publicIp: '192.14.218.6' });
  const written: Record<string, string> = {};
  for (const [k, v] of Object.entries(FLANNELD_VXLAN_NODE.metadata!.annotations!)) if (k.startsWith('flannel.')) written[k] = v;
  assert.equal(patch, written, "byte for byte flanneld's annotation values");
  assert.is(annotationPatch(FLANNELD_VXLAN_NODE, names, { backendType: 'vxlan', backendData, publicIp: '192.14.218.6' }), undefined, 'nothing to do');
  // udp: BackendData null is the text "null", as Go marshals a nil json.RawMessage.
  const udp = annotationPatch(fresh, names, { backendType: 'udp', backendData: BACKENDS.udp.backendData(config, undefined), publicIp: '192.0.2.1' });
  assert.is(udp!['flannel.alpha.coreos.com/backend-data'], 'null');
  // A changed public IP only: only that key is patched.
  assert.equal(annotationPatch(FLANNELD_VXLAN_NODE, names, { backendType: 'vxlan', backendData, publicIp: '192.14.218.7' }), {
    'flannel.alpha.coreos.com/public-ip': '192.14.218.7',
  });
});

test('public-ip-overwrite is what public-ip says; node-public-ip is read', () => {
  const node: KubeNode = {
    metadata: {
      name: 'behind-nat',
      annotations: { 'flannel.alpha.coreos.com/public-ip-overwrite': '203.0.113.9', 'flannel.alpha.coreos.com/node-public-ip': '192.0.2.7' },
    },
  };
  const patch = annotationPatch(node, names, { backendType: 'udp', backendData: null, publicIp: '192.0.2.7' })!;
  assert.is(patch['flannel.alpha.coreos.com/public-ip'], '203.0.113.9');
  assert.is(annotatedNodePublicIp(node, names), '192.0.2.7');
  assert.is(annotatedNodePublicIp(FLANNELD_VXLAN_NODE, names), undefined);
});

/** A dual-stack node as flanneld (vxlan backend, EnableIPv6) leaves it: both families' annotations. */
const FLANNELD_DUAL_NODE: KubeNode = {
  metadata: {
    name: 'kind-worker',
    resourceVersion: '977',
    annotations: {
      'flannel.alpha.coreos.com/backend-data': '{"VNI":1,"VtepMAC":"3e:6b:3e:1e:c6:06"}',
      'flannel.alpha.coreos.com/backend-type': 'vxlan',
      'flannel.alpha.coreos.com/backend-v6-data': '{"VNI":1,"VtepMAC":"ae:f9:c1:1c:7b:6e"}',
      'flannel.alpha.coreos.com/kube-subnet-manager': 'true',
      'flannel.alpha.coreos.com/public-ip': '172.18.0.3',
      'flannel.alpha.coreos.com/public-ipv6': 'fc00:f853:ccd:e793::3',
    },
  },
  spec: { podCIDR: '10.244.1.0/24', podCIDRs: ['10.244.1.0/24', 'fd00:10:244:1::/64'] },
};

test('dual-stack podCIDRs: one per family, either order; two of one family refused', () => {
  const both = nodePodCidrs({ metadata: { name: 'n' }, spec: { podCIDRs: ['fd00:10:244:1::5/64', '10.244.1.0/24'] } });
  assert.is(formatCidr(both.ipv4!), '10.244.1.0/24');
  assert.is(formatCidr6(both.ipv6!), 'fd00:10:244:1::/64', 'host bits dropped');
  const only6 = nodePodCidrs({ metadata: { name: 'n' }, spec: { podCIDR: 'fd00:10:244:2::/64' } });
  assert.is(only6.ipv4, undefined);
  assert.is(formatCidr6(only6.ipv6!), 'fd00:10:244:2::/64');
  assert.throws(() => nodePodCidrs({ metadata: { name: 'n' }, spec: { podCIDRs: ['fd00::/64', 'fd01::/64'] } }), /node "n": spec\.podCIDRs .* has two IPv6 CIDRs; one per family/);
  assert.throws(() => nodePodCidrs({ metadata: { name: 'n' }, spec: { podCIDRs: ['fd00::/640'] } }), /node "n": pod CIDR "fd00::\/640"/);
});

test("a flanneld dual-stack node is a lease with both subnets, PublicIPv6 and BackendV6Data; IPv4-only readers see its IPv4 half", () => {
  const lease = nodeToLease(FLANNELD_DUAL_NODE, names, { ipv6: true })!;
  assert.is(lease.key, '10.244.1.0-24&fd00:10:244:1::-64');
  assert.is(formatIPv6(lease.publicIpv6!), 'fc00:f853:ccd:e793::3');
  assert.equal(lease.backendV6Data, { VNI: 1, VtepMAC: 'ae:f9:c1:1c:7b:6e' });
  assert.equal(lease.backendData, { VNI: 1, VtepMAC: '3e:6b:3e:1e:c6:06' });
  const v4 = nodeToLease(FLANNELD_DUAL_NODE, names)!;
  assert.is(v4.key, '10.244.1.0-24');
  assert.is(v4.ipv6Subnet, undefined);
  // Without public-ipv6 (our udp nodes without an IPv6 underlay): PublicIPv6 absent, the lease still dual.
  const a = { ...FLANNELD_DUAL_NODE.metadata!.annotations! };
  delete a['flannel.alpha.coreos.com/public-ipv6'];
  const noV6Ip = nodeToLease({ ...FLANNELD_DUAL_NODE, metadata: { name: 'x', annotations: a } }, names, { ipv6: true })!;
  assert.is(noV6Ip.publicIpv6, undefined);
  assert.ok(noV6Ip.ipv6Subnet);
  // An IPv6-only node: the zero IPv4 half, no public-ip needed.
  const v6only = nodeToLease(
    {
      metadata: { name: 'v6', annotations: { 'flannel.alpha.coreos.com/kube-subnet-manager': 'true', 'flannel.alpha.coreos.com/backend-type': 'udp', 'flannel.alpha.coreos.com/backend-data': 'null', 'flannel.alpha.coreos.com/public-ipv6': '2001:db8::6' } },
      spec: { podCIDRs: ['fd00:10:244:6::/64'] },
    },
    names,
    { ipv6: true },
  )!;
  assert.is(v6only.key, '0.0.0.0-0&fd00:10:244:6::-64');
  assert.is(v6only.ipv6Only, true);
  // Broken IPv6 annotations name the node and the annotation.
  const bad = (k: string, v: string) => () =>
    nodeToLease({ ...FLANNELD_DUAL_NODE, metadata: { name: 'bad', annotations: { ...FLANNELD_DUAL_NODE.metadata!.annotations!, [k]: v } } }, names, { ipv6: true });
  assert.throws(bad('flannel.alpha.coreos.com/public-ipv6', '10.0.0.1'), /node "bad": .*PublicIPv6: .*not a valid IPv6 address/);
  assert.throws(bad('flannel.alpha.coreos.com/backend-v6-data', '{VNI'), /node "bad": flannel\.alpha\.coreos\.com\/backend-v6-data is not JSON/);
});

test("dual-stack own subnets: both inside their networks; a missing IPv6 CIDR is a warning (dual-stack) or the problem (IPv6-only)", () => {
  const dual = parseNetworkConfig('{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00:10:244::/56"}');
  const node = (podCIDRs: string[]): KubeNode => ({ metadata: { name: 'w1' }, spec: { podCIDR: podCIDRs[0], podCIDRs } });
  const ok = ownSubnets(node(['10.244.3.0/24', 'fd00:10:244:3::/64']), dual, 'net-conf.json');
  assert.ok('subnet' in ok);
  assert.is(formatCidr(ok.subnet), '10.244.3.0/24');
  assert.is(formatCidr6(ok.ipv6Subnet!), 'fd00:10:244:3::/64');
  assert.is(ok.warning, undefined);
  const v4only = ownSubnets(node(['10.244.3.0/24']), dual, 'net-conf.json');
  assert.ok('subnet' in v4only && v4only.ipv6Subnet === undefined);
  assert.match((v4only as { warning: string }).warning, /node "w1" has no IPv6 pod CIDR .*--cluster-cidr=10\.244\.0\.0\/16,fd00:10:244::\/56.*its pods get IPv4 only/);
  const outside = ownSubnets(node(['10.244.3.0/24', 'fd00:99::/64']), dual, 'net-conf.json');
  assert.ok('problem' in outside);
  assert.match(outside.problem, /IPv6 pod CIDR fd00:99::\/64, outside the IPv6Network fd00:10:244::\/56 of net-conf\.json/);
  assert.ok('problem' in ownSubnets(node(['10.96.0.0/24', 'fd00:10:244:3::/64']), dual, 'net-conf.json'), 'the IPv4 half still checked');
  const only6 = parseNetworkConfig('{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "fd00:10:244::/56"}');
  const v6 = ownSubnets(node(['fd00:10:244:4::/64']), only6, 'net-conf.json');
  assert.ok('subnet' in v6 && v6.subnet.prefixLength === 0 && formatCidr6(v6.ipv6Subnet!) === 'fd00:10:244:4::/64');
  const missing = ownSubnets(node(['10.244.3.0/24']), only6, 'net-conf.json');
  assert.ok('problem' in missing);
  assert.match(missing.problem, /no IPv6 pod CIDR .* IPv6-only \(EnableIPv4 false\)/);
});

test('the IPv6 annotations written are flanneld\'s; public-ipv6-overwrite wins; node-public-ipv6 is read', () => {
  const config = parseNetworkConfig('{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00:10:244::/56", "Backend": {"Type": "vxlan"}}');
  const lease = {
    backendType: 'vxlan',
    backendData: BACKENDS.vxlan.backendData(config, '3e:6b:3e:1e:c6:06'),
    publicIp: '172.18.0.3',
    publicIpv6: 'fc00:f853:ccd:e793::3',
    backendV6Data: BACKENDS.vxlan.backendV6Data(config, 'ae:f9:c1:1c:7b:6e'),
  };
  const fresh: KubeNode = { metadata: { name: 'kind-worker', annotations: {} } };
  assert.equal(annotationPatch(fresh, names, lease), FLANNELD_DUAL_NODE.metadata!.annotations, "byte for byte flanneld's values");
  assert.is(annotationPatch(FLANNELD_DUAL_NODE, names, lease), undefined, 'nothing to do');
  // udp: no backend-v6-data (flannel's udp has none), public-ipv6 when known.
  const udp = annotationPatch(fresh, names, { backendType: 'udp', backendData: null, publicIp: '192.0.2.1', publicIpv6: '2001:db8::1', backendV6Data: BACKENDS.udp.backendV6Data(config, undefined) })!;
  assert.is(udp['flannel.alpha.coreos.com/public-ipv6'], '2001:db8::1');
  assert.not.ok('flannel.alpha.coreos.com/backend-v6-data' in udp);
  const nat: KubeNode = {
    metadata: { name: 'nat', annotations: { 'flannel.alpha.coreos.com/public-ipv6-overwrite': '2001:db8:ffff::9', 'flannel.alpha.coreos.com/node-public-ipv6': '2001:db8::7' } },
  };
  assert.is(annotationPatch(nat, names, { ...lease, publicIpv6: '2001:db8::7' })!['flannel.alpha.coreos.com/public-ipv6'], '2001:db8:ffff::9');
  assert.is(annotatedNodePublicIpv6(nat, names), '2001:db8::7');
  assert.is(annotatedNodePublicIpv6(FLANNELD_DUAL_NODE, names), undefined);
});

test.run();
