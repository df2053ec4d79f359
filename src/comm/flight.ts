/**
 * The flight recorder: for hang diagnosis, as NCCL's flight recorder is for PyTorch. Each rank keeps
 * a ring of its last N operations on any of its process groups (group, op and per-group sequence
 * number, element count and dtype, peer, issue and completion times, state and error) and one
 * string slot for what the rank is doing now, which higher layers set with `flight.note()`.
 *
 * When an operation of the rank times out, the rank writes a dump once: to stderr, each line
 * prefixed `[flight rank R]`, and, with WEFT_FLIGHT_DIR set, to $WEFT_FLIGHT_DIR/flight-rank-R.json.
 * The dump lists the ring, the current activity, and for each operation still pending what it
 * waits for as the backend sees it: on the threads backend the comm thread reads the group's
 * shared memory (which ranks never posted the collective, and the last one each of them
 * completed); on MPI only the operation and, for point-to-point, the peer are known. On the threads
 * backend the first timeout anywhere in the launch makes every rank dump, the rank that hung too
 * when its thread is free to run (awaiting something rather than blocked in a computation).
 *
 *   flight.note(`program fwd_bwd#${step}`);   // what this rank does now; shows in dumps and in
 *                                              // peers' timeout errors (threads backend)
 *   flight.snapshot().ops.at(-1);              // { group: 'world', label: 'allReduce#12', ... }
 *
 * WEFT_FLIGHT_RECORDER=N keeps N operations (default 64; 0 turns recording and dumps off).
 * Module state is per rank: a threads rank is a worker thread with its own module instance, an
 * MPI rank a process. Recording an op writes fields of one preallocated slot: no allocation.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export type FlightState = 'issued' | 'completed' | 'failed';

/** One recorded operation. Times are wall-clock milliseconds (performance.timeOrigin based). */
export interface FlightOp {
  group: string;
  op: string;
  /** Per-group sequence number of the op (collectives and point-to-point counted apart). */
  seq: number;
  /** "allReduce#12", as the Work's label and the errors name it. */
  label: string;
  /** Elements the op was called with (the input's length; allGather: one rank's part). */
  count: number;
  dtype: string;
  /** send/recv: the peer's rank in the group; null for collectives. */
  peer: number | null;
  tag: number | null;
  issuedAt: number;
  completedAt: number | null;
  state: FlightState;
  error: string | null;
}

/** What a pending operation waits for when the dump is written. */
export interface FlightWait {
  group: string;
  label: string;
  /** Ranks of the op's group whose part never came; empty when the backend cannot tell. */
  missing: number[];
  /** The same ranks in the world group. */
  missingWorld: number[];
  /** What is known, in words ("rank 2 never arrived (it last completed allReduce#6 on group world)"). */
  detail: string;
}

export interface FlightDump {
  rank: number;
  backend: string;
  /** Slots of the ring; `recorded` ops were issued in all, the last min(recorded, capacity) are in `ops`. */
  capacity: number;
  recorded: number;
  activity: string | null;
  activitySince: number | null;
  /** Why the dump was written (the first timeout); null for a snapshot taken on request. */
  reason: string | null;
  at: number;
  waits: FlightWait[];
  /** Oldest first. */
  ops: FlightOp[];
}

const now = (): number => performance.timeOrigin + performance.now();
const STATES: readonly FlightState[] = ['issued', 'completed', 'failed'];

/** A ring slot, rewritten in place for every op. */
class Slot {
  ticket = 0;
  group = '';
  op = '';
  seq = 0;
  label = '';
  count = 0;
  dtype = '';
  peer = -1;
  tag = -1;
  issuedAt = 0;
  completedAt = 0;
  state = 0;
  error: string | null = null;
}

export class FlightRecorder {
  rank = -1;
  backend = '';
  activity: string | null = null;
  activitySince = 0;
  /** Set by a backend that mirrors the activity where peers can read it (threads: shared memory). */
  share: ((activity: string, at: number) => void) | null = null;
  private readonly slots: Slot[];
  private tickets = 0;
  private dumped = false;

  constructor(readonly capacity: number, readonly dir: string | null = null, private readonly write: (text: string) => void = (t) => process.stderr.write(t)) {
    this.slots = Array.from({ length: capacity }, () => new Slot());
  }

  /** Names the rank in dumps; a backend calls it when the rank's world group starts. */
  attach(rank: number, backend: string): void {
    this.rank = rank;
    this.backend = backend;
  }

  /**
   * Records an issued op; returns the ticket that `settle` takes (0 when recording is off). `at`
   * defaults to now; a caller that has read the clock already passes its reading (a clock read
   * costs more than the rest of the recording).
   */
  issue(group: string, op: string, seq: number, label: string, count: number, dtype: string, peer = -1, tag = -1, at?: number): number {
    if (this.capacity === 0) return 0;
    const t = ++this.tickets;
    const s = this.slots[t % this.capacity]!;
    s.ticket = t;
    s.group = group;
    s.op = op;
    s.seq = seq;
    s.label = label;
    s.count = count;
    s.dtype = dtype;
    s.peer = peer;
    s.tag = tag;
    s.issuedAt = at ?? now();
    s.completedAt = 0;
    s.state = 0;
    s.error = null;
    return t;
  }

