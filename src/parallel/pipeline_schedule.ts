/**
 * Pipeline-parallel schedules as data (Megatron-LM's schedules.py, PTD-P: Narayanan et al. 2021),
 * and a discrete-event simulator that proves a table runs. No model and no runtime: a table says,
 * per rank, in which order its computes, sends and receives happen; one executor can run any table.
 *
 * The pipeline: `p` stages (ranks 0..p-1 along the pipeline axis), `m` microbatches, `v` model
 * chunks per rank. Chunk c of rank r holds piece s = c * p + r (Megatron's virtual stage), so the
 * model runs through the ranks v times; piece 0 reads the input, piece v * p - 1 computes the loss.
 *
 *   forward  (mb, s)  needs the activation of (mb, s - 1)                     (piece 0: the input)
 *   backward (mb, s)  needs the gradient from backward (mb, s + 1)            (the last piece: none)
 *                     and forward (mb, s) on the same rank (its saved activations)
 *
 * Three schedules, each a per-rank order of (mb, chunk) computes:
 *
 *   gpipe        (Huang et al. 2019; torch's ScheduleGPipe) every forward in microbatch order, then
 *                every backward in microbatch order. All m microbatches' activations are held at once.
 *   1f1b         (PipeDream-Flush, Narayanan et al. 2021; Megatron's
 *                `forward_backward_pipelining_without_interleaving`) rank r runs W = min(p - r - 1, m)
 *                warm-up forwards, then alternates one forward, one backward, then runs the last W
 *                backwards. Same bubble as GPipe, but rank r holds at most min(p - r, m) microbatches.
 *   interleaved  (Megatron's `forward_backward_pipelining_with_interleaving`) the v * m (mb, chunk)
 *                pairs in Megatron's order: microbatches in groups of p, each group through chunk 0,
 *                then chunk 1, ... (forward pair k: mb = floor(k / (p v)) p + k % p,
 *                chunk = floor(k / p) % v; backward pair k: the same mb, chunk v - 1 - that), with
 *                W = min(2 (p - r - 1) + (v - 1) p, m v) warm-up forwards, then 1F1B over pairs, then
 *                the last W backwards. Needs m % p == 0 (Megatron's own check; a last group of fewer
 *                than p microbatches would leave ranks waiting). The cap is the current Megatron's;
 *                older versions, for m == p, ran all forwards first on every rank. Each piece is
 *                1/v of a stage, so the bubble shrinks by v: (p - 1) / (v m + p - 1) of the time
 *                instead of (p - 1) / (m + p - 1).
 *
 * Table semantics. A rank executes its `actions` in order. `send` is buffered (never blocks) and comes
 * right after the compute that produces its value; `recv` is where the rank waits for the value (an
 * executor may post it earlier) and comes right before the compute that consumes it. An activation
 * goes from piece s to piece s + 1, a gradient from piece s to s - 1; with p >= 2 consecutive pieces
 * are always on different ranks (rank p - 1's chunk c feeds rank 0's chunk c + 1), so no rank ever
 * sends to itself. With p = 1 every piece is on the one rank and values pass locally: such a table
 * has no sends or receives at all, and the simulator refuses a send or recv whose peer is its rank.
 *
 * What `simulate` proves about a table: every action is well formed (microbatch, chunk and peer in
 * range, the peer the one holding the neighbouring piece); no action appears twice; every send is
 * matched by exactly one recv and every recv by a send; each compute runs only after its inputs are on
 * its rank (received, or computed there); the ranks, each running its list in order, cannot deadlock;
 * and every (mb, piece) has exactly one forward and one backward. Along the way it times the run
 * (compute costs, a send's latency) and returns the makespan, the bubble and the peak number of
 * microbatch-chunks each rank holds activations for.
 *
 * @example
 *   const table = pipelineTable('interleaved', 4, 8, 2);
 *   const sim = simulate(table, { forward: 0.5, backward: 1 });   // each chunk half a stage
 *   sim.bubble;      // 3 / 19 = (p - 1) / (v m + p - 1)
 *   sim.inFlight;    // [11, 9, 7, 5]: Megatron's warm-up count + 1 per rank
 */

export type ScheduleKind = 'gpipe' | '1f1b' | 'interleaved';

/**
 * One step of a rank. For a compute, `chunk` is the rank's chunk (piece chunk * p + rank). For a send
 * it is the sender's chunk, for a recv the receiver's; `peer` is the other rank.
 */
export type Action =
  | { op: 'forward' | 'backward'; mb: number; chunk: number }
  | { op: 'send' | 'recv'; what: 'activation' | 'gradient'; mb: number; chunk: number; peer: number };

