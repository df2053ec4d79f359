/**
 * Image data: the MNIST split, lossless uint8 storage, image transforms (normalization, random crop,
 * flips), and seeded, resumable augmentation through both loaders.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { test } from 'node:test';
import {
  batchField, batchRng, createLoader, datasetFromSpec, ImageDataset, ImageTransformer, mnist, mnistCounts, MNIST_NORMALIZE,
  RandomWindowSampler, SyncLoader,
} from '../src/data/index.js';
import type { Batch, DataRecord, ImageTransform, Loader, LoaderOptions, SkippedRecord } from '../src/data/index.js';
import { Rng } from '../src/tensor/random.js';

const { train, test: testSet, classes } = mnist({ augment: { randomCrop: { padding: 2 }, horizontalFlip: true } });
const H = 28, W = 28;

async function drain(l: Loader, n: number): Promise<Batch[]> {
  const out: Batch[] = [];
  for (let i = 0; i < n; i++) out.push((await l.next())!);
  return out;
}

/**
 * The reference transform, written independently of ImageTransformer: zero-pad the uint8 image by p,
 * crop H x W at top/left (dy + p, dx + p) (torchvision RandomCrop), mirror, then (p / 255 - mean) / std.
 */
function reference(img: Uint8Array, p: number, dy: number, dx: number, flip: boolean, mean = 0.1307, std = 0.3081): Float32Array {
  const P = new Uint8Array((H + 2 * p) * (W + 2 * p));
  for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) P[(y + p) * (W + 2 * p) + x + p] = img[y * W + x]!;
  const out = new Float32Array(H * W);
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      const cx = flip ? W - 1 - x : x;
      out[y * W + x] = (P[(y + dy + p) * (W + 2 * p) + cx + dx + p]! / 255 - mean) / std;
    }
  }
  return out;
}

/** Batch `k` of a random-sampler loader over `train`, recomputed from the documented draws. */
function expectedBatch(seed: number, rank: number, k: number, indices: number[]): { x: Float32Array; y: bigint[] } {
  const rng = batchRng(seed, rank, k);
  const x = new Float32Array(indices.length * H * W);
  indices.forEach((i, r) => {
    const dy = rng.int(5) - 2, dx = rng.int(5) - 2, flip = rng.uniform() < 0.5;
    x.set(reference(train.image(i), 2, dy, dx, flip), r * H * W);
  });
  return { x, y: indices.map((i) => BigInt(train.label(i))) };
}

// ---- MNIST -----------------------------------------------------------------------------------------

test('mnist: the fixed split keeps the first 80% (floor) of each digit: 7,996 train, 2,004 test', () => {
  assert.equal(classes, 10);
  assert.equal(train.size, 7996);
  assert.equal(testSet.size, 2004);
  const perDigit = [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978];
  const counts = mnistCounts();
  assert.deepEqual(counts.map((c) => c.train), [800, 901, 792, 825, 784, 690, 811, 856, 755, 782]);
  assert.deepEqual(counts.map((c, d) => c.train + c.test), perDigit);
  counts.forEach((c, d) => assert.equal(c.train, Math.floor(perDigit[d]! * 0.8), `digit ${d}`));
  const histogram = (ds: ImageDataset): number[] => {
    const h = new Array<number>(10).fill(0);
    for (let i = 0; i < ds.size; i++) h[ds.label(i)]!++;
    return h;
  };
  assert.deepEqual(histogram(train), counts.map((c) => c.train));
  assert.deepEqual(histogram(testSet), [201, 226, 199, 207, 196, 173, 203, 214, 189, 196]);
  assert.deepEqual(train.fields, [{ name: 'x', dtype: 'float32', shape: [1, 28, 28] }, { name: 'y', dtype: 'int64', shape: [] }]);
  assert.deepEqual([train.describe(5), testSet.describe(5)], ['mnist-train[5]', 'mnist-test[5]']);
});

