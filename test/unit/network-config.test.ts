import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { formatCidr, formatIPv4 } from '../../src/control/ipv4-address.js';
import { formatCidr6, formatIPv6 } from '../../src/control/ipv6-address.js';
import { backendPort, ipv6SubnetCount, NetworkConfigError, parseNetworkConfig, subnetCount } from '../../src/control/network-config.js';

function configError(text: string): string {
  try {
    parseNetworkConfig(text, '/coreos.com/network/config');
  } catch (err) {
    assert.instance(err, NetworkConfigError);
    return (err as Error).message;
  }
  assert.unreachable(`accepted ${text}`);
  return '';
}

test('flannel defaults: SubnetLen 24, SubnetMin skips the first subnet, SubnetMax is the last, Backend udp', () => {
  const c = parseNetworkConfig('{"Network": "10.244.0.0/16"}');
  assert.is(formatCidr(c.network), '10.244.0.0/16');
  assert.is(c.subnetLen, 24);
  assert.is(formatIPv4(c.subnetMin), '10.244.1.0');
  assert.is(formatIPv4(c.subnetMax), '10.244.255.0');
  assert.is(c.backendType, 'udp');
  assert.is(backendPort(c), undefined);
  assert.is(subnetCount(c), 255);
});

test('small networks get two bits more than the network (flannel: /23 and longer)', () => {
  const c = parseNetworkConfig('{"Network": "10.1.0.0/26"}');
  assert.is(c.subnetLen, 28);
  assert.is(formatIPv4(c.subnetMin), '10.1.0.16');
  assert.is(formatIPv4(c.subnetMax), '10.1.0.48');
  assert.match(configError('{"Network": "10.1.0.0/29"}'), /too small: flannel needs at least a \/28/);
});

test('explicit SubnetLen, SubnetMin, SubnetMax and Backend with Port', () => {
  const c = parseNetworkConfig(
    '{"Network": "10.244.0.0/16", "SubnetLen": 25, "SubnetMin": "10.244.10.0", "SubnetMax": "10.244.20.128", "Backend": {"Type": "udp", "Port": 8300}}',
  );
  assert.is(c.subnetLen, 25);
  assert.is(formatIPv4(c.subnetMin), '10.244.10.0');
  assert.is(formatIPv4(c.subnetMax), '10.244.20.128');
  assert.is(subnetCount(c), 22);
  assert.is(backendPort(c), 8300);
  assert.equal(c.backend, { Type: 'udp', Port: 8300 });
});

test('field names match case-insensitively, as Go does; the network part of Network is kept', () => {
  const c = parseNetworkConfig('{"network": "10.244.3.7/16", "subnetlen": 24, "backend": {"type": "vxlan", "VNI": 4}}');
  assert.is(formatCidr(c.network), '10.244.0.0/16');
  assert.is(c.backendType, 'vxlan');
  assert.equal(c.backend, { type: 'vxlan', VNI: 4 });
});

test('bad or incomplete configs are refused with the key and the reason', () => {
  assert.match(configError(''), /^\/coreos\.com\/network\/config: not valid JSON/);
  assert.match(configError('[]'), /expected a JSON object/);
  assert.match(configError('{}'), /Network is missing/);
  assert.match(configError('{"Network": 16}'), /Network must be a string/);
  assert.match(configError('{"Network": "10.244.0.0"}'), /Network: .*not a valid IPv4 CIDR/);
  assert.match(configError('{"Network": "10.244.0.0/16", "SubnetLen": 31}'), /SubnetLen 31 is too long/);
  assert.match(configError('{"Network": "10.244.0.0/16", "SubnetLen": 17}'), /SubnetLen 17 is too short: .* \/18 or longer/);
  assert.match(configError('{"Network": "10.244.0.0/16", "SubnetLen": "24"}'), /SubnetLen must be a whole number/);
  assert.match(configError('{"Network": "10.244.0.0/16", "SubnetMin": "10.245.1.0"}'), /SubnetMin 10\.245\.1\.0 is not inside Network 10\.244\.0\.0\/16/);
  assert.match(configError('{"Network": "10.244.0.0/16", "SubnetMax": "10.244.7.5"}'), /SubnetMax 10\.244\.7\.5 is not on a \/24 boundary \(did you mean 10\.244\.7\.0\?\)/);
  assert.match(configError('{"Network": "10.244.0.0/16", "SubnetMin": "10.244.9.0", "SubnetMax": "10.244.8.0"}'), /SubnetMin 10\.244\.9\.0 is after SubnetMax/);
  assert.match(configError('{"Network": "10.244.0.0/16", "Backend": "udp"}'), /Backend must be an object/);
  assert.match(configError('{"Network": "10.244.0.0/16", "Backend": {"Port": 1}}'), /Backend\.Type must be a backend name/);
  assert.throws(() => backendPort(parseNetworkConfig('{"Network": "10.244.0.0/16", "Backend": {"Type": "udp", "Port": 70000}}')), /Backend\.Port must be a port number/);
});

test('IPv6 fields without EnableIPv6 are noted, not fatal (flanneld ignores them too)', () => {
  const c = parseNetworkConfig('{"Network": "10.244.0.0/16", "IPv6Network": "fc00::/48"}');
  assert.is(c.notes.length, 1);
  assert.match(c.notes[0], /IPv6Network .* ignored/);
  assert.is(c.ipv6, undefined);
  assert.is(c.enableIPv4, true);
});