export interface PipelineTable {
  kind: ScheduleKind;
  stages: number;
  microbatches: number;
  chunks: number;
  /** Per rank, in execution order. */
  actions: Action[][];
}

type Compute = { op: 'forward' | 'backward'; mb: number; chunk: number };

/** The argument checks every generator shares; errors name the numbers. */
function checkShape(kind: ScheduleKind, p: number, m: number, v: number): void {
  for (const [name, x] of [['pipeline stages', p], ['microbatches', m], ['chunks', v]] as const) {
    if (!Number.isInteger(x) || x < 1) throw new Error(`${kind}: ${name} must be a positive integer, got ${x}`);
  }
  if (kind !== 'interleaved' && v !== 1) throw new Error(`${kind} runs one chunk per rank, got chunks ${v}; interleaved runs several`);
  if (kind === 'gpipe') return;
  if (m < p) throw new Error(`microbatches (${m}) must be at least the pipeline stages (${p}) for ${kind}`);
  if (kind === 'interleaved') {
    if (v < 2) throw new Error(`interleaved needs at least 2 chunks per rank, got ${v}; 1f1b is the schedule for one`);
    // Megatron raises the same: its interleaved order runs microbatches in groups of p.
    if (m % p !== 0) throw new Error(`interleaved needs the microbatches (${m}) to be a multiple of the pipeline stages (${p}): microbatches run in groups of ${p}`);
  }
}

/** Turns each rank's compute order into its actions: each recv right before its consumer, each send right after its producer. */
function withTransfers(kind: ScheduleKind, p: number, m: number, v: number, computes: Compute[][]): PipelineTable {
  const last = v * p - 1;
  const actions = computes.map((list, r) => list.flatMap((c): Action[] => {
    const s = c.chunk * p + r;
    if (p === 1) return [c];
    const prev = { peer: (s + p - 1) % p, chunk: c.chunk, mb: c.mb };  // the rank of piece s - 1
    const next = { peer: (s + 1) % p, chunk: c.chunk, mb: c.mb };      // the rank of piece s + 1
    const out: Action[] = [];
    if (c.op === 'forward') {
      if (s > 0) out.push({ op: 'recv', what: 'activation', ...prev });
      out.push(c);
      if (s < last) out.push({ op: 'send', what: 'activation', ...next });
    } else {
      if (s < last) out.push({ op: 'recv', what: 'gradient', ...next });
      out.push(c);
      if (s > 0) out.push({ op: 'send', what: 'gradient', ...prev });
    }
    return out;
  }));
  return { kind, stages: p, microbatches: m, chunks: v, actions };
}

const ranks = (p: number): number[] => Array.from({ length: p }, (_, r) => r);
const fwd = (mb: number, chunk = 0): Compute => ({ op: 'forward', mb, chunk });
const bwd = (mb: number, chunk = 0): Compute => ({ op: 'backward', mb, chunk });

/** GPipe: every rank runs all m forwards, then all m backwards, both in microbatch order. Any m >= 1. */
export function gpipe(p: number, m: number): PipelineTable {
  checkShape('gpipe', p, m, 1);
  const mbs = ranks(m);
  return withTransfers('gpipe', p, m, 1, ranks(p).map(() => [...mbs.map((i) => fwd(i)), ...mbs.map((i) => bwd(i))]));
}

/** 1F1B (PipeDream-Flush, Megatron without interleaving): min(p - r - 1, m) warm-up forwards, one forward one backward, cool-down backwards. Needs m >= p. */
export function oneFOneB(p: number, m: number): PipelineTable {
  checkShape('1f1b', p, m, 1);
  return withTransfers('1f1b', p, m, 1, ranks(p).map((r) => {
    const warmup = Math.min(p - r - 1, m);
    const out: Compute[] = [];
    for (let i = 0; i < warmup; i++) out.push(fwd(i));
    for (let i = 0; i < m - warmup; i++) out.push(fwd(i + warmup), bwd(i));
    for (let i = m - warmup; i < m; i++) out.push(bwd(i));
    return out;
  }));
}

/** Megatron's warm-up forwards of rank r in the interleaved schedule: 2 (p - r - 1) + (v - 1) p, capped at m v. */
export function interleavedWarmup(p: number, m: number, v: number, r: number): number {
  return Math.min((p - r - 1) * 2 + (v - 1) * p, m * v);
}

/** Megatron's k-th (mb, chunk) pair of the interleaved order (`get_model_chunk_id`, `get_microbatch_id_in_model_chunk`); backward pairs run the chunks in reverse. */
function interleavedPair(p: number, v: number, k: number, forward: boolean): { mb: number; chunk: number } {
  const mb = Math.floor(k / (p * v)) * p + (k % p);
  const chunk = Math.floor(k / p) % v;
  return { mb, chunk: forward ? chunk : v - 1 - chunk };
}

