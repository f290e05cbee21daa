// One table per command: each flag's name, kind, placeholder, default and
// help text. The parser's options and the --help text are both generated
// from it, so a flag cannot be accepted without being documented (nor the
// other way round). Adding flags = appending a FlagGroup to a command's table.
import { parseArgs } from 'node:util';

export interface FlagSpec {
  /** long name without dashes: 'subnet-file' */
  name: string;
  /**
   * string: takes a value; boolean: takes none; optional: a number may
   * follow (stats --watch [SECONDS]), which node's parseArgs cannot express.
   */
  type: 'string' | 'boolean' | 'optional';
  short?: string;
  /** placeholder in the help: 'FILE' */
  value?: string;
  /** one or more sentences, wrapped to the help's width; text with line breaks is kept as laid out */
  help: string;
  /** shown as [default: …] */
  default?: string;
}

export interface FlagGroup {
  /** heading of this group in --help ('Options for up:'); '' for none */
  title: string;
  flags: readonly FlagSpec[];
}

/** A bad flag or value: the CLI prints `flannel-udp: <message>` and exits 2. */
export class CommandLineError extends Error {
  override name = 'CommandLineError';
}

const HELP_WIDTH = 80;
const HELP_INDENT = 23;

function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(/\s+/).filter((w) => w !== '')) {
    if (line !== '' && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else line = line === '' ? word : `${line} ${word}`;
  }
  if (line !== '') lines.push(line);
  return lines;
}

function flagLabel(f: FlagSpec): string {
  const long = `--${f.name}`;
  const value = f.value === undefined ? '' : f.type === 'optional' ? ` [${f.value}]` : ` ${f.value}`;
  return `${f.short ? `-${f.short}, ` : ''}${long}${value}`;
}

/** The option sections of a command's --help, from its table. */
export function renderFlagHelp(groups: readonly FlagGroup[]): string {
  const out: string[] = [];
  for (const group of groups) {
    if (group.title !== '') out.push(group.title);
    for (const f of group.flags) {
      const label = `  ${flagLabel(f)}`;
      const text = f.default === undefined ? f.help : `${f.help} [default: ${f.default}]`;
      const body = text.includes('\n') ? text.split('\n') : wrap(text, HELP_WIDTH - HELP_INDENT);
      const pad = ' '.repeat(HELP_INDENT);
      // The text starts on the label's line when the label leaves room for it.
      if (label.length < HELP_INDENT - 1) out.push(label.padEnd(HELP_INDENT) + (body.shift() ?? ''));
      else out.push(label);
      for (const l of body) out.push(pad + l);
    }
    out.push('');
  }
  return out.join('\n');
}

export function allFlags(groups: readonly FlagGroup[]): FlagSpec[] {
  return groups.flatMap((g) => g.flags);
}

export type FlagValues = Record<string, string | boolean | undefined>;

/**
 * Parses argv against the table. Every problem (unknown flag, missing value,
 * stray argument) is a CommandLineError naming the command, never a stack trace.
 */
export function parseFlags(command: string, argv: readonly string[], groups: readonly FlagGroup[]): FlagValues {
  const flags = allFlags(groups);
  const args = [...argv];
  const values: FlagValues = {};
  // Optional-value flags first: `--watch 5` or `--watch` alone.
  for (const f of flags.filter((f) => f.type === 'optional')) {
    const at = args.indexOf(`--${f.name}`);
    if (at < 0) continue;
    const next = args[at + 1];
    const takesValue = next !== undefined && /^[0-9]+(\.[0-9]+)?$/.test(next);
    values[f.name] = takesValue ? next : '';
    args.splice(at, takesValue ? 2 : 1);
  }
  const options: Record<string, { type: 'string' | 'boolean'; short?: string }> = {};
  for (const f of flags) {
    if (f.type === 'optional') continue;
    options[f.name] = f.short ? { type: f.type, short: f.short } : { type: f.type };
  }
  try {
    const parsed = parseArgs({ args, options, strict: true, allowPositionals: false });
    return { ...values, ...(parsed.values as FlagValues) };
  } catch (err) {
    // node's messages ("Unknown option '--x'. To specify a positional argument…") are long; keep their first sentence.
    const message = (err as Error).message.split('. ')[0].replace(/\.$/, '');
    throw new CommandLineError(`${command}: ${message}; see flannel-udp ${command} --help`);
  }
}
