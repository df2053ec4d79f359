/**
 * A rank of test/flight_recorder.test.ts. As a threads entry its default export runs under
 * `launchThreads`; run directly (under mpirun) it runs the collective scenario on the MPI world.
 * Scenarios:
 *   collective  `rounds` all-reduces of 16, 17, ... float32 elements; then rank `hung` notes that it
 *               sleeps and sleeps instead of the next all-reduce, while the others block in it
 *   p2p         one all-reduce; rank 1 sends a message with tag 5 and sleeps; rank 0 waits for one
 *               with tag 7 from rank 1
 */
import { pathToFileURL } from 'node:url';
import { flight } from '../src/comm/flight.js';
import type { ProcessGroup } from '../src/comm/process_group.js';

export interface FlightArgs { scenario: 'collective' | 'p2p'; rounds: number; hung: number; sleepMs: number }

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export default async function rank(pg: ProcessGroup, a: FlightArgs): Promise<string> {
  for (let i = 0; i < a.rounds; i++) {
    flight.note(`step ${i}`);
    await pg.allReduce(new Float32Array(16 + i).fill(pg.rank)).wait();
  }
  if (a.scenario === 'collective') {
    if (pg.rank === a.hung) {
      flight.note('sleeping instead of the next allReduce');
      await sleep(a.sleepMs);
      return 'slept';
    }
    flight.note(`step ${a.rounds}`);
    await pg.allReduce(new Float32Array(8)).wait();
    return 'unreachable: the all-reduce cannot complete';
  }
  if (pg.rank === 1) {
    await pg.send(Int32Array.of(1), 0, 5).wait();
    flight.note('sleeping instead of sending tag 7');
    await sleep(a.sleepMs);
    return 'slept';
  }
  if (pg.rank === 0) {
    flight.note('receiving tag 7');
    await pg.recv(new Int32Array(3), 1, 7).wait();
  }
  return 'done';
}

if (import.meta.url === pathToFileURL(process.argv[1]!).href) {
  const { initMpi } = await import('../src/comm/mpi/group.js');
  const a = JSON.parse(process.argv[2]!) as FlightArgs & { timeoutMs: number };
  // A long grace: every rank that times out writes its dump before MPI_Abort ends the job.
  const pg = initMpi({ timeoutMs: a.timeoutMs, abortGraceMs: 2000 });
  try {
    await rank(pg, a);
  } catch (e) {
    process.stderr.write(`rank ${pg.rank} caught: ${(e as Error).message}\n`);
    await sleep(a.sleepMs); // MPI_Abort ends the job
  }
  await pg.destroy();
}