test('mnist: uint8 pixels are lossless against the package JSON, in package order per digit', () => {
  const require = createRequire(import.meta.url);
  let trainAt = 0, testAt = 0, checked = 0;
  for (let d = 0; d < 10; d++) {
    const data = (JSON.parse(readFileSync(require.resolve(`mnist/src/digits/${d}.json`), 'utf8')) as { data: number[] }).data;
    const n = data.length / 784, nTrain = Math.floor(n * 0.8);
    for (let k = 0; k < n; k++) {
      const [ds, i] = k < nTrain ? [train, trainAt++] : [testSet, testAt++];
      assert.equal(ds.label(i), d);
      const img = ds.image(i);
      for (let j = 0; j < 784; j++) {
        const v = data[k * 784 + j]!;
        if (Math.round((img[j]! / 255) * 1000) / 1000 !== v) assert.fail(`digit ${d} image ${k} pixel ${j}: stored ${img[j]} gives ${img[j]! / 255}, the JSON has ${v}`);
        checked++;
      }
    }
  }
  assert.equal(checked, 10_000 * 784);
  assert.ok(train.pixels.buffer instanceof SharedArrayBuffer, 'pixels are in shared memory (a prefetch worker reads them without a copy)');
});

// ---- transforms ------------------------------------------------------------------------------------

test('transform: normalization is (p / 255 - 0.1307) / 0.3081 rounded once to float32; eval data gets nothing else', () => {
  assert.deepEqual(testSet.transform.spec, { normalize: MNIST_NORMALIZE });
  assert.equal(testSet.transform.random, false);
  const [x, y] = testSet.record(100) as [Float32Array, Int32Array];
  const img = testSet.image(100);
  assert.ok(x instanceof Float32Array && x.length === 784);
  for (let j = 0; j < 784; j++) assert.equal(x[j], Math.fround((img[j]! / 255 - 0.1307) / 0.3081), `pixel ${j}`);
  assert.deepEqual(Array.from(y), [testSet.label(100)]);
  assert.equal(x[0], Math.fround(-0.1307 / 0.3081)); // a background pixel: -0.42421...
  assert.ok(Math.abs(x[0]! + 0.424212917884) < 1e-7);
  const raw = mnist({ normalize: null }).test;
  assert.deepEqual(Array.from((raw.record(100)[0] as Float32Array).subarray(150, 160)), Array.from(img.subarray(150, 160), (p) => Math.fround(p / 255)));
});

test('transform: a random crop is the zero-padded image shifted by the drawn offsets; flips mirror', () => {
  const img = train.image(42);
  const crop = new ImageTransformer({ normalize: MNIST_NORMALIZE, randomCrop: { padding: 2 } }, [1, 28, 28]);
  const rng = new Rng(9), again = new Rng(9);
  const seen = new Set<string>();
  for (let k = 0; k < 40; k++) {
    const a = crop.draw(rng);
    const dy = again.int(5) - 2, dx = again.int(5) - 2; // the documented draws: rng.int(2p + 1) - p, y then x
    assert.deepEqual(a, { dy, dx, flip: false });
    seen.add(`${dy},${dx}`);
    assert.deepEqual(crop.apply(img, a), reference(img, 2, dy, dx, false), `offsets (${dy}, ${dx})`);
  }
  assert.ok(seen.size >= 15, `40 draws cover most of the 25 offsets, got ${seen.size}`);
  // A shift of (+2, -1): row 0 of the output is row 2 of the image, one column to the right.
  const shifted = new ImageTransformer({ randomCrop: { padding: 2 } }, [1, 28, 28]).apply(img, { dy: 2, dx: -1, flip: false });
  assert.equal(shifted[0 * 28 + 5], Math.fround(img[2 * 28 + 4]! / 255));
  assert.equal(shifted[27 * 28 + 5], 0, 'rows shifted in from below the image are zero');
  assert.equal(shifted[10 * 28 + 0], 0, 'the column shifted in from the left is zero');
  const always = new ImageTransformer({ horizontalFlip: { p: 1 } }, [1, 28, 28]);
  const never = new ImageTransformer({ horizontalFlip: { p: 0 } }, [1, 28, 28]);
  const f = always.apply(img, always.draw(new Rng(1)));
  for (let y = 0; y < 28; y++) for (let x = 0; x < 28; x++) assert.equal(f[y * 28 + x], Math.fround(img[y * 28 + 27 - x]! / 255));
  assert.deepEqual(never.apply(img, never.draw(new Rng(1))), Float32Array.from(img, (p) => p / 255));
  // Three channels, each with its own mean/std, flipped and shifted together.
  const rgb = Uint8Array.from({ length: 3 * 4 * 5 }, (_, i) => (i * 37) % 256);
  const t3 = new ImageTransformer({ normalize: { mean: [0.1, 0.2, 0.3], std: [0.5, 1, 2] } }, [3, 4, 5]);
  const o = t3.apply(rgb, { dy: 1, dx: 0, flip: true });
  assert.equal(o[2 * 20 + 0 * 5 + 0], Math.fround((rgb[2 * 20 + 1 * 5 + 4]! / 255 - 0.3) / 2));
  assert.equal(o[1 * 20 + 3 * 5 + 2], Math.fround((0 - 0.2) / 1), 'row shifted in from below is padding (0) normalized');
});

