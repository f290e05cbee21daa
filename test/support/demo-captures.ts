// What the capture of the demo traffic (src/testbed/capture-demo.ts) must
// show, read back with pcap-parser: the packets are where the data plane says
// they cross the user/kernel boundary, with the TTLs, outer headers and ICMP
// error it should have written. Used on the committed captures/demo/ (unit)
// and on captures made by a live run (integration).
import * as assert from 'uvu/assert';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { validateIPv4, ipv4Source, ipv4Destination, ipv4Protocol, ipv4Ttl } from '../../src/encap/ipv4.js';
import { parseOuterIPv4Udp, createOuterUdpFields } from '../../src/encap/udp-frame.js';
import { DropReason } from '../../src/encap/drop-reasons.js';
import { formatIPv4 } from '../../src/control/ipv4-address.js';

const require = createRequire(import.meta.url);
const pcapParser = require('pcap-parser') as {
  parse(path: string): {
    on(event: 'globalHeader', fn: (h: { linkLayerType: number }) => void): void;
    on(event: 'packet', fn: (p: { data: Buffer }) => void): void;
    on(event: 'end' | 'error', fn: (e?: Error) => void): void;
  };
};

function read(dir: string, node: string, file: string): Promise<{ linkType: number; frames: Uint8Array[] }> {
  return new Promise((resolve, reject) => {
    let linkType = -1;
    const frames: Uint8Array[] = [];
    const parser = pcapParser.parse(join(dir, node, file));
    parser.on('globalHeader', (h) => (linkType = h.linkLayerType));
    parser.on('packet', (p) => frames.push(Uint8Array.from(p.data)));
    parser.on('end', () => resolve({ linkType, frames }));
    parser.on('error', (e) => reject(e));
  });
}

/** [src, dst, protocol, ttl] of each IPv4 packet, at offset 0 (TUN side) or inside the outer UDP datagram (UDP side). */
function packets(frames: Uint8Array[], udpSide: boolean, outerSrc?: string, outerDst?: string): Array<[string, string, number, number]> {
  const outer = createOuterUdpFields();
  return frames.map((f) => {
    let at = 0;
    if (udpSide) {
      assert.is((f[12] << 8) | f[13], 0x0800, 'Ethernet carrying IPv4');
      assert.is(parseOuterIPv4Udp(f, 14, f.length - 14, outer), DropReason.None, 'a whole outer IPv4 + UDP datagram');
      assert.equal([formatIPv4(outer.srcAddr), formatIPv4(outer.dstAddr), outer.srcPort, outer.dstPort], [outerSrc, outerDst, 8285, 8285]);
      at = outer.payloadOffset; // UDP mode: the payload is the inner packet itself
    }
    assert.is(validateIPv4(f, at, f.length - at), DropReason.None);
    return [formatIPv4(ipv4Source(f, at)), formatIPv4(ipv4Destination(f, at)), ipv4Protocol(f, at), ipv4Ttl(f, at)];
  });
}

const POD1 = '10.244.1.2';
const POD2 = '10.244.2.2';
const ICMP = 1;
const TCP = 6;

/** Each node has the four crossings, raw IPv4 on the TUN side and Ethernet on the UDP side. */
export async function checkLinkTypes(dir: string): Promise<void> {
  for (const node of ['node1', 'node2']) {
    assert.is((await read(dir, node, 'tun-in-w0.pcap')).linkType, 101);
    assert.is((await read(dir, node, 'tun-out-w0.pcap')).linkType, 101);
    assert.is((await read(dir, node, 'udp-out-w0.pcap')).linkType, 1);
    assert.is((await read(dir, node, 'udp-in-w0.pcap')).linkType, 1);
  }
}

/** The echo requests cross node 1's TUN with TTL 63, leave it as UDP with 62 and enter node 2's TUN with 61. */
export async function checkEchoTtls(dir: string): Promise<void> {
  const tunIn1 = packets((await read(dir, 'node1', 'tun-in-w0.pcap')).frames, false);
  const udpOut1 = packets((await read(dir, 'node1', 'udp-out-w0.pcap')).frames, true, '192.0.2.1', '192.0.2.2');
  const udpIn2 = packets((await read(dir, 'node2', 'udp-in-w0.pcap')).frames, true, '192.0.2.1', '192.0.2.2');
  const tunOut2 = packets((await read(dir, 'node2', 'tun-out-w0.pcap')).frames, false);
  const pings = (ps: Array<[string, string, number, number]>) => ps.filter(([s, d, p]) => s === POD1 && d === POD2 && p === ICMP);
  assert.equal(pings(tunIn1), [[POD1, POD2, ICMP, 63], [POD1, POD2, ICMP, 63]]);
  assert.equal(pings(udpOut1), [[POD1, POD2, ICMP, 62], [POD1, POD2, ICMP, 62]]);
  assert.equal(pings(udpIn2), pings(udpOut1), 'node 2 received what node 1 sent');
  assert.equal(pings(tunOut2), [[POD1, POD2, ICMP, 61], [POD1, POD2, ICMP, 61]]);
  // The replies come back the same way.
  const replies = packets((await read(dir, 'node1', 'tun-out-w0.pcap')).frames, false).filter(([s, d, p]) => s === POD2 && d === POD1 && p === ICMP);
  assert.equal(replies, [[POD2, POD1, ICMP, 61], [POD2, POD1, ICMP, 61]]);
}

/** The ping to a subnet with no lease is never sent; an ICMP net unreachable from that address goes back into the TUN. */
export async function checkNetUnreachable(dir: string): Promise<void> {
  const tunIn1 = (await read(dir, 'node1', 'tun-in-w0.pcap')).frames;
  assert.ok(packets(tunIn1, false).some(([, d]) => d === '10.244.9.9'), 'pod 1 sent it');
  const out = packets((await read(dir, 'node1', 'udp-out-w0.pcap')).frames, true, '192.0.2.1', '192.0.2.2');
  assert.not.ok(out.some(([, d]) => d === '10.244.9.9'), 'never on the wire');
  const tunOut1 = (await read(dir, 'node1', 'tun-out-w0.pcap')).frames;
  const unreachable = tunOut1.find((f) => formatIPv4(ipv4Source(f, 0)) === '10.244.9.9');
  assert.ok(unreachable, 'an ICMP error written back');
  assert.is(formatIPv4(ipv4Destination(unreachable!, 0)), POD1);
  assert.equal([unreachable![20], unreachable![21]], [3, 0], 'type 3 destination unreachable, code 0 net');
}

/** The TCP exchange crosses both ways. */
export async function checkTcpBothWays(dir: string): Promise<void> {
  const tcpOut = packets((await read(dir, 'node1', 'udp-out-w0.pcap')).frames, true, '192.0.2.1', '192.0.2.2').filter(([, , p]) => p === TCP);
  const tcpIn = packets((await read(dir, 'node1', 'udp-in-w0.pcap')).frames, true, '192.0.2.2', '192.0.2.1').filter(([, , p]) => p === TCP);
  assert.ok(tcpOut.length >= 4, `handshake, data and FIN from pod 1 (got ${tcpOut.length})`);
  assert.ok(tcpIn.length >= 3, `and pod 2's answers (got ${tcpIn.length})`);
}

