/**
 * The kernels of the IR's collective ops (ir/ops/collective.ts), run by a schedule between
 * onnxruntime programs (runtime/schedule.ts) on the process group of the op's mesh axis. The
 * schedule's context is a `CollectiveContext`: the groups by axis name, passed by the caller
 * (communicators are passed, never global).
 *
 * A collective over a dim other than 0 moves data in blocks: the chunks along `dim` are made
 * contiguous before the call (and put back after), so the process group only ever sees flat
 * buffers. Each kernel issues its collective before its first await, so a schedule that issues
 * several in graph order issues them in that order on every rank.
 */
import type { TypedArray } from '../ir/dtype.js';
import type { Node } from '../ir/graph.js';
import { registerHostKernel } from '../runtime/schedule.js';
import type { CommArray, ProcessGroup } from './process_group.js';

/** What a schedule with collectives runs on: one process group per mesh axis it names. */
export interface CollectiveContext { readonly groups: Readonly<Record<string, ProcessGroup>> }

type Float = Float32Array | Float64Array;

function groupOf(n: Node, context: unknown): ProcessGroup {
  const axis = n.attrs['axis'] as string;
  const groups = (context as Partial<CollectiveContext> | null)?.groups;
  const g = groups?.[axis];
  if (g === undefined) throw new Error(`${n.op}: no process group for axis '${axis}' (the schedule was given ${groups ? Object.keys(groups).map((a) => `'${a}'`).join(', ') || 'none' : 'no groups'})`);
  if (g.size !== n.attrs['size']) throw new Error(`${n.op}: traced for a '${axis}' group of ${String(n.attrs['size'])} ranks, run on one of ${g.size}`);
  return g;
}

const like = (x: TypedArray, n: number): Float => (x instanceof Float64Array ? new Float64Array(n) : new Float32Array(n));

/** Dims of `n`'s input around `dim`: [outer, d, inner] (element counts). */
function around(n: Node, dimAttr: string): { outer: number; d: number; inner: number } {
  const shape = n.inputs[0]!.shape as number[];
  let dim = n.attrs[dimAttr] as number | undefined ?? 0;
  if (dim < 0) dim += shape.length;
  const outer = shape.slice(0, dim).reduce((p, e) => p * e, 1);
  const inner = shape.slice(dim + 1).reduce((p, e) => p * e, 1);
  return { outer, d: shape[dim]!, inner };
}

/**
 * x viewed as [outer, parts * c, inner] <-> [parts, outer, c, inner] (part j, the j-th chunk along
 * the dim, contiguous): `toBlocks` true goes left to right, false back. With outer = 1 both are
 * the identity, and `x` itself is returned.
 */
function reblock(x: Float, outer: number, parts: number, c: number, inner: number, toBlocks: boolean): Float {
  if (outer === 1) return x;
  const out = like(x, x.length);
  const run = c * inner;
  for (let j = 0; j < parts; j++) {
    for (let o = 0; o < outer; o++) {
      const [mixed, blocked] = [(o * parts + j) * run, (j * outer + o) * run];
      const [from, to] = toBlocks ? [mixed, blocked] : [blocked, mixed];
      out.set(x.subarray(from, from + run), to);
    }
  }
  return out;
}

const copy = (x: TypedArray): Float => (x as Float).slice();

/** (P - 1) / P of the axis's size P, from the node's `size` attribute. */
const share = (n: Node): number => ((n.attrs['size'] as number) - 1) / (n.attrs['size'] as number);
// Ring costs per rank: an all-reduce sends 2 (P-1)/P of its tensor, an all-gather (P-1)/P of its
// output, a reduce-scatter (P-1)/P of its input, an all-to-all (P-1)/P of its tensor.
const ringAllReduce = (n: Node, inB: number): number => 2 * share(n) * inB;
const ringGather = (n: Node, _in: number, outB: number): number => share(n) * outB;
const ringScatter = (n: Node, inB: number): number => share(n) * inB;
const none = (): number => 0;

registerHostKernel('weft.AllReduce', async (n, [x], ctx) => {
  const buf = copy(x!);
  await groupOf(n, ctx).allReduce(buf as CommArray, n.attrs['op'] === 'max' ? 'max' : 'sum').wait();
  return [buf];
}, ringAllReduce);

