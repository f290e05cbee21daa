// Page faults of the agent with --ip-masq over a minute of pings (issue 21):
// a fork write-protects every page of the forking process, so each fork made
// after the workers started costs them a fault per page they write next. With
// the iptables resync in the command helper the agent forks no more.
//
//   npm run build && node dist/bench/ip-masq-faults.js [--seconds 60]
//
// A fresh two-node testbed with --ip-masq (iptables re-checked every 5 s, the
// default); after the agents are ready and 2 s of pings, minor faults of each
// agent (/proc/<pid>/stat, all threads, and its forwarding threads alone when
// they are named flannel-w<i>) over --seconds of pings 0.2 s apart.
import { parseArgs } from 'node:util';
import { readFileSync, readdirSync } from 'node:fs';
import { createCluster } from '../src/testbed/cluster.js';
import { ping } from '../src/testbed/measure.js';

const { values } = parseArgs({ options: { seconds: { type: 'string', default: '60' } } });
const seconds = Number(values.seconds);

const minflt = (path: string) => {
  const stat = readFileSync(path, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[7]); // field 10
};
function faults(pid: number): { process: number; workers: number } {
  let workers = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    if (readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').startsWith('flannel-w')) workers += minflt(`/proc/${pid}/task/${tid}/stat`);
  }
  return { process: minflt(`/proc/${pid}/stat`), workers };
}

const cluster = await createCluster({ nodes: 2, agentArgs: ['--ip-masq'] });
try {
  const [p1, p2] = [cluster.pod(1), cluster.pod(2)];
  await ping(cluster, p1.ns, p2.ip, { count: 10, intervalS: 0.2 });
  const pids = cluster.nodes().map((n) => cluster.agent(n.index)!.pid!);
  const before = pids.map(faults);
  const r = await ping(cluster, p1.ns, p2.ip, { count: Math.round(seconds / 0.2), intervalS: 0.2 });
  const after = pids.map(faults);
  pids.forEach((pid, k) => {
    console.log(
      `node ${k + 1} agent (pid ${pid}): ${after[k]!.process - before[k]!.process} minor faults in ${seconds} s (whole process), ` +
        `${after[k]!.workers - before[k]!.workers} in its forwarding threads; ${r.received}/${r.sent} pings, avg ${r.rttAvgMs.toFixed(3)} ms`,
    );
  });
} finally {
  await cluster.destroy();
}
