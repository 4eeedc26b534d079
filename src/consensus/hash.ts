import * as crypto from "node:crypto"
import type { BlockHash, TxId } from "../schema/primitives.js"

/**
 * sha256 uses node:crypto's one-shot `hash` (OpenSSL; the cheapest call per small message on Node 20,
 * about half the cost of createHash). Pure: no state is kept between calls.
 */
export const sha256 = (data: Uint8Array): Uint8Array => crypto.hash("sha256", data, "buffer")

/** sha256d is SHA-256 applied twice: block ids, txids and merkle nodes. */
export const sha256d = (data: Uint8Array): Uint8Array => sha256(sha256(data))

/** txidOf hashes a transaction's serialization. */
export const txidOf = (serialized: Uint8Array): TxId => sha256d(serialized) as TxId

/** blockHashOf hashes an 80-byte header serialization. */
export const blockHashOf = (header80: Uint8Array): BlockHash => sha256d(header80) as BlockHash

const tagPrefixes = new Map<string, Uint8Array>()

/** tagPrefix returns sha256(tag) ‖ sha256(tag), memoised per tag (BIP340 tagged hashes). Do not mutate it. */
export const tagPrefix = (tag: string): Uint8Array => {
  let prefix = tagPrefixes.get(tag)
  if (prefix === undefined) {
    const t = sha256(new TextEncoder().encode(tag))
    prefix = new Uint8Array(64)
    prefix.set(t, 0)
    prefix.set(t, 32)
    tagPrefixes.set(tag, prefix)
  }
  return prefix
}

/** taggedHash is BIP340's hash_tag(x) = sha256(sha256(tag) ‖ sha256(tag) ‖ x). */
export const taggedHash = (tag: string, data: Uint8Array): Uint8Array => {
  const prefix = tagPrefix(tag)
  const buf = new Uint8Array(64 + data.length)
  buf.set(prefix, 0)
  buf.set(data, 64)
  return sha256(buf)
}