registerHostKernel('weft.AllGather', async (n, [x], ctx) => {
  const g = groupOf(n, ctx);
  const { outer, d, inner } = around(n, 'dim');
  const all = like(x!, x!.length * g.size);
  await g.allGather(x as CommArray, all as CommArray).wait();
  return [reblock(all, outer, g.size, d, inner, false)];
}, ringGather);

registerHostKernel('weft.ReduceScatter', async (n, [x], ctx) => {
  const g = groupOf(n, ctx);
  const { outer, d, inner } = around(n, 'dim');
  const out = like(x!, x!.length / g.size);
  const blocks = reblock(x as Float, outer, g.size, d / g.size, inner, true);
  await g.reduceScatter((blocks === x ? copy(x) : blocks) as CommArray, out as CommArray, 'sum').wait();
  return [out];
}, ringScatter);

registerHostKernel('weft.Split', async (n, [x], ctx) => {
  const g = groupOf(n, ctx);
  const { outer, d, inner } = around(n, 'dim');
  const c = d / g.size;
  const out = like(x!, x!.length / g.size);
  for (let o = 0; o < outer; o++) out.set((x as Float).subarray((o * d + g.rank * c) * inner, (o * d + (g.rank + 1) * c) * inner), o * c * inner);
  return [out];
}, none);

registerHostKernel('weft.AllToAll', async (n, [x], ctx) => {
  const g = groupOf(n, ctx);
  const P = g.size;
  const s = around(n, 'split_dim');
  // Block j of the send buffer (chunk j along split_dim) goes to rank j.
  const send = reblock(x as Float, s.outer, P, s.d / P, s.inner, true);
  const recv = like(x!, x!.length);
  await g.allToAll((send === x ? copy(x) : send) as CommArray, recv as CommArray).wait();
  // Block r of recv came from rank r: its chunk of this rank's split, in the input's shape with
  // split_dim divided by P. It goes to position r along concat_dim of the output.
  const shape = [...(n.inputs[0]!.shape as number[])];
  const sd = (n.attrs['split_dim'] as number + shape.length) % shape.length;
  const cd = (n.attrs['concat_dim'] as number + shape.length) % shape.length;
  shape[sd] = shape[sd]! / P;
  const outer = shape.slice(0, cd).reduce((p, e) => p * e, 1);
  const inner = shape.slice(cd + 1).reduce((p, e) => p * e, 1);
  return [reblock(recv, outer, P, shape[cd]!, inner, false)];
}, ringScatter);

registerHostKernel('weft.Broadcast', async (n, [x], ctx) => {
  const buf = copy(x!);
  await groupOf(n, ctx).broadcast(buf as CommArray, n.attrs['root'] as number).wait();
  return [buf];
}, (_n, inB) => inB);

registerHostKernel('weft.RootOnly', async (n, [x], ctx) => {
  const g = groupOf(n, ctx);
  return [g.rank === n.attrs['root'] ? copy(x!) : like(x!, x!.length)];
}, none);

/**
 * A point-to-point transfer's tag on the wire, within MPI's guaranteed [0, 32767]: the op's `tag`
 * (6 bits) and the run's microbatch (`context.microbatch`, 0 when absent) modulo 512 (9 bits), so
 * the same traced stage serves every microbatch and a receive matches its own microbatch's send
 * whatever order different transfers arrive in. Two microbatches 512 apart share a tag; between
 * one pair of ranks their messages are sent, and their receives posted, in microbatch order, and
 * both backends match equal tags in order (MPI's non-overtaking rule).
 */
function wireTag(n: Node, context: unknown): number {
  const mb = (context as { microbatch?: number } | null)?.microbatch ?? 0;
  if (!(Number.isInteger(mb) && mb >= 0)) throw new Error(`${n.op}: context.microbatch must be a non-negative integer, got ${mb}`);
  return (n.attrs['tag'] as number) * 512 + (mb % 512);
}

registerHostKernel('weft.Send', async (n, [x], ctx) => {
  await groupOf(n, ctx).send(x as CommArray, n.attrs['peer'] as number, wireTag(n, ctx)).wait();
  return [new Float32Array(1)];
}, (_n, inB) => inB);

registerHostKernel('weft.Recv', async (n, _inputs, ctx) => {
  const shape = n.attrs['shape'] as number[];
  const count = shape.reduce((p, e) => p * e, 1);
  const out = n.attrs['dtype'] === 'float64' ? new Float64Array(count) : new Float32Array(count);
  await groupOf(n, ctx).recv(out, n.attrs['peer'] as number, wireTag(n, ctx)).wait();
  return [out];
}, none);
