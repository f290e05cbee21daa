// Runs a command-line tool a test needs; a missing tool fails the test with
// what to install, not with a bare "spawnSync … ENOENT".
import { execFileSync, type ExecFileSyncOptions } from 'node:child_process';

export function runRequiredTool(tool: string, debianPackage: string, args: readonly string[], opts: ExecFileSyncOptions = {}): string {
  try {
    return execFileSync(tool, args, { encoding: 'utf8', ...opts }) as string;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new Error(`this test needs ${tool} (Debian package ${debianPackage}; scripts/setup.sh installs it)`);
    }
    throw err;
  }
}
