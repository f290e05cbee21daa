// A reader for the few Containerfile (Dockerfile) forms our recipe uses, so a
// test can check what no container engine here can build: instructions with
// backslash continuations joined and comments dropped, stages named by
// FROM ... AS, COPY with its --from and sources, and the exec-form ENTRYPOINT.
export interface Instruction {
  keyword: string;
  args: string;
  line: number;
}

export interface CopyInstruction {
  from?: string;
  sources: string[];
  dest: string;
  line: number;
}

export interface Stage {
  image: string;
  name?: string;
  instructions: Instruction[];
}

export function parseInstructions(text: string): Instruction[] {
  const out: Instruction[] = [];
  let pending = '';
  let start = 0;
  for (const [i, raw] of text.split('\n').entries()) {
    if (pending === '' && /^\s*(#|$)/.test(raw)) continue;
    if (pending !== '' && /^\s*#/.test(raw)) continue; // a comment inside a continued instruction
    if (pending === '') start = i + 1;
    const continued = /\\\s*$/.test(raw);
    pending += (pending ? ' ' : '') + raw.replace(/\\\s*$/, '').trim();
    if (continued) continue;
    const m = /^(\S+)\s*(.*)$/.exec(pending)!;
    out.push({ keyword: m[1]!.toUpperCase(), args: m[2]!, line: start });
    pending = '';
  }
  if (pending !== '') throw new Error(`line ${start}: instruction continued past the end of the file`);
  return out;
}

/** ARG defaults declared before the first FROM, substituted into FROM lines. */
export function parseStages(text: string): Stage[] {
  const args = new Map<string, string>();
  const stages: Stage[] = [];
  for (const ins of parseInstructions(text)) {
    if (ins.keyword === 'ARG' && stages.length === 0) {
      const [k, v = ''] = ins.args.split('=');
      args.set(k!, v);
      continue;
    }
    if (ins.keyword === 'FROM') {
      const expanded = ins.args.replace(/\$\{(\w+)\}|\$(\w+)/g, (_, a, b) => {
        const v = args.get(a ?? b);
        if (v === undefined) throw new Error(`line ${ins.line}: FROM uses undeclared ARG ${a ?? b}`);
        return v;
      });
      const m = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(expanded);
      if (!m) throw new Error(`line ${ins.line}: cannot read FROM ${ins.args}`);
      stages.push({ image: m[1]!, ...(m[2] ? { name: m[2] } : {}), instructions: [] });
      continue;
    }
    if (stages.length === 0) throw new Error(`line ${ins.line}: ${ins.keyword} before the first FROM`);
    stages[stages.length - 1]!.instructions.push(ins);
  }
  return stages;
}

export function copies(stage: Stage): CopyInstruction[] {
  return stage.instructions
    .filter((i) => i.keyword === 'COPY')
    .map((i) => {
      const words = i.args.split(/\s+/);
      let from: string | undefined;
      while (words[0]?.startsWith('--')) {
        const flag = words.shift()!;
        if (flag.startsWith('--from=')) from = flag.slice('--from='.length);
        else throw new Error(`line ${i.line}: COPY flag ${flag} is not one this reader knows`);
      }
      if (words.length < 2) throw new Error(`line ${i.line}: COPY needs a source and a destination`);
      const dest = words.pop()!;
      return { ...(from ? { from } : {}), sources: words, dest, line: i.line };
    });
}

/** The last instruction of this keyword in the stage, as the engine uses it. */
export function last(stage: Stage, keyword: string): Instruction | undefined {
  return stage.instructions.filter((i) => i.keyword === keyword).pop();
}

/** ENTRYPOINT or CMD in exec (JSON) form; shell form is refused, it would not get signals. */
export function execForm(ins: Instruction): string[] {
  let v: unknown;
  try {
    v = JSON.parse(ins.args);
  } catch {
    throw new Error(`line ${ins.line}: ${ins.keyword} is not in exec form (a JSON list)`);
  }
  if (!Array.isArray(v) || v.length === 0 || !v.every((s) => typeof s === 'string')) throw new Error(`line ${ins.line}: ${ins.keyword} must be a non-empty list of strings`);
  return v as string[];
}
