// Runs inside a pod namespace, in one of two roles:
//   tcp-echo.js server HOST PORT   echoes every byte back; prints "listening"
//   tcp-echo.js client HOST PORT   connects once and keeps the connection:
//                                  on start and on each SIGUSR2 it sends
//                                  "ping <n>\n" and prints "echo <n>" when the
//                                  line comes back on the same connection.
// The client never reconnects: a connection that broke shows as an error.
import { createServer, connect } from 'node:net';

const [role, host, portText] = process.argv.slice(2);
const port = Number(portText);

if (role === 'server') {
  const server = createServer((socket) => {
    socket.pipe(socket);
    socket.on('error', (err) => process.stderr.write(`echo server: ${err.message}\n`));
  });
  server.listen(port, host, () => process.stdout.write('listening\n'));
} else {
  let n = 0;
  let pending = '';
  const socket = connect(port, host, () => {
    process.stdout.write(`connected from port ${socket.localPort}\n`);
    ping();
  });
  const ping = () => {
    n++;
    socket.write(`ping ${n}\n`);
  };
  socket.setEncoding('utf8');
  socket.on('data', (text: string) => {
    pending += text;
    let nl: number;
    while ((nl = pending.indexOf('\n')) >= 0) {
      const line = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      const m = /^ping (\d+)$/.exec(line);
      process.stdout.write(m ? `echo ${m[1]} from port ${socket.localPort}\n` : `unexpected ${JSON.stringify(line)}\n`);
    }
  });
  socket.on('error', (err) => {
    process.stdout.write(`error ${err.message}\n`);
    process.exit(1);
  });
  socket.on('close', () => {
    process.stdout.write('closed\n');
    process.exit(0);
  });
  process.on('SIGUSR2', ping);
  process.on('SIGTERM', () => socket.end());
}
