// Runs inside a pod namespace: connects, sends N bytes of pseudo-random data
// (a fresh random seed per run, so no cache or dedup can fake a match), and
// prints {"bytes": N, "sha256": "…"} of what it sent once the peer has it all.
import { connect } from 'node:net';
import { createHash } from 'node:crypto';
import { CHUNK, PseudoRandomChunks } from './pseudo-random-chunks.js';

const [host, portText, totalText] = process.argv.slice(2);
const total = Number(totalText);
const hash = createHash('sha256');
const chunks = new PseudoRandomChunks();
let sent = 0;

const socket = connect(Number(portText), host, () => pump());
socket.setNoDelay(false);
socket.on('error', (err) => {
  process.stderr.write(`source: ${err.message}\n`);
  process.exit(1);
});

function pump(): void {
  while (sent < total) {
    const chunk = chunks.next(Math.min(CHUNK, total - sent));
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
