/**
 * Checkpoints: the safetensors codec (round trip, byte layout read back by a json+struct Python
 * parser, every malformed-header case), save/load round trips, crash safety at every stage of a
 * save and of a re-save, keep=n pruning, and corrupted files reported as CheckpointErrors that
 * name the file.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { CheckpointError, latestCheckpoint, loadCheckpoint, saveCheckpoint, SimulatedCrash } from '../src/train/checkpoint.js';
import type { CheckpointTensor, SaveStage } from '../src/train/checkpoint.js';
import { decodeSafetensors, encodeSafetensors } from '../src/train/safetensors.js';
import type { TensorIn } from '../src/train/safetensors.js';

const root = mkdtempSync(join(tmpdir(), 'weft-checkpoint-'));
after(() => rmSync(root, { recursive: true, force: true }));
let runs = 0;
const freshRun = (): string => join(root, `run-${runs++}`);

const isCkErr = (re: RegExp) => (e: unknown): boolean => {
  assert.ok(e instanceof CheckpointError, `expected a CheckpointError, got ${String(e)}`);
  assert.match(e.message, re);
  return true;
};

/** A small model and AdamW-shaped optimizer whose every value depends on `tag`. */
function contents(tag: number): { weights: Map<string, CheckpointTensor>; optimizer: Map<string, CheckpointTensor>; state: { tag: number; loader: { batches: number }; metrics: number[] } } {
  const f32 = (n: number, k: number): Float32Array => Float32Array.from({ length: n }, (_, i) => tag * 100 + k + i * 0.25);
  const weights = new Map<string, CheckpointTensor>([
    ['wte.weight', { shape: [4, 3], data: f32(12, 0) }],
    ['ln.bias', { shape: [3], data: Float64Array.from([tag, -tag, 1 / 3]) }],
    ['scale', { shape: [], data: Float32Array.of(tag + 0.5) }],
    ['empty', { shape: [0, 5], data: new Float32Array(0) }],
    ['half', { shape: [2], data: Uint16Array.of(0x3c00, 0xc000 + tag), dtype: 'F16' }],
    ['ids', { shape: [2, 2], data: Int32Array.of(tag, -1, 2, 3) }],
    ['mask', { shape: [3], data: Uint8Array.of(1, 0, tag & 0xff) }],
  ]);
  const optimizer = new Map<string, CheckpointTensor>([
    ['m.wte.weight', { shape: [4, 3], data: f32(12, 7) }],
    ['v.wte.weight', { shape: [4, 3], data: f32(12, 9) }],
  ]);
  return { weights, optimizer, state: { tag, loader: { batches: tag * 10 }, metrics: [tag, 0.5] } };
}

function assertTensorsEqual(got: ReadonlyMap<string, { shape: readonly number[]; data: ArrayLike<number> }>, want: ReadonlyMap<string, CheckpointTensor>): void {
  assert.deepEqual([...got.keys()], [...want.keys()]);
  for (const [k, w] of want) {
    const g = got.get(k)!;
    assert.deepEqual(g.shape, [...w.shape], k);
    assert.equal(g.data.constructor, w.data.constructor, k);
    assert.deepEqual(Array.from(g.data), Array.from(w.data), k);
  }
}

/** Every file under `dir` with its SHA-256: a load must leave this unchanged. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string): void => {
    for (const n of readdirSync(d).sort()) {
      const p = join(d, n);
      if (statSync(p).isDirectory()) walk(p);
      else out[p] = createHash('sha256').update(readFileSync(p)).digest('hex');
    }
  };
  walk(dir);
  return out;
}

/** Replaces a checkpoint file and updates state.json's byte length and hash, so decoding (not verification) sees it. */
function tamper(dir: string, file: string, bytes: Uint8Array): void {
  writeFileSync(join(dir, file), bytes);
  const doc = JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8')) as { files: Record<string, { bytes: number; sha256: string }> };
  doc.files[file] = { bytes: bytes.length, sha256: createHash('sha256').update(bytes).digest('hex') };
  writeFileSync(join(dir, 'state.json'), JSON.stringify(doc));
}

