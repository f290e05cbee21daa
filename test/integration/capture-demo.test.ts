// Runs the demo traffic through two agents with --capture
// (src/testbed/capture-demo.ts, the same code that made captures/demo/) and
// checks the fresh captures, then the committed ones (read by
// captures/README.md) the same way: the files a reader opens must show what a
// live run of the current code shows. Root.
import { test } from 'uvu';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { captureDemo } from '../../src/testbed/capture-demo.js';
import { checkEchoTtls, checkLinkTypes, checkNetUnreachable, checkTcpBothWays } from '../support/demo-captures.js';

const COMMITTED = fileURLToPath(new URL('../../../captures/demo/', import.meta.url));

test('a live capture of the demo traffic, and the committed one, show the crossings, TTLs, ICMP net unreachable and TCP both ways', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'flannel-udp-live-captures-'));
  try {
    await captureDemo(join(dir, 'demo'));
    for (const captures of [join(dir, 'demo'), COMMITTED]) {
      await checkLinkTypes(captures);
      await checkEchoTtls(captures);
      await checkNetUnreachable(captures);
      await checkTcpBothWays(captures);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
