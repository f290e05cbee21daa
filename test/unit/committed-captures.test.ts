// The example files committed in captures/demo/ (read by captures/README.md):
// a check that they show what that README describes. It runs no current code
// beyond the packet parsers; test/integration/capture-demo.test.ts makes the
// same captures from a live run and checks them the same way.
import { test } from 'uvu';
import { fileURLToPath } from 'node:url';
import { checkEchoTtls, checkLinkTypes, checkNetUnreachable, checkTcpBothWays } from '../support/demo-captures.js';

const COMMITTED = fileURLToPath(new URL('../../../captures/demo/', import.meta.url));

test('committed: each node has the four crossings, raw IPv4 on the TUN side and Ethernet on the UDP side', () => checkLinkTypes(COMMITTED));
test("committed: the echo requests cross node 1's TUN with TTL 63, leave it with 62, enter node 2's TUN with 61", () => checkEchoTtls(COMMITTED));
test('committed: the ping to a subnet with no lease is never sent; ICMP net unreachable goes back into the TUN', () => checkNetUnreachable(COMMITTED));
test('committed: the TCP exchange crosses both ways', () => checkTcpBothWays(COMMITTED));

test.run();
