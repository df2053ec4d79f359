/**
 * deploy/bench_infer.ts: inputs are shaped from the model's declared inputs (the batch dim from
 * --batch, other symbolic dims from --dim, or an error naming them), figures are consistent with
 * one another, and the first model is the baseline of the speedups.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as w from '../src/index.js';
import { benchInfer } from '../src/deploy/bench_infer.js';

const dir = mkdtempSync(join(tmpdir(), 'weft-bench-infer-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function model(name: string, seqDim: boolean): string {
  const rng = new w.Rng(1);
  const x = w.placeholder(['batch', seqDim ? 'seq' : 4, 8], 'float32', 'x');
  const W = w.randn([8, 8], rng, 0.3);
  const y = x.matmul(W).relu().sum([2]);
  const path = join(dir, `${name}.onnx`);
  writeFileSync(path, w.toModelProto({ inputs: [x.value], outputs: [y.value], initializers: [W.value] }));
  return path;
}

test('bench-infer: p50 <= p99, throughput is batch / p50, the first model is the baseline, tokens/s where a dim is a sequence', async () => {
  const a = model('a', true);
  const r = await benchInfer({ models: { fp32: a, again: a }, batches: [1, 4], threads: [1], dims: { seq: 16 }, runs: 4, blocks: 2, warmup: 1 });
  assert.equal(r.results.length, 4);
  assert.ok(['amx', 'avx512-vnni', 'avx512', 'avx2', 'other'].includes(r.machine.isa));
  for (const f of r.results) {
    assert.ok(f.p50_ms > 0 && f.p50_ms <= f.p99_ms, `${f.model} b${f.batch}: p50 ${f.p50_ms} p99 ${f.p99_ms}`);
    assert.ok(Math.abs(f.examples_per_s - (f.batch * 1000) / f.p50_ms) <= 0.1 + 1e-3 * f.examples_per_s);
    assert.ok(Math.abs(f.tokens_per_s! - f.examples_per_s * 16) <= 1 + 1e-3 * f.tokens_per_s!);
    if (f.model === 'fp32') assert.equal(f.speedup, 1);
  }
  assert.equal(r.runs, 8);
});

test('bench-infer: a symbolic dim without a size is an error naming the dim, the input and the file', async () => {
  const a = model('b', true);
  await assert.rejects(benchInfer({ models: { m: a }, batches: [1], threads: [1], runs: 1, blocks: 1, warmup: 0 }),
    (e: Error) => e.message.includes("'seq'") && e.message.includes("'x'") && e.message.includes('b.onnx') && e.message.includes('--dim seq=N'));
});
