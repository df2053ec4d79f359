/**
 * Datasets beyond tokens and images: rows of typed arrays (`ArrayDataset`) and datasets a module
 * builds, both through the prefetch worker. A linear regression with its own loss trains through
 * `fit` on an ArrayDataset and recovers the generating weights.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ArrayDataset, createLoader, fit, Linear, loadCheckpoint, moduleDataset, Rng, Sequential, setThreads, SyncLoader } from '../src/index.js';
import type { Batch, Tensor } from '../src/index.js';

setThreads(1);

function regression(n: number, seed: number): { ds: ArrayDataset; w: number[]; b: number } {
  const rng = new Rng(seed);
  const w = [0.5, -1.5, 2, 0.25];
  const b = 0.75;
  const x = Float32Array.from({ length: n * 4 }, () => rng.normal());
  const y = Float32Array.from({ length: n }, (_, i) => w.reduce((s, wk, k) => s + wk * x[i * 4 + k]!, b) + 0.01 * rng.normal());
  return { ds: new ArrayDataset({ x: { data: x, shape: [4] }, y: { data: y, shape: [1] } }, 'regression'), w, b };
}

const mse = (out: Tensor, y: Tensor): Tensor => out.sub(y).pow(2).mean();

test('fit: a linear regression on an ArrayDataset with its own loss recovers the weights', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-arrays-'));
  try {
    const { ds, w, b } = regression(512, 1);
    const r = await fit(new Sequential([new Linear(4, 1)]), { train: ds, eval: regression(128, 2).ds, loss: mse, batch: 32, steps: 300, lr: 0.05, out: dir, evalEvery: 300, log: null });
    const ck = loadCheckpoint(dir);
    const got = [...ck.weights.get('0.w')!.data];
    got.forEach((v, k) => assert.ok(Math.abs(v - w[k]!) < 0.02, `w[${k}] = ${v}, generated with ${w[k]}`));
    assert.ok(Math.abs(ck.weights.get('0.b')!.data[0]! - b) < 0.02);
    assert.ok(r.evals.at(-1)!.metrics['val_loss']! < 1e-3, `held-out MSE ${r.evals.at(-1)!.metrics['val_loss']}`);
  } finally { rmSync(dir, { recursive: true, force: true }); }
});

test('ArrayDataset: int fields are int64, float fields float32, and the prefetch worker gives the in-thread batches', async () => {
  const ds = new ArrayDataset({ ids: { data: Int32Array.from({ length: 30 }, (_, i) => i * 7), shape: [3] }, label: { data: Uint8Array.from({ length: 10 }, (_, i) => i % 2) } });
  assert.deepEqual(ds.fields, [{ name: 'ids', dtype: 'int64', shape: [3] }, { name: 'label', dtype: 'int64', shape: [] }]);
  const opts = { dataset: ds, sampler: { kind: 'sequential' as const, items: 10, shuffle: true, seed: 3 }, batch: 4 };
  const flat = (b: Batch | null): number[][] => b!.fields.map((f) => Array.from(f.data as BigInt64Array, Number));
  const sync = new SyncLoader(opts);
  const pre = await createLoader({ ...opts, depth: 2 });
  try {
    for (let k = 0; k < 2; k++) assert.deepEqual(flat(await pre.next()), flat(sync.nextSync()));
  } finally { await pre.close(); }
  assert.throws(() => new ArrayDataset({ x: { data: new Float32Array(12), shape: [4] }, y: { data: new Uint8Array(4) } }), /field 'y' has 4 rows, the fields before it 3/);
  assert.throws(() => new ArrayDataset({ x: { data: new Float32Array(10), shape: [4] } }), /field 'x' has 10 values, not a whole number of rows of \[4\]/);
});

test('a module dataset is rebuilt by the prefetch worker from its module and arguments', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-dsmod-'));
  try {
    const arrays = new URL('../src/data/arrays.js', import.meta.url).href;
    const mod = join(dir, 'squares.mjs');
    writeFileSync(mod, `import { ArrayDataset } from ${JSON.stringify(arrays)};
export default ({ n }) => new ArrayDataset({ x: { data: Float32Array.from({ length: n }, (_, i) => i * i), shape: [1] }, y: { data: Int32Array.from({ length: n }, (_, i) => i % 3) } }, 'squares');\n`);
    const ds = await moduleDataset({ kind: 'module', module: mod, args: { n: 20 } });
    assert.equal(ds.size, 20);
    assert.deepEqual(ds.spec(), { kind: 'module', module: mod, args: { n: 20 } });
    const loader = await createLoader({ dataset: ds, sampler: { kind: 'sequential', items: 20 }, batch: 5, depth: 2 });
    try {
      const b = (await loader.next())!;
      assert.deepEqual(Array.from(b.fields[0]!.data as Float32Array), [0, 1, 4, 9, 16]);
      assert.deepEqual(Array.from(b.fields[1]!.data as BigInt64Array, Number), [0, 1, 2, 0, 1]);
    } finally { await loader.close(); }
    writeFileSync(join(dir, 'bad.mjs'), 'export default 3;\n');
    await assert.rejects(moduleDataset({ kind: 'module', module: join(dir, 'bad.mjs') }), /default export must be a function \(args\) => Dataset, got number/);
  } finally { rmSync(dir, { recursive: true, force: true }); }
});
