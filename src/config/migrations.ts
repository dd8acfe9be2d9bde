// Renamed configuration keys. An upgrade must never brick a box: a file (or environment) still using an
// old name keeps working — the value is used under the new name, with a warning — and
// `coap2mqtt check-config --migrate` rewrites the file, keeping the original as a backup.
import { isDeepStrictEqual } from 'node:util';
import JSON5 from 'json5';

export interface Rename {
  /** Dotted paths, as in docs/configuration.md. */
  readonly from: string;
  readonly to: string;
  /** The release that renamed it, for the warning. */
  readonly since: string;
  readonly fromEnv: string;
  readonly toEnv: string;
  readonly why: string;
}

export const RENAMES: readonly Rename[] = [
  {
    from: 'coap.maxPayloadBytes',
    to: 'coap.maxRequestBodyBytes',
    since: '0.2.0',
    fromEnv: 'COAP2MQTT_COAP_MAX_PAYLOAD_BYTES',
    toEnv: 'COAP2MQTT_COAP_MAX_REQUEST_BODY_BYTES',
    why: 'it limits what devices send, not the block-wise answers they fetch, which may be much larger',
  },
];

export interface Migrated {
  readonly value: Record<string, unknown>;
  /** Renames found in the input, with what happened to each. */
  readonly applied: ReadonlyArray<{ readonly rename: Rename; readonly outcome: 'moved' | 'ignored, the new key is also set' }>;
}

type Tree = Record<string, unknown>;

function isTree(value: unknown): value is Tree {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function lookUp(tree: Tree, path: readonly string[]): { parent: Tree; key: string } | undefined {
  let node: Tree = tree;
  for (const segment of path.slice(0, -1)) {
    const next = node[segment];
    if (!isTree(next)) return undefined;
    node = next;
  }
  const key = path[path.length - 1]!;
  return Object.hasOwn(node, key) ? { parent: node, key } : undefined;
}

/** The parsed file with old keys moved to their new names; the input is not modified. */
export function migrateObject(input: Tree, renames: readonly Rename[] = RENAMES): Migrated {
  const value = structuredClone(input);
  const applied: Array<Migrated['applied'][number]> = [];
  for (const rename of renames) {
    const old = lookUp(value, rename.from.split('.'));
    if (!old) continue;
    const oldValue = old.parent[old.key];
    delete old.parent[old.key];
    const toPath = rename.to.split('.');
    if (lookUp(value, toPath)) {
      applied.push({ rename, outcome: 'ignored, the new key is also set' });
      continue;
    }
    let node = value;
    for (const segment of toPath.slice(0, -1)) {
      if (!isTree(node[segment])) node[segment] = {};
      node = node[segment] as Tree;
    }
    node[toPath[toPath.length - 1]!] = oldValue;
    applied.push({ rename, outcome: 'moved' });
  }
  return { value, applied };
}

/** Old environment variables still set: their values move to the new names unless those are set too. */
export function migrateEnv(env: NodeJS.ProcessEnv, renames: readonly Rename[] = RENAMES): { env: NodeJS.ProcessEnv; warnings: string[] } {
  const migrated = { ...env };
  const warnings: string[] = [];
  for (const rename of renames) {
    const value = env[rename.fromEnv];
    if (value === undefined) continue;
    delete migrated[rename.fromEnv];
    if (env[rename.toEnv] !== undefined) {
      warnings.push(`${rename.fromEnv}: renamed ${rename.toEnv} in coap2mqtt ${rename.since}; ignored, because ${rename.toEnv} is set too`);
      continue;
    }
    migrated[rename.toEnv] = value;
    warnings.push(`${rename.fromEnv}: renamed ${rename.toEnv} in coap2mqtt ${rename.since} (${rename.why}); its value was used — rename the variable`);
  }
  return { env: migrated, warnings };
}

export function renameWarning(applied: Migrated['applied'][number], file: string): string {
  const { rename, outcome } = applied;
  if (outcome !== 'moved') return `${rename.from}: renamed ${rename.to} in coap2mqtt ${rename.since}; ${outcome}, so the old one was ignored — remove it`;
  return (
    `${rename.from}: renamed ${rename.to} in coap2mqtt ${rename.since} (${rename.why}); its value was used as ${rename.to}. ` +
    `Run "coap2mqtt check-config --migrate --config ${file}" to update the file (the original is kept as a backup)`
  );
}

/**
 * The file's text with the renames applied. A key renamed within the same object is renamed in place,
 * keeping the technician's comments and layout; the result must parse to exactly the migrated object,
 * otherwise (a key moved elsewhere, a name also used in a comment's odd spot) the file is written anew
 * from the migrated object and its comments survive only in the backup.
 */
export function migrateText(text: string, renames: readonly Rename[] = RENAMES): { text: string; keptComments: boolean } | undefined {
  const parsed = JSON5.parse(text) as unknown;
  if (!isTree(parsed)) return undefined;
  const migrated = migrateObject(parsed, renames);
  if (migrated.applied.length === 0) return undefined;
  let edited = text;
  let editable = true;
  for (const { rename, outcome } of migrated.applied) {
    const from = rename.from.split('.');
    const to = rename.to.split('.');
    const sameParent = outcome === 'moved' && from.length === to.length && from.slice(0, -1).join('.') === to.slice(0, -1).join('.');
    if (!sameParent) {
      editable = false;
      break;
    }
    const oldKey = from[from.length - 1]!;
    const newKey = to[to.length - 1]!;
    // The key as JSON5 writes it: bare, or in either quotes, followed by a colon.
    const pattern = new RegExp(`(^|[\\s{,])(["']?)${oldKey}\\2(\\s*:)`, 'gm');
    edited = edited.replace(pattern, (_match, before: string, quote: string, colon: string) => `${before}${quote}${newKey}${quote}${colon}`);
  }
  if (editable) {
    try {
      if (isDeepStrictEqual(JSON5.parse(edited), migrated.value)) return { text: edited, keptComments: true };
    } catch {
      // Fall through to a rewrite.
    }
  }
  return { text: `${JSON5.stringify(migrated.value, null, 2)}\n`, keptComments: false };
}
