/**
 * Checkpoints: a run directory of complete, verified step directories and a `latest` pointer.
 *
 *   run/
 *     latest                    {"checkpoint": "step-000200", "step": 200}
 *     step-000100/
 *       model.safetensors       the weights (safetensors, readable by the reference reader)
 *       optimizer.safetensors   optimizer tensors (e.g. AdamW's m.* and v.*)
 *       state.json              {format, version, step, time, files: {name: {bytes, sha256}}, state}
 *     step-000200/ ...
 *     .tmp-*                    a save in progress, or one a crash interrupted: never read
 *
 * A save writes everything into a fresh `.tmp-step-N-<pid>-*` directory, fsyncs each file and the
 * directory, renames it to `step-N` (rename is atomic within a file system), fsyncs the run
 * directory, then replaces `latest` the same way (temp file, fsync, rename, fsync). A crash at any
 * point leaves `latest` naming a complete checkpoint: the old one until the final rename, the new
 * one after. Leftover `.tmp-*` entries are removed by the next save.
 *
 * Re-saving a step that exists cannot rename over a non-empty directory, and moving the old one
 * aside first would leave `latest` dangling for a moment. So `latest` first moves to the new,
 * complete temp directory; then the old `step-N` is removed, the new files are hard-linked into a
 * second temp directory that is renamed to `step-N`, and `latest` moves there.
 *
 * A load reads state.json, checks each file's byte length and SHA-256 against it, then decodes
 * and validates both safetensors files. Loads never write. Every error is a `CheckpointError`
 * naming the file. One process writes a run directory at a time (rank 0 under data parallelism).
 *
 * A resume takes the last *good* checkpoint (`latestGoodCheckpoint`): `latest`'s target, else the
 * step directories newest first, each verified in full; a damaged newest one costs the steps since
 * the one before, not the run. Pruning (`keep`) keeps that possible: it deletes old step
 * directories only after re-hashing the checkpoint just written and finding it good, so deleting
 * never leaves a run whose every checkpoint is damaged; when the new one does not verify, the old
 * ones all stay.
 *
 * @example
 *   saveCheckpoint('runs/a', step, { weights: stateDict(params), optimizer, state: { step, loader: loader.state() }, keep: 3 });
 *   const path = latestCheckpoint('runs/a');           // 'runs/a/step-000300' or null
 *   const good = latestGoodCheckpoint('runs/a');       // the newest that verifies (logs each one skipped), or null
 *   const ck = loadCheckpoint('runs/a');                // follows latest; or pass a step directory
 *   loadStateDict(params, ck.weights);
 */
