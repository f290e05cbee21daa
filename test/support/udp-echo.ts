// A UDP echo for seeing addresses as the far end sees them.
//   udp-echo.js serve HOST PORT   prints "listening", then for each datagram
//                                 {"from": "<source address>", "port": N, "text": "…"} and echoes it back
//   udp-echo.js ask HOST PORT [TIMEOUT_MS]
//                                 sends one datagram, prints {"reply": true, "text": "…"} or {"reply": false}
import { createSocket } from 'node:dgram';

const [mode, host, portText, timeoutText = '3000'] = process.argv.slice(2);
const port = Number(portText);
const socket = createSocket('udp4');

if (mode === 'serve') {
  // A reply that cannot be sent (no route back to the sender) is reported, not fatal.
  socket.on('error', (err) => process.stderr.write(`udp-echo: ${err.message}\n`));
  socket.on('message', (msg, rinfo) => {
    process.stdout.write(JSON.stringify({ from: rinfo.address, port: rinfo.port, text: msg.toString() }) + '\n');
    socket.send(msg, rinfo.port, rinfo.address, (err) => {
      if (err) process.stderr.write(`udp-echo: reply to ${rinfo.address}: ${err.message}\n`);
    });
  });
  socket.bind(port, host, () => process.stdout.write('listening\n'));
} else if (mode === 'ask') {
  const timer = setTimeout(() => {
    process.stdout.write(JSON.stringify({ reply: false }) + '\n');
    process.exit(0);
  }, Number(timeoutText));
  socket.on('message', (msg) => {
    clearTimeout(timer);
    process.stdout.write(JSON.stringify({ reply: true, text: msg.toString() }) + '\n');
    process.exit(0);
  });
  socket.send(Buffer.from(`hello from ${process.pid}`), port, host);
} else {
  process.stderr.write('usage: udp-echo.js serve|ask HOST PORT [TIMEOUT_MS]\n');
  process.exit(2);
}
