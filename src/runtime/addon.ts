/** Finding weft's native addons (native/build/*.node: the MPI backend's, the native matrix products'). */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Where a native addon is: the path in `envVar` if set, else native/build/<file> above this file (src/ or dist/src/). */
export function addonPath(file: string, envVar: string): string | null {
  const env = process.env[envVar];
  if (env) return existsSync(env) ? env : null;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const p = join(dir, 'native', 'build', file);
    if (existsSync(p)) return p;
    dir = dirname(dir);
  }
  return null;
}
