// The trace filter: its grammar (what compiles, and where an error points)
// and its verdicts on real packets built by the encap modules.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { compileTraceFilter, TraceFilterError } from '../../src/observe/trace-filter.js';
import { ICMP_ECHO_REQUEST, buildIcmpEcho } from '../../src/encap/icmp.js';
import { IPV4_OFFSET_FLAGS_FRAGMENT, IP_PROTOCOL_TCP, IP_PROTOCOL_UDP, buildIPv4Header } from '../../src/encap/ipv4.js';
import { parseIPv4 } from '../../src/control/ipv4-address.js';
import { parseIPv6 } from '../../src/control/ipv6-address.js';
import { buildIPv6Header } from '../../src/encap/ipv6.js';
import { ICMPV6_ECHO_REQUEST, buildIcmpv6Echo } from '../../src/encap/icmpv6.js';

const POD1 = '10.244.1.2';
const POD2 = '10.244.2.2';
const OFF = 32; // packets sit behind headroom in a pool slot

function icmp(src = POD1, dst = POD2): Uint8Array {
  const buf = new Uint8Array(OFF + 84 + 16);
  buildIcmpEcho(buf, OFF, parseIPv4(src), parseIPv4(dst), ICMP_ECHO_REQUEST, 20, 47, 56);
  return buf;
}

function transport(protocol: number, src: string, dst: string, sport: number, dport: number, fragmentOffset8 = 0): Uint8Array {
  const headerLength = protocol === IP_PROTOCOL_TCP ? 20 : 8;
  const buf = new Uint8Array(OFF + 20 + headerLength + 16);
  buildIPv4Header(buf, OFF, 20 + headerLength, 0x1234, 64, protocol, parseIPv4(src), parseIPv4(dst), true);
  const t = OFF + 20;
  buf[t] = sport >>> 8;
  buf[t + 1] = sport;
  buf[t + 2] = dport >>> 8;
  buf[t + 3] = dport;
  if (fragmentOffset8) {
    buf[OFF + IPV4_OFFSET_FLAGS_FRAGMENT] = fragmentOffset8 >>> 8;
    buf[OFF + IPV4_OFFSET_FLAGS_FRAGMENT + 1] = fragmentOffset8;
  }
  return buf;
}

const tcp = (sport: number, dport: number, src = POD1, dst = POD2) => transport(IP_PROTOCOL_TCP, src, dst, sport, dport);
const udp = (sport: number, dport: number, src = POD1, dst = POD2) => transport(IP_PROTOCOL_UDP, src, dst, sport, dport);

function matches(expr: string, pkt: Uint8Array): boolean {
  return compileTraceFilter(expr)(pkt, OFF);
}

test('empty, blank and undefined expressions match every packet, even garbage', () => {
  for (const expr of [undefined, '', '   ']) {
    const f = compileTraceFilter(expr);
    assert.ok(f(icmp(), OFF));
    assert.ok(f(new Uint8Array(4), 0));
  }
});

test('protocols', () => {
  assert.ok(matches('icmp', icmp()));
  assert.not.ok(matches('icmp', tcp(1, 2)));
  assert.ok(matches('tcp', tcp(1, 2)));
  assert.not.ok(matches('tcp', udp(1, 2)));
  assert.ok(matches('udp', udp(1, 2)));
  assert.ok(matches('ip', udp(1, 2)));
  assert.ok(matches('ICMP', icmp()), 'keywords are case-insensitive');
});

test('hosts: either, src, dst', () => {
  const p = icmp(POD1, POD2);
  assert.ok(matches(`host ${POD1}`, p));
  assert.ok(matches(`host ${POD2}`, p));
  assert.not.ok(matches('host 10.244.3.3', p));
  assert.ok(matches(`src host ${POD1}`, p));
  assert.not.ok(matches(`src host ${POD2}`, p));
  assert.ok(matches(`dst host ${POD2}`, p));
  assert.not.ok(matches(`dst host ${POD1}`, p));
  // Addresses with the top bit set compare right (signed int32 inside).
  assert.ok(matches('src host 192.0.2.1', icmp('192.0.2.1', '255.255.255.254')));
  assert.ok(matches('dst host 255.255.255.254', icmp('192.0.2.1', '255.255.255.254')));
});

test('networks: prefix match on either, src, dst; /0 and /32', () => {
  const p = icmp(POD1, POD2);
  assert.ok(matches('net 10.244.0.0/16', p));
  assert.ok(matches('src net 10.244.1.0/24', p));
  assert.not.ok(matches('dst net 10.244.1.0/24', p));
  assert.ok(matches('dst net 10.244.2.0/24', p));
  assert.ok(matches('net 0.0.0.0/0', p));
  assert.ok(matches(`net ${POD2}/32`, p));
  assert.not.ok(matches('net 192.0.2.0/24', p));
  assert.ok(matches('net 128.0.0.0/1', icmp('200.1.1.1', '10.0.0.1')));
});

