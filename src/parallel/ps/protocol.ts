/**
 * The parameter server's wire protocol over a process group's point-to-point messages (ps-lite's
 * van, on weft's backends). Ranks [0, W) are workers and [W, W + S) servers, so worker 0 is world
 * rank 0 (the one that logs). Every request is a fixed header (float64, exact integers) on
 * TAG_REQ, then its payloads on their own tags; a reply is a header on TAG_REP, then its payloads.
 * Messages between one pair of ranks arrive in the order sent (threads: one channel per pair; MPI:
 * non-overtaking), so a worker matches replies to its requests by order.
 */
export const TAG_REQ = 7101;
export const TAG_KEYS = 7102;
export const TAG_VALS = 7103;
export const TAG_REP = 7111;
export const TAG_RVALS = 7112;
export const TAG_RVERS = 7113;
/** Server to server (a resize's rows): header, keys, values, versions, then each optimizer state array. */
export const TAG_MOVE = 7121;

export const Op = {
  /** keys -> values, versions; held until the consistency bound lets clock `clock` read (clock -1: read now). */
  pull: 1,
  /** keys, gradients (encoded): folded into the next update (BSP) or applied at once (SSP, ASP). */
  push: 2,
  /** The worker finished clock `clock` (every push of it was sent before). */
  clock: 3,
  /** keys, values: a 'given' table's initial rows (worker 0 sends the dense model's init); replied. */
  init: 4,
  /** Write the shard once every worker has finished clock `clock`; replied when written, with the file's length (H.n) and SHA-256 (8 int32 words). */
  save: 5,
  /** The worker is done: it sends nothing more. */
  done: 6,
  /** Counters of the server (ServerStats), replied as float64. */
  stats: 7,
  /** Server to server: rows of `table` that change owner at resize `clock` (keys, values, versions, optimizer state). */
  move: 8,
} as const;
export type OpCode = (typeof Op)[keyof typeof Op];

/** Header fields (float64 each). */
export const H = { op: 0, table: 1, clock: 2, n: 3, codec: 4, arg: 5 } as const;
export const HEADER = 8;

export const CODECS = ['none', 'fp16', 'int8'] as const;

/** Reply status. */
export const OK = 0;
export const FAIL = 1;

export const MODES = ['bsp', 'ssp', 'asp'] as const;
export type Consistency = (typeof MODES)[number];

/** Who is what in a parameter-server launch of `world` ranks with `servers` servers. */
export interface PsRoles { workers: number[]; servers: number[] }

export function psRoles(world: number, servers: number): PsRoles {
  if (!Number.isInteger(servers) || servers < 1) throw new Error(`ps.servers must be a positive integer, got ${servers}`);
  if (servers >= world) {
    throw new Error(`ps.servers (${servers}) leaves no worker among ${world} rank${world === 1 ? '' : 's'}: launch more ranks than servers (e.g. --nproc ${servers + 1} or more)`);
  }
  const w = world - servers;
  return { workers: Array.from({ length: w }, (_, i) => i), servers: Array.from({ length: servers }, (_, i) => w + i) };
}

/** The name of server `index` on the hash ring (its keys do not depend on which rank runs it). */
export const serverName = (index: number): string => `ps${index}`;

/** Counters a server keeps (Op.stats returns them in this order). */
export const STAT_NAMES = [
  'pulls', 'pushes', 'rowsPulled', 'rowsPushed', 'bytesIn', 'bytesOut', 'updates',
  'maxStaleness', 'reads', 'heldReads', 'heldMs', 'lostWorkers', 'movedOut', 'movedIn', 'heldAtResize',
] as const;
export type ServerStats = Record<(typeof STAT_NAMES)[number], number>;

/** What a server wrote at a save: the bytes of its shard file and their SHA-256 (hex, 64 digits). */
export interface ShardWritten { bytes: number; sha256: string }

/** A SHA-256 in hex as the 8 int32 words of its 32 bytes (how it travels in a save's reply), and back. */
export const hashWords = (hex: string): Int32Array => new Int32Array(Uint8Array.from(Buffer.from(hex.padEnd(64, '0'), 'hex')).buffer);
export const wordsHash = (w: Int32Array): string => Buffer.from(w.buffer, w.byteOffset, 32).toString('hex');