test('transform: bad specs are errors naming the field', () => {
  const shape = [1, 28, 28] as const;
  const bad = (t: unknown, msg: RegExp): void => assert.throws(() => new ImageTransformer(t as ImageTransform, shape, 'tf'), msg);
  bad({ normalize: { mean: [0.1, 0.2, 0.3], std: [1, 1, 1] } }, /tf\.normalize\.mean must hold 1 number\(s\), one per channel, got \[0\.1,0\.2,0\.3\]/);
  bad({ normalize: { mean: [0.1], std: [0] } }, /tf\.normalize\.std must be finite and > 0, got \[0\]/);
  bad({ randomCrop: { padding: -1 } }, /tf\.randomCrop\.padding must be an integer >= 0, got -1/);
  bad({ randomCrop: { padding: 1.5 } }, /tf\.randomCrop\.padding must be an integer >= 0, got 1\.5/);
  bad({ randomcrop: { padding: 2 } }, /tf\.randomcrop is not a transform; expected one of normalize, randomCrop, horizontalFlip/);
  bad({ horizontalFlip: { p: 2 } }, /tf\.horizontalFlip\.p must be a probability in \[0, 1\], got 2/);
  assert.throws(() => mnist({ augment: { randomCrop: { padding: -2 } } }), /ImageDataset mnist-train: transform\.randomCrop\.padding must be an integer >= 0, got -2/);
  const pixels = new Uint8Array(10 * 784);
  assert.throws(() => new ImageDataset({ pixels, labels: new Uint8Array(9), shape: [1, 28, 28], name: 'toy' }),
    /ImageDataset toy: pixels has 7840 values; 9 labels of images \[1, 28, 28\] need 7056/);
  assert.throws(() => new ImageDataset({ pixels, labels: new Uint8Array(10), shape: [28, 28] as unknown as [number, number, number] }),
    /ImageDataset images: shape must be \[C, H, W\] of positive integers, got \[28,28\]/);
  assert.throws(() => datasetFromSpec({ ...train.spec(), transform: { normalize: { mean: [0], std: [-1] } } }), /ImageDataset mnist-train: transform\.normalize\.std must be finite and > 0/);
  assert.throws(() => new ImageTransformer({ randomCrop: { padding: 1 } }, shape).draw(undefined), /needs the batch generator/);
});

// ---- augmented batches through the loaders ---------------------------------------------------------

const augOpts = (extra: Partial<LoaderOptions> = {}): LoaderOptions => ({ dataset: train, sampler: { kind: 'random', n: train.size, seed: 3 }, batch: 8, ...extra });

test('loader: augmented batches are exactly the documented draws from batchRng(seed, rank, batch index)', () => {
  const l = new SyncLoader(augOpts());
  const s = new RandomWindowSampler({ n: train.size, seed: 3 });
  for (let k = 0; k < 4; k++) {
    const b = l.nextSync()!;
    const x = batchField(b, 'x'), y = batchField(b, 'y');
    assert.deepEqual([x.dtype, x.shape, y.dtype, y.shape], ['float32', [8, 1, 28, 28], 'int64', [8]]);
    const want = expectedBatch(3, 0, k, Array.from({ length: 8 }, () => s.next()));
    assert.deepEqual(x.data, want.x, `batch ${k} pixels`);
    assert.deepEqual(Array.from(y.data as BigInt64Array), want.y, `batch ${k} labels`);
  }
  // augmentSeed decouples the augmentation from the sampler seed: same records, other crops.
  const other = new SyncLoader(augOpts({ augmentSeed: 4 })).nextSync()!;
  const first = new SyncLoader(augOpts()).nextSync()!;
  assert.deepEqual(other.fields[1], first.fields[1]);
  assert.notDeepEqual(other.fields[0], first.fields[0]);
});

