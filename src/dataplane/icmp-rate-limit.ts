// How often this node answers with an ICMP error, limited as the kernel
// limits its own (net/ipv4/icmp.c): a token bucket per destination of the
// error (the pod that sent the offending packet), 1 per icmp_ratelimit
// (1000 ms) with a burst of 6 (XRLIM_BURST_FACTOR), and a global bucket of
// icmp_msgs_per_sec (1000/s) with a burst of icmp_msgs_burst (50).
// Fragmentation-needed is exempt from the per-source limit, as in the kernel
// (path MTU discovery must not starve), but still counts against the global one.
//
// Fixed memory, no allocation: each source has two candidate entries in a
// table (two hashes) and keeps the one it holds. A source in neither takes a
// free one, or one left alone for 6 s (by then refilled to a full burst, so
// its owner loses nothing); when both are busy it shares the bucket of the
// one used longest ago without taking it over. So sources that collide never
// reset each other to a full burst (that cancelled the limit): at worst they
// share a bucket for a while, which only limits them more.

const PER_SOURCE_INTERVAL_MS = 1000;
const PER_SOURCE_BURST = 6;
const FULL_CREDIT = PER_SOURCE_BURST * PER_SOURCE_INTERVAL_MS;
const GLOBAL_PER_SECOND = 1000;
const GLOBAL_BURST = 50;
const TABLE_BITS = 10;
const TABLE_SIZE = 1 << TABLE_BITS;

export class IcmpRateLimiter {
  private readonly sources = new Int32Array(TABLE_SIZE);
  /** Per entry: the token credit in ms (a token is PER_SOURCE_INTERVAL_MS) and when it was last topped up. */
  private readonly credit = new Float64Array(TABLE_SIZE);
  private readonly last = new Float64Array(TABLE_SIZE);
  private readonly used = new Uint8Array(TABLE_SIZE);
  private globalTokens = GLOBAL_BURST;
  private globalLast = -Infinity;

  /** Whether an error to `source` (int32 or uint32) may be sent at nowMs; takes the tokens if so. */
  allow(source: number, nowMs: number, perSourceExempt: boolean): boolean {
    const elapsed = nowMs - this.globalLast;
    this.globalLast = nowMs;
    this.globalTokens = Math.min(GLOBAL_BURST, this.globalTokens + (elapsed * GLOBAL_PER_SECOND) / 1000);
    if (this.globalTokens < 1) return false;
    if (!perSourceExempt) {
      const i = this.entryOf(source | 0, nowMs);
      const credit = Math.min(FULL_CREDIT, this.credit[i] + nowMs - this.last[i]);
      this.last[i] = nowMs;
      if (credit < PER_SOURCE_INTERVAL_MS) {
        this.credit[i] = credit;
        return false;
      }
      this.credit[i] = credit - PER_SOURCE_INTERVAL_MS;
    }
    this.globalTokens -= 1;
    return true;
  }

  /** The table entry of `key`: its own, a free or idle one it takes, or a busy one it shares. */
  private entryOf(key: number, nowMs: number): number {
    const a = firstEntry(key);
    if (this.used[a] === 1 && this.sources[a] === key) return a;
    const b = secondEntry(key);
    if (this.used[b] === 1 && this.sources[b] === key) return b;
    const i = this.used[a] === 0 ? a : this.used[b] === 0 ? b : this.last[a] <= this.last[b] ? a : b;
    if (this.used[i] === 0 || nowMs - this.last[i] >= FULL_CREDIT) {
      this.used[i] = 1;
      this.sources[i] = key;
      this.credit[i] = FULL_CREDIT;
      this.last[i] = nowMs;
    }
    return i;
  }
}

/** The two table entries a source may hold (exported for tests that need sources that collide). */
export function firstEntry(source: number): number {
  return Math.imul(source | 0, 0x9e3779b1) >>> (32 - TABLE_BITS);
}
export function secondEntry(source: number): number {
  return Math.imul((source | 0) ^ 0x5bd1e995, 0x85ebca6b) >>> (32 - TABLE_BITS);
}