import { createHash } from 'node:crypto';
import { closeSync, copyFileSync, existsSync, fsyncSync, linkSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, readSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { TypedArray } from '../ir/dtype.js';
import { CheckpointError, decodeSafetensors, safetensorsHeader, safetensorsParts } from './safetensors.js';
import type { SafeDType, SafeTensor } from './safetensors.js';

export { CheckpointError };

/** state.json's `format` and `version`; a loader refuses other formats and newer versions. */
export const CHECKPOINT_FORMAT = 'weft-checkpoint';
export const CHECKPOINT_VERSION = 1;

const MODEL = 'model.safetensors';
const OPTIMIZER = 'optimizer.safetensors';
const STATE = 'state.json';
const LATEST = 'latest';
const FILES = [MODEL, OPTIMIZER] as const;
/** Entries with this prefix are writes in progress or crash leftovers: ignored by loaders. */
const TMP = '.tmp-';
const STEP_DIR = /^step-(\d+)$/;

/** Checkpoint tensors hold numbers (counters such as the step belong in `state`). */
export type NumberArray = Exclude<TypedArray, BigInt64Array>;

export interface CheckpointTensor {
  readonly shape: readonly number[];
  readonly data: NumberArray;
  /** Needed only for Uint16Array data: 'F16', 'BF16' or 'U16'. */
  readonly dtype?: SafeDType;
}

export type CheckpointTensors = ReadonlyMap<string, CheckpointTensor> | Readonly<Record<string, CheckpointTensor>>;

export interface CheckpointContents {
  /** Model parameters by name (e.g. `stateDict(params)`); views are fine, they are copied. */
  weights: CheckpointTensors;
  /** Optimizer tensors by name (e.g. AdamW moments as 'm.<param>', 'v.<param>'). */
  optimizer: CheckpointTensors;
  /** Everything else, as JSON: step, config, optimizer hyperparameters and t, data-loader state, metrics. */
  state: unknown;
  /**
   * Keep only the n newest complete checkpoints (by step), and always the one `latest` names; the
   * others are deleted only when the checkpoint just written re-hashes correctly (module comment).
   */
  keep?: number;
}

/**
 * Points a save passes, in order; `crashAfter` stops there as a crash would (fault injection for
 * tests, which enumerate this list). 'latest-to-tmp' and 'old-removed' happen only when re-saving
 * an existing step: `latest` names the new temp directory, then the old step-N is gone.
 */
export const SAVE_STAGES = ['model.safetensors', 'optimizer.safetensors', 'state.json', 'latest-to-tmp', 'old-removed', 'step-dir', 'latest'] as const;
export type SaveStage = (typeof SAVE_STAGES)[number];

export interface SaveOptions {
  /** Throw a `SimulatedCrash` right after this stage and clean nothing up, as a killed process would. */
  crashAfter?: SaveStage;
  /**
   * Tests: called with the new step directory once `latest` names it, before pruning (e.g. to
   * damage what was just written, as a failing disk or a stray writer would).
   */
  beforePrune?: (stepDir: string) => void;
  /** Where a prune that was held back says why; default stderr. */
  log?: (line: string) => void;
}

/** What `crashAfter` throws. */
export class SimulatedCrash extends Error {
  override readonly name = 'SimulatedCrash';
}

export interface Checkpoint {
  /** The step directory read. */
  dir: string;
  step: number;
  weights: Map<string, SafeTensor<NumberArray>>;
  optimizer: Map<string, SafeTensor<NumberArray>>;
  /** The `state` given to saveCheckpoint, as parsed JSON. */
  state: unknown;
}

/** `step-000100`: six digits keep `ls` in step order up to a million steps; more digits after. */
export const stepDirName = (step: number): string => `step-${String(step).padStart(6, '0')}`;

const count = (n: number): string => n.toLocaleString('en-US');
const sha256 = (...parts: Uint8Array[]): string => { const h = createHash('sha256'); for (const p of parts) h.update(p); return h.digest('hex'); };
const errorText = (e: unknown): string => (e instanceof Error ? e.message : String(e));
const logToStderr = (line: string): void => { process.stderr.write(`${line}\n`); };

/**
 * Writes a checkpoint of `step` into `runDir/step-NNNNNN` and points `runDir/latest` at it;
 * returns the step directory. See the module comment for the crash-safety argument.
 */
export function saveCheckpoint(runDir: string, step: number, contents: CheckpointContents, opts: SaveOptions = {}): string {
  const s = beginSave(runDir, step, contents);
  for (const [file, tensors] of [[MODEL, contents.weights], [OPTIMIZER, contents.optimizer]] as const) {
    for (const [k, t] of tensors instanceof Map ? tensors : Object.entries(tensors)) {
      if ((t as { data: unknown }).data instanceof BigInt64Array) throw new CheckpointError(`${s.at(file)}: tensor '${k}' is int64; checkpoint tensors hold numbers (put counters in state)`);
    }
  }
  // Streamed: the tensors' own memory is written piece by piece, never copied into one file-sized buffer.
  const model = safetensorsParts(contents.weights, s.meta, s.at(MODEL));
  const optimizer = safetensorsParts(contents.optimizer, s.meta, s.at(OPTIMIZER));
  const files = { [MODEL]: { bytes: model.bytes, sha256: sha256(...model.parts) }, [OPTIMIZER]: { bytes: optimizer.bytes, sha256: sha256(...optimizer.parts) } };
  const tmp = s.tmp();
  return s.commit(tmp, files, opts, () => {
    writeDurable(join(tmp, MODEL), model.parts); s.crash(opts, MODEL);
    writeDurable(join(tmp, OPTIMIZER), optimizer.parts); s.crash(opts, OPTIMIZER);
  });
}

/** A tensor whose data is produced when its turn to be written comes (a sharded state gathered piece by piece). */
export interface LazyTensor {
  readonly shape: readonly number[];
  /** 'U8' for byte tensors (train/prune.ts's masks). */
  readonly dtype: 'F32' | 'U8';
  read(): Promise<Float32Array | Uint8Array>;
}

/** `saveCheckpoint`'s contents with lazy tensors, in the order they are written (and read). */
export interface StreamedContents { weights: readonly (readonly [string, LazyTensor])[]; optimizer: readonly (readonly [string, LazyTensor])[]; state: unknown; keep?: number }

/**
 * `saveCheckpoint` for state no one process holds whole (ZeRO's shards): each tensor is read when
 * the file reaches it, hashed and written, and dropped, so a save holds one tensor (or one gathered
 * segment) at a time instead of the whole model and optimizer. The same files, the same crash
 * safety: everything goes to a temp directory that is renamed into place only when complete.
 */
export async function saveCheckpointStreamed(runDir: string, step: number, contents: StreamedContents, opts: SaveOptions = {}): Promise<string> {
  const s = beginSave(runDir, step, contents);
  const tmp = s.tmp();
  const files: Record<string, { bytes: number; sha256: string }> = {};
  try {
    for (const [file, tensors] of [[MODEL, contents.weights], [OPTIMIZER, contents.optimizer]] as const) {
      const head = safetensorsHeader(tensors.map(([k, t]) => [k, t.shape, t.dtype] as const), s.meta, s.at(file));
      const h = createHash('sha256').update(head.head);
      const fd = openSync(join(tmp, file), 'wx');
      try {
        writeFileSync(fd, head.head);
        for (const [k, t] of tensors) {
          const data = await t.read();
          if (data.length !== head.sizes.get(k)) throw new CheckpointError(`${s.at(file)}: tensor '${k}' read ${count(data.length)} values for shape ${JSON.stringify(t.shape)}`);
          const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
          h.update(bytes);
          writeFileSync(fd, bytes);
        }
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      files[file] = { bytes: head.bytes, sha256: h.digest('hex') };
      s.crash(opts, file);
    }
  } catch (e) {
    if (!(e instanceof SimulatedCrash)) rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  return s.commit(tmp, files, opts, () => undefined);
}

/** What both savers share: the checks, the temp directory, and the commit (state.json, rename, latest, pruning). */
function beginSave(runDir: string, step: number, contents: { state: unknown; keep?: number }) {
  if (!Number.isSafeInteger(step) || step < 0) throw new CheckpointError(`saveCheckpoint(${runDir}): step must be a non-negative integer, got ${step}`);
  const { keep } = contents;
  if (keep !== undefined && !(Number.isSafeInteger(keep) && keep >= 1)) throw new CheckpointError(`saveCheckpoint(${runDir}): keep must be an integer >= 1, got ${keep}`);
  const name = stepDirName(step);
  const target = join(runDir, name);
  const at = (file: string): string => join(target, file);
  const meta = { format: 'pt', 'weft.step': String(step) }; // 'pt' is what transformers' loaders look for
  let state: string | undefined;
  try {
    state = JSON.stringify(contents.state);
  } catch (e) {
    throw new CheckpointError(`${at(STATE)}: state is not JSON-serializable: ${errorText(e)}`);
  }
  if (state === undefined) throw new CheckpointError(`${at(STATE)}: state must be a JSON value, got ${typeof contents.state}`);
  const crash = (opts: SaveOptions, stage: SaveStage): void => {
    if (opts.crashAfter === stage) throw new SimulatedCrash(`saveCheckpoint(${runDir}, ${step}): simulated crash after '${stage}'`);
  };
  return {
    at, meta, crash,
    tmp(): string {
      const created = mkdirSync(runDir, { recursive: true });
      if (created !== undefined) fsyncDir(dirname(created));
      removeStale(runDir, readLatestName(runDir, false));
      return mkdtempSync(join(runDir, `${TMP}${name}-${process.pid}-`));
    },
    /** Writes the tensor files (`writeFiles`), then state.json with their sizes and hashes, and moves the checkpoint into place. */
    commit(tmp: string, files: Record<string, { bytes: number; sha256: string }>, opts: SaveOptions, writeFiles: () => void): string {
      const doc = { format: CHECKPOINT_FORMAT, version: CHECKPOINT_VERSION, step, time: new Date().toISOString(), files };
      // Spliced in as text so the envelope stays readable without re-serializing a large state.
      const stateJson = `${JSON.stringify(doc, null, 2).replace(/\n}$/, '')},\n  "state": ${state}\n}\n`;
      const stage = (st: SaveStage): void => crash(opts, st);
      try {
        writeFiles();
        writeDurable(join(tmp, STATE), [stateJson]); stage(STATE);
        fsyncDir(tmp);
        if (existsSync(target)) {
          replaceStepDir(runDir, name, tmp, step, stage);
        } else {
          renameSync(tmp, target);
          fsyncDir(runDir); stage('step-dir');
        }
        writeLatest(runDir, name, step); stage('latest');
      } catch (e) {
        // A real failure (disk full, permissions) cleans up unless `latest` already names the temp dir.
        if (!(e instanceof SimulatedCrash) && readLatestName(runDir, false) !== basename(tmp)) rmSync(tmp, { recursive: true, force: true });
        throw e instanceof SimulatedCrash || e instanceof CheckpointError ? e : new CheckpointError(`saveCheckpoint(${target}): ${errorText(e)}`);
      }
      opts.beforePrune?.(target);
      if (keep !== undefined) prune(runDir, keep, name, opts.log ?? logToStderr);
      removeStale(runDir, name);
      return target;
    },
  };
}

/** Replaces an existing `runDir/name` by the complete temp dir `tmp`, `latest` valid throughout. */
function replaceStepDir(runDir: string, name: string, tmp: string, step: number, crash: (s: SaveStage) => void): void {
  writeLatest(runDir, basename(tmp), step); crash('latest-to-tmp');
  removeDir(runDir, name); crash('old-removed');
  const staging = mkdtempSync(join(runDir, `${TMP}link-${name}-${process.pid}-`));
  for (const f of [MODEL, OPTIMIZER, STATE]) linkOrCopy(join(tmp, f), join(staging, f));
  fsyncDir(staging);
  renameSync(staging, join(runDir, name));
  fsyncDir(runDir); crash('step-dir');
  writeLatest(runDir, name, step); crash('latest');
  rmSync(tmp, { recursive: true, force: true });
}

/**
 * Deletes all complete checkpoints but the `keep` newest and the one `latest` names, but only once
 * `latest` (the checkpoint just written) verifies: deleting the older ones must never leave a run
 * whose every checkpoint is damaged. When it does not verify, nothing is deleted and `log` says so.
 */
function prune(runDir: string, keep: number, latest: string, log: (line: string) => void): void {
  const complete = readdirSync(runDir)
    .map((n) => ({ n, step: Number(STEP_DIR.exec(n)?.[1] ?? NaN) }))
    .filter((c) => !Number.isNaN(c.step) && existsSync(join(runDir, c.n, STATE)))
    .sort((a, b) => b.step - a.step);
  const doomed = complete.slice(keep).filter((c) => c.n !== latest);
  if (doomed.length === 0) return;
  try {
    verifyHashes(join(runDir, latest));
  } catch (e) {
    log(`weft: keeping ${doomed.map((c) => c.n).join(', ')} in ${runDir} (checkpoint.keep = ${keep}): the checkpoint just written does not verify: ${errorText(e)}`);
    return;
  }
  for (const c of doomed) removeDir(runDir, c.n);
}

/** Chunk of the streamed re-hash: 4 MiB, a few hundred reads for a GB file and little memory held. */
const HASH_CHUNK = 4 << 20;

/**
 * Re-reads a step directory's tensor files and checks their byte lengths and SHA-256 against its
 * state.json, streaming in 4 MiB pieces so a check holds no file whole (saveCheckpointStreamed's
 * point). It does not decode: the hashes are the writer's own, of bytes it encoded itself. Right
 * after a save the files are in the page cache, so this catches what reached the files wrongly
 * (a short write, a stray writer, a file system bug), not a disk that will lose the pages later.
 * Cost, measured (2-core VM, SHA-NI, warm page cache): 0.7-1.3 GB/s, about 1 ms per MB: 0.1 s
 * for a 100 MB checkpoint, 0.24-0.39 s for 300 MB, where the save itself took 0.15-0.55 s. Paid
 * only by saves that would delete something.
 */
/** state.json's envelope, parsed and checked (errors name the file). */
function readEnvelope(stateFile: string): ReturnType<typeof checkEnvelope> {
  let doc: unknown;
  try {
    doc = JSON.parse(readFileSync(stateFile, 'utf8'));
  } catch (e) {
    throw new CheckpointError(`${stateFile}: not valid JSON (${errorText(e)})`);
  }
  return checkEnvelope(doc, stateFile);
}

function verifyHashes(dir: string): void {
  const stateFile = join(dir, STATE);
  if (!existsSync(stateFile)) throw new CheckpointError(`${stateFile} is missing`);
  const env = readEnvelope(stateFile);
  const buf = Buffer.allocUnsafe(HASH_CHUNK);
  for (const f of FILES) {
    const file = join(dir, f);
    const want = env.files[f]!;
    if (!existsSync(file)) throw new CheckpointError(`${file} is missing (${STATE} lists it)`);
    checkLength(file, statSync(file).size, want.bytes);
    const h = createHash('sha256');
    const fd = openSync(file, 'r');
    try {
      for (let n; (n = readSync(fd, buf, 0, HASH_CHUNK, null)) > 0;) h.update(buf.subarray(0, n));
    } finally {
      closeSync(fd);
    }
    checkHash(file, h.digest('hex'), want.sha256);
  }
}

/** Renames to a temp name first, so an interrupted delete never leaves a half checkpoint named step-N. */
function removeDir(runDir: string, name: string): void {
  const doomed = join(runDir, `${TMP}old-${name}-${process.pid}`);
  rmSync(doomed, { recursive: true, force: true });
  renameSync(join(runDir, name), doomed);
  fsyncDir(runDir);
  rmSync(doomed, { recursive: true, force: true });
}

/** Removes `.tmp-*` leftovers of interrupted saves (sparing `keep`, which `latest` may name). */
function removeStale(runDir: string, keep: string | null): void {
  for (const n of readdirSync(runDir)) if (n.startsWith(TMP) && n !== keep) rmSync(join(runDir, n), { recursive: true, force: true });
}

function writeLatest(runDir: string, name: string, step: number): void {
  const tmp = join(runDir, `${TMP}${LATEST}-${process.pid}`);
  writeDurable(tmp, [`${JSON.stringify({ checkpoint: name, step })}\n`]);
  renameSync(tmp, join(runDir, LATEST));
  fsyncDir(runDir);
}

/**
 * The directory name `runDir/latest` holds; null when there is no `latest`. Malformed: an error
 * when `strict`, else null (a save then simply writes a good one).
 */
function readLatestName(runDir: string, strict: boolean): string | null {
  const file = join(runDir, LATEST);
  if (!existsSync(file)) return null;
  try {
    let doc: unknown;
    try {
      doc = JSON.parse(readFileSync(file, 'utf8'));
    } catch (e) {
      throw new CheckpointError(`${file}: not valid JSON (${errorText(e)})`);
    }
    const name = (doc as { checkpoint?: unknown } | null)?.checkpoint;
    if (typeof name !== 'string' || name === '' || name === '.' || name === '..' || /[/\\]/.test(name)) {
      throw new CheckpointError(`${file}: expected {"checkpoint": "<directory name in ${runDir}>", "step": n}, got ${JSON.stringify(doc)}`);
    }
    return name;
  } catch (e) {
    if (strict) throw e instanceof CheckpointError ? e : new CheckpointError(`${file}: ${errorText(e)}`);
    return null;
  }
}

/** The checkpoint directory `runDir/latest` names, or null when the run has none yet. */
export function latestCheckpoint(runDir: string): string | null {
  const name = readLatestName(runDir, true);
  if (name === null) return null;
  const dir = join(runDir, name);
  if (!existsSync(dir)) throw new CheckpointError(`${join(runDir, LATEST)} points at ${dir}, which does not exist`);
  return dir;
}

/**
 * Reads and verifies a checkpoint: `path` is a step directory, or a run directory (then `latest`
 * is followed). Byte lengths and SHA-256 are checked against state.json before decoding.
 */
export function loadCheckpoint(path: string): Checkpoint {
  if (!existsSync(path)) throw new CheckpointError(`${path}: no such checkpoint or run directory`);
  if (!statSync(path).isDirectory()) throw new CheckpointError(`${path}: not a directory (expected a checkpoint or run directory)`);
  const isRun = !existsSync(join(path, STATE)) && existsSync(join(path, LATEST));
  const dir = isRun ? latestCheckpoint(path)! : path;
  const stateFile = join(dir, STATE);
  if (!existsSync(stateFile)) {
    throw new CheckpointError(`${stateFile} is missing${isRun ? '' : ` (and ${join(path, LATEST)} does not exist either: not a run directory)`}`);
  }
  const env = readEnvelope(stateFile);
  const m = STEP_DIR.exec(basename(dir));
  if (m && Number(m[1]) !== env.step) throw new CheckpointError(`${stateFile} records step ${env.step}, but its directory is ${basename(dir)}`);
  const [weights, optimizer] = FILES.map((f) => {
    const file = join(dir, f);
    return numberTensors(decodeSafetensors(verifiedBytes(file, env.files[f]!), file).tensors, file);
  }) as [Map<string, SafeTensor<NumberArray>>, Map<string, SafeTensor<NumberArray>>];
  return { dir, step: env.step, weights, optimizer, state: env.state };
}

/** What `latestGoodCheckpoint` chose, and every candidate it passed over on the way (newest first). */
export interface GoodCheckpoint {
  /** The step directory read (the one `latest` names, or a step-N directory). */
  path: string;
  checkpoint: Checkpoint;
  /** `path`: a step directory, or `runDir/latest` when the pointer itself is bad; `reason`: the error, naming the file. */
  skipped: { path: string; reason: string }[];
}

export interface LatestGoodOptions {
  /** Each skipped candidate, as `weft: checkpoint <path> skipped: <reason>`; default stderr. */
  log?: (line: string) => void;
  /**
   * Checks beyond this module's (throw to reject the candidate): a parameter-server checkpoint's
   * shard files live outside its step directory (train/ps_train.ts).
   */
  verify?: (checkpoint: Checkpoint, path: string) => void;
}

/**
 * The newest checkpoint of a run that verifies, for resuming after a crash or a damaged disk:
 * `latest`'s target first, then every `step-N` directory from the highest step down, each read in
 * full by `loadCheckpoint` (byte lengths, SHA-256, decoding) and then `opts.verify`; the first that
 * passes is returned, with the ones passed over. A missing target or garbled `latest` file is one
 * more skipped candidate, not an error. Null when the run has no checkpoint at all (no `latest`,
 * no step directory); when there are some but none verifies, a `CheckpointError` lists each and why.
 *
 * The choice depends only on the files, in a fixed order (ties of step broken by name), so ranks
 * that each call this on the same run directory pick the same checkpoint.
 *
 * @example
 *   const good = latestGoodCheckpoint('runs/a', { log: console.log });
 *   // step-000300's model.safetensors has a flipped byte:
 *   // weft: checkpoint runs/a/step-000300 skipped: runs/a/step-000300/model.safetensors: SHA-256 mismatch: ...
 *   good?.checkpoint.step;                              // 200
 */
export function latestGoodCheckpoint(runDir: string, opts: LatestGoodOptions = {}): GoodCheckpoint | null {
  const log = opts.log ?? logToStderr;
  const skipped: GoodCheckpoint['skipped'] = [];
  const skip = (path: string, e: unknown): void => {
    skipped.push({ path, reason: errorText(e) });
    log(`weft: checkpoint ${path} skipped: ${errorText(e)}`);
  };
  for (const path of candidates(runDir, skip)) {
    try {
      const checkpoint = loadCheckpoint(path);
      opts.verify?.(checkpoint, path);
      return { path, checkpoint, skipped };
    } catch (e) {
      skip(path, e);
    }
  }
  if (skipped.length === 0) return null;
  throw new CheckpointError(`${runDir}: no checkpoint verifies; tried ${skipped.length}:\n${skipped.map((s) => `  ${s.path}: ${s.reason}`).join('\n')}`);
}

/** `latest`'s target (when it resolves; else `skip` hears why), then the step directories by descending step. */
function candidates(runDir: string, skip: (path: string, e: unknown) => void): string[] {
  if (!existsSync(runDir)) return [];
  if (!statSync(runDir).isDirectory()) throw new CheckpointError(`${runDir}: not a directory (expected a run directory)`);
  const out: string[] = [];
  try {
    const target = latestCheckpoint(runDir);
    if (target !== null) out.push(target);
  } catch (e) {
    skip(join(runDir, LATEST), e);
  }
  const steps = readdirSync(runDir)
    .map((n) => ({ n, step: Number(STEP_DIR.exec(n)?.[1] ?? NaN) }))
    .filter((c) => !Number.isNaN(c.step))
    .sort((a, b) => b.step - a.step || (a.n < b.n ? -1 : 1));
  for (const c of steps) if (!out.includes(join(runDir, c.n))) out.push(join(runDir, c.n));
  return out;
}

interface Envelope { step: number; files: Record<string, { bytes: number; sha256: string }>; state: unknown }

function checkEnvelope(doc: unknown, file: string): Envelope {
  const bad = (field: string, want: string, got: unknown): never => {
    throw new CheckpointError(`${file}: '${field}' must be ${want}, got ${got === undefined ? 'nothing' : JSON.stringify(got)}`);
  };
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) bad('(top level)', 'an object', doc);
  const o = doc as Record<string, unknown>;
  if (o['format'] !== CHECKPOINT_FORMAT) bad('format', `"${CHECKPOINT_FORMAT}"`, o['format']);
  if (o['version'] !== CHECKPOINT_VERSION) {
    if (typeof o['version'] === 'number' && o['version'] > CHECKPOINT_VERSION) {
      throw new CheckpointError(`${file}: written by a newer weft (format version ${o['version']}); this one reads version ${CHECKPOINT_VERSION}`);
    }
    bad('version', String(CHECKPOINT_VERSION), o['version']);
  }
  const step = o['step'];
  if (typeof step !== 'number' || !Number.isSafeInteger(step) || step < 0) bad('step', 'a non-negative integer', step);
  if (typeof o['time'] !== 'string') bad('time', 'an ISO time string', o['time']);
  const files = o['files'];
  if (files === null || typeof files !== 'object' || Array.isArray(files)) bad('files', `an object with ${FILES.join(' and ')}`, files);
  for (const f of FILES) {
    const e = (files as Record<string, unknown>)[f] as Record<string, unknown> | undefined;
    if (e === null || typeof e !== 'object') bad(`files.${f}`, 'an object {bytes, sha256}', e);
    const bytes = e!['bytes'];
    if (typeof bytes !== 'number' || !Number.isSafeInteger(bytes) || bytes < 0) bad(`files.${f}.bytes`, 'a non-negative integer', bytes);
    if (typeof e!['sha256'] !== 'string' || !/^[0-9a-f]{64}$/.test(e!['sha256'])) bad(`files.${f}.sha256`, '64 lowercase hex digits', e!['sha256']);
  }
  if (!('state' in o)) bad('state', 'present (the trainer state)', undefined);
  return { step: step as number, files: files as Envelope['files'], state: o['state'] };
}

/** The file's bytes, after checking its length and SHA-256 against what state.json records. */
function verifiedBytes(file: string, want: { bytes: number; sha256: string }): Uint8Array {
  if (!existsSync(file)) throw new CheckpointError(`${file} is missing (${STATE} lists it)`);
  const bytes = readFileSync(file);
  checkLength(file, bytes.length, want.bytes);
  checkHash(file, sha256(bytes), want.sha256);
  return bytes;
}

function checkLength(file: string, got: number, want: number): void {
  if (got === want) return;
  const hint = got < want ? 'truncated?' : 'appended to?';
  throw new CheckpointError(`${file} is ${count(got)} bytes, ${STATE} records ${count(want)} (${hint})`);
}

function checkHash(file: string, got: string, want: string): void {
  if (got !== want) throw new CheckpointError(`${file}: SHA-256 mismatch: the file hashes to ${got}, ${STATE} records ${want} (corrupted?)`);
}

function numberTensors(tensors: Map<string, SafeTensor>, file: string): Map<string, SafeTensor<NumberArray>> {
  for (const [k, t] of tensors) if (t.data instanceof BigInt64Array) throw new CheckpointError(`${file}: tensor '${k}' is ${t.dtype}; checkpoint tensors hold numbers`);
  return tensors as Map<string, SafeTensor<NumberArray>>;
}

/** Writes a file from its pieces, in order, and fsyncs it before returning. */
/** Writes a new file (it must not exist) and fsyncs it. */
export function writeDurable(path: string, parts: readonly (Uint8Array | string)[]): void {
  const fd = openSync(path, 'wx');
  try {
    for (const p of parts) writeFileSync(fd, p);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** fsync of a directory makes renames and new entries in it durable (POSIX; a no-op where unsupported). */
export function fsyncDir(dir: string): void {
  let fd: number;
  try {
    fd = openSync(dir, 'r');
  } catch {
    return;
  }
  try {
    fsyncSync(fd);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'EISDIR' && code !== 'EINVAL' && code !== 'EPERM' && code !== 'EBADF') throw e;
  } finally {
    closeSync(fd);
  }
}

/** Hard link (free, the data is already durable); a durable copy where links are unsupported. */
function linkOrCopy(from: string, to: string): void {
  try {
    linkSync(from, to);
  } catch {
    copyFileSync(from, to);
    const fd = openSync(to, 'r+');
    try { fsyncSync(fd); } finally { closeSync(fd); }
  }
}
