/**
 * Optimizer state on disk (optim/offload.ts) against the same optimizers in memory, bit for bit:
 * AdamW with clipping, weight decay and a no-decay mask, AdamW over a ZeRO shard, SGD with
 * nesterov momentum, a resume through loadState, and the parameters themselves in a file (ZeRO
 * stage 3 offloaded). The layout has 2,100,032 elements: at one
 * thread 9 chunks of 2^18 (the last one short), so read-ahead, write-behind and the ring's reuse of
 * its slots all happen within one step. No test flushes before reading back: a read must wait for
 * the writes a step left in flight.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AdamW, FileVector, FlatBuffer, Layout, profiler, setThreads, SGD } from '../src/index.js';
import type { AdamWConfig, SGDConfig } from '../src/index.js';
import { globalNorm } from '../src/optim/clip.js';
import { chunkLength } from '../src/optim/common.js';
import { RING } from '../src/optim/offload.js';
import { ZeroShard } from '../src/parallel/zero.js';

setThreads(1);

const layout = new Layout([{ name: 'w', shape: [1000, 1000] }, { name: 'b', shape: [1100003] }, { name: 'ln', shape: [7] }]);
const STEPS = 5;
const root = mkdtempSync(join(tmpdir(), 'weft-offload-'));
let dirs = 0;
const freshDir = (): string => join(root, `run${dirs++}`);
after(() => rmSync(root, { recursive: true, force: true }));

/**
 * Uniform values in [-scale, scale) in every tensor (padding stays zero), from xorshift32: 2M
 * elements in milliseconds, where Rng's normals take a quarter second (this file draws ~30M).
 */
function randomBuffer(seed: number, scale: number): FlatBuffer<Float32Array> {
  const buf = FlatBuffer.zeros(layout);
  let x = seed * 2654435761 >>> 0 || 1;
  for (const s of layout.slots) {
    for (let i = 0; i < s.size; i++) {
      x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
      buf.data[s.offset + i] = (x / 2 ** 31 - 1) * scale;
    }
  }
  return buf;
}

/** Gradients large enough to clip (norm ~840 against clipNorm 1) on even steps, small (0.08) on odd ones. */
const gradSeq = (seed: number, n = STEPS): FlatBuffer<Float32Array>[] =>
  Array.from({ length: n }, (_, t) => randomBuffer(seed * 100 + t, t % 2 ? 1e-4 : 1));

type Opt = AdamW<Float32Array> | SGD<Float32Array>;

/** Steps `opt` through `grads` (with the global norm, which a shard's step needs) and reads its state back. */
async function run(opt: Opt, grads: readonly FlatBuffer<Float32Array>[], shardGrads?: (g: FlatBuffer<Float32Array>) => FlatBuffer<Float32Array>): Promise<Record<string, Float32Array>> {
  for (const g of grads) await opt.step(shardGrads ? shardGrads(g) : g, opt.lr, { norm: await globalNorm(g.data) });
  const out: Record<string, Float32Array> = { p: opt.params.data.slice() };
  for (const [k, b] of Object.entries(await opt.stateVectors())) out[k] = b.data;
  await opt.close();
  return out;
}

/** The same optimizer in memory and offloaded, from the same parameters and gradients. */
async function both(make: (params: FlatBuffer<Float32Array>, offload: { offload?: { dir: string } }) => Opt, seed: number, shardGrads?: (g: FlatBuffer<Float32Array>) => FlatBuffer<Float32Array>): Promise<{ mem: Record<string, Float32Array>; disk: Record<string, Float32Array>; p0: Float32Array }> {
  const p0 = randomBuffer(seed, 0.1).data;
  const grads = gradSeq(seed + 1);
  const mem = await run(make(new FlatBuffer(layout, p0.slice()), {}), grads, shardGrads);
  const disk = await run(make(new FlatBuffer(layout, p0.slice()), { offload: { dir: freshDir() } }), grads, shardGrads);
  return { mem, disk, p0 };
}

