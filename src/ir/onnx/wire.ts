/**
 * Protocol-buffers wire format: the few pieces ONNX needs (varint, fixed32/64, length-delimited).
 * Hand-written so weft carries no protobuf dependency; onnx.proto is small and stable.
 */

/** Grows a byte buffer as fields are appended. */
export class Writer {
  private buf = new Uint8Array(1024);
  private len = 0;

  private reserve(n: number): void {
    if (this.len + n <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.len + n) cap *= 2;
    const next = new Uint8Array(cap);
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
  }

  varint(v: number | bigint): void {
    let x = BigInt.asUintN(64, BigInt(v));
    if (x < 0x80n) { this.reserve(1); this.buf[this.len++] = Number(x); return; }
    this.reserve(10);
    while (x >= 0x80n) { this.buf[this.len++] = Number(x & 0x7fn) | 0x80; x >>= 7n; }
    this.buf[this.len++] = Number(x);
  }

  private tag(field: number, wire: number): void { this.varint((field << 3) | wire); }

  int(field: number, v: number | bigint): void { this.tag(field, 0); this.varint(v); }

  float(field: number, v: number): void {
    this.tag(field, 5);
    this.reserve(4);
    new DataView(this.buf.buffer).setFloat32(this.len, v, true);
    this.len += 4;
  }

  bytes(field: number, b: Uint8Array): void {
    this.tag(field, 2);
    this.varint(b.length);
    this.reserve(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
  }

  string(field: number, s: string): void { this.bytes(field, new TextEncoder().encode(s)); }

  message(field: number, build: (w: Writer) => void): void {
    const w = new Writer();
    build(w);
    this.bytes(field, w.finish());
  }

  packedInts(field: number, vs: ArrayLike<number | bigint>): void {
    const w = new Writer();
    for (let i = 0; i < vs.length; i++) w.varint(vs[i]!);
    this.bytes(field, w.finish());
  }

  packedFloats(field: number, vs: ArrayLike<number>): void {
    const f = new Float32Array(vs.length);
    for (let i = 0; i < vs.length; i++) f[i] = vs[i]!;
    this.bytes(field, new Uint8Array(f.buffer));
  }

  /** Writes a decoded field back as it came (`readFields`'s output). */
  field(f: Field): void {
    if (f.wire === 0) { this.int(f.field, f.num); return; }
    if (f.wire === 2) { this.bytes(f.field, f.bytes); return; }
    this.tag(f.field, f.wire);
    this.reserve(f.bytes.length);
    this.buf.set(f.bytes, this.len);
    this.len += f.bytes.length;
  }

  finish(): Uint8Array { return this.buf.slice(0, this.len); }
}

/** One decoded field: wire type 0/1/5 give `num`, wire type 2 gives `bytes`. */
export interface Field { field: number; wire: number; num: bigint; bytes: Uint8Array }

/** Thrown for bytes that are not a well-formed protobuf message. */
export class WireError extends Error {}

/** Decodes the top-level fields of one message; nested messages are decoded on demand. */
export function readFields(b: Uint8Array, where: string): Field[] {
  const out: Field[] = [];
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  let p = 0;
  const varint = (): bigint => {
    let x = 0n;
    let shift = 0n;
    for (;;) {
      if (p >= b.length) throw new WireError(`${where}: truncated varint at byte ${p}`);
      const c = b[p++]!;
      x |= BigInt(c & 0x7f) << shift;
      if (c < 0x80) return x;
      shift += 7n;
      if (shift > 63n) throw new WireError(`${where}: varint longer than 10 bytes at byte ${p}`);
    }
  };
  const empty = new Uint8Array(0);
  while (p < b.length) {
    const key = Number(varint());
    const field = key >>> 3;
    const wire = key & 7;
    if (field === 0) throw new WireError(`${where}: field number 0 at byte ${p}`);
    if (wire === 0) out.push({ field, wire, num: varint(), bytes: empty });
    else if (wire === 1) {
      if (p + 8 > b.length) throw new WireError(`${where}: truncated fixed64 at byte ${p}`);
      out.push({ field, wire, num: view.getBigUint64(p, true), bytes: b.subarray(p, p + 8) });
      p += 8;
    } else if (wire === 5) {
      if (p + 4 > b.length) throw new WireError(`${where}: truncated fixed32 at byte ${p}`);
      out.push({ field, wire, num: BigInt(view.getUint32(p, true)), bytes: b.subarray(p, p + 4) });
      p += 4;
    } else if (wire === 2) {
      const n = Number(varint());
      if (p + n > b.length) throw new WireError(`${where}: field ${field} claims ${n} bytes, ${b.length - p} remain`);
      out.push({ field, wire, num: 0n, bytes: b.subarray(p, p + n) });
      p += n;
    } else throw new WireError(`${where}: unsupported wire type ${wire} for field ${field} at byte ${p}`);
  }
  return out;
}

/**
 * Reads a varint-typed field as a signed 64-bit integer in a JS number. A field of another wire
 * type (a malformed or mistyped file) is an error, not a silent 0.
 */
export function asInt(f: Field, where = 'message'): number {
  if (f.wire !== 0) throw new WireError(`${where}: field ${f.field} should be a varint (wire type 0), got wire type ${f.wire}`);
  return Number(BigInt.asIntN(64, f.num));
}

/** Reads a fixed32 field as float. */
export function asFloat(f: Field, where = 'message'): number {
  if (f.wire !== 5) throw new WireError(`${where}: field ${f.field} should be a 32-bit float (wire type 5), got wire type ${f.wire}`);
  return new DataView(f.bytes.buffer, f.bytes.byteOffset, 4).getFloat32(0, true);
}

export const asString = (f: Field): string => new TextDecoder().decode(f.bytes);

/** Repeated int64 fields may arrive packed (wire 2) or one by one (wire 0). */
export function packedVarints(f: Field, where: string): number[] {
  if (f.wire === 0) return [asInt(f, where)];
  if (f.wire !== 2) throw new WireError(`${where}: repeated integer field ${f.field} has wire type ${f.wire}`);
  const out: number[] = [];
  let p = 0;
  const b = f.bytes;
  while (p < b.length) {
    let x = 0n;
    let shift = 0n;
    for (;;) {
      if (p >= b.length) throw new WireError(`${where}: truncated packed varint`);
      const c = b[p++]!;
      x |= BigInt(c & 0x7f) << shift;
      if (c < 0x80) break;
      shift += 7n;
      if (shift > 63n) throw new WireError(`${where}: packed varint longer than 10 bytes`);
    }
    out.push(Number(BigInt.asIntN(64, x)));
  }
  return out;
}

/** Repeated float fields: packed (wire 2, a multiple of 4 bytes) or one by one (wire 5). */
export function packedFloats(f: Field, where = 'message'): number[] {
  if (f.wire === 5) return [asFloat(f, where)];
  if (f.wire !== 2 || f.bytes.length % 4 !== 0) {
    throw new WireError(`${where}: repeated float field ${f.field} has wire type ${f.wire} and ${f.bytes.length} bytes`);
  }
  const copy = f.bytes.slice();
  return Array.from(new Float32Array(copy.buffer, 0, copy.length >> 2));
}
