import { readFileSync } from "node:fs"
import { createRequire } from "node:module"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, type Layer, Logger } from "effect"
import * as fc from "fast-check"
import type { SignatureBackend } from "../../src/consensus/signature.js"
import {
  chooseBackend,
  layerDefault,
  layerFromChoice,
  layerNative,
  layerNoble,
  layerWasm,
  loadDefaultBackend,
  loadNativeBackend,
  nobleBackend,
  SignatureBackendUnavailable,
  Signatures,
  wasmBackend,
} from "../../src/layers/Signatures.js"
import { concat } from "../support/bytes.js"

const fromHex = (h: string): Uint8Array => Uint8Array.from(Buffer.from(h, "hex"))
const toHex = (u: Uint8Array): string => Buffer.from(u).toString("hex").toUpperCase()

/** Vector is one row of BIP340's test-vectors.csv. */
interface Vector {
  readonly index: number
  readonly secretKey: Uint8Array | undefined
  readonly publicKey: Uint8Array
  readonly aux: Uint8Array | undefined
  readonly msg: Uint8Array
  readonly sig: Uint8Array
  readonly valid: boolean
  readonly comment: string
}

const parseRows = (csv: string): ReadonlyArray<Vector> =>
  csv
    .split(/\r?\n/)
    .filter((line) => line !== "" && !line.startsWith("index,"))
    .map((line) => {
      const [index, sk, pk, aux, msg, sig, result, ...comment] = line.split(",")
      if (result !== "TRUE" && result !== "FALSE") throw new Error(`bad vector row: ${line}`)
      return {
        index: Number(index),
        secretKey: sk ? fromHex(sk) : undefined,
        publicKey: fromHex(pk ?? ""),
        aux: aux ? fromHex(aux) : undefined,
        msg: fromHex(msg ?? ""),
        sig: fromHex(sig ?? ""),
        valid: result === "TRUE",
        comment: comment.join(","),
      }
    })

/** officialRows is bitcoin/bips bip-0340/test-vectors.csv, saved verbatim (CRLF line ends). */
const officialRows = parseRows(
  readFileSync(new URL("../vectors/bip340-test-vectors.csv", import.meta.url), "latin1"),
)

/**
 * variableLengthRows are rows 15-18, added upstream in 2022-12 when BIP340 allowed messages of any
 * length. The bitcoin/bips copy we could fetch (test/vectors) predates them, so they are copied here
 * verbatim from the current upstream file; noble reproduces every signature exactly below.
 */
const variableLengthRows = parseRows(
  [
    "15,0340034003400340034003400340034003400340034003400340034003400340,778CAA53B4393AC467774D09497A87224BF9FAB6F6E68B23086497324D6FD117,0000000000000000000000000000000000000000000000000000000000000000,,71535DB165ECD9FBBC046E5FFAEA61186BB6AD436732FCCC25291A55895464CF6069CE26BF03466228F19A3A62DB8A649F2D560FAC652827D1AF0574E427AB63,TRUE,message of size 0 (added 2022-12)",
    "16,0340034003400340034003400340034003400340034003400340034003400340,778CAA53B4393AC467774D09497A87224BF9FAB6F6E68B23086497324D6FD117,0000000000000000000000000000000000000000000000000000000000000000,11,08A20A0AFEF64124649232E0693C583AB1B9934AE63B4C3511F3AE1134C6A303EA3173BFEA6683BD101FA5AA5DBC1996FE7CACFC5A577D33EC14564CEC2BACBF,TRUE,message of size 1 (added 2022-12)",
    "17,0340034003400340034003400340034003400340034003400340034003400340,778CAA53B4393AC467774D09497A87224BF9FAB6F6E68B23086497324D6FD117,0000000000000000000000000000000000000000000000000000000000000000,0102030405060708090A0B0C0D0E0F1011,5130F39A4059B43BC7CAC09A19ECE52B5D8699D1A71E3C52DA9AFDB6B50AC370C4A482B77BF960F8681540E25B6771ECE1E5A37FD80E5A51897C5566A97EA5A5,TRUE,message of size 17 (added 2022-12)",
    `18,0340034003400340034003400340034003400340034003400340034003400340,778CAA53B4393AC467774D09497A87224BF9FAB6F6E68B23086497324D6FD117,0000000000000000000000000000000000000000000000000000000000000000,${"99".repeat(100)},403B12B0D8555A344175EA7EC746566303321E5DBFA8BE6F091635163ECA79A8585ED3E3170807E7C03B720FC54C7B23897FCBA0E9D0B4A06894CFD249F22367,TRUE,message of size 100 (added 2022-12)`,
  ].join("\n"),
)

