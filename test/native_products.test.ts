/**
 * Native matrix products (runtime/native_products.ts, native/weft_blas.c): every product form the
 * addon runs, on every library it holds, against onnxruntime on the same graph (float32, 1e-5);
 * the rewrite of a traced graph (WEFT_NATIVE_PRODUCTS=all: every product taken out) against the
 * graph as traced, for a GPT step's loss and gradients; the schedule's one program per inline cut;
 * the choices persisted per machine, another process's first; and a GPT trained on 2 thread ranks
 * with every product native equal to one process without any. Where the addon is not built these
 * skip, except under CI with WEFT_BLAS unset, which builds it (libopenblas-dev): there they fail.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as b from '../src/ir/build.js';
import { Value } from '../src/ir/graph.js';
import { apply } from '../src/ir/registry.js';
import { blas, BLAS_LIBS } from '../src/runtime/blas.js';
import { compileProgram, runProgram, setMatmulPrecision, setThreads } from '../src/runtime/executor.js';
import { fromNumbers, toNumbers } from '../src/ir/dtype.js';
import { FlatBuffer } from '../src/runtime/flat.js';
import { gradStep } from '../src/train/step.js';
import { CUT_MS, forgetChoices, MARGIN, MIN_MLAS_MS, nativeGemmKernel, takeOutProducts } from '../src/runtime/native_products.js';
import { compileSchedule } from '../src/runtime/schedule.js';
import { topoNodes } from '../src/ir/graph.js';
import { bindParameters, GPT } from '../src/nn/index.js';
import { traceStepGraph } from '../src/nn/step_graph.js';
import { Tensor } from '../src/tensor/tensor.js';
import { loadCheckpoint } from '../src/train/checkpoint.js';
import { assertSameCurve, CLI, relDiff, tinyConfig } from './helpers/cli.js';

setThreads(1);
const lib = blas();
const skip = lib !== null ? false : process.env['CI'] === 'true' && process.env['WEFT_BLAS'] !== '0'
  ? false : 'the native products addon is not built (install libopenblas-dev and run npm ci)';

let seed = 1;
const leaf = (shape: number[]): Value => {
  const n = shape.reduce((p, q) => p * q, 1);
  return new Value('float32', shape, null, 0, Float32Array.from({ length: n }, () => { seed = (seed * 16807) % 2147483647; return seed / 2147483647 - 0.5; }));
};
const maxRel = (got: Float32Array, want: Float32Array): number => {
  assert.equal(got.length, want.length);
  let err = 0;
  for (let i = 0; i < got.length; i++) err = Math.max(err, Math.abs(got[i]! - want[i]!) / (1 + Math.abs(want[i]!)));
  return err;
};

/** Products as a traced graph holds them: [name, leaves, the graph]. */
const FORMS: [string, number[][], (v: Value[]) => Value][] = [];
for (const tA of [false, true]) {
  for (const tB of [false, true]) {
    for (const bias of ['none', 'row', 'matrix'] as const) {
      const [m, n, k] = [33, 17, 20];
      const shapes = [tA ? [k, m] : [m, k], tB ? [n, k] : [k, n], ...(bias === 'row' ? [[n]] : bias === 'matrix' ? [[m, n]] : [])];
      FORMS.push([`Gemm${tA ? ' transA' : ''}${tB ? ' transB' : ''}${bias !== 'none' ? ` + ${bias} C` : ''}`, shapes, (v) => b.gemm(v[0]!, v[1]!, v[2] ?? null, { transA: tA, transB: tB })]);
    }
  }
}
FORMS.push(['MatMul batched, both transposes folded', [[2, 3, 9, 7], [2, 3, 5, 9]], (v) => b.matmul(b.transposeLast2(v[0]!), b.transposeLast2(v[1]!))]);
FORMS.push(['MatMul batched', [[6, 7, 9], [6, 9, 5]], (v) => b.matmul(v[0]!, v[1]!)]);
FORMS.push(['MatMul [B, T, k] x shared [k, n] (one product of B T rows)', [[4, 7, 9], [9, 5]], (v) => b.matmul(v[0]!, v[1]!)]);
FORMS.push(['MatMul shared [m, k] x [B, k, n]', [[7, 9], [4, 9, 5]], (v) => b.matmul(v[0]!, v[1]!)]);
FORMS.push(['MatMul [B, k, m]^T x shared [k, n]', [[4, 9, 7], [9, 5]], (v) => b.matmul(b.transposeLast2(v[0]!), v[1]!)]);
FORMS.push(['MatMul [B, m, k] x shared [n, k]^T', [[4, 7, 9], [5, 9]], (v) => b.matmul(v[0]!, b.transposeLast2(v[1]!))]);

