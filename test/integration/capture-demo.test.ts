// The live counterpart of test/unit/committed-captures.test.ts: runs the demo
// traffic through two agents with --capture (src/testbed/capture-demo.ts, the
// same code that made captures/demo/) and checks the fresh captures. Root.
import { test } from 'uvu';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { captureDemo } from '../../src/testbed/capture-demo.js';
import { checkEchoTtls, checkLinkTypes, checkNetUnreachable, checkTcpBothWays } from '../support/demo-captures.js';

test('a live capture of the demo traffic shows the crossings, TTLs, ICMP net unreachable and TCP both ways', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'flannel-udp-live-captures-'));
  try {
    await captureDemo(join(dir, 'demo'));
    await checkLinkTypes(join(dir, 'demo'));
    await checkEchoTtls(join(dir, 'demo'));
    await checkNetUnreachable(join(dir, 'demo'));
    await checkTcpBothWays(join(dir, 'demo'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
