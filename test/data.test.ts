/**
 * The data layer: the Brown corpus as plain text, byte and BPE tokenizers, samplers (seeded,
 * resumable, split across ranks), and the in-thread and prefetching loaders.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import {
  batchField, BpeTokenizer, brownFileIds, brownSplit, brownText, ByteTokenizer, createLoader, datasetFromSpec, evalWindows, loadTokenizer,
  PrefetchLoader, RandomWindowSampler, SequentialSampler, SyncLoader, TokenDataset, writeBrownText,
} from '../src/data/index.js';
import type { Batch, DataRecord, Loader, LoaderOptions, Sampler, SamplerSpec, SkippedRecord, TokenArray } from '../src/data/index.js';
import { Rng } from '../src/tensor/random.js';

const tmp = mkdtempSync(join(tmpdir(), 'weft-data-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const take = (s: Sampler, n: number): (number | null)[] => Array.from({ length: n }, () => s.next());
/** A hook module as a data: URL (a prefetch worker imports it in its own thread). */
const hookModule = (body: string): string => `data:text/javascript,${encodeURIComponent(body)}`;
/** Tokens 0, 1, 2, ...: row r of a batch starts with its record index, x[r * T]. */
const arange = (n: number): Int32Array => Int32Array.from({ length: n }, (_, i) => i);
const starts = (b: Batch): number[] => {
  const x = batchField(b, 'x');
  return Array.from({ length: b.B }, (_, r) => Number(x.data[r * x.shape[1]!]));
};

async function drain(l: Loader, n: number): Promise<Batch[]> {
  const out: Batch[] = [];
  for (let i = 0; i < n; i++) out.push((await l.next())!);
  return out;
}

// ---- Brown -----------------------------------------------------------------------------------------

test('brown: 500 files in corpus order become 5,953,018 bytes of plain ASCII text', () => {
  const ids = brownFileIds();
  assert.equal(ids.length, 500);
  assert.deepEqual([ids[0], ids[44], ids[499]], ['ca01', 'cb01', 'cr09']);
  const text = brownText();
  assert.equal(brownText(), text, 'cached');
  assert.equal(text.length, 5_953_018);
  // Golden: any change to the stripping rules must be deliberate (torch_brown.py reads these bytes).
  assert.equal(createHash('sha256').update(text).digest('hex'), '573b4be2ecad7042cc77145e55ee33e04c1cb277b7e9a2abc46230c42fb966e0');
  assert.ok(text.every((b) => b === 10 || (b >= 32 && b < 127)), 'printable ASCII and newlines only');
  const s = Buffer.from(text).toString('latin1');
  assert.ok(s.startsWith('The Fulton County Grand Jury said Friday an investigation of Atlanta\'s recent primary election produced "no evidence" that any irregularities took place.\nThe jury further said'));
  assert.ok(!/\/(nn|nns|np|at|vbd|vbz|jj|cc|pps|np-tl|nn-tl|nn-hl)\b/.test(s), 'no word/tag tokens left');
  assert.ok(!/``|''| [,;?!)]| [.:](?![0-9])|[(] |\t|  |\?\?|;;/.test(s), 'no tokenizer spacing, raw quotes or doubled marks');
  assert.equal(s.split('\n\n').length, 500, 'one blank line between documents');
});

test('brown: the split is by position, n = int(len * 0.95) as in torch_brown.py', () => {
  const text = brownText();
  const { train, val } = brownSplit();
  const n = Math.floor(text.length * 0.95);
  assert.equal(train.length, n);
  assert.equal(val.length, text.length - n);
  assert.equal(train.length, 5_655_367);
  assert.ok(Buffer.from(text).equals(Buffer.concat([train, val])));
  assert.throws(() => brownSplit(1), /valFraction must be in \[0, 1\), got 1/);
});

test('brown: writeBrownText writes the identical bytes', () => {
  const path = join(tmp, 'brown.txt');
  assert.equal(writeBrownText(path), 5_953_018);
  assert.ok(readFileSync(path).equals(brownText()));
});

