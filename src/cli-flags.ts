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
  /** string flags only: may be given more than once (flanneld's --iface); the value is then a list */
  multiple?: boolean;
}

/**
 * flanneld's flags (and FLANNELD_* variables) this command does not take:
 * flag name → what to use instead. Refused with that text rather than
 * node's "Unknown option".
 */
export type UnsupportedFlags = Readonly<Record<string, string>>;

export interface ParseFlagsOptions {
  /**
   * Read every flag not on the command line from `${envPrefix}_<FLAG>`
   * (upper case, dashes as underscores), as flanneld reads FLANNELD_*; the
   * command line wins, an empty variable counts as unset.
   */
  envPrefix?: string;
  env?: NodeJS.ProcessEnv;
  unsupported?: UnsupportedFlags;
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

export type FlagValues = Record<string, string | string[] | boolean | undefined>;

/** Go's strconv.ParseBool, which flanneld's boolean flags and variables go through. */
export function parseGoBool(text: string): boolean | undefined {
  if (['1', 't', 'T', 'TRUE', 'true', 'True'].includes(text)) return true;
  if (['0', 'f', 'F', 'FALSE', 'false', 'False'].includes(text)) return false;
  return undefined;
}

/** The variable flanneld would read a flag from: FLANNELD_IFACE_REGEX for iface-regex. */
export function envName(prefix: string, flag: string): string {
  return `${prefix}_${flag.toUpperCase().replace(/-/g, '_')}`;
}

/**
 * Parses argv against the table. Every problem (unknown flag, missing value,
 * stray argument) is a CommandLineError naming the command, never a stack trace.
 */
export function parseFlags(command: string, argv: readonly string[], groups: readonly FlagGroup[], parse: ParseFlagsOptions = {}): FlagValues {
  const flags = allFlags(groups);
  const byName = new Map(flags.map((f) => [f.name, f]));
  const values: FlagValues = {};
  const args: string[] = [];
  // As Go's flag package (flanneld): -name works like --name, and a boolean takes =true / =false.
  for (const arg of argv) {
    const m = /^--?([A-Za-z0-9_][\w-]*)(?:=(.*))?$/s.exec(arg);
    if (!m || (arg[1] !== '-' && m[1].length < 2 && parse.unsupported?.[m[1]] === undefined)) {
      args.push(arg);
      continue;
    }
    const [, name, value] = m;
    const hint = parse.unsupported?.[name];
    if (hint !== undefined && !byName.has(name)) throw new CommandLineError(`${command}: flanneld's --${name} is not supported: ${hint}`);
    const f = byName.get(name);
    if (f?.type === 'boolean' && value !== undefined) {
      const b = parseGoBool(value);
      if (b === undefined) throw new CommandLineError(`${command}: --${name}: "${value}" is not true or false`);
      if (b) args.push(`--${name}`);
      else values[name] = false;
      continue;
    }
    args.push(f && arg[1] !== '-' ? `-${arg}` : arg);
  }
  // Optional-value flags first: `--watch 5` or `--watch` alone.
  for (const f of flags.filter((f) => f.type === 'optional')) {
    const at = args.indexOf(`--${f.name}`);
    if (at < 0) continue;
    const next = args[at + 1];
    const takesValue = next !== undefined && /^[0-9]+(\.[0-9]+)?$/.test(next);
    values[f.name] = takesValue ? next : '';
    args.splice(at, takesValue ? 2 : 1);
  }
  const options: Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean }> = {};
  for (const f of flags) {
    if (f.type === 'optional') continue;
    options[f.name] = { type: f.type, ...(f.short ? { short: f.short } : {}), ...(f.multiple ? { multiple: true } : {}) };
  }
  let parsed: FlagValues;
  try {
    parsed = { ...values, ...(parseArgs({ args, options, strict: true, allowPositionals: false }).values as FlagValues) };
  } catch (err) {
    // node's messages ("Unknown option '--x'. To specify a positional argument…") are long; keep their first sentence.
    const message = (err as Error).message.split('. ')[0].replace(/\.$/, '');
    throw new CommandLineError(`${command}: ${message}; see flannel-udp ${command} --help`);
  }
  if (parse.envPrefix !== undefined) readFlagsFromEnv(command, parsed, flags, parse);
  return parsed;
}

/** flanneld's SetFlagsFromEnv: each flag not on the command line, from its variable when that is set and not empty. */
function readFlagsFromEnv(command: string, values: FlagValues, flags: readonly FlagSpec[], parse: ParseFlagsOptions): void {
  const env = parse.env ?? process.env;
  const prefix = parse.envPrefix as string;
  for (const f of flags) {
    if (f.name === 'help' || f.type === 'optional' || values[f.name] !== undefined) continue;
    const name = envName(prefix, f.name);
    const text = env[name];
    if (text === undefined || text === '') continue;
    if (f.type === 'boolean') {
      const b = parseGoBool(text);
      if (b === undefined) throw new CommandLineError(`${command}: ${name}: "${text}" is not true or false`);
      values[f.name] = b;
    } else values[f.name] = f.multiple ? [text] : text;
  }
  for (const [flag, hint] of Object.entries(parse.unsupported ?? {})) {
    const name = envName(prefix, flag);
    if (env[name] !== undefined && env[name] !== '') throw new CommandLineError(`${command}: ${name} (flanneld's --${flag}) is not supported: ${hint}`);
  }
}
