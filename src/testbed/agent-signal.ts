// Asking a running agent for its counters: SIGUSR1 makes it print one JSON
// line (its AgentStats: node, backend, ready, workers, leases) on stderr,
// which the testbed keeps in the child's log. Shared by the tests and the
// benchmark; each parses the line for what it needs.
import type { CapturedChild } from './exec.js';

/** The SIGUSR1 answer: one JSON object with a "workers" array (other keys, e.g. "node", come first). */
export function isStatsLine(line: string): boolean {
  return line.startsWith('{') && line.includes('"workers":[');
}

/**
 * Sends SIGUSR1 and resolves with the first stats line printed after it (so
 * an older line in the log is never taken) and how long the answer took.
 * Rejects after `timeoutMs`: a liveness bound, so a hung agent fails its
 * caller instead of hanging it.
 */
export function requestStatsLine(agent: CapturedChild, timeoutMs: number): Promise<{ line: string; answeredMs: number }> {
  const pid = agent.pid;
  if (pid === undefined || agent.exitCode !== null || agent.signalCode !== null) {
    return Promise.reject(new Error(`the agent is not running (pid ${pid}, exit ${agent.exitCode ?? agent.signalCode}); its output:\n${agent.log.tail(20)}`));
  }
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const onLine = (line: string) => {
      if (!isStatsLine(line)) return;
      finish();
      resolve({ line, answeredMs: performance.now() - started });
    };
    const finish = () => {
      clearTimeout(timer);
      agent.log.off('line', onLine);
    };
    const timer = setTimeout(() => {
      finish();
      reject(new Error(`agent pid ${pid} printed no stats within ${timeoutMs} ms of SIGUSR1; its output:\n${agent.log.tail(20)}`));
    }, timeoutMs);
    agent.log.on('line', onLine);
    try {
      process.kill(pid, 'SIGUSR1');
    } catch (err) {
      finish();
      reject(new Error(`cannot signal agent pid ${pid}: ${(err as Error).message}`));
    }
  });
}
