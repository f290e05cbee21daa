// Spreading periodic and retry timers over time, so that N agents started
// together (a cluster booting, a DaemonSet rolled out, the control plane
// coming back after an outage) do not hit etcd or the API server in step.
// Without it, 50 agents started in the same second probe etcd in the same
// 50 ms every 5 s, and after an etcd restart all of them re-read every lease
// at 100 ms, 200 ms, 400 ms … after it is back (docs/design.md, "Scale").

/** A delay drawn uniformly from [ms * (1 - spread), ms]: never longer than ms, so a bound stays a bound. */
export function jittered(ms: number, spread = 0.5, random: () => number = Math.random): number {
  return ms * (1 - spread * random());
}

/**
 * Calls fn every intervalMs on average, each wait drawn from
 * [intervalMs * (1 - spread/2), intervalMs * (1 + spread/2)], the first one
 * from [0, intervalMs]: agents started together drift apart at once.
 * Returns the function that stops it. The timer does not keep the process alive.
 */
export function jitteredInterval(fn: () => void, intervalMs: number, spread = 0.4, random: () => number = Math.random): () => void {
  let timer: NodeJS.Timeout;
  let stopped = false;
  const arm = (ms: number) => {
    timer = setTimeout(() => {
      if (stopped) return;
      fn();
      if (!stopped) arm(intervalMs * (1 + spread * (random() - 0.5)));
    }, ms);
    timer.unref?.();
  };
  arm(intervalMs * random());
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
