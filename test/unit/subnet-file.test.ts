import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtemp, readdir, readFile, rm, stat, writeFile, chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatCidr, parseIPv4 } from '../../src/control/ipv4-address.js';
import { formatCidr6 } from '../../src/control/ipv6-address.js';
import {
  formatSubnetFile,
  ipv6PodNetwork,
  parseSubnetFile,
  readSubnetFile,
  SubnetFileError,
  writeSubnetFileAtomic,
} from '../../src/control/subnet-file.js';

// What flanneld writes on a node holding 10.244.1.0/24 (pkg/subnet WriteSubnetFile).
const FLANNELD_TEXT = 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n';
const PATH = '/run/flannel/subnet.env';

function expectError(text: string, key: string, line: number, message: RegExp): SubnetFileError {
  try {
    parseSubnetFile(text, PATH);
  } catch (err) {
    assert.instance(err, SubnetFileError);
    const e = err as SubnetFileError;
    assert.is(e.key, key, e.message);
    assert.is(e.line, line, e.message);
    assert.is(e.path, PATH);
    assert.match(e.message, message);
    assert.ok(e.message.startsWith(line > 0 ? `${PATH}:${line}: ` : `${PATH}: `), e.message);
    return e;
  }
  assert.unreachable(`no error for ${JSON.stringify(text)}`);
  throw new Error('unreachable');
}

test('parses the file flanneld writes', () => {
  const cfg = parseSubnetFile(FLANNELD_TEXT, PATH);
  assert.is(formatCidr(cfg.network), '10.244.0.0/16');
  assert.is(formatCidr(cfg.subnet, true), '10.244.1.1/24');
  assert.is(cfg.subnet.ip, parseIPv4('10.244.1.1'));
  assert.is(cfg.subnet.network, parseIPv4('10.244.1.0'));
  assert.is(cfg.subnet.prefixLength, 24);
  assert.is(cfg.mtu, 1472);
  assert.is(cfg.ipMasq, true);
  assert.equal(cfg.ipv6, { enabled: false });
  assert.equal(cfg.unsupported, []);
});

test('accepts comments, blank lines and CRLF line ends', () => {
  const text = '# written by hand\r\n\r\nFLANNEL_NETWORK=10.244.0.0/16\r\nFLANNEL_SUBNET=10.244.1.1/24\r\n  # indented comment\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false';
  const cfg = parseSubnetFile(text, PATH);
  assert.is(cfg.mtu, 1450);
  assert.is(cfg.ipMasq, false);
});

test('formats exactly the text flanneld writes', () => {
  assert.is(formatSubnetFile(parseSubnetFile(FLANNELD_TEXT)), FLANNELD_TEXT);
});

test('format → parse round trip', () => {
  const cfg = parseSubnetFile(FLANNELD_TEXT);
  const again = parseSubnetFile(formatSubnetFile(cfg));
  assert.equal(again, cfg);
});

// flannel's own dual-stack file (WriteSubnetFile: IPv4 pair, IPv6 pair, MTU, masquerade).
const DUAL_STACK_TEXT =
  'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_IPV6_NETWORK=fc00::/48\nFLANNEL_IPV6_SUBNET=fc00:0:0:1::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n';
const IPV6_ONLY_TEXT = 'FLANNEL_IPV6_NETWORK=fc00::/48\nFLANNEL_IPV6_SUBNET=fc00:0:0:1::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n';

test('IPv6 keys are read as the node\'s IPv6 network and subnet, and written back in flanneld order', () => {
  const cfg = parseSubnetFile(DUAL_STACK_TEXT, PATH);
  assert.equal(cfg.ipv6, { enabled: true, network: 'fc00::/48', subnet: 'fc00:0:0:1::1/64' });
  assert.is(formatCidr6(cfg.ipv6Network!), 'fc00::/48');
  assert.is(formatCidr6(cfg.ipv6Subnet!, true), 'fc00:0:0:1::1/64');
  assert.is(formatCidr6(cfg.ipv6Subnet!), 'fc00:0:0:1::/64');
  assert.equal(cfg.unsupported, []);
  assert.is(cfg.ipv6Only, undefined);
  assert.is(formatCidr(cfg.subnet, true), '10.244.1.1/24');
  assert.is(formatSubnetFile(cfg), DUAL_STACK_TEXT);
  assert.equal(parseSubnetFile(formatSubnetFile(cfg)), cfg);
  const both = ipv6PodNetwork(cfg)!;
  assert.is(formatCidr6(both.network), 'fc00::/48');
  // A config with the text only (as a lease source may build it) gives the same.
  const fromText = ipv6PodNetwork({ ...cfg, ipv6Network: undefined, ipv6Subnet: undefined })!;
  assert.is(formatCidr6(fromText.subnet, true), 'fc00:0:0:1::1/64');
  assert.is(ipv6PodNetwork(parseSubnetFile(FLANNELD_TEXT)), undefined);
});

