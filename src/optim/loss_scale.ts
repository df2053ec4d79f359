/**
 * Dynamic loss scaling for float16 training (torch.amp.GradScaler; DeepSpeed's DynamicLossScaler
 * with its hysteresis). float16 gradients below 2^-24 flush to zero; multiplying the loss by a
 * large scale S before the backward keeps them representable, and the optimizer divides S out.
 * S is as large as it can be without overflowing:
 *
 *   a step whose gradients hold an inf or NaN is skipped (parameters and moments untouched), and
 *     S <- max(S * backoff, minScale)   once `hysteresis` overflows have happened since the last
 *                                       growth (DeepSpeed's delayed shift; 1 = GradScaler);
 *   after `growthInterval` clean steps in a row, S <- S * growth.
 *
 * Every rank must see the same overflow verdict (the trainer reduces it over the world with max)
 * so that all skip the same steps and keep the same scale. The scaler's state goes in
 * checkpoints. bfloat16 has float32's exponent range and runs unscaled.
 *
 * @example
 *   const scaler = new LossScaler();
 *   const skip = scaler.update(!Number.isFinite(gradNorm));   // after the backward at scale S
 */
export interface LossScalerConfig {
  /** The first scale. Default 2^16 (GradScaler's and DeepSpeed's). */
  init?: number;
  /** Multiplier after `growthInterval` clean steps. Default 2. */
  growth?: number;
  /** Multiplier on overflow. Default 0.5. */
  backoff?: number;
  /** Clean steps in a row before growing. Default 2000 (GradScaler's; DeepSpeed's is 1000). */
  growthInterval?: number;
  /** Overflows tolerated before the scale backs off (each still skips its step). Default 1. */
  hysteresis?: number;
  /** The scale never falls below this. Default 1. */
  minScale?: number;
}

export interface LossScalerState {
  scale: number;
  /** Clean steps since the last overflow or growth. */
  cleanSteps: number;
  /** Overflows left before the next back-off. */
  hysteresisLeft: number;
  /** Steps skipped so far. */
  skipped: number;
}

export class LossScaler {
  scale: number;
  cleanSteps = 0;
  hysteresisLeft: number;
  skipped = 0;
  readonly growth: number;
  readonly backoff: number;
  readonly growthInterval: number;
  readonly hysteresis: number;
  readonly minScale: number;

  constructor(cfg: LossScalerConfig = {}) {
    this.scale = cfg.init ?? 2 ** 16;
    this.growth = cfg.growth ?? 2;
    this.backoff = cfg.backoff ?? 0.5;
    this.growthInterval = cfg.growthInterval ?? 2000;
    this.hysteresis = cfg.hysteresis ?? 1;
    this.minScale = cfg.minScale ?? 1;
    const bad = (k: string, v: number, want: string): never => { throw new Error(`LossScaler: ${k} must be ${want}, got ${v}`); };
    if (!(this.scale > 0 && Number.isFinite(this.scale))) bad('init', this.scale, 'a positive finite number');
    if (!(this.growth >= 1)) bad('growth', this.growth, '>= 1');
    if (!(this.backoff > 0 && this.backoff < 1)) bad('backoff', this.backoff, 'in (0, 1)');
    if (!(Number.isInteger(this.growthInterval) && this.growthInterval >= 1)) bad('growthInterval', this.growthInterval, 'a positive integer');
    if (!(Number.isInteger(this.hysteresis) && this.hysteresis >= 1)) bad('hysteresis', this.hysteresis, 'a positive integer');
    if (!(this.minScale > 0 && this.minScale <= this.scale)) bad('minScale', this.minScale, `in (0, init = ${this.scale}]`);
    this.hysteresisLeft = this.hysteresis;
  }

  /**
   * Records one step's verdict (every rank's, reduced) and returns whether to skip it. The scale
   * changes for the next step; the current one is what the gradients were computed at.
   */
  update(overflow: boolean): boolean {
    if (overflow) {
      this.skipped++;
      this.cleanSteps = 0;
      if (this.hysteresisLeft <= 1) this.scale = Math.max(this.scale * this.backoff, this.minScale);
      else this.hysteresisLeft--;
      return true;
    }
    if (++this.cleanSteps >= this.growthInterval) {
      this.scale *= this.growth;
      this.cleanSteps = 0;
      this.hysteresisLeft = this.hysteresis;
    }
    return false;
  }

  state(): LossScalerState {
    return { scale: this.scale, cleanSteps: this.cleanSteps, hysteresisLeft: this.hysteresisLeft, skipped: this.skipped };
  }

  loadState(s: LossScalerState, where = 'LossScaler.loadState'): void {
    for (const k of ['scale', 'cleanSteps', 'hysteresisLeft', 'skipped'] as const) {
      if (typeof s?.[k] !== 'number' || !Number.isFinite(s[k])) throw new Error(`${where}: '${k}' must be a number, got ${JSON.stringify(s?.[k])}`);
    }
    if (!(s.scale > 0)) throw new Error(`${where}: 'scale' must be positive, got ${s.scale}`);
    Object.assign(this, { scale: s.scale, cleanSteps: s.cleanSteps, hysteresisLeft: s.hysteresisLeft, skipped: s.skipped });
  }
}
