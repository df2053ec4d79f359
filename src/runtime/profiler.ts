/** Time per compiled segment and bytes held, for `weft` users and benchmarks. */
export interface SegmentStats { runs: number; totalMs: number; lastMs: number; inputBytes: number; outputBytes: number }

export class Profiler {
  readonly segments = new Map<string, SegmentStats>();
  private held = new Map<string, number>();

  record(segment: string, ms: number, inputBytes: number, outputBytes: number): void {
    const s = this.segments.get(segment) ?? { runs: 0, totalMs: 0, lastMs: 0, inputBytes: 0, outputBytes: 0 };
    s.runs++;
    s.totalMs += ms;
    s.lastMs = ms;
    s.inputBytes = inputBytes;
    s.outputBytes = outputBytes;
    this.segments.set(segment, s);
  }

  /** Declares long-lived memory (flat parameter/gradient/optimizer buffers) under a name. */
  hold(name: string, bytes: number): void { this.held.set(name, bytes); }

  report(): { segments: Record<string, SegmentStats & { meanMs: number }>; heldBytes: Record<string, number>; totalHeldBytes: number } {
    const segments: Record<string, SegmentStats & { meanMs: number }> = {};
    for (const [k, s] of this.segments) segments[k] = { ...s, meanMs: s.totalMs / s.runs };
    const heldBytes = Object.fromEntries(this.held);
    return { segments, heldBytes, totalHeldBytes: [...this.held.values()].reduce((p, q) => p + q, 0) };
  }

  reset(): void { this.segments.clear(); }
}

export const profiler = new Profiler();