test('every product form on each library equals onnxruntime on the same graph (float32, 1e-5)', { skip }, async () => {
  process.env['WEFT_NATIVE_PRODUCTS'] = 'all';
  try {
    for (const [name, shapes, f] of FORMS) {
      const leaves = shapes.map(leaf);
      const out = f(leaves);
      const want = (await runProgram(await compileProgram([out], leaves), 'ort'))[0] as Float32Array;
      // The rewrite: one weft.NativeGemm (reshapes around it at most), run by the schedule.
      const taken = await takeOutProducts([out]);
      const natives = topoNodes(taken).filter((n) => n.op === 'weft.NativeGemm');
      assert.equal(natives.length, 1, `${name}: taken out`);
      assert.ok(!topoNodes(taken).some((n) => n.op === 'MatMul' || n.op === 'Gemm' || n.op === 'Transpose'), `${name}: no product or transpose left for onnxruntime`);
      const got = (await (await compileSchedule([out], leaves)).run(leaves.map((v) => ({ data: v.data! })), null))[0] as Float32Array;
      assert.ok(maxRel(got, want) < 1e-5, `${name} via the schedule: ${maxRel(got, want)}`);
      // The kernel on each library the addon holds.
      const node = natives[0]!;
      for (const [libName, which] of Object.entries(BLAS_LIBS)) {
        // The bfloat16 kernel rounds float32 operands: its own test below.
        if (!lib!.has(which) || which === BLAS_LIBS.dnnl_bf16) continue;
        const forced = apply('weft.NativeGemm', node.inputs, { ...node.attrs, lib: which }, 1)[0]!.node!;
        // An operand is a leaf or a reshape of one (the same data).
        const ins = forced.inputs.map((v) => { let u = v!; while (u.node) u = u.node.inputs[0]!; return u.data as Float32Array; });
        const [y] = await nativeGemmKernel(forced, ins);
        assert.ok(maxRel(y as Float32Array, want) < 1e-5, `${name} on ${libName}: ${maxRel(y as Float32Array, want)}`);
      }
    }
    // Batch dims that broadcast stay in onnxruntime.
    const [x, y] = [leaf([2, 1, 4, 3]), leaf([1, 3, 3, 5])];
    const bc = b.matmul(x, y);
    assert.equal((await takeOutProducts([bc]))[0], bc, 'broadcast batch dims: not rewritten');
  } finally {
    delete process.env['WEFT_NATIVE_PRODUCTS'];
  }
});

const bf16Skip = lib === null ? skip : lib.has(BLAS_LIBS.dnnl_bf16) ? false : 'the addon was built without oneDNN, or oneDNN has no bfloat16 matmul on this CPU';
/** x rounded to bfloat16 (to nearest even), as float32. */
const roundBf16 = (x: Float32Array): Float32Array => Float32Array.from(toNumbers(fromNumbers('bfloat16', x), 'bfloat16'));

