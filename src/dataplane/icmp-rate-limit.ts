// How often this node answers with an ICMP error, limited as the kernel
// limits its own (net/ipv4/icmp.c): a token bucket per destination of the
// error (the pod that sent the offending packet), 1 per icmp_ratelimit
// (1000 ms) with a burst of 6 (XRLIM_BURST_FACTOR), and a global bucket of
// icmp_msgs_per_sec (1000/s) with a burst of icmp_msgs_burst (50).
// Fragmentation-needed is exempt from the per-source limit, as in the kernel
// (path MTU discovery must not starve), but still counts against the global one.
//
// Fixed memory, no allocation: sources hash into a small table; a collision
// replaces the older entry, which can only make the limit more lenient for a
// moment, never block a source that has not sent.

const PER_SOURCE_INTERVAL_MS = 1000;
const PER_SOURCE_BURST = 6;
const GLOBAL_PER_SECOND = 1000;
const GLOBAL_BURST = 50;
const TABLE_SIZE = 256; // power of two

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
      const key = source | 0;
      const i = Math.imul(key, 0x9e3779b1) >>> 24; // top 8 bits: TABLE_SIZE 256
      if (this.used[i] === 0 || this.sources[i] !== key) {
        this.used[i] = 1;
        this.sources[i] = key;
        this.credit[i] = PER_SOURCE_BURST * PER_SOURCE_INTERVAL_MS;
        this.last[i] = nowMs;
      }
      const credit = Math.min(PER_SOURCE_BURST * PER_SOURCE_INTERVAL_MS, this.credit[i] + nowMs - this.last[i]);
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
}
