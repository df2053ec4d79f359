/**
 * A rank: imports the entry module, starts its process group (and with it the comm thread), runs
 * `default(pg, args)` and posts the result or the error to the launcher. Sub-group memory is
 * handed between ranks through the launcher (`SharedBroker`).
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { ProcessGroup } from '../process_group.js';
import { ThreadsProcessGroup } from './group.js';
import type { SharedBroker } from './group.js';
import type { FromRank, RankInit, SerializedError, ToRank } from './protocol.js';

export type RankEntry = (pg: ProcessGroup, args: unknown) => unknown;

const init = workerData as RankInit;
const port = parentPort!;
const post = (m: FromRank): void => port.postMessage(m);

const waiting = new Map<number, (m: ToRank) => void>();
let nextReq = 1;
port.on('message', (m: ToRank) => waiting.get(m.req)?.(m));
port.unref();

const broker: SharedBroker = {
  put: (name, sab, readers) => post({ type: 'put', name, sab, readers }),
  get: (name, timeoutMs) => new Promise<SharedArrayBuffer>((resolve, reject) => {
    const req = nextReq++;
    const timer = setTimeout(() => {
      waiting.delete(req);
      reject(new Error(`not shared within ${timeoutMs} ms`));
    }, timeoutMs);
    waiting.set(req, (m) => {
      clearTimeout(timer);
      waiting.delete(req);
      if (m.sab !== null) resolve(m.sab);
      else reject(new Error(m.error ?? 'refused'));
    });
    post({ type: 'get', name, req });
  }),
};

function serialize(e: unknown): SerializedError {
  if (e instanceof Error) return { name: e.name, message: e.message, ...(e.stack === undefined ? {} : { stack: e.stack }) };
  return { name: 'Error', message: `non-Error thrown: ${String(e)}` };
}

let pg: ThreadsProcessGroup | null = null;
let running = true;
// A worker whose event loop runs empty exits with code 0; say why instead of leaving the launcher
// with a bare exit code.
process.on('beforeExit', () => {
  if (!running) return;
  running = false;
  post({ type: 'error', error: { name: 'Error', message: `its event loop ran empty while its entry was still running (${pg?.inFlight ?? 0} operations in flight): the entry awaits a promise that nothing settles` } });
});

async function main(): Promise<void> {
  try {
    pg = ThreadsProcessGroup.start(init, broker);
    const mod = (await import(init.entry)) as { default?: unknown };
    if (typeof mod.default !== 'function') throw new TypeError(`entry ${init.entry} has no default export function (pg, args) => result`);
    const value = await (mod.default as RankEntry)(pg, init.args);
    await pg.destroy();
    running = false;
    post({ type: 'result', value });
  } catch (e) {
    running = false;
    post({ type: 'error', error: serialize(e) });
    await pg?.destroy().catch(() => undefined);
  }
}

void main();