test('the bfloat16 kernel: every product form equals onnxruntime\'s float32 product of the operands rounded to bfloat16 (1e-5)', { skip: bf16Skip }, async () => {
  for (const [name, shapes, f] of FORMS) {
    const leaves = shapes.map(leaf);
    // What the kernel computes: the product of the operands rounded to nearest even, accumulated in float32.
    const rounded = leaves.map((v) => new Value('float32', v.shape, null, 0, roundBf16(v.data as Float32Array)));
    const want = (await runProgram(await compileProgram([f(rounded)], rounded), 'ort'))[0] as Float32Array;
    process.env['WEFT_NATIVE_PRODUCTS'] = 'all';
    let natives;
    try {
      natives = topoNodes(await takeOutProducts([f(leaves)])).filter((n) => n.op === 'weft.NativeGemm');
    } finally {
      delete process.env['WEFT_NATIVE_PRODUCTS'];
    }
    assert.equal(natives.length, 1, name);
    const forced = apply('weft.NativeGemm', natives[0]!.inputs, { ...natives[0]!.attrs, lib: BLAS_LIBS.dnnl_bf16 }, 1)[0]!.node!;
    // The bias (C) is added in float32, unrounded: the rounded graph's C is the rounded one, so feed that.
    const ins = forced.inputs.map((v, i) => { let u = v!; while (u.node) u = u.node.inputs[0]!; return i < 2 ? u.data as Float32Array : roundBf16(u.data as Float32Array); });
    const [y] = await nativeGemmKernel(forced, ins);
    assert.ok(maxRel(y as Float32Array, want) < 1e-5, `${name}: ${maxRel(y as Float32Array, want)}`);
    // And the rounding is real: unrounded, onnxruntime's float32 product differs by bfloat16's precision.
    const exact = (await runProgram(await compileProgram([f(leaves)], leaves), 'ort'))[0] as Float32Array;
    assert.ok(maxRel(y as Float32Array, exact) > 1e-5, `${name}: rounded to bfloat16`);
  }
});

/** A tiny GPT's loss and gradients from a compiled step (`opts`: the step's graph options), with products chosen as the env and matmul precision say. */
async function gptGrads(env: string | undefined, medium: boolean, opts: Parameters<typeof gradStep>[4] = {}): Promise<{ loss: number; grads: Float32Array; natives: number[] }> {
  const model = new GPT({ vocab: 32, ctx: 16, d: 32, layers: 2, heads: 2 });
  const params = bindParameters(model, { seed: 4 });
  const grads = FlatBuffer.zeros(params.flat.layout, 'grads');
  if (env === undefined) delete process.env['WEFT_NATIVE_PRODUCTS'];
  else process.env['WEFT_NATIVE_PRODUCTS'] = env;
  setMatmulPrecision(medium ? 'medium' : 'highest');
  try {
    const step = gradStep(params, grads, (i, t) => model.loss(i!, t!), 'fwd_bwd', opts);
    const [B, T] = [3, 16];
    const loss = await step([{ data: BigInt64Array.from({ length: B * T }, (_, i) => BigInt((i * 7) % 32)), shape: [B, T], dtype: 'int64' },
      { data: BigInt64Array.from({ length: B * T }, (_, i) => BigInt((i * 5 + 3) % 32)), shape: [B, T], dtype: 'int64' }]);
    const natives = Object.entries(step.schedule?.hostOps ?? {}).filter(([op]) => op === 'weft.NativeGemm').map(([, k]) => k);
    return { loss, grads: grads.data as Float32Array, natives };
  } finally {
    delete process.env['WEFT_NATIVE_PRODUCTS'];
    setMatmulPrecision('highest');
  }
}
const relMax = (got: Float32Array, want: Float32Array): number => {
  let [d, m] = [0, 0];
  for (let i = 0; i < want.length; i++) { d = Math.max(d, Math.abs(got[i]! - want[i]!)); m = Math.max(m, Math.abs(want[i]!)); }
  return d / m;
};

