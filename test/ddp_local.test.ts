/**
 * Data parallel's single-process pieces: buckets and the segmented backward (equal to the whole
 * program to float32 rounding), on a group of one.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FlatBuffer, Rng, setThreads } from '../src/index.js';
import { bindParameters, GPT } from '../src/nn/index.js';
import { ddpBuckets, DistributedDataParallel, makeBuckets, ranksShareMachine, resolveDDPPrograms } from '../src/parallel/ddp.js';
import type { DDPPrograms } from '../src/parallel/ddp.js';
import { LocalProcessGroup } from '../src/comm/local.js';
import { gradStep } from '../src/train/step.js';

setThreads(1);
const cfg = { vocab: 64, ctx: 16, d: 32, layers: 3, heads: 4 };

function batch(seed: number, B: number): { x: BigInt64Array; y: BigInt64Array } {
  const rng = new Rng(seed);
  const x = BigInt64Array.from({ length: B * cfg.ctx }, () => BigInt(rng.int(cfg.vocab)));
  const y = BigInt64Array.from({ length: B * cfg.ctx }, () => BigInt(rng.int(cfg.vocab)));
  return { x, y };
}

test('buckets cover the flat buffer contiguously, last tensors first, each at least the cap unless last', () => {
  const params = bindParameters(new GPT(cfg));
  const buckets = makeBuckets(params.flat.layout.slots, 20_000);
  assert.ok(buckets.length > 3);
  assert.equal(buckets[0]!.hi, params.flat.layout.size);
  assert.equal(buckets.at(-1)!.lo, 0);
  for (let i = 1; i < buckets.length; i++) assert.equal(buckets[i]!.hi, buckets[i - 1]!.lo, `bucket ${i} ends where bucket ${i - 1} begins`);
  assert.equal(buckets[0]!.slots.at(-1)!.name, 'lnf.b');
  for (const b of buckets.slice(0, -1)) assert.ok(b.slots.reduce((s, x) => s + x.size * 4, 0) >= 20_000);
});

test('the tail bucket: the layout\'s first tensors reaching the fraction, the rest packed as makeBuckets packs them', () => {
  const params = bindParameters(new GPT(cfg), { seed: 0 });
  const slots = params.flat.layout.slots;
  const total = slots.reduce((a, x) => a + x.size * 4, 0);
  for (const fraction of [1 / 8, 0.3]) {
    const buckets = ddpBuckets(slots, { bucketBytes: 20_000, tailFraction: fraction });
    const tail = buckets.at(-1)!;
    const bytes = (b: typeof tail): number => b.slots.reduce((a, x) => a + x.size * 4, 0);
    assert.equal(tail.lo, 0);
    assert.deepEqual(tail.slots.map((x) => x.name), slots.slice(0, tail.slots.length).map((x) => x.name));
    assert.ok(bytes(tail) >= fraction * total, `tail ${bytes(tail)} B of ${total}`);
    // The smallest such prefix: without its last tensor it falls short.
    assert.ok(bytes(tail) - tail.slots.at(-1)!.size * 4 < fraction * total);
    const head = makeBuckets(slots.slice(tail.slots.length), 20_000);
    assert.deepEqual(buckets.slice(0, -1).map((b) => [b.lo, b.hi]), head.map((b) => [b.lo, b.hi]));
    assert.equal(tail.hi, head.at(-1)!.lo);
    assert.deepEqual(buckets.map((b) => b.index), buckets.map((_, i) => i));
  }
  assert.deepEqual(ddpBuckets(slots, { bucketBytes: 20_000, programs: 'buckets' }), makeBuckets(slots, 20_000));
  assert.throws(() => ddpBuckets(slots, { tailFraction: 1 }), /tailFraction must be in \(0, 1\), got 1/);
});

test("'auto' cuts the backward once only where the ranks share the machine and do not fill its cores", () => {
  const threads = { backend: 'threads', size: 2 };
  const mpi = { backend: 'mpi', size: 4 };
  // Thread ranks are on this machine: one program when ranks x threads reach the cores, else the tail.
  assert.equal(resolveDDPPrograms('auto', threads, 1, 2), 'none');
  assert.equal(resolveDDPPrograms('auto', threads, 2, 4), 'none');
  assert.equal(resolveDDPPrograms(undefined, threads, 1, 2), 'tail', 'the default is the tail');
  assert.equal(resolveDDPPrograms('auto', threads, 1, 4), 'tail');
  // MPI ranks: on one machine only when Open MPI's local size is the whole group.
  assert.equal(ranksShareMachine(mpi, { OMPI_COMM_WORLD_LOCAL_SIZE: '4' }), true);
  assert.equal(ranksShareMachine(mpi, { OMPI_COMM_WORLD_LOCAL_SIZE: '2' }), false);
  assert.equal(ranksShareMachine(mpi, {}), false);
  // A stated cut is kept; a wrong one names the choices.
  for (const p of ['tail', 'buckets', 'none'] as const) assert.equal(resolveDDPPrograms(p, threads, 1, 2), p);
  assert.throws(() => resolveDDPPrograms('bucket' as DDPPrograms, threads), /programs must be auto, tail, buckets, none; got 'bucket'/);
  assert.throws(() => ddpBuckets(bindParameters(new GPT(cfg)).flat.layout.slots, { programs: 'auto' as never }), /resolve programs 'auto'/);
});

for (const [programs, count] of [['tail', 2], ['buckets', -1], ['none', 1]] as [DDPPrograms, number][]) test(`the backward cut as '${programs}' gives the whole program's loss and gradients (to float32 rounding)`, async () => {
  const model = new GPT(cfg);
  const params = bindParameters(model, { seed: 1 });
  const whole = FlatBuffer.zeros(params.flat.layout);
  const split = FlatBuffer.zeros(params.flat.layout);
  const step = gradStep(params, whole, (x, y) => model.loss(x!, y!));
  const ddp = new DistributedDataParallel(new LocalProcessGroup(), params, split, (x, y) => model.loss(x!, y!), { bucketBytes: 30_000, programs });
  assert.ok(ddp.buckets.length >= 4, `${ddp.buckets.length} buckets`);
  assert.equal(ddp.programBuckets.length, count === -1 ? ddp.buckets.length : count);
  assert.deepEqual(ddp.programBuckets.flat(), ddp.buckets.map((b) => b.index));
  const { x, y } = batch(3, 2);
  const feeds = [{ data: x, shape: [2, cfg.ctx], dtype: 'int64' as const }, { data: y, shape: [2, cfg.ctx], dtype: 'int64' as const }];
  const l1 = await step(feeds);
  const l2 = await ddp.step(feeds);
  assert.equal(l2, l1);
  // Not bitwise: onnxruntime fuses each segment's graph on its own, so summation orders differ.
  for (const s of params.flat.layout.slots) {
    let err = 0;
    let max = 0;
    for (let i = s.offset; i < s.offset + s.size; i++) { err = Math.max(err, Math.abs(split.data[i]! - whole.data[i]!)); max = Math.max(max, Math.abs(whole.data[i]!)); }
    assert.ok(err <= 1e-6 * max, `${s.name}: max difference ${err} against max |g| ${max}`);
  }
  if (count === 1) assert.equal(ddp.stats.crossingBytes, 0);
  else assert.ok(ddp.stats.crossingBytes > 0, 'segments pass activations to each other');
  // noSync accumulation adds into the buffer.
  await ddp.step(feeds, { noSync: true, accumulate: true });
  const scale = whole.data.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  for (let i = 0; i < whole.data.length; i++) {
    assert.ok(Math.abs(split.data[i]! - 2 * whole.data[i]!) <= 2e-6 * scale, `element ${i}: ${split.data[i]} vs 2 x ${whole.data[i]}`);
  }
});

test('fp16 conversion rounds to nearest even and round-trips halves exactly', async () => {
  const { toHalf, fromHalf } = await import('../src/parallel/ddp.js');
  for (const [x, bits] of [[0, 0], [1, 0x3c00], [-2, 0xc000], [65504, 0x7bff], [1e6, 0x7c00], [2 ** -24, 0x0001], [0.1, 0x2e66], [1 + 2 ** -11, 0x3c00], [1 + 3 * 2 ** -11, 0x3c02]] as const) {
    assert.equal(toHalf(x), bits, `toHalf(${x})`);
  }
  for (let h = 0; h < 0x7c00; h += 37) assert.equal(toHalf(fromHalf(h)), h, `half ${h.toString(16)} round trip`);
  assert.ok(Number.isNaN(fromHalf(toHalf(NaN))));
});