const vectors = [...officialRows, ...variableLengthRows]

// secp256k1's field size p and group order n.
const p = 0xfffffffffffffffffffffffffffffffffffffffffffffffffffffffefffffc2fn
const n = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n
const bytes32 = (x: bigint): Uint8Array => fromHex(x.toString(16).padStart(64, "0"))

const nativeBackend = Either.getOrThrow(loadNativeBackend())

describe("BIP340 vectors", () => {
  it("are the 15 official rows (indices 0-14) plus the 4 variable-length rows (15-18)", () => {
    expect(officialRows.map((v) => v.index)).toEqual([...Array(15).keys()])
    expect(variableLengthRows.map((v) => v.msg.length)).toEqual([0, 1, 17, 100])
  })
})

/**
 * Each backend runs the same contract. The libsecp256k1 builds (tiny-secp256k1 2.2.4, bcrypto 5.5.2)
 * predate variable-length BIP340 messages, and consensus only signs 32-byte sighashes, so the backend
 * contract is 32-byte messages for all three (noble included, so they agree on every input): each
 * skips exactly rows 15-18 and must instead reject them safely.
 */
const suites: ReadonlyArray<{
  readonly name: SignatureBackend["name"]
  readonly layer: Layer.Layer<Signatures, SignatureBackendUnavailable>
}> = [
  { name: "noble", layer: layerNoble },
  { name: "libsecp256k1-wasm", layer: layerWasm },
  { name: "libsecp256k1-native", layer: layerNative },
]

for (const suite of suites) {
  it.layer(suite.layer)(`Signatures contract: ${suite.name}`, (it) => {
    const skipped = vectors.filter((v) => v.msg.length !== 32)
    const runnable = vectors.filter((v) => !skipped.includes(v))

    it.effect("is the backend this layer names", () =>
      Effect.gen(function* () {
        expect((yield* Signatures).name).toBe(suite.name)
      }),
    )

    it("skips exactly rows 15-18 (messages not 32 bytes)", () => {
      expect(skipped.map((v) => v.index)).toEqual([15, 16, 17, 18])
      expect(runnable.length).toBe(15)
    })

    for (const v of runnable) {
      it.effect(
        `vector ${v.index}: ${v.valid ? "valid" : "invalid"}${v.comment ? `, ${v.comment}` : ""}`,
        () =>
          Effect.gen(function* () {
            const sigs = yield* Signatures
            if (v.secretKey !== undefined && v.aux !== undefined) {
              expect(toHex(sigs.publicKey(v.secretKey))).toBe(toHex(v.publicKey))
              expect(toHex(sigs.sign(v.msg, v.secretKey, v.aux))).toBe(toHex(v.sig))
            }
            expect(sigs.verify(v.msg, v.sig, v.publicKey)).toBe(v.valid)
          }),
      )
    }

    it.effect("rejects messages that are not 32 bytes: verify answers false, sign throws", () =>
      Effect.gen(function* () {
        const sigs = yield* Signatures
        for (const v of skipped) {
          expect(sigs.verify(v.msg, v.sig, v.publicKey)).toBe(false)
          expect(() => sigs.sign(v.msg, v.secretKey!, v.aux!)).toThrow()
        }
      }),
    )

    it.effect("verify answers false, and never throws, for malformed input", () =>
      Effect.gen(function* () {
        const sigs = yield* Signatures
        const v = officialRows[1]!
        const { msg, sig, publicKey } = v
        const malformed: ReadonlyArray<readonly [string, Uint8Array, Uint8Array, Uint8Array]> = [
          ["empty signature", msg, new Uint8Array(0), publicKey],
          ["63-byte signature", msg, sig.subarray(0, 63), publicKey],
          ["65-byte signature", msg, concat(sig, new Uint8Array(1)), publicKey],
          ["all-zero signature", msg, new Uint8Array(64), publicKey],
          ["r = p", msg, concat(bytes32(p), sig.subarray(32)), publicKey],
          [
            "r = n (a valid x-coordinate range BIP340 allows)",
            msg,
            concat(bytes32(n), sig.subarray(32)),
            publicKey,
          ],
          ["r = 2^256 - 1", msg, concat(bytes32(2n ** 256n - 1n), sig.subarray(32)), publicKey],
          ["s = n", msg, concat(sig.subarray(0, 32), bytes32(n)), publicKey],
          ["s = 2^256 - 1", msg, concat(sig.subarray(0, 32), bytes32(2n ** 256n - 1n)), publicKey],
          ["31-byte public key", msg, sig, publicKey.subarray(1)],
          ["33-byte compressed public key", msg, sig, concat(new Uint8Array([2]), publicKey)],
          ["public key x = 0 (not on the curve)", msg, sig, new Uint8Array(32)],
          ["public key x = p", msg, sig, bytes32(p)],
          ["31-byte message", msg.subarray(1), sig, publicKey],
          ["33-byte message", concat(msg, new Uint8Array(1)), sig, publicKey],
        ]
        for (const [what, m, s, k] of malformed) {
          expect([what, sigs.verify(m, s, k)]).toEqual([what, false])
        }
      }),
    )
  })
}