/** Megatron's interleaved 1F1B over v chunks per rank. Needs v >= 2, m >= p and m % p == 0. */
export function interleaved(p: number, m: number, v: number): PipelineTable {
  checkShape('interleaved', p, m, v);
  const total = m * v;
  return withTransfers('interleaved', p, m, v, ranks(p).map((r) => {
    const warmup = interleavedWarmup(p, m, v, r);
    const F = (k: number): Compute => ({ op: 'forward', ...interleavedPair(p, v, k, true) });
    const B = (k: number): Compute => ({ op: 'backward', ...interleavedPair(p, v, k, false) });
    const out: Compute[] = [];
    for (let k = 0; k < warmup; k++) out.push(F(k));
    for (let k = 0; k < total - warmup; k++) out.push(F(k + warmup), B(k));
    for (let k = total - warmup; k < total; k++) out.push(B(k));
    return out;
  }));
}

/** The table of `kind` for p stages, m microbatches and v chunks per rank (v = 1 but for interleaved). */
export function pipelineTable(kind: ScheduleKind, p: number, m: number, v = 1): PipelineTable {
  if (kind !== 'gpipe' && kind !== '1f1b' && kind !== 'interleaved') {
    throw new Error(`unknown pipeline schedule '${String(kind)}': expected gpipe, 1f1b or interleaved`);
  }
  checkShape(kind, p, m, v);  // gpipe and oneFOneB take no v: a v != 1 is refused here
  return kind === 'gpipe' ? gpipe(p, m) : kind === '1f1b' ? oneFOneB(p, m) : interleaved(p, m, v);
}

/** What each action costs in `simulate`, in any time unit. */
export interface SimCost {
  /** One forward of one (mb, chunk). */
  forward: number;
  /** One backward of one (mb, chunk). */
  backward: number;
  /** From a send to its value being receivable (latency; the sender does not wait). */
  send: number;
  /**
   * Each compute's own cost, where actions differ (a replay of measured durations:
   * bench/pipeline.ts); `forward` and `backward` when absent.
   */
  of?: (rank: number, op: 'forward' | 'backward', mb: number, chunk: number) => number;
}

export interface Simulation {
  /** When the last rank finishes. */
  makespan: number;
  /** Per rank, the time spent computing. */
  busy: number[];
  /** 1 - sum(busy) / (p * makespan): the fraction of rank-time spent idle. */
  bubble: number;
  /** Per rank, the most (mb, chunk) pairs whose forward is done and backward is not, at any time. */
  inFlight: number[];
  /** Per rank, each compute with its start and end, in execution order. */
  order: { op: 'forward' | 'backward'; mb: number; chunk: number; start: number; end: number }[][];
}

/** An action as errors print it. */
export function describeAction(a: Action): string {
  if (!('peer' in a)) return `${a.op} mb ${a.mb} chunk ${a.chunk}`;
  return `${a.op} ${a.what} mb ${a.mb} chunk ${a.chunk} ${a.op === 'send' ? 'to' : 'from'} rank ${a.peer}`;
}

/**
 * Runs `table` event by event: each rank executes its actions in order; a compute takes its cost, a
 * send takes no time on its rank and its value is receivable `cost.send` later, a recv waits until
 * then. Throws, naming the rank and the action, when the table is not a complete, runnable schedule
 * (see the file header); otherwise returns the timing.
 */