/** Bit-equal vectors, and the update did move them (an equality of untouched zeros proves nothing). */
function assertSame(mem: Record<string, Float32Array>, disk: Record<string, Float32Array>, p0: Float32Array, names: readonly string[]): void {
  assert.deepEqual(Object.keys(disk).sort(), [...names].sort());
  for (const k of names) {
    assert.ok(Buffer.from(mem[k]!.buffer).equals(Buffer.from(disk[k]!.buffer)), `${k}: offloaded differs from in memory`);
    assert.ok(disk[k]!.some((x, i) => x !== (k === 'p' ? p0[i] : 0)), `${k}: the steps changed nothing`);
  }
}

// First in the file: no in-memory AdamW has declared its moments yet in this process.
test('offload: AdamW holds only its chunk ring (RING buffers of one chunk per moment), no adamw.m / adamw.v; the files are 4 bytes per state element', async () => {
  const dir = freshDir();
  const opt = new AdamW(randomBuffer(1, 0.1), { lr: 1e-3, offload: { dir } });
  for (const name of ['m', 'v']) assert.equal(statSync(join(dir, `adamw.${name}.f32`)).size, 4 * layout.size);
  await opt.step(gradSeq(2, 1)[0]!);
  const held = profiler.report().heldBytes;
  assert.equal(held['adamw.m'], undefined);
  assert.equal(held['adamw.v'], undefined);
  // 2 moments x RING slots x one chunk (2^18 elements at one thread) x 4 bytes = 8 MiB, whatever the model's size.
  const bound = 2 * RING * chunkLength() * 4;
  assert.equal(bound, 8 * 2 ** 20);
  assert.equal(held['adamw.offload'], bound);
  assert.ok(bound < 2 * 4 * layout.size, `the ring (${bound} B) is smaller than the moments it replaces (${8 * layout.size} B)`);
  // step() resolved with up to 3 writes per moment still in flight (the ring's other slots).
  assert.ok(opt.offloaded!.stats().writes >= 2 * (9 - (RING - 1)));
  await opt.flush();
  const io = opt.offloaded!.stats();
  assert.equal(io.readBytes, 2 * 4 * layout.size, 'each moment read once');
  assert.equal(io.writeBytes, 2 * 4 * layout.size, 'each moment written once');
  assert.deepEqual([io.reads, io.writes], [2 * 9, 2 * 9], '9 chunks per moment');
  await opt.close();
});

test('offload: 5 AdamW steps (clipping, weight decay, a no-decay mask) equal the in-memory optimizer bit for bit, parameters and moments', async () => {
  const cfg: AdamWConfig = { lr: 1e-2, weightDecay: 0.1, clipNorm: 1, noDecay: (n) => n === 'ln' };
  const { mem, disk, p0 } = await both((p, o) => new AdamW(p, { ...cfg, ...o }), 10);
  assertSame(mem, disk, p0, ['p', 'm', 'v']);
});

test('offload: AdamW over a ZeRO shard (rank 1 of 2, two segments; full and shard gradients) equals it in memory bit for bit', async () => {
  const shard = new ZeroShard(layout, [{ lo: 0, hi: 1_000_000 }, { lo: 1_000_000, hi: layout.size }], { rank: 1, size: 2 });
  assert.equal(shard.layout.size, 500_000 + 550_016);
  const cfg: AdamWConfig = { lr: 1e-2, weightDecay: 0.1, clipNorm: 1, shard };
  const stage1 = await both((p, o) => new AdamW(p, { ...cfg, ...o }), 20);
  assertSame(stage1.mem, stage1.disk, stage1.p0, ['p', 'm', 'v']);
  assert.equal(stage1.disk['m']!.length, shard.layout.size);
  const toShard = (g: FlatBuffer<Float32Array>): FlatBuffer<Float32Array> => {
    const s = shard.zeros('test.shard_grads');
    shard.take(g.data, s.data);
    return s;
  };
  const stage2 = await both((p, o) => new AdamW(p, { ...cfg, ...o }), 20, toShard);
  assertSame(stage2.mem, stage2.disk, stage2.p0, ['p', 'm', 'v']);
  assert.deepEqual(stage2.disk['p'], stage1.disk['p'], 'shard gradients and full gradients give the same update');
  // Rank 0's slices are not this rank's to update.
  assert.deepEqual(stage1.disk['p']!.subarray(0, 500_000), stage1.p0.subarray(0, 500_000));
});

