/**
 * Image transforms, applied to each image record as its batch is made (in the prefetch worker when
 * there is one). The spec is plain data (structured-clonable), so the worker rebuilds the same
 * transform. Order, as torchvision's usual `RandomCrop(size, padding) -> RandomHorizontalFlip ->
 * ToTensor -> Normalize`:
 *
 *   1. randomCrop {padding: p}: shift by (dy, dx), each uniform in [-p, p]; out(y, x) = img(y + dy, x + dx),
 *      zero outside the image. This is torchvision's crop of the zero-padded image at top/left
 *      offsets (dy + p, dx + p), and keeps the size.
 *   2. horizontalFlip {p}: with probability p, out(y, x) = in(y, W - 1 - x).
 *   3. x = pixel / 255, then normalize {mean, std}: x = (x - mean[c]) / std[c]. Computed in float64
 *      and rounded once to float32 (a per-channel table of the 256 possible values).
 *
 * Random draws, per record in row order from the batch's generator (`batchRng`): randomCrop draws
 * dy + p = rng.int(2p + 1), then dx + p = rng.int(2p + 1); horizontalFlip draws rng.uniform() < p.
 * Evaluation data gets `normalize` only.
 *
 * @example
 *   const train: ImageTransform = { normalize: MNIST_NORMALIZE, randomCrop: { padding: 2 } };
 *   const test: ImageTransform = { normalize: MNIST_NORMALIZE };
 */
import { Rng } from '../tensor/random.js';

export interface Normalize {
  /** Per-channel mean of x = pixel / 255 (one value per channel). */
  readonly mean: readonly number[];
  /** Per-channel standard deviation, each > 0. */
  readonly std: readonly number[];
}

export interface ImageTransform {
  normalize?: Normalize;
  /** Random shift by up to ±padding pixels with zero fill (torchvision RandomCrop(size, padding)). */
  randomCrop?: { padding: number };
  /** Mirror left-right with probability p; `true` means p = 0.5. */
  horizontalFlip?: boolean | { p: number };
}

/** MNIST's per-channel statistics (of the 60,000 training digits, as in the PyTorch examples). */
export const MNIST_NORMALIZE: Normalize = { mean: [0.1307], std: [0.3081] };

/** What `ImageTransform`'s random parts drew for one record. */
export interface Augmentation { dy: number; dx: number; flip: boolean }

const KEYS = new Set(['normalize', 'randomCrop', 'horizontalFlip']);

/**
 * The generator of batch `batch` (0-based index in the loader's stream, `LoaderState.batches`) on
 * `rank`: a SplitMix64 hash of (seed, rank, batch). It depends on nothing else, so a resumed loader
 * re-creates exactly the generators an uninterrupted one would use, and ranks draw independently.
 */
export function batchRng(seed: number, rank: number, batch: number): Rng {
  const mix = (z: bigint): bigint => {
    z = BigInt.asUintN(64, (z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n);
    z = BigInt.asUintN(64, (z ^ (z >> 27n)) * 0x94d049bb133111ebn);
    return z ^ (z >> 31n);
  };
  let x = mix(BigInt.asUintN(64, BigInt(seed)) + 0x9e3779b97f4a7c15n);
  x = mix(BigInt.asUintN(64, x + BigInt(rank) + 0x9e3779b97f4a7c15n));
  x = mix(BigInt.asUintN(64, x + BigInt(batch) + 0x9e3779b97f4a7c15n));
  return new Rng(Number(x & 0x1fffffffffffffn)); // Rng takes a safe integer
}

/** A validated `ImageTransform` for images of shape [C, H, W]. */
export class ImageTransformer {
  readonly random: boolean;
  private readonly lut: Float32Array;
  private readonly padding: number | null;
  private readonly flipP: number | null;

  /** `where` names the spec in errors ("ImageDataset mnist-train: transform"). */
  constructor(readonly spec: ImageTransform, readonly shape: readonly [number, number, number], where = 'transform') {
    if (typeof spec !== 'object' || spec === null) throw new Error(`${where} must be an object, got ${JSON.stringify(spec)}`);
    for (const k of Object.keys(spec)) if (!KEYS.has(k)) throw new Error(`${where}.${k} is not a transform; expected one of ${[...KEYS].join(', ')}`);
    const [C] = shape;
    this.lut = new Float32Array(C * 256);
    const { normalize } = spec;
    if (normalize !== undefined) {
      for (const key of ['mean', 'std'] as const) {
        const v = normalize[key];
        if (!Array.isArray(v) || v.length !== C) throw new Error(`${where}.normalize.${key} must hold ${C} number(s), one per channel, got ${JSON.stringify(v)}`);
        if (!v.every((s) => Number.isFinite(s) && (key === 'mean' || s > 0))) throw new Error(`${where}.normalize.${key} must be finite${key === 'std' ? ' and > 0' : ''}, got ${JSON.stringify(v)}`);
      }
    }
    for (let c = 0; c < C; c++) {
      const mean = normalize?.mean[c] ?? 0, std = normalize?.std[c] ?? 1;
      for (let p = 0; p < 256; p++) this.lut[c * 256 + p] = (p / 255 - mean) / std;
    }
    const crop = spec.randomCrop;
    if (crop !== undefined && !(typeof crop === 'object' && crop !== null && Number.isInteger(crop.padding) && crop.padding >= 0)) {
      throw new Error(`${where}.randomCrop.padding must be an integer >= 0, got ${JSON.stringify(crop?.padding ?? crop)}`);
    }
    this.padding = crop?.padding ?? null;
    const flip = spec.horizontalFlip;
    const p = flip === true ? 0.5 : flip === false || flip === undefined ? null : flip.p;
    if (p !== null && !(typeof p === 'number' && p >= 0 && p <= 1)) throw new Error(`${where}.horizontalFlip.p must be a probability in [0, 1], got ${JSON.stringify(p)}`);
    this.flipP = p;
    this.random = this.padding !== null || this.flipP !== null;
  }

  /** The random draws for one record, in the documented order (none when the transform is not random). */
  draw(rng: Rng | undefined): Augmentation {
    if (!this.random) return { dy: 0, dx: 0, flip: false };
    if (rng === undefined) throw new Error('transform has random parts (randomCrop / horizontalFlip) and needs the batch generator');
    const p = this.padding;
    const dy = p === null ? 0 : rng.int(2 * p + 1) - p;
    const dx = p === null ? 0 : rng.int(2 * p + 1) - p;
    const flip = this.flipP === null ? false : rng.uniform() < this.flipP;
    return { dy, dx, flip };
  }

  /** The transformed float32 image [C, H, W] of `img` (uint8 [C, H, W]) under augmentation `a`. */
  apply(img: Uint8Array, a: Augmentation, out = new Float32Array(img.length)): Float32Array {
    const [C, H, W] = this.shape;
    if (img.length !== C * H * W) throw new Error(`expected ${C * H * W} pixels ([${C}, ${H}, ${W}]), got ${img.length}`);
    const { dy, dx, flip } = a;
    const lut = this.lut;
    for (let c = 0; c < C; c++) {
      const base = c * 256, zero = lut[base]!, plane = c * H * W;
      for (let y = 0; y < H; y++) {
        const sy = y + dy, row = plane + y * W;
        if (sy < 0 || sy >= H) { out.fill(zero, row, row + W); continue; }
        const src = plane + sy * W;
        for (let x = 0; x < W; x++) {
          const sx = (flip ? W - 1 - x : x) + dx;
          out[row + x] = sx < 0 || sx >= W ? zero : lut[base + img[src + sx]!]!;
        }
      }
    }
    return out;
  }
}
