// `install-cni --runtime-dir DIR`: a copy of node and the compiled plugin on
// the host, for when install-cni runs in a container. The runtime executes
// CNI plugins on the host, where the image's node and dist/ do not exist, so
// the plugin script must point at files the host has. DIR must be a hostPath
// mounted at the same path in the container, so the paths written into the
// script mean the same thing on both sides.
//
// Layout: DIR/node-<version>-<arch>-<hash>/{node, package.json, src/...}, one
// directory per content (hash of the compiled JavaScript), built in a temp
// directory and renamed into place, so a plugin running during an upgrade
// never sees a half-copied tree. Older bundles are removed once the script
// points at the new one. The copied node is linked against the image's
// glibc and libstdc++ (Debian bookworm): the host needs glibc >= 2.28.
import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';

export const BUNDLE_PREFIX = 'node-';

/** Every .js file under dir, relative paths, sorted (so the hash does not depend on readdir order). */
function jsFiles(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const entry of readdirSync(d, { withFileTypes: true })) {
      const path = join(d, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (entry.isFile() && entry.name.endsWith('.js')) out.push(relative(dir, path));
    }
  };
  walk(dir);
  return out.sort();
}

export interface BundlePlan {
  runtimeDir: string;
  /** The bundle's directory name, DIR/<name>. */
  name: string;
  dir: string;
  /** Where node and the plugin will be, the paths the plugin script runs. */
  nodePath: string;
  mainPath: string;
  sourceNode: string;
  srcDir: string;
  files: string[];
}

/**
 * Where the bundle of nodePath and the compiled tree srcDir (dist/src, which
 * holds pluginMain) goes in runtimeDir. Nothing is written.
 */
export function planRuntimeBundle(runtimeDir: string, nodePath: string, srcDir: string, pluginMain: string): BundlePlan {
  const files = jsFiles(srcDir);
  const mainRel = relative(srcDir, pluginMain);
  if (!files.includes(mainRel)) throw new Error(`${pluginMain} is not inside ${srcDir}`);
  const hash = createHash('sha256');
  for (const f of files) hash.update(f).update('\0').update(readFileSync(join(srcDir, f))).update('\0');
  const name = `${BUNDLE_PREFIX}${process.version}-${process.arch}-${hash.digest('hex').slice(0, 16)}`;
  const dir = join(runtimeDir, name);
  return { runtimeDir, name, dir, nodePath: join(dir, 'node'), mainPath: join(dir, 'src', mainRel), sourceNode: nodePath, srcDir, files };
}

/** Copies the bundle into place unless it is there already. */
export function installRuntimeBundle(plan: BundlePlan): 'installed' | 'unchanged' {
  const { runtimeDir, dir, srcDir, files } = plan;
  // A bundle whose node has the source's size is complete: it was renamed into place whole.
  if (existsSync(plan.nodePath) && statSync(plan.nodePath).size === statSync(plan.sourceNode).size) return 'unchanged';
  if (existsSync(dir)) rmSync(dir, { recursive: true, force: true });

  mkdirSync(runtimeDir, { recursive: true, mode: 0o755 });
  const temp = mkdtempSync(join(runtimeDir, '.bundle-'));
  try {
    chmodSync(temp, 0o755);
    copyFileSync(plan.sourceNode, join(temp, 'node'));
    chmodSync(join(temp, 'node'), 0o755);
    // The compiled files are ES modules; node decides that from the nearest package.json.
    writeFileSync(join(temp, 'package.json'), '{"type": "module"}\n', { mode: 0o644 });
    for (const f of files) {
      mkdirSync(dirname(join(temp, 'src', f)), { recursive: true, mode: 0o755 });
      copyFileSync(join(srcDir, f), join(temp, 'src', f));
      chmodSync(join(temp, 'src', f), 0o644);
    }
    renameSync(temp, dir);
  } catch (err) {
    rmSync(temp, { recursive: true, force: true });
    throw err;
  }
  return 'installed';
}

/** Removes every bundle but keep (and leftovers of interrupted copies). */
export function pruneRuntimeBundles(runtimeDir: string, keep: string): string[] {
  const removed: string[] = [];
  for (const entry of readdirSync(runtimeDir, { withFileTypes: true })) {
    if (!entry.isDirectory() || entry.name === keep) continue;
    if (!entry.name.startsWith(BUNDLE_PREFIX) && !entry.name.startsWith('.bundle-')) continue;
    rmSync(join(runtimeDir, entry.name), { recursive: true, force: true });
    removed.push(join(runtimeDir, entry.name));
  }
  return removed.sort();
}
