import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { formatCidr, formatIPv4 } from '../../src/control/ipv4-address.js';
import { backendPort, NetworkConfigError, parseNetworkConfig, subnetCount } from '../../src/control/network-config.js';

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
  assert.match(configError('{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fc00::/48"}'), /IPv6 is not supported/);
  assert.match(configError('{"Network": "10.244.0.0/16", "EnableIPv4": false}'), /IPv4 only/);
  assert.throws(() => backendPort(parseNetworkConfig('{"Network": "10.244.0.0/16", "Backend": {"Type": "udp", "Port": 70000}}')), /Backend\.Port must be a port number/);
});

test('IPv6 fields without EnableIPv6 are noted, not fatal (flanneld ignores them too)', () => {
  const c = parseNetworkConfig('{"Network": "10.244.0.0/16", "IPv6Network": "fc00::/48"}');
  assert.is(c.notes.length, 1);
  assert.match(c.notes[0], /IPv6Network .* ignored/);
});

test.run();