test('an IPv6-only file (no IPv4 pair) is accepted; its IPv4 pair is the zero 0.0.0.0/0 and is not written', () => {
  const cfg = parseSubnetFile(IPV6_ONLY_TEXT, PATH);
  assert.is(cfg.ipv6Only, true);
  assert.is(formatCidr(cfg.network), '0.0.0.0/0');
  assert.is(formatCidr(cfg.subnet), '0.0.0.0/0');
  assert.is(formatCidr6(cfg.ipv6Subnet!), 'fc00:0:0:1::/64');
  assert.is(formatSubnetFile(cfg), IPV6_ONLY_TEXT);
  assert.equal(parseSubnetFile(formatSubnetFile(cfg)), cfg);
});

test('IPv6 keys: a pair, valid CIDRs, the subnet inside the network', () => {
  expectError(DUAL_STACK_TEXT.replace('FLANNEL_IPV6_SUBNET=fc00:0:0:1::1/64\n', ''), 'FLANNEL_IPV6_SUBNET', 0, /missing FLANNEL_IPV6_SUBNET \(the IPv6 keys come as a pair\)/);
  expectError(DUAL_STACK_TEXT.replace('FLANNEL_IPV6_NETWORK=fc00::/48\n', ''), 'FLANNEL_IPV6_NETWORK', 0, /missing FLANNEL_IPV6_NETWORK/);
  expectError(DUAL_STACK_TEXT.replace('fc00::/48', 'fc00::/129'), 'FLANNEL_IPV6_NETWORK', 3, /is not a valid IPv6 CIDR/);
  expectError(DUAL_STACK_TEXT.replace('fc00::/48', '10.0.0.0/8'), 'FLANNEL_IPV6_NETWORK', 3, /is not a valid IPv6 CIDR/);
  expectError(DUAL_STACK_TEXT.replace('fc00::/48', 'fc00::/48,fd00::/48'), 'FLANNEL_IPV6_NETWORK', 3, /several networks/);
  expectError(DUAL_STACK_TEXT.replace('fc00:0:0:1::1/64', 'fd00:0:0:1::1/64'), 'FLANNEL_IPV6_SUBNET', 4, /fd00:0:0:1::1\/64 is not inside FLANNEL_IPV6_NETWORK fc00::\/48 \(line 3\)/);
  // Only one IPv4 key: half a pair, not an IPv6-only file.
  expectError(IPV6_ONLY_TEXT + 'FLANNEL_NETWORK=10.244.0.0/16\n', 'FLANNEL_SUBNET', 0, /missing FLANNEL_SUBNET/);
});

test('unknown keys are reported as unsupported', () => {
  const cfg = parseSubnetFile(FLANNELD_TEXT + 'FLANNEL_FOO=1\nOTHER=x\n', PATH);
  assert.equal(cfg.unsupported, [
    'FLANNEL_FOO=1 (line 5): unknown flannel key; ignored',
    'OTHER=x (line 6): not a flannel key; ignored',
  ]);
});

test('a missing required key is named', () => {
  expectError('FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_IPMASQ=true\n', 'FLANNEL_MTU', 0, /missing FLANNEL_MTU$/);
  expectError('FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\n', 'FLANNEL_MTU', 0, /missing FLANNEL_MTU, FLANNEL_IPMASQ/);
  expectError('', 'FLANNEL_NETWORK', 0, /missing FLANNEL_NETWORK, FLANNEL_SUBNET, FLANNEL_MTU, FLANNEL_IPMASQ/);
  expectError(IPV6_ONLY_TEXT.replace('FLANNEL_MTU=1450\n', ''), 'FLANNEL_MTU', 0, /missing FLANNEL_MTU$/);
});

test('a bad CIDR names the key and line', () => {
  const e = expectError(FLANNELD_TEXT.replace('10.244.1.1/24', '10.244.1.300/24'), 'FLANNEL_SUBNET', 2, /is not a valid IPv4 CIDR/);
  assert.is(e.message, '/run/flannel/subnet.env:2: FLANNEL_SUBNET: "10.244.1.300/24" is not a valid IPv4 CIDR');
  expectError(FLANNELD_TEXT.replace('10.244.0.0/16', '10.244.0.0'), 'FLANNEL_NETWORK', 1, /is not a valid IPv4 CIDR/);
  expectError(FLANNELD_TEXT.replace('10.244.0.0/16', '10.244.0.0/16,10.245.0.0/16'), 'FLANNEL_NETWORK', 1, /several networks/);
});

