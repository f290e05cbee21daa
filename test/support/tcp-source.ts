// Runs inside a pod namespace: connects, sends N bytes of pseudo-random data
// (a fresh random seed per run, so no cache or dedup can fake a match), and
// prints {"bytes": N, "sha256": "…"} of what it sent once the peer has it all.
import { connect } from 'node:net';
import { createHash, randomBytes } from 'node:crypto';

const [host, portText, totalText] = process.argv.slice(2);
const total = Number(totalText);
const CHUNK = 1 << 20;
const hash = createHash('sha256');
// One random megabyte, then every chunk is it XORed with a running counter:
// cheap to generate at gigabit rates, never repeating within a transfer.
const base = randomBytes(CHUNK);
let sent = 0;
let counter = 0;

const socket = connect(Number(portText), host, () => pump());
socket.setNoDelay(false);
socket.on('error', (err) => {
  process.stderr.write(`source: ${err.message}\n`);
  process.exit(1);
});

function nextChunk(): Buffer {
  const size = Math.min(CHUNK, total - sent);
  const chunk = Buffer.allocUnsafe(size);
  const words = size >>> 2;
  const src = new Uint32Array(base.buffer, base.byteOffset, CHUNK >>> 2);
  const dst = new Uint32Array(chunk.buffer, chunk.byteOffset, words);
  counter++;
  for (let i = 0; i < words; i++) dst[i] = src[i] ^ (counter * 2654435761 + i);
  for (let i = words << 2; i < size; i++) chunk[i] = base[i];
  return chunk;
}

function pump(): void {
  while (sent < total) {
    const chunk = nextChunk();
    sent += chunk.length;
    hash.update(chunk);
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
});
// The sink answers end() with its own end(): wait for it, so "sent" means "received".
socket.on('end', () => socket.destroy());
socket.resume();