test('offload: 5 SGD steps (nesterov momentum, weight decay, clipping) equal it in memory bit for bit; no momentum, no file', async () => {
  const cfg: SGDConfig = { lr: 0.05, momentum: 0.9, nesterov: true, weightDecay: 1e-3, clipNorm: 1 };
  const { mem, disk, p0 } = await both((p, o) => new SGD(p, { ...cfg, ...o }), 30);
  assertSame(mem, disk, p0, ['p', 'momentum']);
  const dir = freshDir();
  const plain = new SGD(FlatBuffer.zeros(layout), { lr: 0.1, offload: { dir } });
  assert.equal(plain.offloaded, null);
  assert.deepEqual(await plain.stateVectors(), {});
  assert.throws(() => statSync(join(dir, 'sgd.momentum.f32')), /ENOENT/);
});

/** `make` over parameters held in a file (a detached buffer, `offload.params`) against `make` in memory: p read back from the file. */
async function paramsInFile(make: (params: FlatBuffer<Float32Array>, offload: { offload?: { dir: string; params?: FileVector } }) => Opt, seed: number, names: readonly string[]): Promise<void> {
  const p0 = randomBuffer(seed, 0.1).data;
  const grads = gradSeq(seed + 1);
  const mem = await run(make(new FlatBuffer(layout, p0.slice()), {}), grads);
  const dir = freshDir();
  const file = new FileVector(join(root, `params${seed}.f32`), layout.size);
  void file.write(0, p0.slice());
  const opt = make(FlatBuffer.detached(layout), { offload: { dir, params: file } });
  const out = await run(opt, grads);
  assert.equal(out['p']!.length, 0, 'the detached buffer holds nothing');
  // One more ring than the state: the parameters' (the moments' files are still the only ones it made).
  assert.equal(profiler.report().heldBytes[`${opt instanceof AdamW ? 'adamw' : 'sgd'}.offload`], (names.length) * RING * chunkLength() * 4);
  out['p'] = new Float32Array(layout.size);
  await file.read(0, out['p']);
  assertSame(mem, out, p0, names);
  await file.close();
}

test('offload: parameters in a file too (ZeRO stage 3 offloaded): 5 AdamW steps, and 5 SGD steps without momentum, equal them in memory bit for bit', async () => {
  await paramsInFile((p, o) => new AdamW(p, { lr: 1e-2, weightDecay: 0.1, clipNorm: 1, ...o }), 50, ['p', 'm', 'v']);
  await paramsInFile((p, o) => new SGD(p, { lr: 0.05, weightDecay: 1e-3, clipNorm: 1, ...o }), 60, ['p']);
});

test('offload: a detached parameter buffer without offload.params, or offload.params beside parameters in memory or with a ZeRO shard spec, are errors', async () => {
  const file = new FileVector(join(root, 'params-bad.f32'), layout.size);
  assert.throws(() => new AdamW(FlatBuffer.detached(layout), { lr: 1e-3 }), /AdamW: the parameter buffer is detached \(no data\); its values must come from a file, offload.params/);
  assert.throws(() => new SGD(FlatBuffer.zeros(layout), { lr: 1e-3, offload: { dir: freshDir(), params: file } }), /SGD: offload.params '.*params-bad.f32' holds the parameters, but the parameter buffer holds data too/);
  const shard = new ZeroShard(layout, [{ lo: 0, hi: layout.size }], { rank: 0, size: 2 });
  assert.throws(() => new AdamW(FlatBuffer.detached(layout), { lr: 1e-3, shard, offload: { dir: freshDir(), params: file } }), /AdamW: offload.params with a ZeRO shard spec/);
  const short = new FileVector(join(root, 'params-short.f32'), 16);
  assert.throws(() => new AdamW(FlatBuffer.detached(layout), { lr: 1e-3, offload: { dir: freshDir(), params: short } }), /AdamW: offload.params '.*params-short.f32' holds 16 elements, the parameters 2100032/);
  await file.close();
  await short.close();
});

