/**
 * npm run bench:gemm — the matrix products of the benchmark GPT's step, per shape, on each kernel
 * this machine has: onnxruntime's MLAS inside a program (its output reduced to one element, as a
 * step keeps a product's output inside onnxruntime) and as a one-node program whose output comes
 * back (the copy and the fresh array's page faults included), and OpenBLAS and oneDNN through
 * weft's addon (native/weft_blas.c; a fresh output array per call, as the kernel allocates one);
 * then what a cut costs: a program returning a tensor against one returning one element of it, per
 * size; and a LayerNorm -> product -> bias + Gelu chain as one program against the same with its
 * product native (the schedule's cut, WEFT_NATIVE_PRODUCTS=all).
 * Prints JSON (GFLOP/s per shape and kernel, the ISA). Usage: node dist/bench/gemm.js [threads] [reps]
 */
import * as b from '../src/ir/build.js';
import { Value } from '../src/ir/graph.js';
import { blas } from '../src/runtime/blas.js';
import { cpuInfo } from '../src/runtime/cpu.js';
import { compileProgram, runProgram, setThreads } from '../src/runtime/executor.js';
import { compileSchedule } from '../src/runtime/schedule.js';

const threads = Number(process.argv[2] ?? 1);
const reps = Number(process.argv[3] ?? 9);
setThreads(threads);
const native = blas();

interface Shape { name: string; batch: number; m: number; n: number; k: number; transA: boolean; transB: boolean }
/** The GPT's products: forward x W, backward dX = dY W^T and dW = X^T dY, attention's batched ones. */
function gptShapes(preset: string, rows: number, d: number, heads: number, ctx: number, bh: number): Shape[] {
  const s: Shape[] = [];
  for (const [what, k, n] of [['qkv', d, 3 * d], ['fc1', d, 4 * d], ['fc2', 4 * d, d], ['proj', d, d]] as const) {
    s.push({ name: `${preset} ${what} fwd`, batch: 1, m: rows, n, k, transA: false, transB: false });
    s.push({ name: `${preset} ${what} dX`, batch: 1, m: rows, n: k, k: n, transA: false, transB: true });
    s.push({ name: `${preset} ${what} dW`, batch: 1, m: k, n, k: rows, transA: true, transB: false });
  }
  const hd = d / heads;
  s.push({ name: `${preset} attn QK^T`, batch: bh, m: ctx, n: ctx, k: hd, transA: false, transB: true });
  s.push({ name: `${preset} attn PV`, batch: bh, m: ctx, n: hd, k: ctx, transA: false, transB: false });
  return s;
}
const shapes = [...gptShapes('small', 2048, 256, 4, 128, 64), ...gptShapes('medium', 2048, 512, 8, 256, 64),
  { name: 'square 1024', batch: 1, m: 1024, n: 1024, k: 1024, transA: false, transB: false }];

const median = (xs: number[]): number => [...xs].sort((p, q) => p - q)[Math.floor(xs.length / 2)]!;
const fill = (n: number): Float32Array => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37) * 0.5);
const leaf = (shape: number[]): Value => new Value('float32', shape, null, 0, fill(shape.reduce((p, q) => p * q, 1)));

async function timeIt(f: () => Promise<unknown> | unknown): Promise<number> {
  for (let i = 0; i < 2; i++) await f();
  const ts: number[] = [];
  for (let i = 0; i < reps; i++) { const t0 = performance.now(); await f(); ts.push(performance.now() - t0); }
  return median(ts);
}

/** The product as the step's graph computes it: a Gemm with its transposes (2-D), a MatMul (batched). */
function ortProduct(s: Shape): { out: Value; ins: Value[] } {
  const A = leaf(s.batch > 1 ? [s.batch, ...(s.transA ? [s.k, s.m] : [s.m, s.k])] : s.transA ? [s.k, s.m] : [s.m, s.k]);
  const B = leaf(s.batch > 1 ? [s.batch, ...(s.transB ? [s.n, s.k] : [s.k, s.n])] : s.transB ? [s.n, s.k] : [s.k, s.n]);
  if (s.batch === 1) return { out: b.gemm(A, B, null, { transA: s.transA, transB: s.transB }), ins: [A, B] };
  const a = s.transA ? b.transposeLast2(A) : A;
  const bb = s.transB ? b.transposeLast2(B) : B;
  return { out: b.matmul(a, bb), ins: [A, B] };
}

