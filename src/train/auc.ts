/**
 * Ranking and calibration metrics of a binary classifier on the host: ROC AUC and the mean log
 * loss of logits. They take whole evaluation sets (10^6 scores in well under a second), not batch
 * means, because AUC is not a mean of per-example quantities.
 *
 *   auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]);        // 0.75
 *   logLossFromLogits([2, -1], [1, 0]);             // (log(1+e^-2) + log(1+e^-1)) / 2
 */

/**
 * ROC AUC: the probability that a random positive scores above a random negative, ties counting
 * half. This is the Mann-Whitney statistic over the pairs,
 *
 *   AUC = (#{(i, j) : s_i > s_j} + 0.5 · #{(i, j) : s_i = s_j}) / (P · N),  i positive, j negative,
 *
 * computed in O(n log n) by sorting the positive and the negative scores apart (native numeric
 * sorts of Float64Arrays, no comparator) and merging: each run of equal positive scores counts the
 * negatives strictly below it plus half of those equal to it. U is a sum of halves, exact in
 * float64 below 2^52 pairs.
 *
 * Throws, naming the argument, when the lengths differ, a score is NaN, a label is not 0 or 1, or
 * there is no positive or no negative (AUC is undefined then).
 */
export function auc(scores: ArrayLike<number>, labels: ArrayLike<number>): number {
  const n = scores.length;
  if (labels.length !== n) throw new Error(`auc: scores has ${n} entries but labels has ${labels.length}`);
  let pos = 0;
  for (let i = 0; i < n; i++) {
    const y = labels[i]!;
    if (y === 1) pos++;
    else if (y !== 0) throw new Error(`auc: labels[${i}] must be 0 or 1, got ${y}`);
    if (Number.isNaN(scores[i]!)) throw new Error(`auc: scores[${i}] is NaN`);
  }
  const neg = n - pos;
  if (pos === 0 || neg === 0) throw new Error(`auc: labels need both classes, got ${pos} positives and ${neg} negatives`);
  const p = new Float64Array(pos);
  const q = new Float64Array(neg);
  for (let i = 0, a = 0, b = 0; i < n; i++) {
    // + 0 turns -0 into +0: the typed-array sort orders -0 before +0, but they are one score.
    if (labels[i] === 1) p[a++] = scores[i]! + 0;
    else q[b++] = scores[i]! + 0;
  }
  p.sort();
  q.sort();
  let u = 0;
  let below = 0; // negatives strictly below the current positive score
  for (let i = 0; i < pos; ) {
    const s = p[i]!;
    let run = 1;
    while (i + run < pos && p[i + run] === s) run++;
    while (below < neg && q[below]! < s) below++;
    let tied = 0;
    while (below + tied < neg && q[below + tied] === s) tied++;
    u += run * (below + tied / 2);
    i += run;
  }
  return u / pos / neg;
}

/**
 * Mean binary cross-entropy of logits x against labels y in [0, 1] (soft labels allowed):
 *
 *   loss(x, y) = -y log σ(x) - (1 - y) log(1 - σ(x)) = max(x, 0) - x·y + log(1 + e^{-|x|}),
 *
 * the right-hand form never overflows (finite at |x| = 1000, where σ(x) rounds to 0 or 1).
 * Throws, naming the argument, when the lengths differ or are 0, a logit is NaN, or a label is
 * outside [0, 1].
 */
export function logLossFromLogits(logits: ArrayLike<number>, labels: ArrayLike<number>): number {
  const n = logits.length;
  if (labels.length !== n) throw new Error(`logLossFromLogits: logits has ${n} entries but labels has ${labels.length}`);
  if (n === 0) throw new Error('logLossFromLogits: logits is empty');
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const x = logits[i]!;
    const y = labels[i]!;
    if (Number.isNaN(x)) throw new Error(`logLossFromLogits: logits[${i}] is NaN`);
    if (!(y >= 0 && y <= 1)) throw new Error(`logLossFromLogits: labels[${i}] must be in [0, 1], got ${y}`);
    sum += Math.max(x, 0) - x * y + Math.log1p(Math.exp(-Math.abs(x)));
  }
  return sum / n;
}
