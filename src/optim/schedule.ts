/**
 * Learning-rate schedules: pure functions from the step index (0 for the first optimizer step) to
 * the learning rate, passed as `opt.step(grads, schedule(step))`. They hold no state, so resuming
 * from a checkpoint needs only the step index.
 *
 * Warm-up has two conventions in the wild, and the difference is one step, so each schedule with
 * a warm-up takes it explicitly:
 *   'step'    lr * step / W            lr(0) = 0, full lr first at step W
 *                                      (Hugging Face get_*_schedule_with_warmup)
 *   'step+1'  lr * min(1, (step+1)/W)  lr(0) = lr / W, full lr first at step W - 1
 *                                      (nanoGPT; shared/anchors/torch_brown.py)
 */
export type Schedule = (step: number) => number;

export type WarmupConvention = 'step' | 'step+1';

/** The same learning rate at every step. */
export function constantLr(lr: number): Schedule {
  checkLr('constantLr', lr);
  return () => lr;
}

/** The warm-up multiplier in [0, 1] at `step` for `warmupSteps` steps (1 once warm-up is over). */
export function warmupFactor(step: number, warmupSteps: number, convention: WarmupConvention): number {
  if (warmupSteps <= 0) return 1;
  return Math.min(1, (convention === 'step' ? step : step + 1) / warmupSteps);
}

export interface WarmupConfig {
  /** Peak learning rate. */
  lr: number;
  /** Steps of linear warm-up (0 for none). */
  warmupSteps: number;
  /** Which warm-up convention (see the module comment). Required: there is no safe default. */
  warmup: WarmupConvention;
}

/**
 * Linear warm-up, then constant: lr * warmupFactor(step). With warmup 'step+1' this is
 * torch_brown.py's `lr * min(1, (step + 1) / 100)`.
 */
export function warmupConstant(cfg: WarmupConfig): Schedule {
  checkLr('warmupConstant', cfg.lr);
  checkSteps('warmupConstant', cfg.warmupSteps);
  return (step) => cfg.lr * warmupFactor(step, cfg.warmupSteps, cfg.warmup);
}

export interface WarmupCosineConfig extends WarmupConfig {
  /** The step at which the decay reaches minLr; the rate stays at minLr after it. */
  totalSteps: number;
  /** Floor of the decay. Default 0. */
  minLr?: number;
}

/**
 * Linear warm-up, then half a cosine from lr down to minLr (W = warmupSteps, T = totalSteps):
 *
 *   step < W:       lr * warmupFactor(step)                       (convention as given)
 *   W <= step < T:  minLr + (lr - minLr) (1 + cos(pi (step - W) / (T - W))) / 2
 *   step >= T:      minLr
 *
 * The decay begins at step W with the full lr under either convention, as in nanoGPT's get_lr.
 */
export function warmupCosine(cfg: WarmupCosineConfig): Schedule {
  const { lr, warmupSteps: W, totalSteps: T } = cfg;
  const minLr = cfg.minLr ?? 0;
  checkLr('warmupCosine', lr);
  checkSteps('warmupCosine', W);
  if (!(minLr >= 0 && minLr <= lr)) throw new Error(`warmupCosine: minLr must be in [0, lr = ${lr}], got ${minLr}`);
  if (!Number.isInteger(T) || T <= W) throw new Error(`warmupCosine: totalSteps must be an integer > warmupSteps (${W}), got ${T}`);
  return (step) => {
    if (step < W) return lr * warmupFactor(step, W, cfg.warmup);
    if (step >= T) return minLr;
    return minLr + (lr - minLr) * 0.5 * (1 + Math.cos((Math.PI * (step - W)) / (T - W)));
  };
}

function checkLr(who: string, lr: number): void {
  if (!(lr >= 0) || !Number.isFinite(lr)) throw new Error(`${who}: lr must be a finite non-negative number, got ${lr}`);
}

function checkSteps(who: string, n: number): void {
  if (!Number.isInteger(n) || n < 0) throw new Error(`${who}: warmupSteps must be a non-negative integer, got ${n}`);
}