export function simulate(table: PipelineTable, cost: Partial<SimCost> = {}): Simulation {
  const c: SimCost = { forward: 1, backward: 2, send: 0, ...cost };
  for (const [k, x] of Object.entries(c)) {
    if (k !== 'of' && (!Number.isFinite(x) || x < 0)) throw new Error(`simulate: cost.${k} must be a finite number >= 0, got ${x}`);
  }
  const { stages: p, microbatches: m, chunks: v } = table;
  for (const [name, x] of [['stages', p], ['microbatches', m], ['chunks', v]] as const) {
    if (!Number.isInteger(x) || x < 1) throw new Error(`simulate: table.${name} must be a positive integer, got ${x}`);
  }
  if (table.actions.length !== p) throw new Error(`simulate: table has ${table.actions.length} action lists for ${p} stages`);
  const channels = matchTransfers(table);

  const P = v * p;
  const rankOf = (s: number): number => s % p;
  const clock = new Array<number>(p).fill(0);
  const pc = new Array<number>(p).fill(0);
  const busy = new Array<number>(p).fill(0);
  const inFlight = new Array<number>(p).fill(0);
  const held = new Array<number>(p).fill(0);
  const order: Simulation['order'] = ranks(p).map(() => []);
  // Per rank, values present there: `a:mb:s` the input activation of piece s, `g:mb:s` the gradient of
  // piece s's output, `f:mb:s` / `b:mb:s` the forward / backward of (mb, s) done.
  const have = ranks(p).map(() => new Set<string>());
  const sent = new Map<string, number>();  // channel -> time its value is receivable
  const at = (r: number, i: number, a: Action): string => `rank ${r}, action ${i} (${describeAction(a)}, piece ${a.chunk * p + r})`;

  /** Runs rank r until it finishes or waits at a recv whose send has not run; true when it moved. */
  const advance = (r: number): boolean => {
    const list = table.actions[r]!;
    const start = pc[r];
    while (pc[r]! < list.length) {
      const i = pc[r]!;
      const a = list[i]!;
      const s = a.chunk * p + r;
      const key = `${a.mb}:${s}`;
      if (a.op === 'recv') {
        const t = sent.get(channels.ofRecv.get(`${r}:${i}`)!);
        if (t === undefined) break;  // blocked: its send has not run yet
        clock[r] = Math.max(clock[r]!, t);
        have[r]!.add(`${a.what === 'activation' ? 'a' : 'g'}:${key}`);
      } else if (a.op === 'send') {
        const done = a.what === 'activation' ? 'f' : 'b';
        if (!have[r]!.has(`${done}:${key}`)) {
          throw new Error(`${at(r, i, a)}: sends the ${a.what} before the ${done === 'f' ? 'forward' : 'backward'} of mb ${a.mb} that produces it`);
        }
        sent.set(channels.ofSend.get(`${r}:${i}`)!, clock[r]! + c.send);
      } else {
        if (a.op === 'forward') {
          if (s > 0 && !have[r]!.has(`a:${key}`)) {
            throw new Error(`${at(r, i, a)}: its input activation (piece ${s - 1}'s output for mb ${a.mb}) was neither computed on this rank nor received before it`);
          }
          have[r]!.add(`f:${key}`);
          if (s < P - 1 && rankOf(s + 1) === r) have[r]!.add(`a:${a.mb}:${s + 1}`);  // p = 1: passed locally
          held[r]!++;
        } else {
          if (!have[r]!.has(`f:${key}`)) throw new Error(`${at(r, i, a)}: runs before the forward of mb ${a.mb} on piece ${s} (its saved activations)`);
          if (s < P - 1 && !have[r]!.has(`g:${key}`)) {
            throw new Error(`${at(r, i, a)}: the gradient of its output (from piece ${s + 1}'s backward of mb ${a.mb}) was neither computed on this rank nor received before it`);
          }
          have[r]!.add(`b:${key}`);
          if (s > 0 && rankOf(s - 1) === r) have[r]!.add(`g:${a.mb}:${s - 1}`);
          held[r]!--;
        }
        const d = c.of ? c.of(r, a.op, a.mb, a.chunk) : a.op === 'forward' ? c.forward : c.backward;
        if (!Number.isFinite(d) || d < 0) throw new Error(`simulate: the cost of ${at(r, i, a)} must be a finite number >= 0, got ${d}`);
        order[r]!.push({ op: a.op, mb: a.mb, chunk: a.chunk, start: clock[r]!, end: clock[r]! + d });
        clock[r]! += d;
        busy[r]! += d;
        inFlight[r] = Math.max(inFlight[r]!, held[r]!);
      }
      pc[r]!++;
    }
    return pc[r] !== start;
  };

  for (;;) {
    let moved = false;
    for (let r = 0; r < p; r++) moved = advance(r) || moved;
    if (pc.every((i, r) => i === table.actions[r]!.length)) break;
    if (!moved) throw new Error(deadlock(table, pc, channels));
  }

  for (let s = 0; s < P; s++) {
    const r = rankOf(s);
    const chunk = Math.floor(s / p);
    for (let mb = 0; mb < m; mb++) {
      for (const op of ['forward', 'backward'] as const) {
        if (!have[r]!.has(`${op[0]}:${mb}:${s}`)) throw new Error(`rank ${r}: the ${op} of mb ${mb} chunk ${chunk} (piece ${s}) is missing from its actions`);
      }
    }
  }
  const makespan = Math.max(...clock);
  const work = busy.reduce((x, y) => x + y, 0);
  return { makespan, busy, bubble: makespan > 0 ? 1 - work / (p * makespan) : 0, inFlight, order };
}

