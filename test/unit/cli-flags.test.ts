// Every command's --help comes from the table its parser uses, so the two
// cannot drift; every unknown or incomplete flag of every command is one
// clear `flannel-udp: …` line with exit code 2, never a stack trace.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { allFlags, CommandLineError, parseFlags, renderFlagHelp, type FlagGroup } from '../../src/cli-flags.js';
import { UP_FLAGS } from '../../src/up-flags.js';
import { STATS_FLAGS, TRACE_FLAGS } from '../../src/observe/commands.js';
import { INSTALL_FLAGS } from '../../src/cni/install.js';

const CLI = fileURLToPath(new URL('../../src/cli.js', import.meta.url));

function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) =>
    execFile(process.execPath, [CLI, ...args], { timeout: 20_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr }),
    ),
  );
}

const COMMANDS: [string, readonly FlagGroup[]][] = [
  ['up', UP_FLAGS],
  ['stats', STATS_FLAGS],
  ['trace', TRACE_FLAGS],
  ['install-cni', INSTALL_FLAGS],
];

/** The flags a help text documents: the "--name" that starts an option line. */
function documentedFlags(help: string): string[] {
  return [...help.matchAll(/^ {2}(?:-[a-z], )?--([a-z0-9-]+)/gm)].map((m) => m[1]).sort();
}

test('--busy-poll, parsed by up, is documented by up --help', async () => {
  const r = await cli(['up', '--help']);
  assert.is(r.code, 0);
  assert.match(r.stdout, /^ {2}--busy-poll US +\S/m);
});

for (const [command, table] of COMMANDS) {
  test(`${command} --help documents exactly the flags ${command}'s parser accepts`, async () => {
    const r = await cli([command, '--help']);
    assert.is(r.code, 0, r.stderr);
    const names = allFlags(table).map((f) => f.name).sort();
    assert.equal(documentedFlags(r.stdout), names);
    // and each of them really parses
    for (const f of allFlags(table)) {
      const args = f.type === 'string' ? [`--${f.name}`, 'x'] : [`--${f.name}`];
      assert.not.throws(() => parseFlags(command, args, table), `--${f.name}`);
    }
  });

  test(`${command}: an unknown flag, a missing value, a stray argument: one line, exit 2`, async () => {
    const valueFlag = allFlags(table).find((f) => f.type === 'string')!;
    const cases = [['--no-such-flag'], ['--etcd-usernme', 'u'], [`--${valueFlag.name}`], ['stray']];
    const results = await Promise.all(cases.map((args) => cli([command, ...args]))); // independent: started together
    for (const [i, args] of cases.entries()) {
      const r = results[i];
      assert.is(r.code, 2, `${command} ${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, /^flannel-udp: /, `${command} ${args.join(' ')}`);
      assert.is(r.stderr.trimEnd().split('\n').length, 1, r.stderr);
      assert.not.match(r.stderr, /\n\s+at |TypeError|ERR_PARSE_ARGS/);
      assert.match(r.stderr, new RegExp(`see flannel-udp ${command} --help`));
    }
  });
}

test('the table renders flag, placeholder, default, wrapped text, and keeps laid-out text', () => {
  const text = renderFlagHelp([
    {
      title: 'Options:',
      flags: [
        { name: 'alpha', type: 'string', value: 'N', default: '3', help: 'word '.repeat(30).trim() },
        { name: 'a-rather-long-flag-name', type: 'boolean', help: 'short' },
        { name: 'laid', type: 'string', value: 'X', help: 'line one\n  line two' },
        { name: 'watch', type: 'optional', value: 'S', help: 'maybe a value' },
      ],
    },
  ]);
  const lines = text.split('\n');
  assert.is(lines[0], 'Options:');
  assert.match(lines[1], /^ {2}--alpha N {12}word word/);
  assert.ok(lines.every((l) => l.length <= 80), text);
  assert.match(text, /word \[default: 3\]/);
  assert.match(text, /^ {2}--a-rather-long-flag-name\n {23}short$/m);
  assert.match(text, /^ {2}--laid X {13}line one\n {23} {2}line two$/m);
  assert.match(text, /^ {2}--watch \[S\] +maybe a value$/m);
});

test('optional-value flags: with a number, alone, and followed by another flag', () => {
  const t: FlagGroup[] = [{ title: '', flags: [{ name: 'watch', type: 'optional', help: '' }, { name: 'json', type: 'boolean', help: '' }] }];
  assert.equal(parseFlags('stats', ['--watch', '5'], t), { watch: '5' });
  assert.equal(parseFlags('stats', ['--watch'], t), { watch: '' });
  assert.equal(parseFlags('stats', ['--watch', '--json'], t), { watch: '', json: true });
  assert.throws(() => parseFlags('stats', ['--watch', 'soon'], t), (e: Error) => e instanceof CommandLineError);
});

test.run();
