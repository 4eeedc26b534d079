import { describe, expect, it } from "@effect/vitest"
import { Effect, type Layer } from "effect"
import * as Entropy from "../../src/layers/Entropy.js"
import { toHex } from "../../src/schema/hex.js"

/** draws is what a fixed sequence of calls answers from `layer`, as hex. */
const draws = (layer: Layer.Layer<Entropy.Entropy>) =>
  Effect.provide(
    Effect.gen(function* () {
      const a = yield* Entropy.bytes(32)
      const b = yield* Entropy.bytes(7)
      const c = yield* Entropy.bytes(100)
      const d = yield* Entropy.int(1_000_000)
      return [toHex(a), toHex(b), toHex(c), String(d)]
    }),
    layer,
  )

describe("Entropy", () => {
  it.effect("layerSeeded: the same seed gives the same bytes in the same order, of the sizes asked", () =>
    Effect.gen(function* () {
      const first = yield* draws(Entropy.layerSeeded(42))
      const again = yield* draws(Entropy.layerSeeded(42))
      expect(again).toEqual(first)
      expect(first.slice(0, 3).map((h) => h.length / 2)).toEqual([32, 7, 100])
      // a stream, not one value repeated: successive draws differ
      expect(first[2]!.slice(0, 64)).not.toBe(first[0])
      const bytesSeed = new Uint8Array(32).fill(9)
      expect(yield* draws(Entropy.layerSeeded(bytesSeed))).toEqual(
        yield* draws(Entropy.layerSeeded(Uint8Array.from(bytesSeed))),
      )
    }),
  )

  it.effect("layerSeeded: different seeds give different bytes", () =>
    Effect.gen(function* () {
      const a = yield* draws(Entropy.layerSeeded(1))
      const b = yield* draws(Entropy.layerSeeded(2))
      const c = yield* draws(Entropy.layerSeeded(-1))
      const d = yield* draws(Entropy.layerSeeded(Entropy.deriveSeed(1, "10.0.0.1")))
      const e = yield* draws(Entropy.layerSeeded(Entropy.deriveSeed(1, "10.0.0.2")))
      const firsts = [a, b, c, d, e].map((x) => x[0])
      expect(new Set(firsts).size).toBe(5)
      expect(toHex(Entropy.deriveSeed(1, "x"))).toBe(toHex(Entropy.deriveSeed(1, "x")))
    }),
  )

  it.effect("layerSeeded: each build of the layer starts the stream afresh", () =>
    Effect.gen(function* () {
      const layer = Entropy.layerSeeded(5)
      const one = yield* Effect.provide(Entropy.bytes(16), layer)
      const two = yield* Effect.provide(Entropy.bytes(16), layer)
      expect(toHex(two)).toBe(toHex(one))
    }),
  )

  it.effect("layerCrypto and the default (no layer) give distinct values each call", () =>
    Effect.gen(function* () {
      const fromLayer = yield* Effect.provide(
        Effect.all([Entropy.bytes(32), Entropy.bytes(32)]),
        Entropy.layerCrypto,
      )
      const fromDefault = yield* Effect.all([Entropy.bytes(32), Entropy.bytes(32)])
      const all = [...fromLayer, ...fromDefault].map(toHex)
      expect(new Set(all).size).toBe(4)
      expect(all.every((h) => h.length === 64)).toBe(true)
    }),
  )

  it.effect("int stays in [0, below) and covers it (a coin flip gives both sides)", () =>
    Effect.gen(function* () {
      const flips = yield* Effect.provide(Effect.replicateEffect(Entropy.int(2), 64), Entropy.layerSeeded(3))
      expect(new Set(flips)).toEqual(new Set([0, 1]))
      const sixes = yield* Effect.provide(Effect.replicateEffect(Entropy.int(6), 600), Entropy.layerSeeded(4))
      expect(sixes.every((v) => Number.isInteger(v) && v >= 0 && v < 6)).toBe(true)
      expect(new Set(sixes).size).toBe(6)
      expect(yield* Entropy.int(1)).toBe(0)
      expect(yield* Effect.provide(Entropy.int(2 ** 32), Entropy.layerSeeded(5))).toBeLessThan(2 ** 32)
      const bad = yield* Effect.exit(Entropy.int(0))
      expect(bad._tag).toBe("Failure")
    }),
  )
})