// ---- tokenizers ------------------------------------------------------------------------------------

test('byte tokenizer: identity on UTF-8 bytes', () => {
  const tok = new ByteTokenizer();
  const ids = tok.encode('héllo ✓');
  assert.deepEqual(Array.from(ids), Array.from(Buffer.from('héllo ✓')));
  assert.equal(tok.decode(ids), 'héllo ✓');
  assert.throws(() => tok.decode([256]), /ids\[0\] = 256 is not a token id in \[0, 256\)/);
});

test('bpe: ties go to the smaller pair; merges stay inside whitespace-bounded pieces', () => {
  // Pieces "ab", " cd": pairs (a,b), (' ',c), (c,d) all occur once; (' ', c) = (32, 99) is smallest.
  assert.deepEqual(BpeTokenizer.train('ab cd', 257).merges, [[32, 99]]);
  const tok = BpeTokenizer.train('low lower lowest low low', 262);
  assert.equal(tok.vocabSize, 262);
  assert.deepEqual(BpeTokenizer.train('low lower lowest low low', 262).merges, tok.merges, 'deterministic');
  const tokens = Array.from({ length: tok.vocabSize }, (_, id) => tok.decode([id]));
  assert.ok(tokens.includes(' low'));
  assert.ok(tokens.every((w) => !/\S\s/.test(w)), 'no token spans a word boundary');
  assert.equal(BpeTokenizer.train('aaaa', 1000).vocabSize, 258, 'stops when no pair is left');
});

test('bpe: encode/decode round-trips random bytes and non-ASCII text exactly', () => {
  const tok = BpeTokenizer.train(brownText().subarray(0, 200_000), 400);
  const rng = new Rng(7);
  for (let k = 0; k < 20; k++) {
    const bytes = Uint8Array.from({ length: 1 + rng.int(3000) }, () => (k % 2 ? rng.int(256) : ' etaoin\n\té€'.charCodeAt(rng.int(11)) & 255));
    assert.ok(Buffer.from(tok.decodeBytes(tok.encode(bytes))).equals(bytes), `random bytes #${k}`);
  }
  const long = new Uint8Array(10_000).fill(97); // one piece far over the piece cap
  assert.ok(Buffer.from(tok.decodeBytes(tok.encode(long))).equals(long));
  const s = 'Ünïcödé — “quotes”, 日本語, emoji 🎉\n  double  spaces\t\ttabs ';
  assert.equal(tok.decode(tok.encode(s)), s);
});

test('bpe: vocab 512 on Brown trains fast, round-trips it, and compresses it', (t) => {
  const text = brownText();
  const t0 = performance.now();
  const tok = BpeTokenizer.train(text, 512);
  const trainS = (performance.now() - t0) / 1000;
  const ids = tok.encode(text);
  assert.ok(Buffer.from(tok.decodeBytes(ids)).equals(text));
  const ratio = text.length / ids.length;
  t.diagnostic(`BPE 512 on Brown: trained in ${trainS.toFixed(2)} s (${tok.trainStats!.uniquePieces} distinct of ${tok.trainStats!.pieces} pieces), ${ids.length} tokens, ${ratio.toFixed(3)} bytes/token`);
  assert.ok(trainS < 30, `training took ${trainS} s`);
  assert.ok(ratio > 2.0 && ratio < 2.3, `compression ${ratio}`);
  assert.equal(tok.decode([tok.merges.findIndex(([a, b]) => tok.decode([a, b]) === ' the') + 256]), ' the');
  // save / load round trip
  const path = join(tmp, 'bpe512.json');
  tok.save(path);
  const back = BpeTokenizer.load(path);
  assert.deepEqual(back.merges, tok.merges);
  assert.deepEqual(back.encode(text.subarray(0, 50_000)), tok.encode(text.subarray(0, 50_000)));
  assert.ok(loadTokenizer(path) instanceof BpeTokenizer);
});