test('dual-stack: flannel defaults for the IPv6 half (IPv6SubnetLen 64, the first subnet skipped, the last included)', () => {
  const c = parseNetworkConfig('{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00:10:244::/56"}');
  assert.is(c.enableIPv4, true);
  assert.is(formatCidr(c.network), '10.244.0.0/16');
  assert.ok(c.ipv6);
  assert.is(formatCidr6(c.ipv6.network), 'fd00:10:244::/56');
  assert.is(c.ipv6.subnetLen, 64);
  assert.is(formatIPv6(c.ipv6.subnetMin), 'fd00:10:244:1::');
  assert.is(formatIPv6(c.ipv6.subnetMax), 'fd00:10:244:ff::');
  assert.is(ipv6SubnetCount(c.ipv6), 255n);
  assert.equal(c.notes, []);
});

test('dual-stack: small IPv6 networks get two bits more (flannel: /63 and longer), host bits dropped, bounds honoured', () => {
  const small = parseNetworkConfig('{"Network": "10.244.0.0/16", "enableipv6": true, "ipv6network": "fd00::1234/120"}');
  assert.is(small.ipv6!.subnetLen, 122);
  assert.is(formatCidr6(small.ipv6!.network), 'fd00::1200/120');
  assert.is(formatIPv6(small.ipv6!.subnetMin), 'fd00::1240');
  assert.is(formatIPv6(small.ipv6!.subnetMax), 'fd00::12c0');
  const bounded = parseNetworkConfig(
    '{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00:10:244::/48", "IPv6SubnetLen": 64, "IPv6SubnetMin": "fd00:10:244:10::", "IPv6SubnetMax": "fd00:10:244:1f::"}',
  );
  assert.is(formatIPv6(bounded.ipv6!.subnetMin), 'fd00:10:244:10::');
  assert.is(ipv6SubnetCount(bounded.ipv6!), 16n);
  // A /32 of /64s: more subnets than a double holds exactly.
  assert.is(ipv6SubnetCount(parseNetworkConfig('{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "2001:db8::/32"}').ipv6!), 2n ** 32n - 1n);
});

test('IPv6-only (EnableIPv4 false): no IPv4 network is read, the IPv4 fields are noted', () => {
  const c = parseNetworkConfig('{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "fd00:10:244::/56", "Backend": {"Type": "vxlan"}}');
  assert.is(c.enableIPv4, false);
  assert.is(c.network.prefixLength, 0);
  assert.is(c.subnetLen, 0);
  assert.is(formatCidr6(c.ipv6!.network), 'fd00:10:244::/56');
  assert.equal(c.notes, []);
  const noted = parseNetworkConfig('{"Network": "10.244.0.0/16", "EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "fd00::/48"}');
  assert.match(noted.notes[0], /^Network in the network config is ignored \(EnableIPv4 is false: the network is IPv6-only\)$/);
});

test('bad dual-stack configs are refused with the field and the fix, as flannel\'s CheckNetworkConfig refuses them', () => {
  assert.match(configError('{"Network": "10.244.0.0/16", "EnableIPv4": false}'), /EnableIPv4 is false and EnableIPv6 is not true: no address family left/);
  assert.match(configError('{"Network": "10.244.0.0/16", "EnableIPv6": true}'), /EnableIPv6 is true but IPv6Network is missing/);
  assert.match(configError('{"Network": "10.244.0.0/16", "EnableIPv6": "true", "IPv6Network": "fd00::/48"}'), /EnableIPv6 must be true or false, found "true"/);
  assert.match(configError('{"EnableIPv6": true, "IPv6Network": "fd00::/48"}'), /Network is missing .*"EnableIPv4": false/);
  assert.match(configError('{"Network": "fd00::/48", "EnableIPv6": true, "IPv6Network": "fd00::/48"}'), /Network "fd00::\/48" is IPv6: the IPv6 pod network goes in IPv6Network/);
  assert.match(configError('{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "10.245.0.0/16"}'), /IPv6Network "10\.245\.0\.0\/16" is not an IPv6 CIDR/);
  assert.match(configError('{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00::/48/1"}'), /IPv6Network: .*not a valid IPv6 CIDR/);
  assert.match(configError('{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00::/125"}'), /IPv6Network fd00::\/125 is too small: flannel needs at least a \/124/);
  assert.match(configError('{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00::/48", "IPv6SubnetLen": 127}'), /IPv6SubnetLen 127 is too long/);
  assert.match(configError('{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00::/48", "IPv6SubnetLen": 49}'), /IPv6SubnetLen 49 is too short: .* \/50 or longer/);
  assert.match(configError('{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00::/48", "IPv6SubnetLen": "64"}'), /IPv6SubnetLen must be a whole number/);
  assert.match(configError('{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00::/48", "IPv6SubnetMin": "fd01::"}'), /IPv6SubnetMin fd01:: is not inside IPv6Network fd00::\/48/);
  assert.match(
    configError('{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00::/48", "IPv6SubnetMax": "fd00:0:0:7::5"}'),
    /IPv6SubnetMax fd00:0:0:7::5 is not on a \/64 boundary \(did you mean fd00:0:0:7::\?\)/,
  );
  assert.match(
    configError('{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00::/48", "IPv6SubnetMin": "fd00:0:0:9::", "IPv6SubnetMax": "fd00:0:0:8::"}'),
    /IPv6SubnetMin fd00:0:0:9:: is after IPv6SubnetMax fd00:0:0:8::/,
  );
  assert.match(configError('{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00::/48", "IPv6SubnetMin": 5}'), /IPv6SubnetMin must be an address string/);
  assert.match(configError('{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00::/48", "IPv6Networks": ["fd01::/48"]}'), /IPv6Networks .* not supported/);
});

test.run();