/** A safetensors file from a raw header object and `dataLen` zero bytes of data. */
function craft(header: unknown, dataLen: number, headerText = JSON.stringify(header)): Uint8Array {
  const json = Buffer.from(headerText);
  const out = new Uint8Array(8 + json.length + dataLen);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  return out;
}

test('safetensors: every dtype and shape (scalar, empty, 3-D) round-trips with metadata, in header order', () => {
  const tensors = new Map<string, TensorIn>([
    ['f32', { shape: [2, 3], data: Float32Array.from([1, -2, 3.5, 1e-30, Infinity, NaN]) }],
    ['f64', { shape: [3], data: Float64Array.from([Math.PI, -0, 1e300]) }],
    ['i64', { shape: [2], data: BigInt64Array.from([-(2n ** 62n), 7n]) }],
    ['i32', { shape: [2, 1, 2], data: Int32Array.from([-(2 ** 31), 0, 1, 2 ** 31 - 1]) }],
    ['u8', { shape: [5], data: Uint8Array.from([0, 1, 127, 128, 255]) }],
    ['f16', { shape: [1], data: Uint16Array.of(0x3c00), dtype: 'F16' }],
    ['bf16', { shape: [2], data: Uint16Array.of(0x3f80, 0xc000), dtype: 'BF16' }],
    ['i8', { shape: [2], data: Int8Array.of(-128, 127) }],
    ['scalar', { shape: [], data: Float64Array.of(42) }],
    ['empty', { shape: [0], data: new Float32Array(0) }],
    ['empty3d', { shape: [3, 0, 2], data: new Int32Array(0) }],
    ['cube', { shape: [2, 3, 4], data: Float32Array.from({ length: 24 }, (_, i) => i / 8) }],
  ]);
  const bytes = encodeSafetensors(tensors, { format: 'pt', note: 'héllo' });
  const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  assert.equal(n % 8, 0, 'header padded to a multiple of 8');
  const header = JSON.parse(Buffer.from(bytes.subarray(8, 8 + n)).toString('utf8')) as Record<string, { data_offsets: [number, number] }>;
  let cursor = 0;
  for (const name of tensors.keys()) {
    assert.equal(header[name]!.data_offsets[0], cursor, `${name} starts where the previous tensor ended`);
    cursor = header[name]!.data_offsets[1];
  }
  assert.equal(8 + n + cursor, bytes.length);

  // Decode from an odd byte offset: every tensor must come back in its own aligned buffer.
  const shifted = new Uint8Array(bytes.length + 3);
  shifted.set(bytes, 3);
  const { tensors: back, metadata } = decodeSafetensors(shifted.subarray(3), 'mem.safetensors');
  assert.deepEqual(metadata, { format: 'pt', note: 'héllo' });
  assert.deepEqual([...back.keys()], [...tensors.keys()]);
  for (const [name, t] of tensors) {
    const g = back.get(name)!;
    assert.equal(g.dtype, t.dtype ?? g.dtype);
    assert.deepEqual(g.shape, [...t.shape], name);
    assert.equal(g.data.constructor, t.data.constructor, name);
    assert.equal(g.data.byteOffset, 0, name);
    assert.deepEqual(Array.from(g.data as ArrayLike<number | bigint>), Array.from(t.data as ArrayLike<number | bigint>), name);
  }
  assert.equal(back.get('f32')!.dtype, 'F32');
  assert.equal(back.get('i64')!.dtype, 'I64');
  assert.equal(back.get('bf16')!.dtype, 'BF16');
  // No metadata: no __metadata__ key at all (as the reference writer does).
  assert.deepEqual(decodeSafetensors(encodeSafetensors({ a: { shape: [1], data: Float32Array.of(1) } }), 'x').metadata, {});
});