/** 3 steps in memory, then the last 2 resumed from its state() in memory and offloaded. */
async function resumed<O extends Opt>(make: (p: FlatBuffer<Float32Array>, o: { offload?: { dir: string } }) => O, load: (to: O, from: O) => Promise<void>, names: readonly string[]): Promise<void> {
  const grads = gradSeq(41, 5);
  const first = make(randomBuffer(40, 0.1), {});
  for (const g of grads.slice(0, 3)) await first.step(g);
  const resume = async (o: { offload?: { dir: string } }): Promise<Record<string, Float32Array>> => {
    const opt = make(new FlatBuffer(layout, first.params.data.slice()), o);
    await load(opt, first);
    return run(opt, grads.slice(3));
  };
  assertSame(await resume({}), await resume({ offload: { dir: freshDir() } }), first.params.data, names);
}

test('offload: loadState then steps, offloaded, equals the same in memory bit for bit (AdamW and SGD)', async () => {
  await resumed((p, o) => new AdamW(p, { lr: 1e-2, weightDecay: 0.1, clipNorm: 1, ...o }), async (to, from) => to.loadState(await from.state()), ['p', 'm', 'v']);
  await resumed((p, o) => new SGD(p, { lr: 0.05, momentum: 0.9, dampening: 0.1, ...o }), async (to, from) => to.loadState(await from.state()), ['p', 'momentum']);
  const opt = new AdamW(FlatBuffer.zeros(layout), { lr: 1e-3, offload: { dir: freshDir() } });
  assert.throws(() => opt.loadState({ t: 1, m: new Float32Array(layout.size), v: new Float32Array(3) }), /AdamW.loadState: 'v' has 3 elements, expected 2100032/);
  await opt.close();
});

test('offload: a directory that cannot be made, or float64 parameters, are errors naming them', () => {
  const file = join(root, 'a-file');
  writeFileSync(file, 'x');
  const dir = join(file, 'state');
  assert.throws(() => new AdamW(FlatBuffer.zeros(layout), { lr: 1e-3, offload: { dir } }), (e: Error) => e.message.startsWith(`AdamW: offload.dir '${dir}' cannot be made a directory: ENOTDIR`));
  assert.throws(() => new SGD(FlatBuffer.zeros(layout), { lr: 1e-3, momentum: 0.9, offload: { dir } }), /^Error: SGD: offload.dir '.*a-file\/state' cannot be made/);
  assert.throws(() => new AdamW(FlatBuffer.zeros64(layout), { lr: 1e-3, offload: { dir: freshDir() } }), /AdamW: offload keeps float32 moments; the parameters are float64/);
});

test('FileVector: ranges read back what unawaited writes left, in issue order; outside the vector is an error naming the file', async () => {
  const path = join(root, 'vector.f32');
  const f = new FileVector(path, 100);
  const a = Float32Array.from({ length: 100 }, (_, i) => i);
  const w1 = f.write(0, a);
  const w2 = f.write(10, Float32Array.of(-1, -2));
  const back = new Float32Array(100);
  await f.read(0, back);
  assert.deepEqual([...back.subarray(8, 14)], [8, 9, -1, -2, 12, 13]);
  await Promise.all([w1, w2]);
  assert.equal(statSync(path).size, 400);

  assert.throws(() => f.read(99, new Float32Array(2)), (e: Error) => e.message === `${path}: read of elements [99, 101) is outside the vector's 100`);
  await f.close();
});

test('FileVector: 8 overlapping 4 MB writes issued at once, then a read: the read sees the last write, whole (20 trials)', async () => {
  // Unordered, libuv's 4 threads run them at once: measured 2-5 of 20 trials read a mix.
  const n = 1 << 20;
  const f = new FileVector(join(root, 'race.f32'), n);
  const fills = Array.from({ length: 8 }, (_, k) => new Float32Array(n).fill(k));
  const back = new Float32Array(n);
  for (let trial = 0; trial < 20; trial++) {
    for (const a of fills) void f.write(0, a);
    await f.read(0, back);
    assert.ok(back.every((x) => x === 7), `trial ${trial}: the read saw ${[...new Set(back)].join(', ')}`);
  }
  await f.close();
});