test('ports: TCP and UDP, src/dst, with a protocol qualifier; never ICMP or later fragments', () => {
  assert.ok(matches('port 5201', tcp(40000, 5201)));
  assert.ok(matches('port 40000', tcp(40000, 5201)));
  assert.ok(matches('dst port 5201', tcp(40000, 5201)));
  assert.not.ok(matches('src port 5201', tcp(40000, 5201)));
  assert.ok(matches('src port 53', udp(53, 9999)));
  assert.ok(matches('tcp port 5201', tcp(40000, 5201)));
  assert.not.ok(matches('udp port 5201', tcp(40000, 5201)));
  assert.ok(matches('udp dst port 9999', udp(53, 9999)));
  assert.not.ok(matches('port 20', icmp()), 'ICMP has no ports (bytes 20-23 hold type, code, checksum)');
  const later = transport(IP_PROTOCOL_UDP, POD1, POD2, 53, 9999, 185);
  assert.not.ok(matches('port 53', later), 'a later fragment carries no UDP header');
  const first = transport(IP_PROTOCOL_UDP, POD1, POD2, 53, 9999, 0x2000); // MF set, offset 0
  assert.ok(matches('port 53', first), 'the first fragment does');
  assert.ok(matches('port 65535', udp(65535, 1)));
  assert.ok(matches('port 0', udp(0, 1)));
});

test('ports follow the IHL: options move the transport header', () => {
  const buf = new Uint8Array(OFF + 24 + 8);
  buildIPv4Header(buf, OFF, 32, 1, 64, IP_PROTOCOL_UDP, parseIPv4(POD1), parseIPv4(POD2), false);
  buf[OFF] = 0x46; // IHL 6: four bytes of options
  buf[OFF + 24] = 0x14;
  buf[OFF + 25] = 0xe9; // 5353
  assert.ok(matches('src port 5353', buf));
});

test('and, or, not, symbols, parentheses and precedence', () => {
  const ping = icmp(POD1, POD2);
  const iperf = tcp(40000, 5201);
  const dns = udp(40000, 53);
  const cases: Array<[string, Uint8Array, boolean]> = [
    ['icmp and host 10.244.2.2', ping, true],
    ['icmp && host 10.244.9.9', ping, false],
    ['icmp or tcp', iperf, true],
    ['icmp || tcp', dns, false],
    ['not icmp', ping, false],
    ['! icmp', dns, true],
    ['!icmp', dns, true],
    ['not not icmp', ping, true],
    ['tcp or udp and port 53', iperf, true], // and binds tighter: tcp or (udp and port 53)
    ['(tcp or udp) and port 53', iperf, false],
    ['(tcp or udp) and port 53', dns, true],
    ['icmp or tcp and port 1', ping, true],
    ['not (tcp or udp)', ping, true],
    ['((icmp))', ping, true],
    ['tcp port 5201 or (udp and not dst net 10.244.1.0/24)', dns, true],
    ['tcp port 5201 or (udp and not dst net 10.244.2.0/24)', dns, false],
    ['src host 10.244.1.2 and dst host 10.244.2.2 and icmp', ping, true],
  ];
  for (const [expr, pkt, expected] of cases) assert.is(matches(expr, pkt), expected, expr);
});

const POD1_6 = 'fd00:10:244:1::2';
const POD2_6 = 'fd00:10:244:2::2';

function icmp6(src = POD1_6, dst = POD2_6): Uint8Array {
  const buf = new Uint8Array(OFF + 40 + 8 + 56 + 16);
  buildIcmpv6Echo(buf, OFF, parseIPv6(src), parseIPv6(dst), ICMPV6_ECHO_REQUEST, 20, 47, 56);
  return buf;
}

function transport6(protocol: number, sport: number, dport: number, src = POD1_6, dst = POD2_6): Uint8Array {
  const headerLength = protocol === IP_PROTOCOL_TCP ? 20 : 8;
  const buf = new Uint8Array(OFF + 40 + headerLength + 16);
  buildIPv6Header(buf, OFF, headerLength, protocol, 64, parseIPv6(src), 0, parseIPv6(dst), 0);
  const t = OFF + 40;
  buf[t] = sport >>> 8;
  buf[t + 1] = sport;
  buf[t + 2] = dport >>> 8;
  buf[t + 3] = dport;
  return buf;
}