test('bpe: a missing or malformed tokenizer file is an error naming the file', () => {
  const missing = join(tmp, 'nope.json');
  assert.throws(() => BpeTokenizer.load(missing), new RegExp(`tokenizer file ${missing}: cannot read it \\(ENOENT\\)`));
  const bad = (name: string, text: string, msg: RegExp): void => {
    const p = join(tmp, name);
    writeFileSync(p, text);
    assert.throws(() => BpeTokenizer.load(p), (e: Error) => e.message.includes(p) && msg.test(e.message));
  };
  bad('trunc.json', '{"type":"bpe","merges":[[1,', /not valid JSON/);
  bad('type.json', '{"type":"wordpiece"}', /"type" must be "byte" or "bpe", got "wordpiece"/);
  bad('pair.json', '{"type":"bpe","version":1,"vocabSize":258,"maxPiece":64,"merges":[[1,2],[3]]}', /merges\[1\] must be a pair \[a, b\], got \[3\]/);
  bad('future.json', '{"type":"bpe","version":1,"vocabSize":258,"maxPiece":64,"merges":[[1,2],[3,300]]}', /merges\[1\] must be two token ids in \[0, 257\), got \[3,300\]/);
  bad('size.json', '{"type":"bpe","version":1,"vocabSize":999,"maxPiece":64,"merges":[[1,2]]}', /"vocabSize" is 999 but 1 merges make 257/);
  bad('byte.json', '{"type":"byte"}', /holds a byte tokenizer, not bpe/);
});

// ---- samplers --------------------------------------------------------------------------------------

test('random sampler: same seed same draws, uniform in [0, n), resumes exactly from its state', () => {
  const a = new RandomWindowSampler({ n: 1000, seed: 3 });
  const b = new RandomWindowSampler({ n: 1000, seed: 3 });
  const first = take(a, 50);
  assert.deepEqual(take(b, 50), first);
  assert.notDeepEqual(take(new RandomWindowSampler({ n: 1000, seed: 4 }), 50), first);
  assert.ok(first.every((i) => i !== null && Number.isInteger(i) && i >= 0 && i < 1000));
  const saved = JSON.parse(JSON.stringify(a.state())) as ReturnType<Sampler['state']>;
  const cont = take(a, 30);
  assert.deepEqual(take(new RandomWindowSampler({ n: 1000, seed: 3 }, saved), 30), cont);
  assert.throws(() => new RandomWindowSampler({ n: 10 }, { kind: 'sequential', epoch: 0, pos: 0 }), /cannot resume from a sequential sampler state/);
});

test('random sampler: ranks deal the single-process stream round-robin (disjoint, equal shares)', () => {
  const W = 3;
  const global = take(new RandomWindowSampler({ n: 5000, seed: 9 }), 60 * W);
  const shares = Array.from({ length: W }, (_, r) => take(new RandomWindowSampler({ n: 5000, seed: 9, rank: r, worldSize: W }), 60));
  shares.forEach((s, r) => assert.deepEqual(s, global.filter((_, j) => j % W === r), `rank ${r}`));
  assert.throws(() => new RandomWindowSampler({ n: 10, rank: 3, worldSize: 3 }), /rank must be an integer in \[0, 3\), got 3/);
});

