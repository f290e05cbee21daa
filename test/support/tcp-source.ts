// Runs inside a pod namespace: connects, sends pseudo-random data (a fresh
// random seed per run, so no cache or dedup can fake a match), and prints
// {"bytes": N, "sha256": "…"} of what it sent once the peer has it all.
//
//   tcp-source.js HOST PORT BYTES                  sends exactly BYTES
//   tcp-source.js HOST PORT MIN_BYTES --until-sigusr2
//     open-ended: keeps sending until it gets SIGUSR2 and has sent at least
//     MIN_BYTES, so a test can make the transfer start before and end after
//     whatever it does meanwhile, on any machine speed; prints "sent <MiB>"
//     every 8 MiB, so the test can wait for progress.
import { connect } from 'node:net';
import { createHash } from 'node:crypto';
import { CHUNK, PseudoRandomChunks } from './pseudo-random-chunks.js';

const [host, portText, bytesText, mode] = process.argv.slice(2);
const openEnded = mode === '--until-sigusr2';
const bytes = Number(bytesText);
const hash = createHash('sha256');
const chunks = new PseudoRandomChunks();
let sent = 0;
let stopRequested = false;

process.on('SIGUSR2', () => {
  stopRequested = true;
});

const socket = connect(Number(portText), host, () => pump());
socket.setNoDelay(false);
socket.on('error', (err) => {
  process.stderr.write(`source: ${err.message}\n`);
  process.exit(1);
});

function more(): boolean {
  return openEnded ? !(stopRequested && sent >= bytes) : sent < bytes;
}

function pump(): void {
  while (more()) {
    const chunk = chunks.next(openEnded ? CHUNK : Math.min(CHUNK, bytes - sent));
    sent += chunk.length;
    hash.update(chunk);
    if (openEnded && sent % (8 * CHUNK) === 0) process.stdout.write(`sent ${sent / CHUNK}\n`);
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