const rows: Record<string, unknown>[] = [];
let maxErr = 0;
for (const s of shapes) {
  const flops = 2 * s.batch * s.m * s.n * s.k;
  const { out, ins } = ortProduct(s);
  const p = await compileProgram([out], ins);
  const copiedMs = await timeIt(() => runProgram(p, 'gemm'));
  const inside = await compileProgram([b.slice(b.reshape(out, [-1]), [0], [1], [0])], ins);
  const ortMs = await timeIt(() => runProgram(inside, 'gemm'));
  const row: Record<string, unknown> = {
    shape: s.name, batch: s.batch, m: s.m, n: s.n, k: s.k, transA: s.transA, transB: s.transB,
    mlas_gflops: +(flops / ortMs / 1e6).toFixed(1), mlas_output_returned_gflops: +(flops / copiedMs / 1e6).toFixed(1),
  };
  if (native) {
    const [A, B] = [ins[0]!.data as Float32Array, ins[1]!.data as Float32Array];
    const want = (await runProgram(p, 'gemm'))[0] as Float32Array;
    for (const [lib, name] of [[0, 'openblas'], [1, 'dnnl']] as const) {
      if (!native.has(lib)) continue;
      const call = (): Float32Array => {
        const c = new Float32Array(s.batch * s.m * s.n);
        native.gemm(lib, A, B, c, s.batch, s.m, s.n, s.k, s.transA, s.transB, s.m * s.k, s.k * s.n, s.m * s.n, 0, threads);
        return c;
      };
      const got = call();
      let err = 0;
      for (let i = 0; i < got.length; i++) err = Math.max(err, Math.abs(got[i]! - want[i]!) / (1 + Math.abs(want[i]!)));
      maxErr = Math.max(maxErr, err);
      const ms = await timeIt(call);
      row[`${name}_gflops`] = +(flops / ms / 1e6).toFixed(1);
      row[`${name}_over_mlas`] = +(ortMs / ms).toFixed(3);
    }
  }
  process.stderr.write(`${JSON.stringify(row)}\n`);
  rows.push(row);
}

// What an output costs to hand over: a program returning a tensor of n floats, against one returning one of its elements.
const exits: Record<string, unknown>[] = [];
for (const mb of [0.5, 2, 8, 32]) {
  const n = (mb * 2 ** 20) / 4;
  const x = leaf([n]);
  const y = b.add(x, b.scalar(1));
  const [whole, one] = [await compileProgram([y], [x]), await compileProgram([b.slice(y, [0], [1], [0])], [x])];
  const [w, o] = [await timeIt(() => runProgram(whole, 'exit')), await timeIt(() => runProgram(one, 'exit'))];
  const src = x.data as Float32Array;
  const copy = await timeIt(() => { const c = new Float32Array(n); c.set(src); });
  const dst = new Float32Array(n);
  const warm = await timeIt(() => dst.set(src));
  exits.push({ mb, returned_ms: +w.toFixed(3), one_element_ms: +o.toFixed(3), exit_ms: +(w - o).toFixed(3), js_fresh_array_copy_ms: +copy.toFixed(3), js_warm_copy_ms: +warm.toFixed(3) });
}

// A chain as one program, against its product native (the schedule cuts there, as a step would).
const chains: Record<string, unknown>[] = [];
if (native) {
  for (const [rowsN, d, h] of [[2048, 256, 1024], [2048, 512, 2048]] as const) {
    const [x, g, be, w, bias] = [leaf([rowsN, d]), leaf([d]), leaf([d]), leaf([d, h]), leaf([h])];
    const ins = [x, g, be, w, bias];
    const y = b.gelu(b.gemm(b.layerNorm(x, g, be), w, bias));
    const feeds = ins.map((v) => ({ data: v.data! }));
    const whole = await compileSchedule([y], ins);
    const wholeMs = await timeIt(() => whole.run(feeds, null));
    process.env['WEFT_NATIVE_PRODUCTS'] = 'all';
    const cut = await compileSchedule([y], ins);
    delete process.env['WEFT_NATIVE_PRODUCTS'];
    const cutMs = await timeIt(() => cut.run(feeds, null));
    chains.push({ chain: `layernorm ${rowsN}x${d} -> gemm x${h} + bias -> gelu`, one_program_ms: +wholeMs.toFixed(3), product_native_ms: +cutMs.toFixed(3), programs: cut.stats.programs, ratio: +(wholeMs / cutMs).toFixed(3) });
  }
}

process.stdout.write(`${JSON.stringify({ bench: 'gemm', cpu: cpuInfo(), threads, reps, libraries: native?.info() ?? 'addon not built', max_relative_error: maxErr, products: rows, exits, chains }, null, 1)}\n`);
