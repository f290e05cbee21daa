// Runs inside a namespace: opens COUNT TCP connections to HOST:PORT (from
// LOCAL_ADDRESS when given, one of the namespace's own addresses), each
// sending an unfinished HTTP request (no blank line), and holds them, as a
// slow or hostile client on the underlay would. Prints one JSON line when
// every attempt has settled ({"settled":N,"open":K,"refused":R}), then one
// per connection the server closes ({"open":K}), until killed.
import { connect, type Socket } from 'node:net';

const [host, portText, countText, localAddress] = process.argv.slice(2);
const port = Number(portText);
const count = Number(countText);
const PARALLEL = 16;
const sockets = new Set<Socket>();
let settled = 0;
let refused = 0;
let reported = false;

function settle(): void {
  settled++;
  if (settled === count) {
    reported = true;
    process.stdout.write(JSON.stringify({ settled, open: sockets.size, refused }) + '\n');
  }
}

function open(i: number): void {
  if (i >= count) return;
  const s = connect({ host, port, localAddress });
  let connected = false;
  s.on('connect', () => {
    connected = true;
    sockets.add(s);
    s.write(`GET /healthz HTTP/1.1\r\nHost: ${host}\r\nX-Slow: `);
    // Reading keeps the socket (and this process) alive and sees the server's answer or close.
    s.resume();
    settle();
    open(i + PARALLEL);
  });
  s.on('error', () => undefined);
  s.on('close', () => {
    if (!connected) {
      refused++;
      settle();
      open(i + PARALLEL);
      return;
    }
    sockets.delete(s);
    if (reported) process.stdout.write(JSON.stringify({ open: sockets.size }) + '\n');
  });
}
// A few in parallel, like a client that does not wait for answers: chain k opens k, k+16, k+32, …
for (let k = 0; k < PARALLEL; k++) open(k);
