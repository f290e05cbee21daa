// Runs inside a pod namespace: watches every UDP datagram that reaches the
// pod's kernel (a raw IPPROTO_UDP socket sees them all, whatever the port)
// and counts those whose payload starts with one of the markers given.
// Prints "listening", "+<marker>" for every datagram with a marker (so a test
// can wait for the ones it expects), then on SIGTERM or SIGINT one JSON line:
// {"seen": {"<marker>": count, …}, "udp": total datagrams seen}.
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const raw = require('raw-socket') as {
  createSocket(opts: { protocol: number; bufferSize?: number }): {
    on(event: 'message', fn: (buf: Buffer, source: string) => void): void;
    on(event: 'error', fn: (err: Error) => void): void;
    close(): void;
  };
};

const markers = process.argv.slice(2);
const seen: Record<string, number> = Object.fromEntries(markers.map((m) => [m, 0]));
const needles = markers.map((m) => Buffer.from(m));
let udp = 0;
const socket = raw.createSocket({ protocol: 17, bufferSize: 70_000 });
socket.on('error', (err) => {
  process.stderr.write(`marker-listener: ${err.message}\n`);
  process.exit(1);
});
socket.on('message', (buf) => {
  udp++;
  const ihl = (buf[0] & 0x0f) * 4;
  const payload = buf.subarray(ihl + 8);
  needles.forEach((needle, i) => {
    if (payload.length >= needle.length && payload.subarray(0, needle.length).equals(needle)) {
      seen[markers[i]]++;
      process.stdout.write(`+${markers[i]}\n`);
    }
  });
});

function finish(): void {
  process.stdout.write(JSON.stringify({ seen, udp }) + '\n');
  socket.close();
  process.exit(0);
}
process.on('SIGTERM', finish);
process.on('SIGINT', finish);
process.stdout.write('listening\n');
