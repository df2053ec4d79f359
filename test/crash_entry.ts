/**
 * `weft train` with a real crash injected, for test/crash.test.ts: the process kills itself with
 * SIGKILL (no cleanup, no exit handlers: what a killed rank leaves) halfway through a write.
 *
 *   WEFT_TEST_KILL=checkpoint:<step>   halfway through the first tensor of that step's model.safetensors
 *   WEFT_TEST_KILL=offload:<step>      halfway through the first offloaded-optimizer write after that
 *                                      step's checkpoint is complete (WEFT_TEST_KILL_OUT: the run directory)
 *
 * Only the rank WEFT_TEST_KILL_RANK (default 0; OMPI_COMM_WORLD_RANK under mpirun) dies. The fs
 * functions are patched and the builtin modules' named exports re-synced, so weft's own imports see
 * the patch.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { syncBuiltinESMExports } from 'node:module';
import { join } from 'node:path';

const [what, at] = (process.env['WEFT_TEST_KILL'] ?? '').split(':');
const step = `step-${String(at ?? '').padStart(6, '0')}`;
const die = (): never => { process.kill(process.pid, 'SIGKILL'); throw new Error('unreachable'); };

if ((process.env['OMPI_COMM_WORLD_RANK'] ?? '0') === (process.env['WEFT_TEST_KILL_RANK'] ?? '0')) {
  if (what === 'checkpoint') {
    const doomed = new Set<number>();
    const openSync = fs.openSync;
    fs.openSync = ((path: fs.PathLike, ...rest: unknown[]) => {
      const fd = (openSync as (...a: unknown[]) => number)(path, ...rest);
      if (String(path).includes(`.tmp-${step}`) && String(path).endsWith('model.safetensors')) doomed.add(fd);
      return fd;
    }) as typeof fs.openSync;
    const writeFileSync = fs.writeFileSync;
    let writes = 0;
    fs.writeFileSync = ((file: fs.PathOrFileDescriptor, data: Uint8Array, ...rest: unknown[]) => {
      // Write 1 is the header, write 2 the first tensor: half of it lands, then the process dies.
      if (typeof file === 'number' && doomed.has(file) && ++writes === 2) { writeFileSync(file, data.subarray(0, data.length >> 1)); die(); }
      return (writeFileSync as (...a: unknown[]) => void)(file, data, ...rest);
    }) as typeof fs.writeFileSync;
  } else if (what === 'offload') {
    const done = join(process.env['WEFT_TEST_KILL_OUT'] ?? '', step, 'state.json');
    const open = fsp.open;
    fsp.open = (async (...args: Parameters<typeof fsp.open>) => {
      const h: FileHandle = await open(...args);
      const write = h.write.bind(h) as (b: Uint8Array, o: number, n: number, p: number) => Promise<{ bytesWritten: number }>;
      (h as { write: unknown }).write = async (b: Uint8Array, o: number, n: number, p: number) => {
        if (fs.existsSync(done)) { await write(b, o, n >> 1, p); die(); }
        return write(b, o, n, p);
      };
      return h;
    }) as typeof fsp.open;
  } else if (what) throw new Error(`WEFT_TEST_KILL: expected checkpoint:<step> or offload:<step>, got '${what}'`);
  syncBuiltinESMExports();
}

await import('../src/cli/main.js');