test('sequential sampler: ranks get disjoint equal shares; shuffle by (seed, epoch); resumes mid-epoch', () => {
  const all = (o: ConstructorParameters<typeof SequentialSampler>[0]): number[] => {
    const s = new SequentialSampler(o);
    const out: number[] = [];
    for (let i = s.next(); i !== null; i = s.next()) out.push(i);
    return out;
  };
  assert.deepEqual(all({ items: 5 }), [0, 1, 2, 3, 4]);
  assert.deepEqual(all({ items: [7, 9, 11], epochs: 2 }), [7, 9, 11, 7, 9, 11]);
  // 10 items over 4 ranks: dropLast gives 2 each, disjoint; padding gives 3 each, covering all.
  const dropped = [0, 1, 2, 3].map((rank) => all({ items: 10, shuffle: true, seed: 5, rank, worldSize: 4, dropLast: true }));
  assert.ok(dropped.every((s) => s.length === 2));
  assert.equal(new Set(dropped.flat()).size, 8, 'disjoint');
  const padded = [0, 1, 2, 3].map((rank) => all({ items: 10, shuffle: true, seed: 5, rank, worldSize: 4 }));
  assert.ok(padded.every((s) => s.length === 3));
  assert.equal(new Set(padded.flat()).size, 10, 'every item covered');
  // Shuffle: the same permutation on every rank for (seed, epoch), another one next epoch.
  const two = all({ items: 50, shuffle: true, seed: 1, epochs: 2 });
  assert.notDeepEqual(two.slice(0, 50), two.slice(50));
  assert.deepEqual([...two.slice(0, 50)].sort((p, q) => p - q), Array.from(arange(50)));
  assert.deepEqual(all({ items: 50, shuffle: true, seed: 1 }), two.slice(0, 50));
  const s = new SequentialSampler({ items: 50, shuffle: true, seed: 1, epochs: 2 });
  take(s, 63);
  const resumed = new SequentialSampler({ items: 50, shuffle: true, seed: 1, epochs: 2 }, s.state());
  assert.deepEqual(take(resumed, 40), [...two.slice(63), null, null, null]);
});

test('evalWindows: the 20 fixed windows of torch_brown.py (s = i * (len - T - 1) // 20)', () => {
  const { val } = brownSplit();
  const ds = new TokenDataset(val, 256);
  const w = evalWindows(ds);
  assert.equal(w.length, 20);
  w.forEach((s, i) => assert.equal(s, Math.floor((i * (val.length - 256 - 1)) / 20)));
  assert.deepEqual(evalWindows({ size: 100 }, 4), [0, 25, 50, 75]);
});

// ---- loaders ---------------------------------------------------------------------------------------

const T = 8;
const ds = new TokenDataset(arange(5000), T);
const randomOpts = (extra: Partial<LoaderOptions> = {}): LoaderOptions => ({ dataset: ds, sampler: { kind: 'random', n: ds.size, seed: 11 }, batch: 4, ...extra });

test('loader: token batches are fields x, y int64 [B, T], y = x shifted by one', () => {
  const l = new SyncLoader(randomOpts());
  const b = l.nextSync()!;
  assert.deepEqual(ds.fields, [{ name: 'x', dtype: 'int64', shape: [T] }, { name: 'y', dtype: 'int64', shape: [T] }]);
  assert.deepEqual(b.fields.map((f) => [f.name, f.dtype, f.shape, f.data.constructor.name, f.data.length]),
    [['x', 'int64', [4, T], 'BigInt64Array', 4 * T], ['y', 'int64', [4, T], 'BigInt64Array', 4 * T]]);
  assert.equal(b.B, 4);
  const s = new RandomWindowSampler({ n: ds.size, seed: 11 });
  assert.deepEqual(starts(b), take(s, 4));
  const [x, y] = [batchField(b, 'x').data, batchField(b, 'y').data];
  for (let r = 0; r < b.B; r++) for (let t = 0; t < T; t++) assert.equal(y[r * T + t], (x[r * T + t] as bigint) + 1n);
  assert.throws(() => batchField(b, 'label'), /batch has no field 'label'; its fields are x, y/);
});

test('loader: token batches are bit-identical to the x/y batches before typed records (golden sha256)', async () => {
  // Golden: computed with the previous BatchMaker ({x, y: BigInt64Array, B, T}) on the same streams,
  // through both loaders; Brown bytes with a random sampler, and 16-bit ids with a shuffled rank share.
  const text = brownText();
  const h = createHash('sha256');
  const feed = (b: Batch): void => { for (const f of b.fields) h.update(new Uint8Array(f.data.buffer, f.data.byteOffset, f.data.byteLength)); };
  const u16 = Uint16Array.from(text.subarray(0, 100_000), (v, i) => (v * 257 + i) & 0xffff);
  const cases: [TokenDataset, SamplerSpec][] = [
    [new TokenDataset(text.subarray(0, 200_000), 64), { kind: 'random', n: 200_000 - 65, seed: 5 }],
    [new TokenDataset(u16, 32), { kind: 'sequential', items: 3000, shuffle: true, seed: 2, rank: 1, worldSize: 3, epochs: 2 }],
  ];
  for (const [dataset, sampler] of cases) {
    const l = new SyncLoader({ dataset, sampler, batch: 8 });
    for (let i = 0; i < 30; i++) feed(l.nextSync()!);
    const p = await createLoader({ dataset, sampler, batch: 8, depth: 2 });
    for (const b of await drain(p, 30)) feed(b);
    await p.close();
  }
  assert.equal(h.digest('hex'), 'cba86952c1405579ea7e4420e9c19b8c4c3cd6611615bde2f3e09052541c32d4');
});

