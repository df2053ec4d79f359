/** Element types weft values carry; names follow onnxruntime-node's tensor types. */
export type DType =
  | 'float32' | 'float64' | 'float16' | 'bfloat16'
  | 'int8' | 'uint8' | 'int16' | 'uint16' | 'int32' | 'int64' | 'bool';

export type TypedArray =
  | Float32Array | Float64Array | Int8Array | Uint8Array | Int16Array | Uint16Array
  | Int32Array | BigInt64Array;

/** ONNX TensorProto.DataType codes. bfloat16 is carried as uint16 bits in JS. */
export const ONNX_CODE: Record<DType, number> = {
  float32: 1, uint8: 2, int8: 3, uint16: 4, int16: 5, int32: 6, int64: 7, bool: 9,
  float16: 10, float64: 11, bfloat16: 16,
};

const FROM_CODE = new Map<number, DType>(Object.entries(ONNX_CODE).map(([k, v]) => [v, k as DType]));

export function dtypeFromOnnx(code: number, where: string): DType {
  const d = FROM_CODE.get(code);
  if (d === undefined) throw new Error(`${where}: ONNX element type ${code} is not supported by weft`);
  return d;
}

export const isFloat = (d: DType): boolean =>
  d === 'float32' || d === 'float64' || d === 'float16' || d === 'bfloat16';

export const BYTES: Record<DType, number> = {
  float32: 4, float64: 8, float16: 2, bfloat16: 2, int8: 1, uint8: 1, int16: 2, uint16: 2,
  int32: 4, int64: 8, bool: 1,
};

/** Allocates a zeroed typed array for `n` elements of `dtype`. */
export function allocate(dtype: DType, n: number): TypedArray {
  switch (dtype) {
    case 'float32': return new Float32Array(n);
    case 'float64': return new Float64Array(n);
    case 'float16': case 'bfloat16': case 'uint16': return new Uint16Array(n);
    case 'int8': return new Int8Array(n);
    case 'uint8': case 'bool': return new Uint8Array(n);
    case 'int16': return new Int16Array(n);
    case 'int32': return new Int32Array(n);
    case 'int64': return new BigInt64Array(n);
  }
}

/** Builds a typed array of `dtype` from plain numbers. */
export function fromNumbers(dtype: DType, xs: ArrayLike<number>): TypedArray {
  const out = allocate(dtype, xs.length);
  if (out instanceof BigInt64Array) for (let i = 0; i < xs.length; i++) out[i] = BigInt(Math.trunc(xs[i]!));
  else for (let i = 0; i < xs.length; i++) out[i] = xs[i]!;
  return out;
}

/** Reads any typed array as plain numbers. */
export function toNumbers(a: TypedArray): number[] {
  return Array.from(a as ArrayLike<number | bigint>, Number);
}