test('matmul precision medium: the step\'s float32 products on the bfloat16 kernel, within bfloat16\'s rounding of float32; highest never takes it', { skip: bf16Skip }, async (t) => {
  // The library each precision gives a float32 product: never the bfloat16 kernel under 'highest'.
  const [x, w] = [leaf([64, 32]), leaf([32, 48])];
  process.env['WEFT_NATIVE_PRODUCTS'] = 'all';
  try {
    for (const p of ['highest', 'medium'] as const) {
      setMatmulPrecision(p);
      const libs = topoNodes(await takeOutProducts([b.matmul(x, w)])).filter((n) => n.op === 'weft.NativeGemm').map((n) => n.attrs['lib']);
      assert.equal(libs.length, 1);
      assert.equal(libs[0] === BLAS_LIBS.dnnl_bf16, p === 'medium', `${p}: lib ${String(libs[0])}`);
    }
  } finally {
    delete process.env['WEFT_NATIVE_PRODUCTS'];
    setMatmulPrecision('highest');
  }
  const fp32 = await gptGrads(undefined, false);
  const highest = await gptGrads('all', false);
  const medium = await gptGrads('all', true);
  assert.ok(highest.natives[0]! > 0 && medium.natives[0] === highest.natives[0], 'every product native both ways');
  assert.ok(relMax(highest.grads, fp32.grads) < 1e-5, `highest: float32 products (${relMax(highest.grads, fp32.grads)})`);
  // bfloat16 keeps 8 bits: operands rounded by up to 2^-9 relative, gradients through two layers of them.
  const e = relMax(medium.grads, fp32.grads);
  t.diagnostic(`medium: gradients ${e.toExponential(2)} from float32's, loss ${Math.abs(medium.loss - fp32.loss).toExponential(2)}`);
  assert.ok(e < 2e-2 && e > 1e-5, `medium: gradients ${e} from float32's (bfloat16 rounding, not none)`);
  assert.ok(Math.abs(medium.loss - fp32.loss) / fp32.loss < 1e-3, `medium loss ${medium.loss} vs ${fp32.loss}`);
});

test('bf16 mixed precision with every product native (the bfloat16 kernel): loss and gradients equal onnxruntime\'s float32-between-casts products within a bfloat16 rounding', { skip: bf16Skip }, async (t) => {
  const ort = await gptGrads(undefined, false, { precision: 'bf16' });
  const native = await gptGrads('all', false, { precision: 'bf16' });
  assert.ok(native.natives[0]! > 0, 'products native');
  // The same products of bfloat16 values, accumulated in another order: a result may round to the neighbouring bfloat16.
  const e = relMax(native.grads, ort.grads);
  t.diagnostic(`gradients ${e.toExponential(2)} from onnxruntime's, loss ${Math.abs(native.loss - ort.loss).toExponential(2)}`);
  assert.ok(e < 2e-2, `gradients: ${e}`);
  assert.ok(Math.abs(native.loss - ort.loss) / ort.loss < 1e-3, `loss ${native.loss} vs ${ort.loss}`);
});

test('a GPT step with every product native: loss and every gradient equal onnxruntime\'s (1e-5), and each cut costs one program', { skip }, async () => {
  const model = new GPT({ vocab: 32, ctx: 16, d: 32, layers: 2, heads: 2 });
  const params = bindParameters(model, { seed: 4 });
  const [B, T] = [3, 16];
  const idx = new Tensor(new Value('int64', [B, T]));
  const tgt = new Tensor(new Value('int64', [B, T]));
  const g = traceStepGraph(params, (i, t) => model.loss(i!, t!), [idx, tgt]);
  const ids = BigInt64Array.from({ length: B * T }, (_, i) => BigInt((i * 7) % 32));
  const tg = BigInt64Array.from({ length: B * T }, (_, i) => BigInt((i * 5 + 3) % 32));
  const inputs = [idx.value, tgt.value];
  const feeds = [{ data: ids }, { data: tg }];
  const want = await (await compileSchedule(g.outputs, inputs)).run(feeds, null);
  process.env['WEFT_NATIVE_PRODUCTS'] = 'all';
  try {
    const sched = await compileSchedule(g.outputs, inputs);
    const got = await sched.run(feeds, null);
    const products = topoNodes(g.outputs).filter((n) => n.op === 'MatMul' || n.op === 'Gemm').length;
    assert.equal(sched.stats.hostOps['weft.NativeGemm'], products, 'every product of the step is native');
    // Inline cuts: no program beside a native product, so at most one program per cut, plus one.
    assert.ok(sched.stats.programs <= products + 1, `${sched.stats.programs} programs for ${products} cuts`);
    assert.ok(sched.stats.programs >= 2);
    got.forEach((a, i) => {
      const e = maxRel(a as Float32Array, want[i] as Float32Array);
      assert.ok(e < 1e-5, `output ${i} (${i === 0 ? 'loss' : `gradient of ${params.flat.layout.slots[i - 1]?.name}`}): ${e}`);
    });
  } finally {
    delete process.env['WEFT_NATIVE_PRODUCTS'];
  }
});

