/**
 * test/moe_rank.ts under mpirun: `mpirun -np P node dist/test/moe_mpi.js '<args json>' <dir>`;
 * each rank writes its result to <dir>/rank<r>.json and exits 0.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { initMpi } from '../src/comm/mpi/group.js';
import rank from './moe_rank.js';
import type { MoeRankArgs } from './moe_rank.js';

const pg = initMpi({ timeoutMs: 60_000 });
const r = await rank(pg, JSON.parse(process.argv[2]!) as MoeRankArgs);
writeFileSync(join(process.argv[3]!, `rank${pg.rank}.json`), JSON.stringify(r));
await pg.destroy();