test('loader: a token record of the wrong length is skipped, counted and named; the loader continues', () => {
  /** Window 3 loses its last token, so x and y get T - 1 each (x is checked first). */
  class Short extends TokenDataset {
    override window(i: number): TokenArray { const w = super.window(i); return i === 3 ? w.subarray(0, w.length - 1) : w; }
  }
  const short = new Short(arange(40), T);
  const seen: SkippedRecord[] = [];
  const l = new SyncLoader({ dataset: short, sampler: { kind: 'sequential', items: 8 }, batch: 4, onSkip: (s) => seen.push(s) });
  assert.deepEqual(starts(l.nextSync()!), [0, 1, 2, 4]);
  assert.deepEqual(starts(l.nextSync()!), [5, 6, 7]);
  assert.equal(l.nextSync(), null);
  assert.equal(l.stats.skipped, 1);
  assert.deepEqual(seen, [{ index: 3, record: `tokens[3..${3 + T + 1})`, reason: `field x: expected ${T} values (shape [${T}]), got ${T - 1}` }]);
});

test('datasetFromSpec: a token spec round-trips; an unknown kind names it', () => {
  const back = datasetFromSpec(ds.spec());
  assert.deepEqual(back.record(17), ds.record(17));
  assert.deepEqual(Array.from(back.record(17)[0]!), Array.from(arange(T), (t) => 17 + t));
  assert.throws(() => datasetFromSpec({ kind: 'parquet' } as unknown as ReturnType<TokenDataset['spec']>), /datasetFromSpec: unknown dataset kind "parquet"/);
});

test('record hook: receives the record as fields in order (x, y views of the window)', () => {
  const got: [number, number[][]][] = [];
  const l = new SyncLoader({ dataset: ds, sampler: { kind: 'sequential', items: [10] }, batch: 1 }, (i: number, rec: DataRecord) => { got.push([i, rec.map((f) => Array.from(f))]); });
  l.nextSync();
  assert.deepEqual(got, [[10, [Array.from(arange(T), (t) => 10 + t), Array.from(arange(T), (t) => 11 + t)]]]);
});

test('prefetch loader: yields exactly the in-thread loader batches for the same seed', async () => {
  const sync = new SyncLoader(randomOpts());
  for (const depth of [1, 3]) {
    const pre = await createLoader({ ...randomOpts(), depth });
    const ref = new SyncLoader(randomOpts());
    for (const b of await drain(pre, 25)) assert.deepEqual(b, ref.nextSync());
    assert.equal(pre.stats.batches, 25);
    await pre.close();
  }
  assert.ok(sync.nextSync() !== null);
});

test('prefetch loader: skips bad records, counts and names them, and stays in step with the in-thread loader', async () => {
  const recordHook = hookModule('export default (i) => { if (i % 7 === 3) throw new Error("corrupt record " + i); };');
  const seen: SkippedRecord[] = [];
  const pre = await createLoader(randomOpts({ recordHook, onSkip: (s) => seen.push(s) }));
  const ref = await SyncLoader.create(randomOpts({ recordHook, onSkip: () => undefined }));
  const got = await drain(pre, 30);
  for (const b of got) assert.deepEqual(b, ref.nextSync());
  assert.ok(got.every((b) => b.B === 4 && starts(b).every((i) => i % 7 !== 3)), 'no bad record in a batch');
  assert.ok(pre.stats.skipped > 0);
  assert.equal(pre.stats.skipped, ref.stats.skipped);
  assert.equal(seen.length, pre.stats.skipped);
  assert.ok(seen.every((s) => s.index % 7 === 3 && s.record === `tokens[${s.index}..${s.index + T + 1})` && s.reason === `corrupt record ${s.index}`));
  await pre.close();
});