test('a bad MTU names the key and line', () => {
  for (const mtu of ['abc', '1450.5', '-1', '67', '65536', '', '0x5aa', '1e3']) {
    expectError(FLANNELD_TEXT.replace('1472', mtu), 'FLANNEL_MTU', 3, /is not an integer MTU in 68\.\.65535/);
  }
  assert.is(parseSubnetFile(FLANNELD_TEXT.replace('1472', '68')).mtu, 68);
  assert.is(parseSubnetFile(FLANNELD_TEXT.replace('1472', '65535')).mtu, 65535);
});

test('IPMASQ must be true or false', () => {
  for (const v of ['yes', 'True', '1', '']) {
    expectError(FLANNELD_TEXT.replace('IPMASQ=true', `IPMASQ=${v}`), 'FLANNEL_IPMASQ', 4, /is not true or false/);
  }
});

test('a line that is not KEY=VALUE is refused', () => {
  expectError('FLANNEL_NETWORK 10.244.0.0/16\n', '', 1, /expected KEY=VALUE/);
  expectError(FLANNELD_TEXT + 'export FLANNEL_X=1\n', '', 5, /expected KEY=VALUE/);
  expectError(FLANNELD_TEXT + '=1\n', '', 5, /expected KEY=VALUE/);
});

test('quotes and spaces are refused because the CNI plugin reads values verbatim', () => {
  expectError(FLANNELD_TEXT.replace('1472', '"1472"'), 'FLANNEL_MTU', 3, /quoted values are not allowed \(flannel writes FLANNEL_MTU=1472/);
  expectError(FLANNELD_TEXT.replace('=10.244.1.1/24', "='10.244.1.1/24'"), 'FLANNEL_SUBNET', 2, /quoted values/);
  expectError(FLANNELD_TEXT.replace('FLANNEL_MTU=', 'FLANNEL_MTU = '), 'FLANNEL_MTU', 3, /spaces around/);
  expectError(FLANNELD_TEXT.replace('IPMASQ=true', 'IPMASQ=true '), 'FLANNEL_IPMASQ', 4, /spaces around/);
});

test('a duplicate key is refused', () => {
  expectError(FLANNELD_TEXT + 'FLANNEL_MTU=1400\n', 'FLANNEL_MTU', 5, /duplicate key \(first set on line 3\)/);
});

test('FLANNEL_SUBNET must be inside FLANNEL_NETWORK', () => {
  expectError(FLANNELD_TEXT.replace('10.244.1.1/24', '10.245.1.1/24'), 'FLANNEL_SUBNET', 2, /10\.245\.1\.1\/24 is not inside FLANNEL_NETWORK 10\.244\.0\.0\/16 \(line 1\)/);
  expectError(FLANNELD_TEXT.replace('10.244.1.1/24', '10.244.1.1/15'), 'FLANNEL_SUBNET', 2, /is not inside FLANNEL_NETWORK/);
});

test('writeSubnetFileAtomic writes flanneld text, leaves no temp file, keeps the mode', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'subnet-file-'));
  try {
    const path = join(dir, 'run', 'flannel', 'subnet.env');
    const cfg = parseSubnetFile(FLANNELD_TEXT);
    await writeSubnetFileAtomic(path, cfg);
    assert.is(await readFile(path, 'utf8'), FLANNELD_TEXT);
    assert.is((await stat(path)).mode & 0o777, 0o644);

    await chmod(path, 0o600);
    await writeSubnetFileAtomic(path, { ...cfg, mtu: 1400 });
    assert.is((await readSubnetFile(path)).mtu, 1400);
    assert.is((await stat(path)).mode & 0o777, 0o600);
    assert.equal(await readdir(join(dir, 'run', 'flannel')), ['subnet.env']);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('readSubnetFile: a missing file and a broken file give clear errors', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'subnet-file-'));
  try {
    const missing = join(dir, 'nope.env');
    try {
      await readSubnetFile(missing);
      assert.unreachable('no error');
    } catch (err) {
      assert.instance(err, SubnetFileError);
      assert.is((err as Error).message, `${missing}: cannot read the subnet file: no such file`);
    }
    const broken = join(dir, 'subnet.env');
    await writeFile(broken, FLANNELD_TEXT.replace('1472', 'big'));
    try {
      await readSubnetFile(broken);
      assert.unreachable('no error');
    } catch (err) {
      assert.is((err as Error).message, `${broken}:3: FLANNEL_MTU: "big" is not an integer MTU in 68..65535`);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test.run();
