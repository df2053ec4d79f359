/**
 * TensorBoard event files: CRC-32C against RFC 3720's vectors, an Event's bytes against the
 * protobuf wire format worked out by hand, and a training run's files read back by this test's own
 * TFRecord and protobuf reader: every metrics line's numbers, at its step, as float32.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32c, encodeEvent, maskedCrc32c } from '../src/train/tensorboard.js';
import { parseConfig } from '../src/train/config.js';
import { Trainer } from '../src/train/trainer.js';

test('CRC-32C matches RFC 3720 (B.4) and the check value', () => {
  assert.equal(crc32c(new TextEncoder().encode('123456789')), 0xe3069283);
  assert.equal(crc32c(new Uint8Array(32)), 0x8a9136aa);
  assert.equal(crc32c(new Uint8Array(32).fill(0xff)), 0x62a8ab43);
  assert.equal(crc32c(Uint8Array.from({ length: 32 }, (_, i) => i)), 0x46dd794e);
});

test('an Event with one scalar is the protobuf wire bytes worked out by hand', () => {
  const got = [...encodeEvent(1.5, 3, { scalars: { loss: 2.5 } })];
  const want = [
    0x09, 0, 0, 0, 0, 0, 0, 0xf8, 0x3f, // field 1 wall_time, fixed64 double 1.5
    0x10, 0x03, // field 2 step, varint 3
    0x2a, 13, // field 5 summary, 13 bytes
    0x0a, 11, // Summary.value, 11 bytes
    0x0a, 4, 0x6c, 0x6f, 0x73, 0x73, // Value.tag "loss"
    0x15, 0, 0, 0x20, 0x40, // Value.simple_value, fixed32 float 2.5
  ];
  assert.deepEqual(got, want);
  // A step past 2^7 takes two varint bytes; a session START is field 6 holding status 1.
  assert.deepEqual([...encodeEvent(0, 300, { sessionStart: true }).subarray(9)], [0x10, 0xac, 0x02, 0x32, 2, 0x08, 1]);
});

// ---- the test's own reader ------------------------------------------------------------------------

interface Field { no: number; wire: number; value: bigint | Buffer }

function fields(b: Buffer): Field[] {
  const out: Field[] = [];
  let o = 0;
  const varint = (): bigint => {
    let v = 0n, shift = 0n;
    for (;;) { const x = b[o++]!; v |= BigInt(x & 0x7f) << shift; shift += 7n; if (!(x & 0x80)) return v; }
  };
  while (o < b.length) {
    const key = Number(varint());
    const no = key >> 3, wire = key & 7;
    if (wire === 0) out.push({ no, wire, value: varint() });
    else if (wire === 1) { out.push({ no, wire, value: b.subarray(o, o + 8) }); o += 8; }
    else if (wire === 5) { out.push({ no, wire, value: b.subarray(o, o + 4) }); o += 4; }
    else if (wire === 2) { const n = Number(varint()); out.push({ no, wire, value: b.subarray(o, o + n) }); o += n; }
    else throw new Error(`wire type ${wire}`);
  }
  return out;
}

interface Ev { wallTime: number; step: number; fileVersion?: string; sessionStatus?: number; scalars: Record<string, number> }

function readEvents(file: string): Ev[] {
  const b = readFileSync(file);
  const evs: Ev[] = [];
  let o = 0;
  while (o < b.length) {
    const n = Number(b.readBigUInt64LE(o));
    assert.equal(b.readUInt32LE(o + 8), maskedCrc32c(b.subarray(o, o + 8)), 'length CRC');
    const data = b.subarray(o + 12, o + 12 + n);
    assert.equal(b.readUInt32LE(o + 12 + n), maskedCrc32c(data), 'data CRC');
    o += 16 + n;
    const ev: Ev = { wallTime: 0, step: 0, scalars: {} };
    for (const f of fields(data)) {
      if (f.no === 1) ev.wallTime = (f.value as Buffer).readDoubleLE(0);
      else if (f.no === 2) ev.step = Number(f.value);
      else if (f.no === 3) ev.fileVersion = (f.value as Buffer).toString('utf8');
      else if (f.no === 6) ev.sessionStatus = Number(fields(f.value as Buffer).find((x) => x.no === 1)!.value);
      else if (f.no === 5) {
        for (const v of fields(f.value as Buffer).filter((x) => x.no === 1)) {
          const vf = fields(v.value as Buffer);
          ev.scalars[(vf.find((x) => x.no === 1)!.value as Buffer).toString('utf8')] = (vf.find((x) => x.no === 2)!.value as Buffer).readFloatLE(0);
        }
      }
    }
    evs.push(ev);
  }
  assert.equal(o, b.length, 'the file ends on a record boundary');
  return evs;
}

test('log.tensorboard: each metrics line as scalars at its step; a resume starts a new file at its step', async () => {
  const out = mkdtempSync(join(tmpdir(), 'weft-tb-'));
  try {
    const cfg = (steps: number) => parseConfig({
      out, model: { ctx: 32, d: 32, layers: 2, heads: 2 },
      train: { steps, batch: 4, lr: 3e-3, warmup: 2, threads: 1 },
      eval: { every: 4, windows: 4 }, checkpoint: { every: 4, keep: 2 }, sample: { tokens: 0 }, log: { tensorboard: true },
    }, 'test config');
    await new Trainer(cfg(6)).run({ out: null });
    // As after a crash between checkpoints: steps 5 and 6 were logged, the last good checkpoint is step 4.
    rmSync(join(out, 'step-000006'), { recursive: true });
    await new Trainer(cfg(8)).run({ out: null, resume: true });
    const files = readdirSync(join(out, 'tensorboard')).filter((f) => f.startsWith('events.out.tfevents.')).sort();
    assert.equal(files.length, 2, files.join(', '));
    const [first, second] = files.map((f) => readEvents(join(out, 'tensorboard', f)));
    assert.equal(first![0]!.fileVersion, 'brain.Event:2');
    assert.equal(second![0]!.fileVersion, 'brain.Event:2');
    assert.deepEqual([second![1]!.step, second![1]!.sessionStatus], [4, 1], 'the resumed file opens with SessionLog START at step 4');
    // TensorBoard's view: the first file up to the resumed step, then the second.
    const shown = [...first!.filter((e) => e.step <= 4), ...second!].filter((e) => Object.keys(e.scalars).length > 0);
    const lines = readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, number>);
    assert.deepEqual(lines.map((l) => l['step']), [1, 2, 3, 4, 5, 6, 7, 8]);
    assert.deepEqual(shown.map((e) => e.step), lines.map((l) => l['step']));
    shown.forEach((e, i) => {
      const { step: _, ...rest } = lines[i]!;
      assert.deepEqual(e.scalars, Object.fromEntries(Object.entries(rest).map(([k, v]) => [k, Math.fround(v)])), `step ${e.step}`);
    });
    assert.ok(shown.some((e) => e.scalars['val_loss'] !== undefined), 'validation loss is a scalar too');
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