test('measured choices: taken where a library is faster, kept per machine in a file, another process\'s choice winning', { skip }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-products-'));
  process.env['WEFT_CACHE_DIR'] = dir;
  process.env['WEFT_NATIVE_PRODUCTS'] = 'auto';
  forgetChoices();
  try {
    const [x, w] = [leaf([512, 256]), leaf([256, 512])];
    const y = b.matmul(x, w);
    const taken = await takeOutProducts([y]);
    const files = readdirSync(dir);
    assert.equal(files.length, 1, 'one choices file');
    const file = join(dir, files[0]!);
    const saved = JSON.parse(readFileSync(file, 'utf8')) as Record<string, { lib: number | null; mlasMs: number; cutMs: number; nativeMs: Record<string, number> }>;
    const [key, choice] = Object.entries(saved)[0]!;
    assert.match(key, /^t1 b1 512x512x256 pp$/, 'threads, batch, m x n x k, both operands fed (no exit cost)');
    assert.equal(choice.cutMs, CUT_MS, 'fed operands: the cut costs its program boundary only');
    // The choice follows the measurement it records.
    const best = Math.min(...Object.values(choice.nativeMs));
    const expectNative = choice.mlasMs >= MIN_MLAS_MS && (best + choice.cutMs) * MARGIN <= choice.mlasMs;
    assert.equal(choice.lib !== null, expectNative, `choice ${JSON.stringify(choice)}`);
    assert.equal(topoNodes(taken).some((n) => n.op === 'weft.NativeGemm'), expectNative);
    // Off (the default): nothing is taken out, whatever the file says.
    delete process.env['WEFT_NATIVE_PRODUCTS'];
    assert.equal((await takeOutProducts([y]))[0], y, 'off by default');
    process.env['WEFT_NATIVE_PRODUCTS'] = 'auto';
    // A file another process wrote says the opposite: a fresh process follows the file, not a new measurement.
    writeFileSync(file, JSON.stringify({ [key]: { ...choice, lib: expectNative ? null : BLAS_LIBS.openblas } }));
    forgetChoices();
    const again = await takeOutProducts([b.matmul(x, w)]);
    assert.equal(topoNodes(again).some((n) => n.op === 'weft.NativeGemm'), !expectNative, 'the file decides');
  } finally {
    delete process.env['WEFT_CACHE_DIR'];
    delete process.env['WEFT_NATIVE_PRODUCTS'];
    forgetChoices();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('weft train: 2 thread ranks with every product native (small buckets: several cut groups) equal one process without the addon after 5 AdamW steps', { skip }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-native-ddp-'));
  try {
    const cfg = tinyConfig(dir);
    const run = (env: Record<string, string>, args: string[]): void => {
      execFileSync(process.execPath, [CLI, 'train', cfg, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    };
    run({ WEFT_BLAS: '0' }, ['--set', `out=${join(dir, 'one')}`, '--set', 'train.batch=8']);
    run({ WEFT_NATIVE_PRODUCTS: 'all' }, ['--set', `out=${join(dir, 'dp')}`, '--set', 'train.batch=4', '--set', 'dist.bucketMB=0.01', '--nproc', '2']);
    const d = relDiff(loadCheckpoint(join(dir, 'dp')), loadCheckpoint(join(dir, 'one')));
    assert.ok(d < 1e-5, `max |p_dp - p_one| / max |p_one| = ${d}`);
    assertSameCurve(join(dir, 'dp'), join(dir, 'one'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
