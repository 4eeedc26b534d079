import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Exit, Fiber, Layer, Option, Scope } from "effect"
import fc from "fast-check"
import * as ChainActor from "../../src/actors/Chain.js"
import * as MempoolActor from "../../src/actors/Mempool.js"
import * as MinerActor from "../../src/actors/Miner.js"
import { Miner } from "../../src/actors/Miner.js"
import { headerHash } from "../../src/consensus/checkBlock.js"
import { sha256, sha256d } from "../../src/consensus/hash.js"
import { makeGenesis, type NetworkParams, regtest } from "../../src/consensus/params.js"
import { checkProofOfWork, compactToTarget, hashToBigInt } from "../../src/consensus/pow.js"
import { ChainStore, makeMemoryStore } from "../../src/layers/ChainStore.js"
import { kernelModuleBytes } from "../../src/layers/kernel/sha256d.js"
import {
  expectedHashes,
  inlineExpectedHashes,
  layerInline,
  layerPool,
  loadHeaderKernel,
  MiningKernel,
  type MiningKernelService,
  makePool,
  NONCE_SPACE,
  targetWords,
} from "../../src/layers/MiningKernel.js"
import { layerDefault, loadDefaultBackend } from "../../src/layers/Signatures.js"
import * as SigVerifier from "../../src/layers/SigVerifier.js"
import { type BlockHeader, encodeHeader } from "../../src/schema/block.js"
import type { BlockHash } from "../../src/schema/primitives.js"
import { testKey } from "../support/chain.js"

const kernel = loadHeaderKernel()

/** bytes derives n deterministic pseudo-random bytes from a label. */
const bytes = (label: string, n: number): Uint8Array => {
  const out = new Uint8Array(n)
  for (let i = 0; i < n; i += 32)
    out.set(sha256(new TextEncoder().encode(`${label}/${i}`)).subarray(0, n - i), i)
  return out
}

const withNonce = (header80: Uint8Array, nonce: number): Uint8Array => {
  const copy = Uint8Array.from(header80)
  new DataView(copy.buffer).setUint32(76, nonce, true)
  return copy
}

/** bruteForce lists the nonces in start .. start + count - 1 whose sha256d (node:crypto) meets target. */
const bruteForce = (header80: Uint8Array, target: bigint, start: number, count: number): Array<number> => {
  const found: Array<number> = []
  for (let n = start; n < start + count; n++) {
    if (hashToBigInt(sha256d(withNonce(header80, n))) <= target) found.push(n)
  }
  return found
}

/** scanAll collects every nonce scan finds in the range, restarting after each find. */
const scanAll = (header80: Uint8Array, target: bigint, start: number, count: number): Array<number> => {
  const prepared = kernel.prepare(header80)
  const words = targetWords(target)
  const found: Array<number> = []
  let from = start
  while (from < start + count) {
    const nonce = kernel.scan(prepared, words, from, start + count - from)
    if (nonce < 0) break
    found.push(nonce)
    from = nonce + 1
  }
  return found
}

const header = (label: string, nonce = 0): BlockHeader => {
  const b = bytes(label, 72)
  const view = new DataView(b.buffer)
  return {
    version: view.getUint32(0, true),
    prev: b.slice(4, 36) as BlockHash,
    merkleRoot: b.slice(36, 68),
    time: view.getUint32(68, true),
    bits: 0x1e0fffff,
    nonce,
  }
}

/** moderateBits encodes 2^236 - 1 (rounded): about a million hashes per solution. */
const moderateBits = 0x1e0fffff
const moderate = compactToTarget(moderateBits).target

