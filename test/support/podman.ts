// Podman for the integration tests: the project's image built by
// scripts/image.sh (on the offline base), containers labelled with the owning
// test process so that a later run removes what a killed run left, and the
// repository's containers.conf (image/containers.conf) for every call.
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { run, type RunOptions, type RunResult } from '../../src/testbed/exec.js';
import { repoRoot } from './deploy-manifest.js';

export const CONTAINERS_CONF = join(repoRoot, 'image/containers.conf');
/** Label on every container a test starts; its value is the test process's pid. */
export const OWNER_LABEL = 'flannel-udp-test-owner';

const env = (): NodeJS.ProcessEnv => ({ ...process.env, CONTAINERS_CONF });

/** Fails with what to install when podman is missing. */
export function requirePodman(): string {
  try {
    return execFileSync('podman', ['--version'], { encoding: 'utf8', env: env() }).trim();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new Error('this test needs podman (Debian packages podman, buildah, mmdebstrap, runc; scripts/setup.sh installs them)');
    }
    throw err;
  }
}

export function podman(args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return run('podman', args, { timeoutMs: 120_000, ...opts, env: { ...env(), ...opts.env } });
}

/**
 * `npm run image`'s script with the image named `name`; the base comes from
 * scripts/image-base.sh's cache (built there first if missing). Returns how
 * long it took.
 */
export async function buildImage(name: string): Promise<{ seconds: number; log: string }> {
  const started = Date.now();
  const r = await run('bash', [join(repoRoot, 'scripts/image.sh')], { timeoutMs: 20 * 60_000, env: { ...env(), FLANNEL_UDP_IMAGE: name } });
  return { seconds: (Date.now() - started) / 1000, log: r.stderr };
}

/**
 * Removes the name only: the layers stay as podman's build cache (as the base
 * image stays cached), so the next run does not rebuild what did not change.
 * `podman image prune` frees them.
 */
export async function untagImage(name: string): Promise<void> {
  // The name twice: `podman untag IMAGE` alone removes every name of the image, e.g. the
  // localhost/flannel-udp:<version> `npm run image` gave the same build.
  await podman(['untag', name, name], { timeoutMs: 60_000 }).catch(() => undefined);
}

/** Containers (running or not) whose owner label is a process that no longer runs, or this one. */
export async function removeContainers(owner: 'dead' | number): Promise<string[]> {
  const out = await podman(['ps', '-a', '--filter', `label=${OWNER_LABEL}`, '--format', `{{.Names}} {{index .Labels "${OWNER_LABEL}"}}`]);
  const names: string[] = [];
  for (const line of out.stdout.split('\n')) {
    const [name, pid] = line.trim().split(/\s+/);
    if (!name || !pid) continue;
    const mine = owner === 'dead' ? !alive(Number(pid)) : Number(pid) === owner;
    if (mine) names.push(name);
  }
  // -t 10: SIGTERM first, so the agents remove their TUN devices and rules, then SIGKILL.
  if (names.length) await podman(['rm', '--force', '--time', '10', ...names], { timeoutMs: 120_000 }).catch(() => undefined);
  return names;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