  /** Marks the op completed (error null) or failed, at `at` (default now); a no-op once its slot has been reused. */
  settle(ticket: number, error: string | null, at?: number): void {
    if (ticket === 0) return;
    const s = this.slots[ticket % this.capacity]!;
    if (s.ticket !== ticket) return;
    s.state = error === null ? 1 : 2;
    s.error = error;
    s.completedAt = at ?? now();
  }

  note(activity: string): void {
    this.activity = activity;
    this.activitySince = now();
    this.share?.(activity, this.activitySince);
  }

  snapshot(reason: string | null = null, waits: FlightWait[] = []): FlightDump {
    const ops: FlightOp[] = [];
    for (let t = Math.max(1, this.tickets - this.capacity + 1); t <= this.tickets; t++) {
      const s = this.slots[t % this.capacity]!;
      ops.push({
        group: s.group, op: s.op, seq: s.seq, label: s.label, count: s.count, dtype: s.dtype,
        peer: s.peer < 0 ? null : s.peer, tag: s.tag < 0 ? null : s.tag, issuedAt: s.issuedAt,
        completedAt: s.state === 0 ? null : s.completedAt, state: STATES[s.state]!, error: s.error,
      });
    }
    return {
      rank: this.rank, backend: this.backend, capacity: this.capacity, recorded: this.tickets,
      activity: this.activity, activitySince: this.activity === null ? null : this.activitySince,
      reason, at: now(), waits, ops,
    };
  }

  /**
   * Writes the dump (stderr, and the JSON file under `dir`) the first time it is called on this
   * rank; later calls do nothing. False when recording is off or the dump was already written.
   */
  trigger(reason: string, waits: FlightWait[]): boolean {
    if (this.dumped || this.capacity === 0) return false;
    this.dumped = true;
    const dump = this.snapshot(reason, waits);
    this.write(dumpText(dump));
    if (this.dir !== null) {
      const file = join(this.dir, `flight-rank-${this.rank}.json`);
      try {
        mkdirSync(this.dir, { recursive: true });
        writeFileSync(file, JSON.stringify(dump, null, 1) + '\n');
      } catch (e) {
        this.write(`[flight rank ${this.rank}] could not write ${file}: ${(e as Error).message}\n`);
      }
    }
    return true;
  }
}

const ms = (x: number): string => `${x.toFixed(1)} ms`;

/** The dump as text, every line prefixed `[flight rank R] `. */
export function dumpText(d: FlightDump): string {
  const lines: string[] = [];
  lines.push(d.reason === null ? `snapshot (${d.backend})` : `dump (${d.backend}) on: ${d.reason}`);
  lines.push(d.activity === null ? 'activity: none noted' : `activity: '${d.activity}' (for ${ms(d.at - d.activitySince!)})`);
  for (const w of d.waits) lines.push(`waiting: ${w.label} on group ${w.group}: ${w.detail}`);
  const shown = d.ops.length;
  lines.push(`last ${shown} of ${d.recorded} operations (oldest first; times before this dump):`);
  for (const o of d.ops) {
    const what = o.peer === null ? o.label : `${o.label} ${o.op === 'send' ? 'to' : 'from'} ${o.peer} tag ${o.tag}`;
    const when = `issued -${ms(d.at - o.issuedAt)}`;
    const end = o.state === 'issued' ? 'still pending' : `${o.state} after ${ms(o.completedAt! - o.issuedAt)}`;
    lines.push(`  ${o.group} ${what} ${o.count} ${o.dtype} ${when} ${end}${o.error === null ? '' : `: ${o.error}`}`);
  }
  const prefix = `[flight rank ${d.rank}] `;
  return lines.map((l) => prefix + l + '\n').join('');
}

function fromEnv(): FlightRecorder {
  const raw = process.env['WEFT_FLIGHT_RECORDER'];
  const n = raw === undefined || raw === '' ? 64 : Number(raw);
  if (!(Number.isInteger(n) && n >= 0)) throw new RangeError(`WEFT_FLIGHT_RECORDER must be a non-negative integer (operations to keep; 0 turns the recorder off), got '${raw}'`);
  const dir = process.env['WEFT_FLIGHT_DIR'];
  return new FlightRecorder(n, dir === undefined || dir === '' ? null : dir);
}

let recorder: FlightRecorder | null = null;

/** This rank's recorder, made from WEFT_FLIGHT_RECORDER and WEFT_FLIGHT_DIR on first use. */
export function flightRecorder(): FlightRecorder {
  recorder ??= fromEnv();
  return recorder;
}

/** The rank's flight recorder, for higher layers. */
export const flight = {
  /** Records what this rank does now (one slot: the latest note wins), e.g. 'program fwd_bwd#3'. */
  note(activity: string): void { flightRecorder().note(activity); },
  /** The ring and the activity as they are now. */
  snapshot(): FlightDump { return flightRecorder().snapshot(); },
  /** snapshot() as the prefixed lines a dump writes to stderr. */
  dumpText(): string { return dumpText(flightRecorder().snapshot()); },
};
