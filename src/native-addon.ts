// The project's native addons (build/Release/*.node, built by node-gyp at npm install): found from the
// package root — the nearest directory above this file with a package.json, since dist/ and the
// benchmark's build differ in depth — and loaded once each.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const loaded = new Map<string, unknown>();

/** Why an addon is missing or will not load, as `describe` words it; thrown as `make`'s error type. */
export function loadNativeAddon<T>(
  name: string,
  describe: { missing: (file: string, root: string) => string; unloadable: (file: string, reason: string) => string },
  makeError: (message: string) => Error = (message) => new Error(message),
): T {
  const cached = loaded.get(name);
  if (cached) return cached as T;
  const root = packageRoot(dirname(fileURLToPath(import.meta.url)));
  const file = join(root, 'build', 'Release', `${name}.node`);
  if (!existsSync(file)) throw makeError(describe.missing(file, root));
  let addon: T;
  try {
    addon = createRequire(import.meta.url)(file) as T;
  } catch (error) {
    throw makeError(describe.unloadable(file, (error as Error).message));
  }
  loaded.set(name, addon);
  return addon;
}

function packageRoot(from: string): string {
  for (let dir = from; ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    if (dirname(dir) === dir) return join(from, '..');
  }
}
