/**
 * TensorBoard event files (`log.tensorboard`), for users who already run TensorBoard: every
 * metrics line's numbers as scalars, tagged with their metric names.
 *
 * The format, written here without TensorFlow: a file `events.out.tfevents.<seconds>.<host>.<pid>.weft`
 * of TFRecords (uint64 length, its masked CRC-32C, the bytes, their masked CRC-32C; all little
 * endian), each record one `Event` protobuf (tensorflow/core/util/event.proto):
 *   Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; SessionLog session_log = 6; }
 *   Summary { repeated Value value = 1; }   Value { string tag = 1; float simple_value = 2; }
 *   SessionLog { SessionStatus status = 1; }   (START = 1)
 * The first record names the version ("brain.Event:2"). A resumed run writes a new file that
 * begins with a SessionLog START at the resumed step: TensorBoard then drops the earlier files'
 * points past that step (the steps the crash lost and the resume redid), as it does for
 * TensorFlow's own restarts.
 */
import { appendFileSync, existsSync, mkdirSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';

const CRC32C_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC-32C (Castagnoli, reflected 0x82F63B78), as TFRecord uses it. */
export function crc32c(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC32C_TABLE[(c ^ bytes[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** TFRecord's masked CRC: rotated right by 15 and offset, so a CRC of CRC-bearing data is not degenerate. */
export function maskedCrc32c(bytes: Uint8Array): number {
  const c = crc32c(bytes);
  return ((((c >>> 15) | (c << 17)) >>> 0) + 0xa282ead8) >>> 0;
}

// ---- protobuf, the few wire forms an Event needs -------------------------------------------------

function varint(n: number): number[] {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`tensorboard: a varint must be a non-negative safe integer, got ${n}`);
  const out: number[] = [];
  let v = BigInt(n);
  do {
    let byte = Number(v & 0x7fn);
    v >>= 7n;
    if (v > 0n) byte |= 0x80;
    out.push(byte);
  } while (v > 0n);
  return out;
}

const lengthDelimited = (field: number, body: Uint8Array): Uint8Array => Uint8Array.from([...varint((field << 3) | 2), ...varint(body.length), ...body]);

function fixed(field: number, wire: 1 | 5, value: number): Uint8Array {
  const b = new DataView(new ArrayBuffer(wire === 1 ? 8 : 4));
  if (wire === 1) b.setFloat64(0, value, true); else b.setFloat32(0, value, true);
  return Uint8Array.from([...varint((field << 3) | wire), ...new Uint8Array(b.buffer)]);
}

const concat = (parts: Uint8Array[]): Uint8Array => {
  const out = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
};

export type EventBody = { fileVersion: string } | { scalars: Record<string, number> } | { sessionStart: true };

/** One `Event` message's bytes. */
export function encodeEvent(wallTime: number, step: number, body: EventBody): Uint8Array {
  const parts = [fixed(1, 1, wallTime), Uint8Array.from([...varint(2 << 3), ...varint(step)])];
  if ('fileVersion' in body) parts.push(lengthDelimited(3, new TextEncoder().encode(body.fileVersion)));
  else if ('sessionStart' in body) parts.push(lengthDelimited(6, Uint8Array.from([...varint(1 << 3), ...varint(1)])));
  else {
    const values = Object.entries(body.scalars).map(([tag, v]) => lengthDelimited(1, concat([lengthDelimited(1, new TextEncoder().encode(tag)), fixed(2, 5, v)])));
    parts.push(lengthDelimited(5, concat(values)));
  }
  return concat(parts);
}

/** One TFRecord around `data`. */
export function tfRecord(data: Uint8Array): Uint8Array {
  const head = new Uint8Array(12);
  const dv = new DataView(head.buffer);
  dv.setBigUint64(0, BigInt(data.length), true);
  dv.setUint32(8, maskedCrc32c(head.subarray(0, 8)), true);
  const tail = new Uint8Array(4);
  new DataView(tail.buffer).setUint32(0, maskedCrc32c(data), true);
  return concat([head, data, tail]);
}

/**
 * Appends scalars to a new event file under `dir`; after `resumedAt`, the file starts with a
 * SessionLog START there. Each record is appended whole (the file is opened per record: one a
 * step costs microseconds, and no descriptor outlives a run).
 */
export class TensorBoardWriter {
  readonly file: string;

  constructor(dir: string, resumedAt: number | null = null, private readonly now: () => number = () => Date.now() / 1000) {
    mkdirSync(dir, { recursive: true });
    const t = now();
    // Two runs of one process in one second (a restart) must not share a file, and TensorBoard reads
    // a directory's files in name order: the later one's name sorts after (".weft" < ".weft.001").
    const base = join(dir, `events.out.tfevents.${Math.floor(t)}.${hostname()}.${process.pid}.weft`);
    let file = base;
    for (let i = 1; existsSync(file); i++) file = `${base}.${String(i).padStart(3, '0')}`;
    this.file = file;
    this.write(encodeEvent(t, 0, { fileVersion: 'brain.Event:2' }));
    if (resumedAt !== null) this.write(encodeEvent(t, resumedAt, { sessionStart: true }));
  }

  /** The numbers of one metrics line but its step, as scalars at that step. */
  scalars(step: number, values: Readonly<Record<string, number | undefined>>): void {
    const s: Record<string, number> = {};
    for (const [k, v] of Object.entries(values)) if (k !== 'step' && typeof v === 'number' && Number.isFinite(v)) s[k] = v;
    if (Object.keys(s).length > 0) this.write(encodeEvent(this.now(), step, { scalars: s }));
  }

  private write(event: Uint8Array): void { appendFileSync(this.file, tfRecord(event)); }
}
