// A rehearsal that cannot run must cost latency, never the node: in a network
// namespace whose loopback is down (unshare -n makes one), the rehearsal's
// sockets cannot bind, and the worker must start anyway with a log line that
// says why. Needs root (unshare -n).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFile } from 'node:child_process';

const src = (path: string) => JSON.stringify(new URL(`../../src/${path}`, import.meta.url).href);

const child = `
import { rehearseOrSkip } from ${src('dataplane/worker-build.js')};
import { WorkerMemory } from ${src('dataplane/worker-memory.js')};
const data = {
  workerIndex: 3, backend: 'udp', batchSize: 64, vnetHeader: false, udpGro: false, tunUso: false, udpGso: false,
  vni: 1, vtepMac: new Uint8Array(6), mtu: 1472, pathMtu: 1472, sendFds: [0], offload: false, udpChecksum: true,
};
const lines = [];
const result = rehearseOrSkip(data, new WorkerMemory(64, false, 1472), (r) => lines.push(r.line));
process.stdout.write(JSON.stringify({ result: result ?? null, lines }) + '\\n');
`;

test('loopback down: the rehearsal is skipped with a log line, and the worker is built anyway', async () => {
  if (process.getuid?.() !== 0) throw new Error('this test needs root (unshare -n makes a network namespace)');
  const out = await new Promise<string>((resolve, reject) =>
    execFile('unshare', ['-n', process.execPath, '--input-type=module', '-e', child], { timeout: 60_000 }, (err, stdout, stderr) =>
      err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout),
    ),
  );
  const { result, lines } = JSON.parse(out.trim().split('\n').pop()!) as { result: unknown; lines: string[] };
  assert.is(result, null);
  assert.is(lines.length, 1);
  assert.match(lines[0], /^worker 3: rehearsal skipped, the first packets will run unoptimised code: .+/);
});

test.run();