/** Mutation is how a cross-check case departs from a fresh valid signature. */
const mutations = [
  "none",
  "flip a bit of the signature",
  "flip a bit of the message",
  "flip a bit of the public key",
  "random 64-byte signature",
  "r >= n",
  "s >= n",
  "signature length",
  "message length",
  "public key length",
] as const
type Mutation = (typeof mutations)[number]

const flipBit = (bytes: Uint8Array, bit: number): Uint8Array => {
  const out = Uint8Array.from(bytes)
  out[(bit >>> 3) % out.length]! ^= 1 << (bit & 7)
  return out
}

/** resize truncates, or pads with `fill` then zeros, to `length`, never the input's own length. */
const resize = (bytes: Uint8Array, length: number, fill: Uint8Array): Uint8Array => {
  const target = length === bytes.length ? length + 1 : length
  if (target <= bytes.length) return bytes.slice(0, target)
  const out = new Uint8Array(target)
  out.set(bytes)
  out.set(fill.subarray(0, target - bytes.length), bytes.length)
  return out
}

const crossCheckRuns = 10_000

describe("the three backends agree", () => {
  const backends: ReadonlyArray<SignatureBackend> = [nobleBackend, wasmBackend, nativeBackend]

  it(`on ${crossCheckRuns} valid and mutated signatures, each verified by all three`, () => {
    const seen = new Map<Mutation, number>()
    fc.assert(
      fc.property(
        fc.record({
          secretKey: fc.bigInt({ min: 1n, max: n - 1n }),
          msg: fc.uint8Array({ minLength: 32, maxLength: 32 }),
          aux: fc.uint8Array({ minLength: 32, maxLength: 32 }),
          mutation: fc.constantFrom(...mutations),
          bit: fc.nat({ max: 255 * 8 }),
          garbage: fc.uint8Array({ minLength: 64, maxLength: 64 }),
          outOfRange: fc.bigInt({ min: n, max: 2n ** 256n - 1n }),
          length: fc.nat({ max: 100 }),
        }),
        ({ secretKey, msg, aux, mutation, bit, garbage, outOfRange, length }) => {
          const sk = bytes32(secretKey)
          const pubkey = nativeBackend.publicKey(sk)
          const sig = nativeBackend.sign(msg, sk, aux)
          const [m, s, k] = ((): readonly [Uint8Array, Uint8Array, Uint8Array] => {
            switch (mutation) {
              case "none":
                return [msg, sig, pubkey]
              case "flip a bit of the signature":
                return [msg, flipBit(sig, bit), pubkey]
              case "flip a bit of the message":
                return [flipBit(msg, bit), sig, pubkey]
              case "flip a bit of the public key":
                return [msg, sig, flipBit(pubkey, bit)]
              case "random 64-byte signature":
                return [msg, garbage, pubkey]
              case "r >= n":
                return [msg, concat(bytes32(outOfRange), sig.subarray(32)), pubkey]
              case "s >= n":
                return [msg, concat(sig.subarray(0, 32), bytes32(outOfRange)), pubkey]
              case "signature length":
                return [msg, resize(sig, length, garbage), pubkey]
              case "message length":
                return [resize(msg, length, garbage), sig, pubkey]
              case "public key length":
                return [msg, sig, resize(pubkey, length, garbage)]
            }
          })()
          seen.set(mutation, (seen.get(mutation) ?? 0) + 1)
          const expected = mutation === "none"
          expect([mutation, backends.map((b) => b.verify(m, s, k))]).toEqual([
            mutation,
            [expected, expected, expected],
          ])
        },
      ),
      { numRuns: crossCheckRuns, seed: 340 },
    )
    expect([...seen.values()].reduce((a, b) => a + b, 0)).toBe(crossCheckRuns)
    for (const mutation of mutations) expect(seen.get(mutation) ?? 0).toBeGreaterThan(crossCheckRuns / 20)
  }, 60_000)

  it("on signing and key derivation, and each verifies the others' signatures", () => {
    fc.assert(
      fc.property(
        fc.bigInt({ min: 1n, max: n - 1n }),
        fc.uint8Array({ minLength: 32, maxLength: 32 }),
        fc.uint8Array({ minLength: 32, maxLength: 32 }),
        (secretKey, msg, aux) => {
          const sk = bytes32(secretKey)
          const pubkeys = backends.map((b) => toHex(b.publicKey(sk)))
          const sigs = backends.map((b) => b.sign(msg, sk, aux))
          expect(new Set(pubkeys).size).toBe(1)
          expect(new Set(sigs.map(toHex)).size).toBe(1)
          const pubkey = fromHex(pubkeys[0]!)
          for (const b of backends) expect(b.verify(msg, sigs[0]!, pubkey)).toBe(true)
        },
      ),
      { numRuns: 300, seed: 341 },
    )
  }, 60_000)
})