test('IPv6: ip6 and icmp6 are IPv6 only, ip and icmp IPv4 only, tcp and udp either family', () => {
  const ping6 = icmp6();
  const tcp6 = transport6(IP_PROTOCOL_TCP, 40000, 5201);
  const udp6 = transport6(IP_PROTOCOL_UDP, 53000, 53);
  assert.ok(matches('ip6', ping6));
  assert.not.ok(matches('ip6', icmp()));
  assert.not.ok(matches('ip', ping6));
  assert.ok(matches('icmp6', ping6));
  assert.ok(matches('ICMP6', ping6), 'keywords are case-insensitive');
  assert.not.ok(matches('icmp6', icmp()), 'ICMPv4 is not icmp6');
  assert.not.ok(matches('icmp', ping6), 'ICMPv6 is not icmp');
  assert.not.ok(matches('icmp6', tcp6));
  assert.ok(matches('tcp', tcp6));
  assert.ok(matches('tcp', tcp(1, 2)));
  assert.not.ok(matches('tcp', udp6));
  assert.ok(matches('udp', udp6));
  assert.ok(matches('ip6 and not icmp6', udp6));
});

test('IPv6: host and net match the family of the address written', () => {
  const p = icmp6();
  assert.ok(matches(`host ${POD1_6}`, p));
  assert.ok(matches(`host ${POD2_6}`, p));
  assert.ok(matches('host FD00:10:244:2:0:0:0:2', p), 'written in full, upper case');
  assert.not.ok(matches('host fd00:10:244:2::3', p));
  assert.ok(matches(`src host ${POD1_6}`, p));
  assert.not.ok(matches(`src host ${POD2_6}`, p));
  assert.ok(matches(`dst host ${POD2_6}`, p));
  assert.ok(matches('net fd00:10:244::/48', p));
  assert.ok(matches('src net fd00:10:244:1::/64', p));
  assert.not.ok(matches('dst net fd00:10:244:1::/64', p));
  assert.ok(matches('dst net fd00:10:244:2::/64', p));
  assert.ok(matches('net ::/0', p), '/0 matches every IPv6 packet');
  assert.not.ok(matches('net ::/0', icmp()), 'but no IPv4 packet');
  assert.ok(matches('dst net fd00:10:244:2::2/128', p));
  assert.not.ok(matches('dst net fd00:10:244:2::3/128', p));
  // A prefix that ends inside a word: /63 covers ...:2:: and ...:3::, not ...:4::.
  assert.ok(matches('dst net fd00:10:244:2::/63', p));
  assert.ok(matches('dst net fd00:10:244:2::/63', icmp6(POD1_6, 'fd00:10:244:3::9')));
  assert.not.ok(matches('dst net fd00:10:244:2::/63', icmp6(POD1_6, 'fd00:10:244:4::9')));
  // Top bits set compare right (signed int32 inside).
  assert.ok(matches('src host ffff:ffff::1', icmp6('ffff:ffff::1', POD2_6)));
  assert.not.ok(matches(`host ${POD1}`, p), 'an IPv4 host never matches IPv6');
  assert.not.ok(matches('net 0.0.0.0/0', p));
});

test('IPv6: ports behind the fixed header, with and without a protocol', () => {
  const tcp6 = transport6(IP_PROTOCOL_TCP, 40000, 5201);
  const udp6 = transport6(IP_PROTOCOL_UDP, 53000, 53);
  assert.ok(matches('port 5201', tcp6));
  assert.ok(matches('dst port 5201', tcp6));
  assert.not.ok(matches('src port 5201', tcp6));
  assert.ok(matches('tcp src port 40000', tcp6));
  assert.not.ok(matches('udp port 5201', tcp6));
  assert.ok(matches('udp dst port 53', udp6));
  assert.not.ok(matches('port 20', icmp6()), 'ICMPv6 has no ports (its id field is not one)');
  assert.ok(matches('icmp6 and host fd00:10:244:2::2 or tcp port 5201', tcp6));
});

test('IPv6: a runt never throws', () => {
  const f = compileTraceFilter('host fd00::1 or port 53 or net fd00::/8 or icmp6');
  const runt = Uint8Array.of(0x60, 0, 0, 0, 0, 8, 17, 64);
  assert.not.ok(f(runt, 0));
});