test('safetensors: the byte layout parses with a json+struct Python reader', { skip: !existsSync('/usr/bin/python3') && 'no /usr/bin/python3' }, () => {
  const file = join(root, 'py.safetensors');
  writeFileSync(file, encodeSafetensors({
    'wte.weight': { shape: [2, 3], data: Float32Array.from([0.5, -1.25, 2, 3, 4, 5]) },
    'ln.bias': { shape: [2], data: Float64Array.from([Math.PI, -2.5]) },
    ids: { shape: [3], data: BigInt64Array.from([-5n, 0n, 9007199254740993n]) },
    h: { shape: [1], data: Uint16Array.of(0x3e00), dtype: 'F16' }, // 1.5
    bf: { shape: [], data: Uint16Array.of(0x4040), dtype: 'BF16' }, // 3.0
    empty: { shape: [0, 4], data: new Float32Array(0) },
  }, { format: 'pt' }));
  const py = String.raw`
import json, struct, sys
b = open(sys.argv[1], 'rb').read()
(n,) = struct.unpack('<Q', b[:8])
assert n % 8 == 0, n
header = json.loads(b[8:8 + n])
data = b[8 + n:]
fmt = {'F32': ('f', 4), 'F64': ('d', 8), 'I64': ('q', 8), 'F16': ('e', 2), 'BF16': ('H', 2)}
out, end = {'__metadata__': header.pop('__metadata__', None)}, 0
for name, t in sorted(header.items(), key=lambda kv: kv[1]['data_offsets']):
    lo, hi = t['data_offsets']
    assert lo == end, (name, lo, end)
    end = hi
    c, size = fmt[t['dtype']]
    count = 1
    for d in t['shape']: count *= d
    assert hi - lo == count * size, name
    vals = list(struct.unpack('<%d%s' % (count, c), data[lo:hi]))
    if t['dtype'] == 'BF16': vals = [struct.unpack('<f', struct.pack('<I', v << 16))[0] for v in vals]
    if t['dtype'] == 'I64': vals = [str(v) for v in vals]
    out[name] = {'dtype': t['dtype'], 'shape': t['shape'], 'values': vals}
assert end == len(data)
print(json.dumps(out))
`;
  const got = JSON.parse(execFileSync('/usr/bin/python3', ['-c', py, file], { encoding: 'utf8' })) as Record<string, unknown>;
  assert.deepEqual(got, {
    __metadata__: { format: 'pt' },
    'wte.weight': { dtype: 'F32', shape: [2, 3], values: [0.5, -1.25, 2, 3, 4, 5] },
    'ln.bias': { dtype: 'F64', shape: [2], values: [Math.PI, -2.5] },
    ids: { dtype: 'I64', shape: [3], values: ['-5', '0', '9007199254740993'] },
    h: { dtype: 'F16', shape: [1], values: [1.5] },
    bf: { dtype: 'BF16', shape: [], values: [3] },
    empty: { dtype: 'F32', shape: [0, 4], values: [] },
  });
});