test('prefetch loader: resumes mid-stream at exactly the next batch (prefetched batches are not counted)', async () => {
  const ref = new SyncLoader(randomOpts());
  const expected = Array.from({ length: 12 }, () => ref.nextSync()!);
  const first = await createLoader({ ...randomOpts(), depth: 3 });
  assert.deepEqual(await drain(first, 5), expected.slice(0, 5));
  const state = JSON.parse(JSON.stringify(first.state())) as ReturnType<Loader['state']>;
  assert.equal(state.batches, 5);
  await first.close();
  const resumed = await createLoader({ ...randomOpts(), state });
  assert.deepEqual(await drain(resumed, 7), expected.slice(5));
  assert.equal(resumed.state().batches, 12);
  await resumed.close();
  const inThread = new SyncLoader({ ...randomOpts(), state });
  assert.deepEqual(inThread.nextSync(), expected[5]);
});

test('prefetch loader: a finite sampler ends with a partial batch, then null', async () => {
  const items = evalWindows(ds, 10);
  const l = await createLoader({ dataset: ds, sampler: { kind: 'sequential', items }, batch: 4 });
  const got: number[][] = [];
  for await (const b of l) got.push(starts(b));
  assert.deepEqual(got, [items.slice(0, 4), items.slice(4, 8), items.slice(8)]);
  assert.equal(await l.next(), null);
  assert.deepEqual(l.state(), { sampler: { kind: 'sequential', epoch: 1, pos: 0 }, batches: 3 });
  await l.close();
  await assert.rejects(l.next(), /data loader 'weft-data-\d+' is closed/);
});

test('prefetch loader: a stalled worker times out with its name and the awaited batch; close still ends it', async () => {
  const recordHook = hookModule('export default () => { const t = Date.now(); while (Date.now() - t < 3000); };');
  const l = await PrefetchLoader.create({ ...randomOpts({ recordHook }), name: 'stall-test', timeoutMs: 300 });
  await assert.rejects(l.next(), /data loader worker 'stall-test' did not send batch 1 within 300 ms/);
  await l.close();
});

test('prefetch loader: only bad records is an error, not a hang', async () => {
  const recordHook = hookModule('export default (i) => { throw new Error("bad " + i); };');
  const l = await PrefetchLoader.create({ ...randomOpts({ recordHook }), name: 'all-bad', maxConsecutiveSkips: 50 });
  await assert.rejects(l.next(), /data loader worker 'all-bad' failed: data: 50 records in a row failed; the last was record \d+ \(tokens\[\d+\.\.\d+\)\): bad \d+/);
  await l.close();
  await assert.rejects(PrefetchLoader.create({ ...randomOpts({ recordHook: hookModule('export const x = 1;') }), name: 'no-default' }),
    /data loader worker 'no-default' failed to start: recordHook .*its default export must be a function/);
});

test('prefetch loader: close() ends the worker and the process exits (also when close is forgotten)', () => {
  const index = new URL('../src/data/index.js', import.meta.url).href;
  for (const close of ['await l.close();', '']) {
    const script = `import { TokenDataset, createLoader } from '${index}';
      const ds = new TokenDataset(new Uint8Array(4000), 16);
      const l = await createLoader({ dataset: ds, sampler: { kind: 'random', n: ds.size, seed: 1 }, batch: 8, depth: 4 });
      for (let i = 0; i < 3; i++) await l.next();
      ${close}
      console.log('done', l.stats.batches);`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { timeout: 10_000, encoding: 'utf8' });
    assert.equal(r.error, undefined, `${close || 'no close'}: ${String(r.error)}`);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.trim(), 'done 3');
  }
});