describe("header kernel (WebAssembly SHA-256d with a midstate)", () => {
  it("is generated the same every time (the bytes are a pure function of the source)", () => {
    expect(kernelModuleBytes()).toEqual(kernelModuleBytes())
  })

  it("hashHeader equals node:crypto's sha256d for random headers and nonces", () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 80, maxLength: 80 }),
        fc.array(fc.integer({ min: 0, max: 0xffffffff }), { minLength: 1, maxLength: 8 }),
        (header80, nonces) => {
          const prepared = kernel.prepare(header80)
          for (const nonce of [...nonces, 0, 0xffffffff]) {
            expect(kernel.hashHeader(prepared, nonce)).toEqual(
              new Uint8Array(sha256d(withNonce(header80, nonce))),
            )
          }
        },
      ),
      { numRuns: 500 },
    )
  })

  it("prepare ignores the header's own nonce", () => {
    const h = bytes("nonce-free", 80)
    const a = kernel.prepare(h)
    const b = kernel.prepare(withNonce(h, 12345))
    expect(b).toEqual(a)
  })

  const h80 = bytes("scan", 80)
  const exact = hashToBigInt(sha256d(withNonce(h80, 1_000_123)))
  it.each([
    ["1 in 16 (top word 0x0fffffff…)", (1n << 252n) - 1n],
    ["1 in 2", (1n << 255n) - 1n],
    ["exactly one known hash (ties settled by the full compare)", exact],
    ["exactly that hash minus one (it must not be found)", exact - 1n],
    ["zero (nothing)", 0n],
    ["everything", (1n << 256n) - 1n],
  ])("scan finds exactly the nonces whose hash meets the target: %s", (_, target) => {
    // an odd start and an odd count: lanes past the end are ignored
    expect(scanAll(h80, target, 1_000_001, 1_003)).toEqual(bruteForce(h80, target, 1_000_001, 1_003))
  })

  it("scan covers the last nonces of the space and no further", () => {
    const target = (1n << 254n) - 1n
    expect(scanAll(h80, target, NONCE_SPACE - 7, 7)).toEqual(bruteForce(h80, target, NONCE_SPACE - 7, 7))
    expect(() => kernel.scan(kernel.prepare(h80), targetWords(target), NONCE_SPACE - 7, 8)).toThrow(
      RangeError,
    )
  })
})

/** expectFound checks a search result against the header and target by node:crypto. */
const expectValid = (h: BlockHeader, found: Option.Option<number>, bits: number, powLimit: bigint): void => {
  expect(Option.isSome(found)).toBe(true)
  const solved = { ...h, bits, nonce: Option.getOrThrow(found) }
  expect(checkProofOfWork(headerHash(solved), bits, powLimit)).toBe(true)
}

/** hashing waits until the pool's threads are up and hashing (they load tsx and compile the kernel first). */
const hashing = (pool: MiningKernelService) =>
  Effect.gen(function* () {
    while ((yield* pool.stats).hashes === 0) yield* Effect.sleep(Duration.millis(20))
  }).pipe(Effect.timeout(Duration.seconds(20)))

describe.each([
  ["layerInline", layerInline],
  ["layerPool", layerPool({ workers: 2 })],
])("MiningKernel contract: %s", (_, layer) => {
  it.layer(layer, { timeout: Duration.seconds(30) })((it) => {
    it.effect("finds a nonce whose header passes checkProofOfWork, from the header's own nonce on", () =>
      Effect.gen(function* () {
        const kernel = yield* MiningKernel
        const bits = 0x1f0fffff // about 4,096 hashes
        const target = compactToTarget(bits).target
        for (const start of [0, 3_000_000]) {
          const h = { ...header(`contract/${start}`, start), bits }
          const found = yield* kernel.search(h, target)
          expect(Option.getOrThrow(found)).toBeGreaterThanOrEqual(start)
          expectValid(h, found, bits, target)
        }
        expect((yield* kernel.stats).hashes).toBeGreaterThan(0)
      }),
    )

    it.effect("answers none when no nonce up to 2^32 - 1 meets the target", () =>
      Effect.gen(function* () {
        const kernel = yield* MiningKernel
        expect(yield* kernel.search(header("exhausted", NONCE_SPACE - 10_000), 1n)).toEqual(Option.none())
      }),
    )

    it.effect("meets regtest's trivial target", () =>
      Effect.gen(function* () {
        const kernel = yield* MiningKernel
        const h = { ...header("regtest"), bits: regtest.powLimitBits }
        expectValid(h, yield* kernel.search(h, regtest.powLimit), h.bits, regtest.powLimit)
      }),
    )
  })
})

