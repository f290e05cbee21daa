// Defect 5: a start that fails part-way must not leak descriptors. A child
// process with a low descriptor limit opens worker sockets (VXLAN: a receive
// socket, 8 senders and an eventfd each) until the limit makes one open fail
// (EMFILE), at any step; after closing what did open, it must be back at the
// descriptors it started with. Loopback only, no root.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFile } from 'node:child_process';
import { openWorkerSockets, closeWorkerSockets } from '../../src/dataplane/worker-sockets.js';

const mod = JSON.stringify(new URL('../../src/dataplane/worker-sockets.js', import.meta.url).href);

const child = `
import { readdirSync, openSync, closeSync } from 'node:fs';
import { openWorkerSockets, closeWorkerSockets } from ${mod};
const count = () => readdirSync('/proc/self/fd').length;
const results = [];
for (let spare = 0; spare < 12; spare++) {
  // Take up all but 'spare' descriptors, so the open fails at a different step each time.
  const before = count();
  const fillers = [];
  for (let f = 0; f < spare; f++) fillers.push(openSync('/dev/null', 'r'));
  const opened = [];
  let error = '';
  try {
    for (;;) opened.push(openWorkerSockets({ bindAddress: 0x7f000001, port: 0, socketBufferBytes: 1 << 16, offload: false, vxlan: { sourcePorts: 8, udpChecksum: true } }));
  } catch (e) {
    error = String(e.message);
  }
  for (const s of opened) closeWorkerSockets(s);
  for (const fd of fillers) closeSync(fd);
  const leaked = count() - before;
  results.push({ opened: opened.length, error, leaked });
  if (leaked !== 0) break; // the next rounds would run out of descriptors for the fillers
}
process.stdout.write(JSON.stringify(results) + '\\n');
`;

test('defect 5: descriptors opened before a failed open are closed again', async () => {
  const out = await new Promise<string>((resolve, reject) =>
    execFile(
      'bash',
      ['-c', `ulimit -n 90 && exec "${process.execPath}" --input-type=module -e "$CHILD"`],
      { env: { ...process.env, CHILD: child }, timeout: 60_000 },
      (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout)),
    ),
  );
  const results = JSON.parse(out.trim().split('\n').pop()!) as { opened: number; error: string; leaked: number }[];
  for (const r of results) assert.match(r.error, /Too many open files|EMFILE|errno 24/, 'the open failed for lack of descriptors');
  const leaks = results.map((r) => r.leaked);
  assert.is(results.length, 12, `every step of the opening failed once without a leak: ${JSON.stringify(leaks)}`);
  assert.equal(leaks, leaks.map(() => 0), `descriptors left open after each failed start: ${JSON.stringify(leaks)}`);
});

test('UDP mode sends from its one socket, the one it receives on; VXLAN from senders of their own, each on its own port', () => {
  const udp = openWorkerSockets({ bindAddress: 0x7f000001, port: 0, socketBufferBytes: 1 << 16, offload: false });
  const vxlan = openWorkerSockets({ bindAddress: 0x7f000001, port: 0, socketBufferBytes: 1 << 16, offload: false, vxlan: { sourcePorts: 4, udpChecksum: true } });
  try {
    assert.equal(udp.sendFds, [udp.udpFd]);
    assert.is(udp.sendPorts.length, 1);
    assert.ok(udp.sendPorts[0] > 0);
    assert.is(vxlan.sendFds.length, 4);
    assert.not.ok(vxlan.sendFds.includes(vxlan.udpFd), 'the receive socket never sends');
    assert.is(new Set(vxlan.sendPorts).size, 4, `four source ports: ${vxlan.sendPorts}`);
  } finally {
    closeWorkerSockets(udp);
    closeWorkerSockets(vxlan);
  }
});

test.run();
