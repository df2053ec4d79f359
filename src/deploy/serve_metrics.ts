/**
 * `weft serve`'s /metrics, in Prometheus' text exposition format 0.0.4: counters of answered
 * requests by status code and of runs, histograms of rows per run and of request latency, and the
 * queue depth and in-flight gauges read at scrape time. Probes of /health and /metrics are not
 * counted as requests, so the counts are the API's traffic alone.
 */

/** A cumulative histogram (Prometheus' `le` buckets, plus +Inf, sum and count). */
class Histogram {
  private readonly counts: number[];
  private sum = 0;
  private n = 0;
  constructor(readonly bounds: readonly number[]) { this.counts = bounds.map(() => 0); }
  observe(x: number): void {
    this.sum += x;
    this.n++;
    for (let i = 0; i < this.bounds.length; i++) if (x <= this.bounds[i]!) this.counts[i]!++;
  }
  lines(name: string): string[] {
    return [
      ...this.bounds.map((b, i) => `${name}_bucket{le="${b}"} ${this.counts[i]}`),
      `${name}_bucket{le="+Inf"} ${this.n}`, `${name}_sum ${+this.sum.toFixed(6)}`, `${name}_count ${this.n}`,
    ];
  }
}

/** Row counts are powers of two up to 256 (max batch's usual range); latencies 0.5 ms .. 10 s. */
const ROW_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256];
const SECOND_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** The server's counters; `text` renders them with the gauges' current values. */
export class ServeMetrics {
  private readonly codes = new Map<number, number>();
  private batches = 0;
  private readonly rows = new Histogram(ROW_BUCKETS);
  private readonly seconds = new Histogram(SECOND_BUCKETS);

  /** One answered API request: its status code and its time from arrival to answer. */
  request(code: number, seconds: number): void {
    this.codes.set(code, (this.codes.get(code) ?? 0) + 1);
    this.seconds.observe(seconds);
  }

  /** One model run of `rows` rows (one or more requests). */
  batch(rows: number): void {
    this.batches++;
    this.rows.observe(rows);
  }

  /** Requests answered with `code` so far. */
  count(code: number): number { return this.codes.get(code) ?? 0; }

  text(queueDepth: number, inflight: number): string {
    const codes = [...this.codes].sort((a, b) => a[0] - b[0]);
    return [
      '# HELP weft_requests_total API requests answered, by HTTP status code.', '# TYPE weft_requests_total counter',
      ...codes.map(([c, n]) => `weft_requests_total{code="${c}"} ${n}`),
      '# HELP weft_batches_total Model runs (each one batch of one or more requests).', '# TYPE weft_batches_total counter',
      `weft_batches_total ${this.batches}`,
      '# HELP weft_batch_rows Rows per model run.', '# TYPE weft_batch_rows histogram', ...this.rows.lines('weft_batch_rows'),
      '# HELP weft_request_seconds Time from a request\'s arrival to its answer.', '# TYPE weft_request_seconds histogram',
      ...this.seconds.lines('weft_request_seconds'),
      '# HELP weft_queue_depth Requests waiting for a run.', '# TYPE weft_queue_depth gauge', `weft_queue_depth ${queueDepth}`,
      '# HELP weft_inflight API requests received and not yet answered.', '# TYPE weft_inflight gauge', `weft_inflight ${inflight}`,
      '',
    ].join('\n');
  }
}