describe("MiningKernel pool", () => {
  it.effect("a trivial target (regtest's) is searched in-thread with node:crypto, starting no thread", () =>
    Effect.gen(function* () {
      expect(expectedHashes(regtest.powLimit)).toBeLessThanOrEqual(inlineExpectedHashes)
      const pool = yield* makePool({ workers: 2 })
      const h = { ...header("regtest"), bits: regtest.powLimitBits }
      expectValid(h, yield* pool.search(h, regtest.powLimit), h.bits, regtest.powLimit)
      expect((yield* pool.stats).workers).toBe(0)
    }).pipe(Effect.scoped),
  )

  it.live("the pool finds a nonce that passes checkProofOfWork, starting where the header's nonce is", () =>
    Effect.gen(function* () {
      const pool = yield* makePool({ workers: 2 })
      for (const start of [0, 0xffff0000]) {
        const h = header(`pool/${start}`, start)
        const found = yield* pool.search(h, moderate)
        if (Option.isSome(found)) {
          expect(found.value).toBeGreaterThanOrEqual(start)
          expectValid(h, found, moderateBits, moderate)
        } else {
          // 65,536 nonces at a million hashes per solution: none is the likely answer
          expect(start).toBe(0xffff0000)
          expect(bruteForce(encodeHeader(h), moderate, start, NONCE_SPACE - start)).toEqual([])
        }
      }
      const stats = yield* pool.stats
      expect(stats.workers).toBe(2)
      expect(stats.hashes).toBeGreaterThan(65_536)
    }).pipe(Effect.scoped),
  )

  it.live("interrupting a search stops the workers; the next search starts at once", () =>
    Effect.gen(function* () {
      const pool = yield* makePool({ workers: 2 })
      const hopeless = yield* Effect.fork(pool.search(header("hopeless"), 0n))
      yield* hashing(pool)
      yield* Fiber.interrupt(hopeless)
      // the workers finish the batch they are in (≤ 65,536 nonces each), then stop
      yield* Effect.sleep(Duration.millis(300))
      const stopped = (yield* pool.stats).hashes
      yield* Effect.sleep(Duration.millis(200))
      expect((yield* pool.stats).hashes).toBe(stopped)
      const h = header("after")
      const t0 = Date.now()
      expectValid(h, yield* pool.search(h, moderate), moderateBits, moderate)
      expect(Date.now() - t0).toBeLessThan(5_000)
    }).pipe(Effect.scoped),
  )

  it.live("closing the scope cancels the running search and terminates the threads", () =>
    Effect.gen(function* () {
      const scope = yield* Scope.make()
      const pool: MiningKernelService = yield* Scope.extend(makePool({ workers: 2 }), scope)
      const search = yield* Effect.fork(pool.search(header("closing"), 0n))
      yield* hashing(pool)
      expect((yield* pool.stats).workers).toBe(2)
      yield* Scope.close(scope, Exit.void)
      expect((yield* pool.stats).workers).toBe(0)
      expect(yield* Fiber.join(search)).toEqual(Option.none())
    }),
  )
})

/**
 * hardnet is regtest with a proof of work of about 65,536 hashes, so the Miner's blocks go to the
 * worker pool rather than the in-thread path.
 */
const hardBits = 0x1f00ffff
// genesis in the past: the blocks are stamped with the real clock, which must not be before it
const hardGenesis = makeGenesis(1_700_000_000, hardBits, 0, regtest.halvingInterval)
const hardnet: NetworkParams = {
  ...regtest,
  powLimitBits: hardBits,
  powLimit: compactToTarget(hardBits).target,
  genesis: hardGenesis,
  genesisHash: headerHash(hardGenesis.header),
}

describe("Miner on the MiningKernel pool", () => {
  it.live("generate mines blocks of a real target on worker threads", () =>
    Effect.gen(function* () {
      const key = testKey(loadDefaultBackend().backend, 1)
      const base = Layer.merge(
        Layer.succeed(ChainStore, makeMemoryStore()),
        SigVerifier.layerInline().pipe(Layer.provide(layerDefault)),
      )
      const chain = ChainActor.layer(ChainActor.defaultChainConfig(hardnet)).pipe(Layer.provide(base))
      const node = MinerActor.layer({ params: hardnet, enabled: false, minTxs: 0, workers: 2 }).pipe(
        Layer.provideMerge(MempoolActor.layer(MempoolActor.defaultMempoolPolicy)),
        Layer.provideMerge(chain),
        Layer.provide(base),
      )
      yield* Effect.gen(function* () {
        const miner = yield* Miner
        const hashes = yield* miner.generate(3, key.pubkey)
        expect(hashes).toHaveLength(3)
        const tip = yield* (yield* ChainActor.Chain).tip
        expect(tip.height).toBe(3)
        expect(tip.hash).toEqual(hashes[2])
        expect(hashToBigInt(tip.hash) <= hardnet.powLimit).toBe(true)
        expect((yield* miner.info).hashespersec).toBeGreaterThan(0)
      }).pipe(Effect.provide(node))
    }),
  )
})
