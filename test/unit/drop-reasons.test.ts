import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { DropReason, dropReasonNames, DROP_REASON_COUNT } from '../../src/encap/drop-reasons.js';

test('every code has its own name at its own index, and the counter block covers the highest code', () => {
  for (const code of Object.values(DropReason)) assert.ok(code < DROP_REASON_COUNT, `code ${code} outside the block`);
  assert.is(dropReasonNames[DropReason.NoLease], 'no-lease');
  assert.is(dropReasonNames[DropReason.NotIPv4], 'not-ipv4');
  assert.is(dropReasonNames[DropReason.NotUdp], 'not-udp');
  assert.is(dropReasonNames[DropReason.TooManySegments], 'too-many-segments');
  assert.is(new Set(Object.values(DropReason)).size, Object.keys(DropReason).length, 'codes are unique');
});

test.run();
