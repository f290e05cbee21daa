// Sums a `perf report --no-children --sort sym --stdio -g none` listing into
// the three shares of issue 23's table: the kernel (samples in [k] symbols:
// work done inside the agent's syscalls and the interrupts it took), our
// JavaScript (JIT frames whose script is under dist/src/, named through
// --perf-basic-prof, and wasm functions), and the glue (Node, V8, koffi, libc, other JS).

export type ShareClass = 'kernel' | 'ours' | 'glue';

export interface SymbolShare {
  pct: number;
  symbol: string;
  cls: ShareClass;
}

export interface Shares {
  total: Record<ShareClass, number>;
  symbols: SymbolShare[];
}

// "    14.70%  [k] pvm_irq_enable" or "     2.10%  [.] JS:*onesComplementSum file:///…/dist/src/encap/checksum.js:87"
const LINE = /^\s*([\d.]+)%\s+\[(.)\]\s+(.*\S)\s*$/;

export function classifySymbol(kind: string, symbol: string): ShareClass {
  if (kind === 'k') return 'kernel';
  // Our wasm (the checksum, src/encap/checksum-wasm.ts) is the only wasm an agent runs.
  return /\/dist\/src\/|wasm-function\[/.test(symbol) ? 'ours' : 'glue';
}

export function classifyReport(report: string): Shares {
  const total: Record<ShareClass, number> = { kernel: 0, ours: 0, glue: 0 };
  const symbols: SymbolShare[] = [];
  for (const line of report.split('\n')) {
    if (line.startsWith('#')) continue;
    const m = LINE.exec(line);
    if (!m) continue;
    const pct = Number(m[1]);
    const cls = classifySymbol(m[2]!, m[3]!);
    total[cls] += pct;
    symbols.push({ pct, symbol: m[3]!, cls });
  }
  return { total, symbols };
}

/** Strips the script URL from a JS frame's name, keeping the function and its tier mark. */
function shortName(symbol: string): string {
  const m = /^(?:JS|LazyCompile|Function):([*~^]?\S*)\s+\S*\/([^/]+\.js):\d+/.exec(symbol);
  return m ? `${m[1]} (${m[2]})` : symbol;
}

export function formatShares(shares: Shares, top: number): string {
  const lines: string[] = [];
  for (const cls of ['kernel', 'ours', 'glue'] as const) {
    const label = cls === 'kernel' ? 'kernel, in our syscalls' : cls === 'ours' ? 'our JavaScript' : 'Node/V8/koffi glue, libc';
    const items = shares.symbols.filter((s) => s.cls === cls).slice(0, top).map((s) => `${shortName(s.symbol)} ${s.pct.toFixed(1)}`);
    lines.push(`  ${label.padEnd(26)} ${shares.total[cls].toFixed(1).padStart(5)} %   ${items.join(', ')}`);
  }
  return lines.join('\n');
}
