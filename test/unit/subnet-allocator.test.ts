import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { formatCidr, parseCidr } from '../../src/control/ipv4-address.js';
import { parseNetworkConfig } from '../../src/control/network-config.js';
import { CANDIDATES, chooseSubnet, isSubnetCompatible, isSubnetTaken, SubnetExhaustedError } from '../../src/control/subnet-allocator.js';

const cidrs = (...list: string[]) => list.map(parseCidr);
const first = () => 0; // always the first free candidate
const last = () => 0.999999;

test('picks inside SubnetMin..SubnetMax, never the network\'s first subnet by default', () => {
  const c = parseNetworkConfig('{"Network": "10.244.0.0/16"}');
  assert.is(formatCidr(chooseSubnet(c, [], first)), '10.244.1.0/24');
  // flannel gathers at most 100 free candidates and picks one of them at random.
  assert.is(formatCidr(chooseSubnet(c, [], last)), `10.244.${CANDIDATES}.0/24`);
  const bounded = parseNetworkConfig('{"Network": "10.244.0.0/16", "SubnetMin": "10.244.10.0", "SubnetMax": "10.244.12.0"}');
  assert.is(formatCidr(chooseSubnet(bounded, [], first)), '10.244.10.0/24');
  assert.is(formatCidr(chooseSubnet(bounded, [], last)), '10.244.12.0/24');
  for (let i = 0; i < 200; i++) {
    const s = chooseSubnet(bounded, []);
    assert.ok(isSubnetCompatible(bounded, s), formatCidr(s));
  }
});

test('skips leased subnets, including leases of another length that overlap', () => {
  const c = parseNetworkConfig('{"Network": "10.244.0.0/16", "SubnetMin": "10.244.10.0", "SubnetMax": "10.244.14.0"}');
  assert.is(formatCidr(chooseSubnet(c, cidrs('10.244.10.0/24', '10.244.11.0/24'), first)), '10.244.12.0/24');
  // A /23 covering .12 and .13, a /32 inside .14 and .10 itself: only .11 is free.
  const taken = cidrs('10.244.12.0/23', '10.244.14.77/32', '10.244.10.0/24');
  assert.is(formatCidr(chooseSubnet(c, taken, first)), '10.244.11.0/24');
  assert.is(formatCidr(chooseSubnet(c, taken, last)), '10.244.11.0/24');
  // Unsorted input and leases outside the range change nothing.
  assert.is(formatCidr(chooseSubnet(c, cidrs('10.244.200.0/24', '10.244.11.0/24', '10.244.10.0/24', '10.244.99.0/24'), first)), '10.244.12.0/24');
});

test('every subnet leased: a clear error naming the range', () => {
  const c = parseNetworkConfig('{"Network": "10.244.0.0/16", "SubnetMin": "10.244.10.0", "SubnetMax": "10.244.11.0"}');
  try {
    chooseSubnet(c, cidrs('10.244.10.0/24', '10.244.11.0/24'));
    assert.unreachable('no error');
  } catch (err) {
    assert.instance(err, SubnetExhaustedError);
    assert.match(
      (err as Error).message,
      /no free subnet: all 2 \/24 subnet\(s\) from SubnetMin 10\.244\.10\.0 to SubnetMax 10\.244\.11\.0 are leased/,
    );
  }
  // A covering lease exhausts it just the same.
  assert.throws(() => chooseSubnet(c, cidrs('10.244.0.0/16')), /no free subnet/);
});

test('a whole /8 of /30s, mostly taken: the one free /30 is found', () => {
  const c = parseNetworkConfig('{"Network": "10.0.0.0/8", "SubnetLen": 30}');
  // Leases of every size from /9 down cover the whole network except one /30 near the end.
  const taken = cidrs('10.0.0.0/9', '10.128.0.0/10', '10.192.0.0/11', '10.224.0.0/12', '10.240.0.0/13', '10.248.0.0/14', '10.252.0.0/15', '10.254.0.0/16', '10.255.0.0/17', '10.255.128.0/18', '10.255.192.0/19', '10.255.224.0/20', '10.255.240.0/21', '10.255.248.0/22', '10.255.252.0/23', '10.255.254.0/24', '10.255.255.0/25', '10.255.255.128/26', '10.255.255.192/27', '10.255.255.224/28', '10.255.255.240/29', '10.255.255.252/30');
  // 10.255.255.248/30 is the one not covered.
  assert.is(formatCidr(chooseSubnet(c, taken)), '10.255.255.248/30');
});

test('isSubnetCompatible / isSubnetTaken', () => {
  const c = parseNetworkConfig('{"Network": "10.244.0.0/16", "SubnetMin": "10.244.10.0", "SubnetMax": "10.244.20.0"}');
  assert.ok(isSubnetCompatible(c, parseCidr('10.244.15.0/24')));
  assert.not.ok(isSubnetCompatible(c, parseCidr('10.244.9.0/24')), 'below SubnetMin');
  assert.not.ok(isSubnetCompatible(c, parseCidr('10.244.21.0/24')), 'above SubnetMax');
  assert.not.ok(isSubnetCompatible(c, parseCidr('10.244.15.0/25')), 'wrong length');
  assert.not.ok(isSubnetCompatible(c, parseCidr('10.245.15.0/24')), 'other network');
  assert.ok(isSubnetTaken(parseCidr('10.244.15.0/24'), cidrs('10.244.0.0/16')));
  assert.ok(isSubnetTaken(parseCidr('10.244.15.0/24'), cidrs('10.244.15.128/25')));
  assert.not.ok(isSubnetTaken(parseCidr('10.244.15.0/24'), cidrs('10.244.14.0/24', '10.244.16.0/24')));
});

test.run();
