/**
 * node dist/bench/conv_grad.js [--repeat 5] — times the two ways of writing a Conv's backward in
 * float32 on onnxruntime (one intra-op thread) and prints JSON:
 *   conv:   dX = ConvTranspose(dY, W), dW = a Conv of X and dY with batch and channel roles
 *           swapped (the rules in src/ir/ops/vision.ts);
 *   im2col: dW = dY . patches(X)^T (batched MatMul per image summed over N, or with N folded
 *           into one product per group), dX = col2im(W^T dY) (src/ir/im2col.ts).
 * Each gradient is its own program; the figure is the minimum over `repeat` alternating runs,
 * after two warm-up runs. The faster formulation per gradient is the rule (vision.ts's Conv).
 */
import * as b from '../src/ir/build.js';
import { Value } from '../src/ir/graph.js';
import { convDwIm2col, convDxCol2im } from '../src/ir/im2col.js';
import { convDw, convDx, convGeometry } from '../src/ir/ops/vision.js';
import type { ConvOptions } from '../src/ir/build.js';
import { makeCtx, opDef } from '../src/ir/registry.js';
import { cpuInfo } from '../src/runtime/cpu.js';
import { compileProgram, runProgram, setThreads } from '../src/runtime/executor.js';
import { Rng } from '../src/tensor/random.js';

interface Case { name: string; x: number[]; w: number[]; o: ConvOptions }

const CASES: Case[] = [
  { name: 'mnist conv1 N=64 1->16 28x28 3x3 pad 1', x: [64, 1, 28, 28], w: [16, 1, 3, 3], o: { pads: [1, 1, 1, 1] } },
  { name: 'mnist conv2 N=64 16->32 14x14 3x3 pad 1', x: [64, 16, 14, 14], w: [32, 16, 3, 3], o: { pads: [1, 1, 1, 1] } },
  { name: 'mnist-cnn recipe conv2 N=64 32->64 14x14 3x3 pad 1', x: [64, 32, 14, 14], w: [64, 32, 3, 3], o: { pads: [1, 1, 1, 1] } },
  { name: 'mnist-cnn recipe conv3 N=64 64->128 7x7 3x3 pad 1', x: [64, 64, 7, 7], w: [128, 64, 3, 3], o: { pads: [1, 1, 1, 1] } },
  { name: 'strided N=64 16->32 14x14 3x3 pad 1 stride 2', x: [64, 16, 14, 14], w: [32, 16, 3, 3], o: { pads: [1, 1, 1, 1], strides: [2, 2] } },
  { name: 'grouped N=64 32->64 14x14 3x3 pad 1 group 4', x: [64, 32, 14, 14], w: [64, 8, 3, 3], o: { pads: [1, 1, 1, 1], group: 4 } },
  { name: 'strided grouped N=64 32->64 14x14 3x3 pad 1 stride 2 group 4', x: [64, 32, 14, 14], w: [64, 8, 3, 3], o: { pads: [1, 1, 1, 1], strides: [2, 2], group: 4 } },
];

const arg = (name: string, dflt: number): number => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
};


const numel = (s: readonly number[]): number => s.reduce((p, d) => p * d, 1);

async function main(): Promise<void> {
  setThreads(1);
  const repeat = arg('repeat', 5);
  const rng = new Rng(1);
  const results = [];
  for (const c of CASES) {
    const x = new Value('float32', c.x);
    const w = new Value('float32', c.w);
    const y = b.conv(x, w, null, c.o);
    const win = convGeometry(makeCtx(opDef('Conv'), y.node!.inputs, y.node!.attrs));
    const dy = new Value('float32', y.shape);
    const group = win.group;
    const graphs: Record<string, Value> = {
      'dX conv': convDx(dy, w, win, group),
      'dX im2col': convDxCol2im(dy, w, win, group),
      'dW conv': convDw(x, dy, win, group, (m) => { throw new Error(m); }),
      'dW im2col': convDwIm2col(x, dy, win, group, c.w[1]!),
      'dW im2col foldN': convDwIm2col(x, dy, win, group, c.w[1]!, true),
    };
    const feeds = new Map<Value, Float32Array>([x, w, dy].map((v) => [v, Float32Array.from({ length: numel(v.shape as number[]) }, () => rng.normal())]));
    const programs = await Promise.all(Object.entries(graphs).map(async ([k, v]) => {
      const p = await compileProgram([v]);
      return { k, p, f: p.leaves.map((l) => ({ data: feeds.get(l)! })) };
    }));
    const best: Record<string, number> = {};
    for (let r = 0; r < repeat + 2; r++) {
      for (const { k, p, f } of programs) {
        const t0 = performance.now();
        await runProgram(p, 'bench', f);
        const ms = performance.now() - t0;
        if (r >= 2) best[k] = Math.min(best[k] ?? Infinity, ms);
      }
    }
    // The two formulations must compute the same gradients.
    const check = async (a: string, bb: string): Promise<number> => {
      const [pa, pb] = [programs.find((q) => q.k === a)!, programs.find((q) => q.k === bb)!];
      const [ya, yb] = [(await runProgram(pa.p, 'bench', pa.f))[0]!, (await runProgram(pb.p, 'bench', pb.f))[0]!];
      let err = 0;
      for (let i = 0; i < ya.length; i++) err = Math.max(err, Math.abs(Number(ya[i]) - Number(yb[i])));
      return err;
    };
    results.push({
      case: c.name,
      ms: Object.fromEntries(Object.entries(best).map(([k, v]) => [k, Number(v.toFixed(2))])),
      maxAbsDiff: { dX: await check('dX conv', 'dX im2col'), dW: await check('dW conv', 'dW im2col'), dWfoldN: await check('dW conv', 'dW im2col foldN') },
    });
  }
  console.log(JSON.stringify({ threads: 1, repeat, cpu: cpuInfo(), results }, null, 2));
}

await main();