/** `simulate` with the default costs: throws unless `table` is a complete schedule that runs. */
export function validate(table: PipelineTable): Simulation {
  return simulate(table);
}

/**
 * The static checks: each action well formed and unique on its rank, and each send paired with
 * exactly one recv. Returns the channel of each transfer (by `rank:index`) and, per channel, its send.
 */
function matchTransfers(table: PipelineTable) {
  const { stages: p, microbatches: m, chunks: v } = table;
  const P = v * p;
  const ofSend = new Map<string, string>();
  const ofRecv = new Map<string, string>();
  const sendOf = new Map<string, { rank: number; index: number }>();
  const recvOf = new Map<string, { rank: number; index: number }>();
  table.actions.forEach((list, r) => {
    const seen = new Map<string, number>();
    list.forEach((a, i) => {
      const where = `rank ${r}, action ${i} (${describeAction(a)})`;
      if (!Number.isInteger(a.mb) || a.mb < 0 || a.mb >= m) throw new Error(`${where}: mb must be an integer in [0, ${m})`);
      if (!Number.isInteger(a.chunk) || a.chunk < 0 || a.chunk >= v) throw new Error(`${where}: chunk must be an integer in [0, ${v})`);
      const id = describeAction(a);
      const first = seen.get(id);
      if (first !== undefined) throw new Error(`${where}: appears twice on the rank (first at action ${first})`);
      seen.set(id, i);
      if (a.op === 'forward' || a.op === 'backward') return;
      if (a.op !== 'send' && a.op !== 'recv') throw new Error(`${where}: unknown op '${String((a as { op: unknown }).op)}'`);
      if (a.peer === r) throw new Error(`${where}: a rank never sends to itself (pieces on one rank pass values locally)`);
      const s = a.chunk * p + r;
      // An activation flows up the pieces, a gradient down; the sender's piece and the receiver's.
      const up = a.what === 'activation';
      const [from, to] = a.op === 'send' ? [s, up ? s + 1 : s - 1] : [up ? s - 1 : s + 1, s];
      const other = a.op === 'send' ? to : from;
      if (other < 0 || other >= P) throw new Error(`${where}: piece ${s} ${a.op === 'send' ? 'sends no' : 'receives no'} ${a.what} (there is no piece ${other})`);
      if (a.peer !== other % p) throw new Error(`${where}: piece ${other} is on rank ${other % p}, not rank ${a.peer}`);
      const channel = `${a.what}:${a.mb}:${from}>${to}`;
      (a.op === 'send' ? ofSend : ofRecv).set(`${r}:${i}`, channel);
      (a.op === 'send' ? sendOf : recvOf).set(channel, { rank: r, index: i });
    });
  });
  const flip = (a: Action): string => (a.op === 'send' ? `recv on rank ${(a as { peer: number }).peer}` : `send on rank ${(a as { peer: number }).peer}`);
  for (const [mine, theirs] of [[sendOf, recvOf], [recvOf, sendOf]] as const) {
    for (const [channel, { rank, index }] of mine) {
      if (theirs.has(channel)) continue;
      const a = table.actions[rank]![index]!;
      throw new Error(`rank ${rank}, action ${index} (${describeAction(a)}): no matching ${flip(a)}`);
    }
  }
  return { ofSend, ofRecv, sendOf };
}

/** The deadlock report: every unfinished rank waits at a recv; following each to its sender's rank finds a cycle. */
function deadlock(table: PipelineTable, pc: number[], channels: ReturnType<typeof matchTransfers>): string {
  const waitsAt = (r: number): string => {
    const a = table.actions[r]![pc[r]!]!;
    const send = channels.sendOf.get(channels.ofRecv.get(`${r}:${pc[r]}`)!)!;
    return `rank ${r} waits at action ${pc[r]} (${describeAction(a)}) for rank ${send.rank}'s action ${send.index}, not yet run`;
  };
  const blocked = ranks(table.stages).filter((r) => pc[r]! < table.actions[r]!.length);
  // Each blocked rank waits on one peer, itself blocked (the send is in its unfinished list).
  const path: number[] = [];
  let r = blocked[0]!;
  while (!path.includes(r)) {
    path.push(r);
    r = channels.sendOf.get(channels.ofRecv.get(`${r}:${pc[r]}`)!)!.rank;
  }
  const cycle = path.slice(path.indexOf(r));
  const others = blocked.filter((q) => !cycle.includes(q));
  return `deadlock: ${cycle.map(waitsAt).join('; ')}; cycle: ${[...cycle, r].map((q) => `rank ${q}`).join(' -> ')}` +
    (others.length ? `; also blocked: ${others.map(waitsAt).join('; ')}` : '');
}