describe("choosing a backend", () => {
  const vector0 = officialRows[0]!
  const missingAddon = () =>
    Either.left(new SignatureBackendUnavailable({ reason: "simulated: addon not built" }))

  it.layer(layerDefault)("layerDefault", (it) => {
    it.effect("provides native libsecp256k1 on this machine, where bcrypto's addon is built", () =>
      Effect.gen(function* () {
        const sigs = yield* Signatures
        expect(sigs.name).toBe("libsecp256k1-native")
        expect(sigs.verify(vector0.msg, vector0.sig, vector0.publicKey)).toBe(true)
      }),
    )
  })

  it("loadDefaultBackend works outside the Effect runtime and picks native here", () => {
    const { backend, fallbackReason } = loadDefaultBackend()
    expect(backend.name).toBe("libsecp256k1-native")
    expect(fallbackReason).toBeUndefined()
    expect(backend.verify(vector0.msg, vector0.sig, vector0.publicKey)).toBe(true)
  })

  it("falls back to WASM, with the reason, when the native loader fails", () => {
    const { backend, fallbackReason } = chooseBackend(missingAddon)
    expect(backend.name).toBe("libsecp256k1-wasm")
    expect(fallbackReason).toContain("simulated: addon not built")
    expect(backend.verify(vector0.msg, vector0.sig, vector0.publicKey)).toBe(true)
  })

  it.effect("the fallback layer logs exactly one warning naming the reason", () =>
    Effect.gen(function* () {
      const logs: Array<string> = []
      const capture = Logger.make(({ logLevel, message }) => {
        logs.push(`${logLevel.label} ${Array.isArray(message) ? message.join(" ") : String(message)}`)
      })
      const name = yield* Effect.map(Signatures, (sigs) => sigs.name).pipe(
        Effect.provide(layerFromChoice(() => chooseBackend(missingAddon))),
        Effect.provide(Logger.add(capture)),
      )
      expect(name).toBe("libsecp256k1-wasm")
      expect(logs).toHaveLength(1)
      expect(logs[0]).toMatch(/^WARN .*libsecp256k1-wasm.*simulated: addon not built/)
    }),
  )

  it("loadNativeBackend refuses bcrypto's pure-JS code, which bcrypto would otherwise fall back to", () => {
    const pureJs = createRequire(import.meta.url)("bcrypto/lib/js/schnorr")
    const result = loadNativeBackend(() => pureJs)
    expect(Either.isLeft(result) && result.left.reason).toContain("pure-JS fallback (native = 0)")
  })

  it("loadNativeBackend fails with a typed error when bcrypto cannot be required", () => {
    const result = loadNativeBackend(() => {
      throw new Error("Cannot find module 'bcrypto/lib/schnorr'")
    })
    expect(Either.isLeft(result) && result.left).toBeInstanceOf(SignatureBackendUnavailable)
    expect(Either.isLeft(result) && result.left.reason).toContain("Cannot find module")
  })

  it.effect("layerNative provides the native backend here", () =>
    Effect.gen(function* () {
      expect((yield* Signatures).name).toBe("libsecp256k1-native")
    }).pipe(Effect.provide(layerNative)),
  )
})