test('safetensors: malformed files are CheckpointErrors naming the source and the problem', () => {
  const src = '/ck/model.safetensors';
  const dec = (b: Uint8Array, re: RegExp): void => { assert.throws(() => decodeSafetensors(b, src), isCkErr(new RegExp(`^${src.replace(/[./]/g, '\\$&')}: .*${re.source}`))); };
  const good = encodeSafetensors({ a: { shape: [2], data: Float32Array.of(1, 2) }, b: { shape: [1], data: Float64Array.of(3) } });
  dec(good.subarray(0, 5), /5 bytes, too short/);
  const long = good.slice();
  new DataView(long.buffer).setBigUint64(0, 1n << 40n, true);
  dec(long, /header length 1,099,511,627,776 .* runs past the end of the file/);
  dec(craft(null, 0, '{"a": {"dtype": "F32", "shape": [1], '), /not valid UTF-8 JSON/);
  dec(craft(null, 0, '[1, 2]   '), /does not start with '\{'/);
  dec(craft({ __metadata__: { step: 7 } }, 0), /__metadata__ 'step' must be a string/);
  dec(craft({ a: { dtype: 'F8', shape: [1], data_offsets: [0, 1] } }, 1), /tensor 'a' has unknown dtype "F8"/);
  dec(craft({ a: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, 4), /tensor 'a': shape \[-1\] has entry 0 = -1, expected a non-negative integer/);
  dec(craft({ a: { dtype: 'F32', shape: [1.5], data_offsets: [0, 4] } }, 4), /entry 0 = 1.5/);
  dec(craft({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 4] } }, 4), /tensor 'a' is F32 \[2\], which needs 8 bytes, but data_offsets \[0, 4\] hold 4/);
  dec(craft({ a: { dtype: 'F32', shape: [1], data_offsets: [4, 0] } }, 4), /data_offsets must be \[begin, end\]/);
  dec(craft({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } }, 4), /tensor 'a' data_offsets \[0, 8\] run past the end of the data \(4 bytes/);
  dec(craft({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, 8), /tensor 'b' .* overlap the previous tensor, which ends at 8/);
  dec(craft({ a: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, 8), /tensor 'a' .* leave a gap: the previous tensor ends at 0/);
  dec(craft({ a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, 12), /8 bytes after the last tensor/);
  dec(craft({ a: { dtype: 'F32', shape: [1], data_offsets: [0, 4], extra: 1 } }, 4), /unknown keys extra/);
  dec(craft({ a: [1, 2] }, 0), /tensor 'a' must be an object/);
  // Writing: values that do not match the shape, and Uint16Array without a dtype.
  assert.throws(() => encodeSafetensors({ w: { shape: [2, 2], data: new Float32Array(3) } }), isCkErr(/tensor 'w' has shape \[2, 2\] \(4 elements\) but 3 values/));
  assert.throws(() => encodeSafetensors({ h: { shape: [1], data: new Uint16Array(1) } }), isCkErr(/tensor 'h' holds a Uint16Array.*give its dtype/));
  assert.throws(() => encodeSafetensors({ h: { shape: [1], data: new Float32Array(1), dtype: 'F64' } }), isCkErr(/'h' is F64, which is carried in a Float64Array, got a Float32Array/));
});

test('checkpoint: save then load from the run dir or the step dir gives back weights, optimizer and state', () => {
  const run = freshRun();
  assert.equal(latestCheckpoint(run), null, 'no run dir yet: no checkpoint');
  const c = contents(1);
  const dir = saveCheckpoint(run, 100, c);
  assert.equal(dir, join(run, 'step-000100'));
  assert.equal(latestCheckpoint(run), dir);
  assert.deepEqual(JSON.parse(readFileSync(join(run, 'latest'), 'utf8')), { checkpoint: 'step-000100', step: 100 });
  for (const path of [run, dir]) {
    const ck = loadCheckpoint(path);
    assert.equal(ck.dir, dir);
    assert.equal(ck.step, 100);
    assertTensorsEqual(ck.weights, c.weights);
    assertTensorsEqual(ck.optimizer, c.optimizer);
    assert.deepEqual(ck.state, c.state);
  }
  const doc = JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8')) as Record<string, unknown> & { files: Record<string, { bytes: number; sha256: string }> };
  assert.equal(doc['format'], 'weft-checkpoint');
  assert.equal(doc['version'], 1);
  assert.equal(doc['step'], 100);
  assert.ok(!Number.isNaN(Date.parse(doc['time'] as string)));
  for (const f of ['model.safetensors', 'optimizer.safetensors']) {
    const b = readFileSync(join(dir, f));
    assert.deepEqual(doc.files[f], { bytes: b.length, sha256: createHash('sha256').update(b).digest('hex') });
  }
  assert.deepEqual(readdirSync(run).sort(), ['latest', 'step-000100']);
});

test('checkpoint: a crash at any stage of a save leaves the previous checkpoint and latest whole', () => {
  const stages: SaveStage[] = ['model.safetensors', 'optimizer.safetensors', 'state.json', 'step-dir', 'latest'];
  for (const stage of stages) {
    const run = freshRun();
    saveCheckpoint(run, 1, contents(1));
    assert.throws(() => saveCheckpoint(run, 2, contents(2), { crashAfter: stage }), SimulatedCrash);
    const expect = stage === 'latest' ? 2 : 1;
    const ck = loadCheckpoint(run);
    assert.equal(ck.step, expect, stage);
    assertTensorsEqual(ck.weights, contents(expect).weights);
    assert.deepEqual(ck.state, contents(expect).state);
    assert.equal(latestCheckpoint(run), join(run, `step-00000${expect}`), stage);
    if (stage === 'step-dir') assert.equal(loadCheckpoint(join(run, 'step-000002')).step, 2, 'the renamed dir is complete');
    // The next save removes the crash's leftovers.
    saveCheckpoint(run, 3, contents(3));
    assert.deepEqual(readdirSync(run).filter((n) => n.startsWith('.tmp-')), [], stage);
    assert.equal(loadCheckpoint(run).step, 3);
  }
});

test('checkpoint: hand-written half checkpoints and temp files are ignored by loads and removed by the next save', () => {
  const run = freshRun();
  saveCheckpoint(run, 5, contents(5));
  const tmp = join(run, '.tmp-step-000006-99999-abcdef');
  mkdirSync(tmp);
  writeFileSync(join(tmp, 'model.safetensors'), encodeSafetensors(contents(6).weights).subarray(0, 40));
  writeFileSync(join(run, '.tmp-latest-99999'), '{"checkpoint": "step-0');
  const before = snapshot(run);
  assert.equal(loadCheckpoint(run).step, 5);
  assert.equal(latestCheckpoint(run), join(run, 'step-000005'));
  assert.deepEqual(snapshot(run), before, 'loads write nothing');
  saveCheckpoint(run, 6, contents(6));
  assert.deepEqual(readdirSync(run).sort(), ['latest', 'step-000005', 'step-000006']);
  assertTensorsEqual(loadCheckpoint(run).weights, contents(6).weights);
});

test('checkpoint: re-saving a step replaces it, and a crash during the replacement never leaves latest dangling', () => {
  const run0 = freshRun();
  saveCheckpoint(run0, 1, contents(1));
  saveCheckpoint(run0, 1, contents(2));
  const ck0 = loadCheckpoint(run0);
  assert.equal(ck0.step, 1);
  assertTensorsEqual(ck0.weights, contents(2).weights);
  assert.deepEqual(readdirSync(run0).sort(), ['latest', 'step-000001']);

  const stages: SaveStage[] = ['state.json', 'latest-to-tmp', 'old-removed', 'step-dir', 'latest'];
  for (const stage of stages) {
    const run = freshRun();
    saveCheckpoint(run, 1, contents(1));
    assert.throws(() => saveCheckpoint(run, 1, contents(2), { crashAfter: stage }), SimulatedCrash);
    const tag = stage === 'state.json' ? 1 : 2; // from 'latest-to-tmp' on, latest names the complete new copy
    const ck = loadCheckpoint(run);
    assert.equal(ck.step, 1, stage);
    assertTensorsEqual(ck.weights, contents(tag).weights);
    assertTensorsEqual(ck.optimizer, contents(tag).optimizer);
    assert.deepEqual(ck.state, contents(tag).state, stage);
    saveCheckpoint(run, 2, contents(3));
    assert.deepEqual(readdirSync(run).filter((n) => n.startsWith('.tmp-')), [], stage);
  }
});

test('checkpoint: keep=n prunes to the n newest, never the one latest names', () => {
  const run = freshRun();
  for (let s = 1; s <= 5; s++) saveCheckpoint(run, s * 10, { ...contents(s), keep: 2 });
  assert.deepEqual(readdirSync(run).sort(), ['latest', 'step-000040', 'step-000050']);
  for (let s = 6; s <= 8; s++) saveCheckpoint(run, s * 10, contents(s));
  saveCheckpoint(run, 20, { ...contents(9), keep: 1 }); // an older step, re-run: latest now names it
  assert.deepEqual(readdirSync(run).sort(), ['latest', 'step-000020', 'step-000080']);
  assert.equal(loadCheckpoint(run).step, 20);
  assert.throws(() => saveCheckpoint(run, 90, { ...contents(1), keep: 0 }), isCkErr(/keep must be an integer >= 1, got 0/));
});

test('checkpoint: damaged checkpoints are CheckpointErrors naming the file, and loads change nothing', () => {
  const fresh = (): string => saveCheckpoint(freshRun(), 7, contents(7));
  const loadFails = (dir: string, re: RegExp): void => {
    const before = snapshot(dir);
    assert.throws(() => loadCheckpoint(dir), isCkErr(re));
    assert.deepEqual(snapshot(dir), before);
  };
  let d = fresh();
  truncateSync(join(d, 'model.safetensors'), 100);
  loadFails(d, /step-000007\/model\.safetensors is 100 bytes, state\.json records [\d,]+ \(truncated\?\)/);

  d = fresh();
  const opt = readFileSync(join(d, 'optimizer.safetensors'));
  opt.writeUInt8(opt.readUInt8(opt.length - 3) ^ 0x40, opt.length - 3);
  writeFileSync(join(d, 'optimizer.safetensors'), opt);
  loadFails(d, /optimizer\.safetensors: SHA-256 mismatch: the file hashes to [0-9a-f]{64}, state\.json records [0-9a-f]{64}/);

  d = fresh();
  rmSync(join(d, 'model.safetensors'));
  loadFails(d, /step-000007\/model\.safetensors is missing \(state\.json lists it\)/);

  d = fresh();
  writeFileSync(join(d, 'state.json'), '{"format": "weft-checkpoint", "version": 1, ');
  loadFails(d, /step-000007\/state\.json: not valid JSON/);

  d = fresh();
  const doc = JSON.parse(readFileSync(join(d, 'state.json'), 'utf8')) as Record<string, unknown>;
  writeFileSync(join(d, 'state.json'), JSON.stringify({ ...doc, files: { 'model.safetensors': { bytes: 1, sha256: 'x' } } }));
  loadFails(d, /state\.json: 'files\.model\.safetensors\.sha256' must be 64 lowercase hex digits, got "x"/);
  writeFileSync(join(d, 'state.json'), JSON.stringify({ ...doc, version: 2 }));
  loadFails(d, /state\.json: written by a newer weft \(format version 2\)/);
  writeFileSync(join(d, 'state.json'), JSON.stringify({ ...doc, step: 8 }));
  loadFails(d, /state\.json records step 8, but its directory is step-000007/);
  rmSync(join(d, 'state.json'));
  loadFails(d, /step-000007\/state\.json is missing/);

  // Files whose recorded length and hash match but whose contents are not valid safetensors.
  d = fresh();
  tamper(d, 'model.safetensors', craft(null, 0, '{"w": {"dtype": "F32", '));
  loadFails(d, /step-000007\/model\.safetensors: header is not valid UTF-8 JSON/);
  d = fresh();
  const long = readFileSync(join(d, 'optimizer.safetensors'));
  new DataView(long.buffer, long.byteOffset).setBigUint64(0, BigInt(long.length), true);
  tamper(d, 'optimizer.safetensors', long);
  loadFails(d, /optimizer\.safetensors: header length [\d,]+ \(first 8 bytes\) runs past the end of the file/);
  d = fresh();
  tamper(d, 'model.safetensors', craft({ w: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, 8));
  loadFails(d, /model\.safetensors: tensor 'w' data_offsets \[0, 16\] run past the end of the data \(8 bytes/);

  // latest that names a missing or garbled target.
  const run = freshRun();
  saveCheckpoint(run, 7, contents(7));
  writeFileSync(join(run, 'latest'), '{"checkpoint": "step-000009", "step": 9}\n');
  assert.throws(() => latestCheckpoint(run), isCkErr(/latest points at .*step-000009, which does not exist/));
  loadFails(run, /latest points at .*step-000009, which does not exist/);
  writeFileSync(join(run, 'latest'), 'step-0000');
  loadFails(run, /\/latest: not valid JSON/);
  writeFileSync(join(run, 'latest'), '{"checkpoint": "../elsewhere"}');
  loadFails(run, /\/latest: expected \{"checkpoint"/);
  assert.throws(() => loadCheckpoint(join(root, 'nowhere')), isCkErr(/nowhere: no such checkpoint or run directory/));
});

test('checkpoint: a save that cannot serialize writes nothing', () => {
  const run = freshRun();
  saveCheckpoint(run, 1, contents(1));
  const before = snapshot(run);
  assert.throws(() => saveCheckpoint(run, 2, { ...contents(2), state: { big: 1n } }), isCkErr(/step-000002\/state\.json: state is not JSON-serializable/));
  const bad = new Map<string, CheckpointTensor>([['w', { shape: [3], data: new Float32Array(2) }]]);
  assert.throws(() => saveCheckpoint(run, 2, { ...contents(2), weights: bad }), isCkErr(/step-000002\/model\.safetensors: tensor 'w' has shape \[3\] \(3 elements\) but 2 values/));
  assert.throws(() => saveCheckpoint(run, -1, contents(2)), isCkErr(/step must be a non-negative integer, got -1/));
  assert.deepEqual(snapshot(run), before);
});
