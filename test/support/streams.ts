import { Chunk, Effect, Stream } from "effect"
import type { Connection, TransportError } from "../../src/layers/Transport.js"
import { concat } from "./bytes.js"

/** pattern is `size` bytes of a seeded pseudo-random pattern (an LCG: fast, and not Math.random). */
export const pattern = (size: number, seed: number): Uint8Array => {
  const out = new Uint8Array(size)
  let x = seed >>> 0
  for (let i = 0; i < size; i++) {
    x = (Math.imul(x, 1_664_525) + 1_013_904_223) >>> 0
    out[i] = x >>> 24
  }
  return out
}

/** readAll is every byte a connection delivers until its stream ends. */
export const readAll = (conn: Connection): Effect.Effect<Uint8Array, TransportError> =>
  Stream.runCollect(conn.read).pipe(Effect.map((chunks) => concat(...Chunk.toReadonlyArray(chunks))))

/** readExactly reads until `size` bytes have arrived (the peer sends no more than that). */
export const readExactly = (conn: Connection, size: number): Effect.Effect<Uint8Array, TransportError> =>
  Stream.runFoldWhile(
    conn.read,
    { chunks: [] as Array<Uint8Array>, total: 0 },
    (acc) => acc.total < size,
    (acc, chunk) => {
      acc.chunks.push(chunk)
      return { chunks: acc.chunks, total: acc.total + chunk.length }
    },
  ).pipe(Effect.map((acc) => concat(...acc.chunks)))
