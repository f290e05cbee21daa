// Runs inside a pod namespace: like tcp-source.ts (connects, sends
// pseudo-random data, prints {"bytes", "sha256"} of what it sent once the
// peer has it all), but open-ended: it keeps sending until it gets SIGUSR2
// and has sent at least MIN_BYTES, so a test can make the transfer start
// before and end after whatever it does meanwhile, on any machine speed.
// Prints "sent <MiB>" every 8 MiB, so the test can wait for progress.
import { connect } from 'node:net';
import { createHash, randomBytes } from 'node:crypto';

const [host, portText, minText] = process.argv.slice(2);
const minBytes = Number(minText);
const CHUNK = 1 << 20;
const hash = createHash('sha256');
const base = randomBytes(CHUNK);
let sent = 0;
let counter = 0;
let stopRequested = false;

process.on('SIGUSR2', () => {
  stopRequested = true;
});

const socket = connect(Number(portText), host, () => pump());
socket.on('error', (err) => {
  process.stderr.write(`stream-source: ${err.message}\n`);
  process.exit(1);
});

function nextChunk(): Buffer {
  const chunk = Buffer.allocUnsafe(CHUNK);
  const src = new Uint32Array(base.buffer, base.byteOffset, CHUNK >>> 2);
  const dst = new Uint32Array(chunk.buffer, chunk.byteOffset, CHUNK >>> 2);
  counter++;
  for (let i = 0; i < dst.length; i++) dst[i] = src[i] ^ (counter * 2654435761 + i);
  return chunk;
}

function pump(): void {
  while (!(stopRequested && sent >= minBytes)) {
    const chunk = nextChunk();
    sent += chunk.length;
    hash.update(chunk);
    if (sent % (8 * CHUNK) === 0) process.stdout.write(`sent ${sent / CHUNK}\n`);
    if (!socket.write(chunk)) {
      socket.once('drain', pump);
      return;
    }
  }
  socket.end();
}

socket.on('close', (hadError) => {
  if (hadError) process.exit(1);
  process.stdout.write(JSON.stringify({ bytes: sent, sha256: hash.digest('hex') }) + '\n');
  process.exit(0);
});
// The sink answers end() with its own end(): wait for it, so "sent" means "received".
socket.on('end', () => socket.destroy());
socket.resume();
