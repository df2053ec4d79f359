/**
 * Model files, plain or encrypted: the one place deploy/ reads a model's bytes from disk.
 *
 * An encrypted model is AES-256-GCM (NIST SP 800-38D) over the whole ONNX file:
 *
 *   magic "WEFTENC1" (8 bytes) | IV (12 random bytes) | ciphertext | tag (16 bytes)
 *
 * with the magic and the IV as additional authenticated data, so a changed byte anywhere, or a
 * wrong key, fails authentication: the file is refused with an error, never decrypted to garbage.
 * The plaintext exists only in memory (onnxruntime opens the model from a buffer).
 *
 * A key is 32 bytes, given as a file (32 raw bytes, or 64 hex digits, or base64 of 32 bytes, a
 * trailing newline allowed) or as the environment variable WEFT_MODEL_KEY (hex or base64).
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';

const MAGIC = new TextEncoder().encode('WEFTENC1');
const IV_BYTES = 12;
const TAG_BYTES = 16;
export const KEY_BYTES = 32;
/** The environment variable a key may come from when no key file is given. */
export const KEY_ENV = 'WEFT_MODEL_KEY';

/** Whether `bytes` is an encrypted model (starts with the magic). */
export function isEncrypted(bytes: Uint8Array): boolean {
  return bytes.length >= MAGIC.length && MAGIC.every((b, i) => bytes[i] === b);
}

/** A 32-byte key from text or raw bytes; `source` names where it came from in errors. */
export function parseKey(raw: Uint8Array, source: string): Uint8Array {
  if (raw.length === KEY_BYTES) return raw;
  const text = new TextDecoder().decode(raw).trim();
  if (/^[0-9a-fA-F]{64}$/.test(text)) return new Uint8Array(Buffer.from(text, 'hex'));
  if (/^[A-Za-z0-9+/]{43}=?$/.test(text)) {
    const b = Buffer.from(text, 'base64');
    if (b.length === KEY_BYTES) return new Uint8Array(b);
  }
  throw new Error(`${source}: not an AES-256 key (expected 32 raw bytes, 64 hex digits or base64 of 32 bytes; got ${raw.length} bytes)`);
}

/** The key from `keyFile`, else from WEFT_MODEL_KEY; null when neither is given. */
export function loadKey(keyFile?: string): Uint8Array | null {
  if (keyFile !== undefined) {
    let raw: Uint8Array;
    try { raw = new Uint8Array(readFileSync(keyFile)); } catch (e) {
      throw new Error(`key file ${keyFile}: cannot read it (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
    }
    return parseKey(raw, `key file ${keyFile}`);
  }
  const env = process.env[KEY_ENV];
  return env === undefined || env === '' ? null : parseKey(new TextEncoder().encode(env), KEY_ENV);
}

/** A fresh random key, as 64 hex digits and a newline (the form `weft keygen` writes). */
export function newKeyText(): string {
  return `${randomBytes(KEY_BYTES).toString('hex')}\n`;
}

/** Encrypts a model's bytes with `key` (a fresh random IV each call). */
export function encryptModel(plain: Uint8Array, key: Uint8Array): Uint8Array {
  if (key.length !== KEY_BYTES) throw new Error(`encryptModel: the key must be ${KEY_BYTES} bytes, got ${key.length}`);
  const iv = randomBytes(IV_BYTES);
  const c = createCipheriv('aes-256-gcm', key, iv);
  c.setAAD(Buffer.concat([MAGIC, iv]));
  const body = Buffer.concat([c.update(plain), c.final()]);
  return new Uint8Array(Buffer.concat([MAGIC, iv, body, c.getAuthTag()]));
}

/** Decrypts an encrypted model; a wrong key or a modified file is an error naming `source`. */
export function decryptModel(bytes: Uint8Array, key: Uint8Array, source = 'model'): Uint8Array {
  if (!isEncrypted(bytes)) throw new Error(`${source}: not an encrypted weft model (no WEFTENC1 header)`);
  if (bytes.length < MAGIC.length + IV_BYTES + TAG_BYTES) throw new Error(`${source}: truncated (${bytes.length} bytes is shorter than the header and tag)`);
  const iv = bytes.subarray(MAGIC.length, MAGIC.length + IV_BYTES);
  const tag = bytes.subarray(bytes.length - TAG_BYTES);
  const d = createDecipheriv('aes-256-gcm', key, iv);
  d.setAAD(Buffer.concat([MAGIC, iv]));
  d.setAuthTag(tag);
  try {
    return new Uint8Array(Buffer.concat([d.update(bytes.subarray(MAGIC.length + IV_BYTES, bytes.length - TAG_BYTES)), d.final()]));
  } catch {
    throw new Error(`${source}: cannot decrypt it: the key is wrong or the file was modified (AES-256-GCM authentication failed)`);
  }
}

/**
 * A model's ONNX bytes from `path`: read as they are, or decrypted in memory when the file is
 * encrypted (the key from `opts.keyFile`, else WEFT_MODEL_KEY; neither is an error naming both).
 */
export function readModelFile(path: string, opts: { keyFile?: string } = {}): Uint8Array {
  let bytes: Uint8Array;
  try { bytes = new Uint8Array(readFileSync(path)); } catch (e) {
    throw new Error(`${path}: cannot read it (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  if (!isEncrypted(bytes)) return bytes;
  const key = loadKey(opts.keyFile);
  if (key === null) throw new Error(`${path}: the model is encrypted; give its key with --key-file FILE or the environment variable ${KEY_ENV}`);
  return decryptModel(bytes, key, path);
}
