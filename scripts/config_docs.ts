/** Writes docs/config.md from the config schema (src/train/config.ts): `node dist/scripts/config_docs.js`. */
import { writeFileSync } from 'node:fs';
import { configDoc } from '../src/train/config.js';

writeFileSync(new URL('../../docs/config.md', import.meta.url), configDoc());
