// Runs inside a pod namespace: accepts one TCP connection, hashes everything
// it receives, and prints {"bytes": N, "sha256": "…"} when the sender closes.
import { createServer } from 'node:net';
import { createHash } from 'node:crypto';

const [host, portText] = process.argv.slice(2);
const server = createServer((socket) => {
  const hash = createHash('sha256');
  let bytes = 0;
  socket.on('data', (chunk) => {
    bytes += chunk.length;
    hash.update(chunk);
  });
  socket.on('end', () => {
    process.stdout.write(JSON.stringify({ bytes, sha256: hash.digest('hex') }) + '\n');
    socket.end();
    server.close();
  });
  socket.on('error', (err) => {
    process.stderr.write(`sink: ${err.message}\n`);
    process.exit(1);
  });
});
server.listen(Number(portText), host, () => process.stdout.write('listening\n'));
