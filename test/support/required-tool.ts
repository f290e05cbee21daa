// The command-line tools the tests drive: a missing tool fails its test with
// what to install, not with a bare "spawnSync … ENOENT" (or "exec of … failed"
// from ip netns exec). The table of tools and Debian packages is the
// testbed's (src/testbed/tools.ts), whose run/spawn helpers check the same way.
import { execFileSync, type ExecFileSyncOptions } from 'node:child_process';
import { missingToolError, requireTools, TOOL_PACKAGES } from '../../src/testbed/tools.js';

export { requireTools, TOOL_PACKAGES };

export function runRequiredTool(tool: string, debianPackage: string, args: readonly string[], opts: ExecFileSyncOptions = {}): string {
  try {
    return execFileSync(tool, args, { encoding: 'utf8', ...opts }) as string;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw missingToolError(tool, debianPackage);
    throw err;
  }
}

/** runRequiredTool with the package from TOOL_PACKAGES. */
export function runTool(tool: string, args: readonly string[], opts: ExecFileSyncOptions = {}): string {
  return runRequiredTool(tool, TOOL_PACKAGES[tool] ?? 'unknown', args, opts);
}
