// The image recipe (Containerfile), checked without a container engine (the
// integration test image-daemonset builds and runs it with podman): every file it copies exists where the build puts
// it, the entrypoint is the built CLI and runs from the image's layout, the
// runtime stage ships no dev dependency the code imports, and the tools the
// agent execs come from the packages the runtime stage installs.
import { HELPER_COMMANDS } from '../../src/control/command-helper.js';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { cpSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { execFileSync, spawnSync } from 'node:child_process';
import { builtinModules } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { copies, execForm, last, parseInstructions, parseStages, type Stage } from '../support/containerfile.js';
import { requireTools } from '../support/required-tool.js';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const text = readFileSync(join(repo, 'Containerfile'), 'utf8');
const stages = parseStages(text);
const final = stages[stages.length - 1]!;
const byName = (name: string): Stage => {
  const s = stages.find((x) => x.name === name);
  if (!s) throw new Error(`no stage named ${name}`);
  return s;
};
/** A stage's instructions including those of the stages it is built FROM. */
function lineage(stage: Stage): Stage[] {
  const base = stages.find((s) => s.name === stage.image);
  return base ? [...lineage(base), stage] : [stage];
}
const runs = (stage: Stage) => lineage(stage).flatMap((s) => s.instructions.filter((i) => i.keyword === 'RUN').map((i) => i.args));
const workdir = (stage: Stage) => lineage(stage).flatMap((s) => s.instructions.filter((i) => i.keyword === 'WORKDIR').map((i) => i.args)).pop();

const ignored = readFileSync(join(repo, '.containerignore'), 'utf8')
  .split('\n')
  .map((l) => l.trim())
  .filter((l) => l && !l.startsWith('#'));
const isIgnored = (path: string) => ignored.some((p) => path === p || path.startsWith(`${p}/`));

test('the reader sees continuations, comments inside them and stages', () => {
  const ins = parseInstructions('# c\nFROM a AS b\nRUN x \\\n  # inner\n  && y\n');
  assert.equal(ins.map((i) => [i.keyword, i.args, i.line]), [['FROM', 'a AS b', 2], ['RUN', 'x && y', 3]]);
  assert.throws(() => parseStages('ARG X=1\nFROM ${Y}\n'), /undeclared ARG Y/);
});

test('every stage is on the BASE build argument (default: the official Node.js 24 image) or on an earlier stage', () => {
  assert.ok(stages.length >= 3, 'multi-stage');
  assert.match(text, /^ARG BASE=docker\.io\/library\/node:24-bookworm-slim$/m);
  for (const [i, s] of stages.entries()) {
    const earlier = stages.slice(0, i).map((x) => x.name);
    assert.ok(s.image === 'docker.io/library/node:24-bookworm-slim' || earlier.includes(s.image), `stage ${i} FROM ${s.image}`);
  }
  assert.is(final.image, 'docker.io/library/node:24-bookworm-slim', 'the runtime stage starts clean, not from the build stage');
  assert.ok(parseInstructions(text).filter((i) => i.keyword === 'FROM').every((i) => i.args.startsWith('${BASE}')), 'every FROM is ${BASE}');
});

test('every COPY from the build context names files that exist and are not in .containerignore', () => {
  const sources = stages.flatMap((s) => copies(s)).filter((c) => c.from === undefined).flatMap((c) => c.sources);
  assert.ok(sources.length > 0);
  for (const src of sources) {
    assert.ok(existsSync(join(repo, src)), `COPY ${src}: not in the repository`);
    assert.not.ok(isIgnored(src), `COPY ${src} is excluded by .containerignore`);
  }
});

test('.containerignore keeps local builds out; .dockerignore is the same file', () => {
  for (const p of ['node_modules', 'dist', '.git']) assert.ok(isIgnored(p), `${p} should be ignored`);
  assert.is(readFileSync(join(repo, '.dockerignore'), 'utf8'), readFileSync(join(repo, '.containerignore'), 'utf8'));
});

test('COPY --from takes what the earlier stage really produced: production node_modules, the compiled dist/src', () => {
  const fromStage = copies(final).filter((c) => c.from !== undefined);
  assert.equal(fromStage.map((c) => [c.from, c.sources]), [['deps', ['/app/node_modules']], ['build', ['/app/dist/src']]]);
  const deps = byName('deps');
  const build = byName('build');
  assert.ok(runs(deps).some((r) => /\bnpm ci\b.*--omit=dev/.test(r)), 'deps: npm ci --omit=dev');
  assert.ok(runs(build).some((r) => /\bnpm ci\b/.test(r) && !/--omit=dev/.test(r)), 'build: npm ci with dev dependencies');
  assert.ok(runs(build).some((r) => /\btsc -p tsconfig\.build\.json\b/.test(r)), 'build: tsc -p tsconfig.build.json (src only, as prepack)');
  assert.is(workdir(deps), '/app');
  assert.is(workdir(build), '/app');
  // tsc writes dist/src, holding the CLI and the CNI plugin.
  for (const f of ['dist/src/cli.js', 'dist/src/cni/main.js', 'dist/src/cni/install.js']) assert.ok(existsSync(join(repo, f)), `${f} (npm run build)`);
  // The build stage copies what tsconfig.build.json compiles, and the tsconfig.json it extends.
  const tsconfig = JSON.parse(readFileSync(join(repo, 'tsconfig.build.json'), 'utf8')) as { include: string[]; extends: string };
  assert.ok(copies(build).some((c) => c.sources.includes('tsconfig.json') && c.sources.includes('tsconfig.build.json')), 'both tsconfig files');
  const copied = copies(build).flatMap((c) => c.sources);
  for (const inc of tsconfig.include) assert.ok(copied.includes(inc.split('/')[0]!), `build stage copies ${inc.split('/')[0]} (tsconfig include ${inc})`);
  assert.not.ok(runs(final).some((r) => /npm (ci|install)|g\+\+|build-essential/.test(r)), 'no dependency install or compiler in the runtime stage');
});

test('the entrypoint is the built CLI: bin/flannel-udp, which loads dist/src/cli.js', () => {
  assert.equal(execForm(last(final, 'ENTRYPOINT')!), ['/app/bin/flannel-udp']);
  assert.is(workdir(final), '/app');
  assert.ok(copies(final).some((c) => c.sources.includes('bin') && (c.dest === './bin' || c.dest === '/app/bin')));
  assert.ok(statSync(join(repo, 'bin/flannel-udp')).mode & 0o111, 'bin/flannel-udp is executable');
  assert.match(readFileSync(join(repo, 'bin/flannel-udp'), 'utf8'), /^#!\/usr\/bin\/env node\n[\s\S]*import\('\.\.\/dist\/src\/cli\.js'\)/);
  assert.match(last(final, 'USER')?.args ?? '', /^0(:0)?$/, 'root, as the Containerfile explains');
});

test("the image's layout runs: package.json, bin/, dist/src/ and node_modules under one directory", () => {
  const dir = mkdtempSync(join(tmpdir(), 'image-layout-'));
  try {
    const app = join(dir, 'app');
    mkdirSync(app);
    cpSync(join(repo, 'package.json'), join(app, 'package.json'));
    cpSync(join(repo, 'bin'), join(app, 'bin'), { recursive: true });
    cpSync(join(repo, 'dist/src'), join(app, 'dist/src'), { recursive: true });
    symlinkSync(join(repo, 'node_modules'), join(app, 'node_modules'));
    const entry = join(app, 'bin/flannel-udp');
    const version = spawnSync(entry, ['--version'], { encoding: 'utf8' });
    assert.is(version.status, 0, version.stderr);
    assert.is(version.stdout.trim(), JSON.parse(readFileSync(join(repo, 'package.json'), 'utf8')).version);
    const help = spawnSync(entry, ['install-cni', '--help'], { encoding: 'utf8' });
    assert.is(help.status, 0, help.stderr);
    assert.ok(help.stdout.includes(join(app, 'dist/src/cni/main.js')), 'install-cni runs from the image copy');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

function jsFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? jsFiles(join(dir, e.name)) : e.name.endsWith('.js') ? [join(dir, e.name)] : []));
}

test('the shipped code imports only production dependencies (the image has no dev dependencies)', () => {
  const pkg = JSON.parse(readFileSync(join(repo, 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
  const builtins = new Set(builtinModules);
  const seen = new Set<string>();
  for (const file of jsFiles(join(repo, 'dist/src'))) {
    const code = readFileSync(file, 'utf8');
    for (const m of code.matchAll(/(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)['"]([^'"]+)['"]/g)) {
      const spec = m[1]!;
      if (spec.startsWith('.') || spec.startsWith('node:') || builtins.has(spec)) continue;
      const name = spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0]!;
      seen.add(name);
      assert.ok(name in pkg.dependencies, `${relative(repo, file)} imports ${spec}, which is not a production dependency`);
    }
  }
  assert.ok(seen.has('koffi'), 'the scan sees bare imports');
});

test('the tools the agent execs come from the packages the runtime stage installs', () => {
  const installed = runs(final)
    .flatMap((r) => r.match(/apt-get install ([^&]+)/)?.[1]?.split(/\s+/) ?? [])
    .filter((w) => w && !w.startsWith('-'));
  const tools = new Set<string>();
  for (const file of jsFiles(join(repo, 'dist/src/control'))) {
    for (const m of readFileSync(file, 'utf8').matchAll(/\b(?:execFile|execFileAsync|run|exec)\(\s*'([\w.-]+)'/g)) tools.add(m[1]!);
  }
  // What the agent's command helper may run (src/control/command-helper.ts) is exec'd too.
  for (const t of HELPER_COMMANDS) tools.add(t);
  assert.equal([...tools].sort(), ['ip', 'ip6tables', 'ip6tables-restore', 'iptables', 'iptables-restore']);
  requireTools(...tools, 'iptables-nft', 'iptables-legacy');
  for (const tool of tools) {
    // Resolved through the alternatives symlinks to the file a package owns.
    const path = realpathSync(execFileSync('sh', ['-c', `command -v ${tool}`], { encoding: 'utf8' }).trim());
    // With merged /usr, dpkg may know /usr/bin/ip as /bin/ip.
    const candidates = [path, path.replace(/^\/usr\//, '/')];
    const owner = candidates
      .map((c) => spawnSync('dpkg', ['-S', c], { encoding: 'utf8' }))
      .find((r) => r.status === 0)
      ?.stdout.split(':')[0];
    assert.ok(owner, `no Debian package owns ${path}`);
    assert.ok(installed.includes(owner), `${tool} (${path}) is in Debian package ${owner}, not installed by the runtime stage (${installed.join(' ')})`);
  }
  // update-alternatives --set iptables /usr/sbin/iptables-<backend>: both backends exist in Debian's package.
  assert.match(text, /update-alternatives --set iptables \/usr\/sbin\/iptables-\$\{IPTABLES_BACKEND\}/);
  assert.match(text, /update-alternatives --set ip6tables \/usr\/sbin\/ip6tables-\$\{IPTABLES_BACKEND\}/);
  for (const backend of ['nft', 'legacy']) assert.ok(lstatSync(`/usr/sbin/iptables-${backend}`), `/usr/sbin/iptables-${backend}`);
});

test.run();
