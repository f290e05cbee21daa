// Runs inside a pod namespace: sends one UDP datagram to HOST:PORT and waits
// for an ICMP destination-unreachable about it, seen on a raw ICMP socket
// (raw-socket), so the test sees exactly what reached the pod's kernel.
// Prints {"received": true, "type": 3, "code": 0, "from": "…"} or {"received": false}.
import { createSocket as createUdpSocket } from 'node:dgram';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const raw = require('raw-socket') as {
  createSocket(opts: { protocol: number }): {
    on(event: 'message', fn: (buf: Buffer, source: string) => void): void;
    on(event: 'error', fn: (err: Error) => void): void;
    close(): void;
  };
  Protocol: { ICMP: number };
};

const [host, portText, timeoutText = '3000'] = process.argv.slice(2);
const port = Number(portText);
const icmp = raw.createSocket({ protocol: raw.Protocol.ICMP });
const udp = createUdpSocket('udp4');

function finish(result: object): void {
  process.stdout.write(JSON.stringify(result) + '\n');
  icmp.close();
  udp.close();
  process.exit(0);
}

icmp.on('error', (err) => {
  process.stderr.write(`icmp-probe: ${err.message}\n`);
  process.exit(1);
});
icmp.on('message', (buf, source) => {
  // buf: the whole IPv4 packet. ICMP at IHL; the quoted original IP header follows the 8-byte ICMP header.
  const ihl = (buf[0] & 0x0f) * 4;
  const type = buf[ihl];
  const code = buf[ihl + 1];
  if (type !== 3) return;
  const quoted = ihl + 8;
  const quotedIhl = (buf[quoted] & 0x0f) * 4;
  const quotedDst = Array.from(buf.subarray(quoted + 16, quoted + 20)).join('.');
  const quotedDstPort = buf.readUInt16BE(quoted + quotedIhl + 2);
  if (quotedDst !== host || quotedDstPort !== port) return;
  finish({ received: true, type, code, from: source, quotedDst, quotedDstPort });
});

udp.send(Buffer.from('flannel-udp probe'), port, host, (err) => {
  if (err) {
    process.stderr.write(`icmp-probe: send: ${err.message}\n`);
    process.exit(1);
  }
});
setTimeout(() => finish({ received: false }), Number(timeoutText));
