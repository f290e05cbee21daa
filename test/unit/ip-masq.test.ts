import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseCidr } from '../../src/control/ipv4-address.js';
import { chainRestoreInput, masqRules } from '../../src/control/ip-masq.js';

test("flannel's masquerade rules, in flannel's order", () => {
  const rules = masqRules(parseCidr('10.244.0.0/16'), parseCidr('10.244.7.1/24'));
  assert.equal(
    rules.map((r) => `-t ${r.table} -A ${r.chain} ${r.spec.join(' ')}`),
    [
      '-t nat -A POSTROUTING -m comment --comment flanneld masq -j FLANNEL-POSTRTG',
      '-t nat -A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment flanneld masq -j RETURN',
      '-t nat -A FLANNEL-POSTRTG -s 10.244.7.0/24 -d 10.244.0.0/16 -m comment --comment flanneld masq -j RETURN',
      '-t nat -A FLANNEL-POSTRTG -s 10.244.0.0/16 -d 10.244.7.0/24 -m comment --comment flanneld masq -j RETURN',
      '-t nat -A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.7.0/24 -m comment --comment flanneld masq -j RETURN',
      '-t nat -A FLANNEL-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment flanneld masq -j MASQUERADE --random-fully',
      '-t nat -A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment flanneld masq -j MASQUERADE --random-fully',
    ],
  );
  assert.not.ok(masqRules(parseCidr('10.244.0.0/16'), parseCidr('10.244.7.0/24'), false).some((r) => r.spec.includes('--random-fully')));
});

test('iptables-restore input: declares (and so empties) the chain, then its rules; the POSTROUTING jump is not in it', () => {
  const text = chainRestoreInput(masqRules(parseCidr('10.244.0.0/16'), parseCidr('10.244.7.0/24')));
  const lines = text.trimEnd().split('\n');
  assert.is(lines[0], '*nat');
  assert.is(lines[1], ':FLANNEL-POSTRTG - [0:0]');
  assert.is(lines[lines.length - 1], 'COMMIT');
  assert.is(lines.length, 2 + 6 + 1);
  assert.is(lines[2], '-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN');
  assert.not.ok(text.includes('POSTROUTING'));
});

test.run();
