// Summarises a V8 .cpuprofile (from `npm run bench -- --profile DIR`) in the terminal: where the time went,
// by function (self time) and by function including what it called (total time), so a profile can be read
// on a headless box without DevTools. Usage: node dist-bench/bench/profile-summary.js FILE [--top N]
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

interface ProfileNode {
  readonly id: number;
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number };
  readonly children?: readonly number[];
}

interface CpuProfile {
  readonly nodes: readonly ProfileNode[];
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
}

const { values, positionals } = parseArgs({ allowPositionals: true, options: { top: { type: 'string', default: '30' } } });
if (positionals.length !== 1) {
  process.stderr.write('Usage: node dist-bench/bench/profile-summary.js FILE.cpuprofile [--top N]\n');
  process.exit(2);
}
const top = Number(values.top);
const profile = JSON.parse(readFileSync(positionals[0]!, 'utf8')) as CpuProfile;

const byId = new Map(profile.nodes.map((node) => [node.id, node]));
const parentOf = new Map<number, number>();
for (const node of profile.nodes) for (const child of node.children ?? []) parentOf.set(child, node.id);

// Microseconds of samples whose leaf is each node.
const selfTime = new Map<number, number>();
profile.samples.forEach((id, i) => selfTime.set(id, (selfTime.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)));
let total = 0;
for (const time of selfTime.values()) total += time;

function label(node: ProfileNode): string {
  const { functionName, url, lineNumber } = node.callFrame;
  const file = url.replace(/^file:\/\//, '').replace(/^.*\/(node_modules\/)/, '$1').replace(/^.*\/(dist|src)\//, '$1/');
  return `${functionName || '(anonymous)'} ${file ? `${file}:${lineNumber + 1}` : ''}`.trim();
}

const selfByLabel = new Map<string, number>();
const totalByLabel = new Map<string, number>();
for (const [id, time] of selfTime) {
  const leaf = byId.get(id)!;
  selfByLabel.set(label(leaf), (selfByLabel.get(label(leaf)) ?? 0) + time);
  // Count each function once per sample even when it recurses.
  const seen = new Set<string>();
  for (let at: number | undefined = id; at !== undefined; at = parentOf.get(at)) {
    const name = label(byId.get(at)!);
    if (seen.has(name)) continue;
    seen.add(name);
    totalByLabel.set(name, (totalByLabel.get(name) ?? 0) + time);
  }
}

function print(title: string, table: Map<string, number>): void {
  process.stdout.write(`\n${title}\n`);
  const rows = [...table].sort((a, b) => b[1] - a[1]).slice(0, top);
  for (const [name, time] of rows) {
    process.stdout.write(`${((time / total) * 100).toFixed(1).padStart(5)}%  ${(time / 1000).toFixed(0).padStart(7)} ms  ${name}\n`);
  }
}

process.stdout.write(`${(total / 1e6).toFixed(2)} s sampled\n`);
print('self time', selfByLabel);
print('total time (including callees)', totalByLabel);