test('not an IPv4 packet: every IPv4 primitive is false (so "not" of one is true)', () => {
  const v6 = new Uint8Array(OFF + 40);
  v6[OFF] = 0x60;
  v6[OFF + 9] = 1; // would read as ICMP if the version were ignored
  for (const expr of ['icmp', 'ip', 'host 0.0.0.0', 'net 0.0.0.0/0', 'port 0']) assert.not.ok(matches(expr, v6), expr);
  assert.ok(matches('not icmp', v6));
  const v5 = new Uint8Array(OFF + 40);
  v5[OFF] = 0x50;
  for (const expr of ['icmp', 'icmp6', 'ip', 'ip6', 'tcp', 'udp', 'host ::', 'net ::/0', 'port 0']) assert.not.ok(matches(expr, v5), `version 5: ${expr}`);
});

test('a runt at the end of its buffer never throws', () => {
  const f = compileTraceFilter('host 10.244.2.2 or port 53 or net 10.0.0.0/8');
  const runt = Uint8Array.of(0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17);
  assert.not.ok(f(runt, 0));
  assert.not.ok(f(new Uint8Array(0), 0));
});

function errorOf(expr: string): TraceFilterError {
  try {
    compileTraceFilter(expr);
  } catch (err) {
    assert.instance(err, TraceFilterError);
    return err as TraceFilterError;
  }
  throw new Error(`"${expr}" compiled`);
}

test('errors say what is wrong and point at it', () => {
  const cases: Array<[string, number, RegExp]> = [
    ['host', 4, /expected an IPv4 address \(A.B.C.D\) or an IPv6 address after "host", found the end of the expression/],
    ['host fd00::1::2', 5, /"fd00::1::2" is not an IPv6 address/],
    ['net fd00:10:244::/129', 4, /N from 0 to 128/],
    ['net fd00:10:244:2::/48', 4, /bits set outside its \/48 prefix/],
    ['net fd00::', 4, /not a network IPv6\/N/],
    ['host 10.1', 5, /"10.1" is not an IPv4 address/],
    ['host 10.244.1.0/24', 5, /expected an IPv4 address/],
    ['icmp and', 8, /expected a primitive/],
    ['icmp or or tcp', 8, /found "or"/],
    ['(icmp', 5, /expected "\)" to close the "\(" at position 1/],
    ['icmp)', 4, /expected "and", "or" or the end/],
    ['icmp tcp', 5, /expected "and", "or"/],
    ['port 70000', 5, /port number \(0-65535\)/],
    ['port http', 5, /port number/],
    ['net 10.244.1.0', 4, /network A.B.C.D\/N/],
    ['net 10.244.1.0/16', 4, /bits set outside its \/16 prefix/],
    ['net 10.0.0.0/33', 4, /N from 0 to 32/],
    ['src 10.0.0.1', 4, /expected "host", "net", "port" after "src"/],
    ['tcp src host 1.2.3.4', 8, /expected "port" after "tcp src"/],
    ['arp', 0, /unknown keyword "arp"/],
    ['icmp & tcp', 5, /must be doubled/],
    ['icmp # x', 5, /unexpected character "#"/],
  ];
  for (const [expr, offset, message] of cases) {
    const err = errorOf(expr);
    assert.is(err.offset, offset, `${expr}: offset`);
    assert.match(err.message, message, expr);
    assert.match(err.message, new RegExp(`at position ${offset + 1}\\n  ${expr.replace(/[()|.*+?^$\\[\]{}]/g, '\\$&')}\\n  ${' '.repeat(offset)}\\^$`), `${expr}: caret`);
  }
});

test('a deeply nested or very long filter is refused with the bound, not "Maximum call stack size exceeded" (issue 26)', () => {
  const cases: Array<[string, RegExp]> = [
    ['('.repeat(20_000) + 'icmp' + ')'.repeat(20_000), /nested more than 32 levels deep \(parentheses and "not"\)/],
    ['not '.repeat(20_000) + 'icmp', /nested more than 32 levels deep/],
    ['! '.repeat(33) + 'icmp', /nested more than 32 levels deep/],
    [Array(20_000).fill('icmp').join(' or '), /more than 256 primitives/],
    [Array(257).fill('tcp port 80').join(' and '), /more than 256 primitives/],
  ];
  for (const [expr, message] of cases) {
    let err: unknown;
    try {
      compileTraceFilter(expr);
    } catch (e) {
      err = e;
    }
    assert.instance(err, TraceFilterError, `${expr.slice(0, 40)}…: ${String(err)}`);
    assert.match((err as Error).message, message);
    assert.ok((err as Error).message.length < 400, 'the message does not echo the whole expression');
  }
  // Up to the bounds is fine.
  const deep = compileTraceFilter('('.repeat(31) + 'icmp' + ')'.repeat(31));
  assert.ok(deep(icmp(), OFF));
  compileTraceFilter(Array(256).fill('icmp').join(' or '));
});

test.run();
