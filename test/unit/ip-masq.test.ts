import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseCidr } from '../../src/control/ipv4-address.js';
import { parseCidr6 } from '../../src/control/ipv6-address.js';
import { chainRestoreInput, IpMasq, IpMasqError, masq6RuleSet, masq6Rules, masqRules } from '../../src/control/ip-masq.js';
import { forward6Rules, forwardRules } from '../../src/control/forward-rules.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

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

test("flannel's IPv6 masquerade rules (masqIP6Rules): the IPv4 ones with the IPv6 network and subnet, ff00::/8 for multicast", () => {
  const v4 = masqRules(parseCidr('10.244.0.0/16'), parseCidr('10.244.7.1/24')).map((r) => `${r.table} ${r.chain} ${r.spec.join(' ')}`);
  const v6 = masq6Rules(parseCidr6('fd00:10:244::/48'), parseCidr6('fd00:10:244:7::1/64')).map((r) => `${r.table} ${r.chain} ${r.spec.join(' ')}`);
  const mirrored = v4.map((r) => r.replaceAll('10.244.0.0/16', 'fd00:10:244::/48').replaceAll('10.244.7.0/24', 'fd00:10:244:7::/64').replace('224.0.0.0/4', 'ff00::/8'));
  assert.equal(v6, mirrored);
  assert.ok(v6.includes('nat FLANNEL-POSTRTG -s fd00:10:244::/48 ! -d ff00::/8 -m comment --comment flanneld masq -j MASQUERADE --random-fully'), v6.join('\n'));
});

test('IPv6 forward rules: the IPv4 ones for the IPv6 network', () => {
  const v4 = forwardRules(parseCidr('10.244.0.0/16')).map((r) => `${r.chain} ${r.spec.join(' ')}`);
  const v6 = forward6Rules(parseCidr6('fd00:10:244::/48')).map((r) => `${r.chain} ${r.spec.join(' ')}`);
  assert.equal(v6, v4.map((r) => r.replace('10.244.0.0/16', 'fd00:10:244::/48')));
});

test('ip6tables missing: a clear error naming the program and its Debian package', async () => {
  const empty = mkdtempSync(join(tmpdir(), 'no-ip6tables-'));
  const path = process.env.PATH;
  process.env.PATH = empty; // the command helper inherits it and finds no ip6tables
  const keeper = new IpMasq({ network: parseCidr('0.0.0.0/0'), subnet: parseCidr('0.0.0.0/0'), ruleSet: masq6RuleSet(parseCidr6('fd00:10:244::/48'), parseCidr6('fd00:10:244:7::/64')), log: () => undefined });
  try {
    const err = await keeper.start().then(() => undefined, (e: Error) => e);
    assert.instance(err, IpMasqError);
    assert.match(err!.message, /--ip-masq needs ip6tables for the IPv6 rules: apt-get install iptables/);
  } finally {
    process.env.PATH = path;
    await keeper.detach();
    rmSync(empty, { recursive: true, force: true });
  }
});

test.run();