test('loader: augmented batches resume exactly through the in-thread and the prefetch loader', async () => {
  const ref = new SyncLoader(augOpts());
  const expected = Array.from({ length: 10 }, () => ref.nextSync()!);
  const pre = await createLoader({ ...augOpts(), depth: 3 });
  assert.deepEqual(await drain(pre, 4), expected.slice(0, 4), 'the prefetch worker makes the in-thread batches');
  const state = JSON.parse(JSON.stringify(pre.state())) as ReturnType<Loader['state']>;
  assert.equal(state.batches, 4);
  await pre.close();
  const resumedPre = await createLoader({ ...augOpts(), state, depth: 2 });
  assert.deepEqual(await drain(resumedPre, 6), expected.slice(4));
  await resumedPre.close();
  const resumedSync = new SyncLoader({ ...augOpts(), state });
  assert.deepEqual(Array.from({ length: 6 }, () => resumedSync.nextSync()), expected.slice(4));
});

test('loader: two ranks draw different augmentations of the same image', async () => {
  // Every record is the same image, so batches differ only by augmentation.
  const img = train.image(7);
  const same = new ImageDataset({ pixels: Uint8Array.from({ length: 16 * 784 }, (_, i) => img[i % 784]!), labels: new Uint8Array(16).fill(train.label(7)),
    shape: [1, 28, 28], transform: { randomCrop: { padding: 2 } } });
  const rank = (r: number): LoaderOptions => ({ dataset: same, sampler: { kind: 'sequential', items: 16, rank: r, worldSize: 2, seed: 5 }, batch: 4 });
  const [b0, b1] = [new SyncLoader(rank(0)).nextSync()!, new SyncLoader(rank(1)).nextSync()!];
  assert.notDeepEqual(b0.fields[0]!.data, b1.fields[0]!.data);
  for (const [r, b] of [[0, b0], [1, b1]] as const) {
    const rng = batchRng(5, r, 0);
    for (let row = 0; row < 4; row++) {
      const dy = rng.int(5) - 2, dx = rng.int(5) - 2;
      assert.deepEqual(b.fields[0]!.data.subarray(row * 784, (row + 1) * 784), reference(img, 2, dy, dx, false, 0, 1), `rank ${r} row ${row}`);
    }
  }
  const pre = await createLoader({ ...rank(1), depth: 1 });
  assert.deepEqual(await pre.next(), b1);
  await pre.close();
});

test('loader: an image record of the wrong shape is skipped, counted and named; the loader continues', () => {
  /** Record 3 has 783 pixels. */
  class Torn extends ImageDataset {
    override record(i: number, rng?: Rng): DataRecord {
      const rec = super.record(i, rng);
      return i === 3 ? [(rec[0] as Float32Array).subarray(0, 783), rec[1]!] : rec;
    }
  }
  const torn = new Torn({ pixels: testSet.pixels.subarray(0, 6 * 784), labels: testSet.labels.subarray(0, 6), shape: [1, 28, 28], name: 'torn' });
  const seen: SkippedRecord[] = [];
  const l = new SyncLoader({ dataset: torn, sampler: { kind: 'sequential', items: 6 }, batch: 4, onSkip: (s) => seen.push(s) });
  const b = l.nextSync()!;
  assert.equal(b.B, 4);
  assert.deepEqual(b.fields[0]!.data.subarray(3 * 784, 4 * 784), torn.record(4)[0], 'row 3 holds record 4');
  assert.equal(l.nextSync()!.B, 1);
  assert.equal(l.nextSync(), null);
  assert.equal(l.stats.skipped, 1);
  assert.deepEqual(seen, [{ index: 3, record: 'torn[3]', reason: 'field x: expected 784 values (shape [1, 28, 28]), got 783' }]);
});

test('loader: a record hook sees image records and can reject them in the prefetch worker', async () => {
  const recordHook = `data:text/javascript,${encodeURIComponent('export default (i, [x, y]) => { if (y[0] === 1) throw new Error("no ones, record " + i + " has " + x.length + " pixels"); };')}`;
  const seen: SkippedRecord[] = [];
  const l = await createLoader({ dataset: testSet, sampler: { kind: 'sequential', items: 400 }, batch: 50, recordHook, onSkip: (s) => seen.push(s) });
  const labels: number[] = [];
  for await (const b of l) labels.push(...Array.from(batchField(b, 'y').data as BigInt64Array, Number));
  assert.equal(labels.length, 400 - 199);
  assert.ok(!labels.includes(1));
  assert.equal(l.stats.skipped, 199, 'test images 201..399 are ones');
  assert.deepEqual(seen[0], { index: 201, record: 'mnist-test[201]', reason: 'no ones, record 201 has 784 pixels' });
  await l.close();
});
