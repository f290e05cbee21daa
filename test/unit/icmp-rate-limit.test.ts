// The ICMP error limiter (src/dataplane/icmp-rate-limit.ts) when sources
// collide in its fixed table: colliding sources must not reset each other to
// a full burst (that cancelled the per-source limit), and with many sources
// at once none may get more than its burst plus one error a second.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { IcmpRateLimiter, firstEntry, secondEntry } from '../../src/dataplane/icmp-rate-limit.js';

const BASE = 0x0af40000; // 10.244.0.0

/** Sources after `after` whose entries satisfy `same`. */
function sourcesLike(a: number, count: number, same: (s: number) => boolean): number[] {
  const out: number[] = [];
  for (let s = a + 1; out.length < count; s++) if (same(s)) out.push(s);
  return out;
}

/** Each source asks `rounds` times at nowMs, taking turns; how many errors each got. */
function alternate(l: IcmpRateLimiter, sources: number[], nowMs: number, rounds = 20): number[] {
  const got = sources.map(() => 0);
  for (let r = 0; r < rounds; r++) sources.forEach((s, i) => l.allow(s, nowMs, false) && got[i]++);
  return got;
}

test('two sources sharing their first entry keep a burst and a rate each: neither resets the other', () => {
  const a = BASE + 5;
  const [b] = sourcesLike(a, 1, (s) => firstEntry(s) === firstEntry(a));
  const l = new IcmpRateLimiter();
  assert.equal(alternate(l, [a, b], 1000), [6, 6]);
  assert.equal(alternate(l, [a, b], 1999), [0, 0], 'no new burst for either');
  assert.equal(alternate(l, [a, b], 2000), [1, 1], 'a token a second each');
});

test('three sources with the same two entries: the third shares a bucket, it never gets a fresh one', () => {
  const a = BASE + 5;
  const [b, c] = sourcesLike(a, 2, (s) => (firstEntry(s) === firstEntry(a) && secondEntry(s) === secondEntry(a)) || (firstEntry(s) === secondEntry(a) && secondEntry(s) === firstEntry(a)));
  const l = new IcmpRateLimiter();
  const first = alternate(l, [a, b, c], 1000);
  assert.is(first[0] + first[1] + first[2], 12, `two buckets among the three, no fresh one for the third: ${first}`);
  assert.ok(first.includes(6) && first[2] < 6, `one keeps its own, the third shares the other's: ${first}`);
  // Over the next 10 s the three share two buckets: at most two errors a second among them.
  let later = 0;
  for (let t = 1100; t <= 11_000; t += 100) later += alternate(l, [a, b, c], t, 1).reduce((x, y) => x + y, 0);
  assert.ok(later <= 2 * 10 + 1, `errors among the three in 10 s: ${later}`);
  assert.ok(later >= 10, `but they are not silenced: ${later}`);
});

test('200 sources at once (more pods than a node runs), each asking ten times a second for 20 s: none gets more than its burst plus one a second', () => {
  const l = new IcmpRateLimiter();
  const sources = Array.from({ length: 200 }, (_, i) => BASE + 0x100 + i * 7);
  const got = new Map(sources.map((s) => [s, 0]));
  for (let t = 0; t <= 20_000; t += 100) for (const s of sources) if (l.allow(s, t, false)) got.set(s, got.get(s)! + 1);
  const counts = [...got.values()];
  assert.ok(Math.max(...counts) <= 6 + 20, `most errors to one source: ${Math.max(...counts)}`);
  // The few whose two entries are both taken share a bucket; the rest have their own.
  const ownRate = counts.filter((n) => n >= 20).length;
  assert.ok(ownRate >= 190, `sources answered about once a second: ${ownRate} of 200`);
});

test.run();
