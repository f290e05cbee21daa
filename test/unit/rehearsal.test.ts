// The rehearsal (src/dataplane/rehearsal.ts) forwards every made-up packet it
// sends, in both modes, with and without virtio headers, and leaves the
// worker's forwarding path optimised by V8's TurboFan where a fresh worker has
// it in the interpreter. Optimisation is read with V8's own
// %GetOptimizationStatus in a child process (--allow-natives-syntax), with
// compilation on the main thread (--no-concurrent-recompilation) so the status
// is final when read. The control case, the same child without the rehearsal,
// shows the assertion can fail. No timing is asserted.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFile } from 'node:child_process';

const src = (path: string) => JSON.stringify(new URL(`../../src/${path}`, import.meta.url).href);

// V8's OptimizationStatus bits (src/runtime/runtime-test.cc).
const TURBOFANNED = 1 << 6;

function child(backend: 'udp' | 'vxlan', vnet: boolean, rehearse: boolean): string {
  return `
import { rehearse } from ${src('dataplane/rehearsal.js')};
import { WorkerMemory } from ${src('dataplane/worker-memory.js')};
import { Forwarder } from ${src('dataplane/forwarder.js')};
import { WorkerLoop } from ${src('dataplane/worker-loop.js')};
import { KernelTun } from ${src('dataplane/kernel-tun.js')};
import { KernelBind } from ${src('dataplane/kernel-bind.js')};
const fns = {
  'WorkerLoop.turn': WorkerLoop.prototype.turn,
  'Forwarder.forwardOutbound': Forwarder.prototype.forwardOutbound,
  'Forwarder.forwardInbound': Forwarder.prototype.forwardInbound,
  'KernelTun.read': KernelTun.prototype.read,
  'KernelBind.receive': KernelBind.prototype.receive,
};
const memory = new WorkerMemory(64, ${vnet}, 1472);
const result = ${rehearse}
  ? rehearse({ backend: '${backend}', batchSize: 64, vnetHeader: ${vnet}, udpGro: ${vnet}, tunUso: ${vnet}, udpGso: ${vnet},
      vni: 1, vtepMac: new Uint8Array([2, 0, 0, 0, 0, 1]), mtu: 1472, pathMtu: 1472,
      sendSockets: ${backend === 'vxlan' ? 4 : 1}, offload: ${vnet}, udpChecksum: true }, memory)
  : null;
const status = Object.fromEntries(Object.entries(fns).map(([name, f]) => [name, %GetOptimizationStatus(f)]));
process.stdout.write(JSON.stringify({ result, status }) + '\\n');
`;
}

function run(backend: 'udp' | 'vxlan', vnet: boolean, rehearse: boolean) {
  return new Promise<{ result: Record<string, number> | null; status: Record<string, number> }>((resolve, reject) =>
    execFile(
      process.execPath,
      ['--allow-natives-syntax', '--no-concurrent-recompilation', '--input-type=module', '-e', child(backend, vnet, rehearse)],
      { timeout: 120_000 },
      (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(JSON.parse(stdout.trim().split('\n').pop()!))),
    ),
  );
}

const turbofanned = (status: Record<string, number>) => Object.entries(status).filter(([, s]) => (s & TURBOFANNED) !== 0).map(([name]) => name);

test('control: without the rehearsal, none of the forwarding path is optimised (the check below can fail)', async () => {
  const { status } = await run('udp', false, false);
  assert.equal(turbofanned(status), []);
});

for (const backend of ['udp', 'vxlan'] as const) {
  for (const vnet of [false, true]) {
    test(`${backend} mode, offloads ${vnet ? 'on' : 'off'}: every rehearsal packet is forwarded both ways, and the path is left optimised`, async () => {
      const { result, status } = await run(backend, vnet, true);
      assert.ok(result);
      assert.ok(result.outboundSent > 1000, `${result.outboundSent} packets out`);
      assert.is(result.outboundForwarded, result.outboundSent, 'TUN → UDP: every packet sent on');
      assert.is(result.inboundForwarded, result.inboundSent, 'UDP → TUN: every packet written');
      assert.is(result.inboundSent, result.outboundSent);
      assert.is(result.drops, 0);
      assert.equal(turbofanned(status), Object.keys(status), JSON.stringify(status));
    });
  }
}

test.run();
