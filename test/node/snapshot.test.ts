import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Layer, Option, TestClock } from "effect"
import * as ChainActor from "../../src/actors/Chain.js"
import { Chain } from "../../src/actors/Chain.js"
import { Miner } from "../../src/actors/Miner.js"
import { Network } from "../../src/actors/PeerManager.js"
import * as SnapshotsActor from "../../src/actors/Snapshots.js"
import { Snapshots } from "../../src/actors/Snapshots.js"
import { SpamFilter } from "../../src/actors/SpamFilter.js"
import { Wallet } from "../../src/actors/Wallet.js"
import { decodeAddress } from "../../src/consensus/address.js"
import { blockHashOf, sha256 } from "../../src/consensus/hash.js"
import { MUHASH_EMPTY, muhashAdd, muhashFinalize } from "../../src/consensus/muhash.js"
import { regtest, testnet } from "../../src/consensus/params.js"
import {
  decodeChunk,
  encodeChunk,
  entryElement,
  makeSnapshotHeader,
  snapshotLayout,
} from "../../src/consensus/snapshot.js"
import { ChainStore, type ChainStoreService, makeMemoryStore } from "../../src/layers/ChainStore.js"
import { layerDefault, loadDefaultBackend } from "../../src/layers/Signatures.js"
import * as SigVerifier from "../../src/layers/SigVerifier.js"
import { makeSimNetwork } from "../../src/layers/TransportSim.js"
import { dumpTxOutSet, loadTxOutSet, openSnapshotFile, startFromSnapshot } from "../../src/node/snapshot.js"
import { snapshotMethods } from "../../src/rpc/snapshotMethods.js"
import { type Block, encodeBlock, encodeHeader } from "../../src/schema/block.js"
import { encodeCoin } from "../../src/schema/coin.js"
import { toHex } from "../../src/schema/hex.js"
import type { Amount, Height, PublicKey } from "../../src/schema/primitives.js"
import { pay, TestChain, testKey } from "../support/chain.js"
import { advance, quiet, type SimNode, simConfig, simTime, startNode, waitUntil } from "../support/simnet.js"

const backend = loadDefaultBackend().backend
const miner = testKey(backend, 1)
const bob = testKey(backend, 2)

/** source: 120 blocks; blocks 111..120 each split a mature coinbase into 12 outputs (~240 coins in all). */
const source = new TestChain(regtest, backend, miner)
source.registerKey(bob)
source.mine(110)
for (let i = 0; i < 10; i++) {
  const coin = source.matureCoins().find((s) => s.coin.coinbase)!
  const outputs = Array.from({ length: 12 }, (_, n) => pay(n % 2 === 0 ? bob : miner, 1_000_000n + BigInt(n)))
  source.connect(source.candidate([source.spend([coin], outputs)], { time: source.times.at(-1)! + 60 }))
}
const BASE = source.height
/** beyond: 5 more blocks above the base, the first spending a coin created below it */
const above = source.clone()
{
  const coin = above.matureCoins().find((s) => !s.coin.coinbase)!
  above.connect(
    above.candidate([above.spend([coin], [pay(bob, coin.coin.value - 10_000n)])], {
      time: above.times.at(-1)! + 60,
    }),
  )
  for (let i = 0; i < 4; i++) above.connect(above.candidate([], { time: above.times.at(-1)! + 60 }))
}
const beyond: ReadonlyArray<Block> = above.blocks.slice(source.blocks.length)

const verifierLayer = SigVerifier.layerInline().pipe(Layer.provide(layerDefault))
const chainLayer = (store: ChainStoreService) =>
  ChainActor.layer(ChainActor.defaultChainConfig(regtest)).pipe(
    Layer.provide(Layer.merge(Layer.succeed(ChainStore, store), verifierLayer)),
  )
const setClock = TestClock.setTime((source.times[0]! + 86_400 * 2) * 1000)

const submitAll = (blocks: ReadonlyArray<Block>) =>
  Effect.gen(function* () {
    const chain = yield* Chain
    for (const b of blocks) yield* chain.submitBlock(encodeBlock(b))
  })

/** stateOf is a node's tip, hash_serialized and sorted coin set (an independent check of the commitment). */
const stateOf = (store: ChainStoreService) =>
  Effect.gen(function* () {
    const c = yield* (yield* Chain).utxoCommitment
    const coins: Array<string> = []
    yield* store.forEachCoin((key, coin) => coins.push(`${key}=${toHex(encodeCoin(coin))}`))
    return { tip: toHex(c.hash), height: c.height, commitment: toHex(c.commitment), coins: coins.sort() }
  })

const tmpDir = () => fs.mkdtempSync(path.join(os.tmpdir(), "fibercoin-snapshot-"))

/** dumped is a snapshot file of `source` at its tip (chunks of 16, so the set spans many chunks). */
const dumped = (dir: string) =>
  Effect.gen(function* () {
    const store = makeMemoryStore()
    return yield* Effect.gen(function* () {
      yield* submitAll(source.blocks.slice(1))
      const file = path.join(dir, "utxo.snap")
      const result = yield* dumpTxOutSet(file, regtest, { chunkSize: 16 })
      return { file, result, state: yield* stateOf(store) }
    }).pipe(Effect.provide(chainLayer(store)))
  })

/** fresh runs `f` on a new memory node at genesis. */
const fresh = <A, E>(f: (store: ChainStoreService) => Effect.Effect<A, E, Chain | Snapshots>) => {
  const store = makeMemoryStore()
  return f(store).pipe(
    Effect.provide(
      Layer.merge(chainLayer(store), SnapshotsActor.layer(SnapshotsActor.defaultSnapshotsConfig(regtest))),
    ),
  )
}

const genesisState = {
  tip: toHex(regtest.genesisHash),
  height: 0,
  commitment: toHex(muhashFinalize(MUHASH_EMPTY)),
  coins: [],
}

/** flipByte rewrites `file` with one byte changed at `offset`. */
const flipByte = (file: string, offset: number) => {
  const bytes = fs.readFileSync(file)
  bytes[offset] = bytes[offset]! ^ 0x01
  fs.writeFileSync(file, bytes)
}

describe("dumptxoutset / loadtxoutset", () => {
  it.effect("a dump at height N loads into a fresh node: same tip, hash_serialized and coins", () =>
    Effect.gen(function* () {
      yield* setClock
      const dir = tmpDir()
      const { file, result, state } = yield* dumped(dir)
      expect(result.base_height).toBe(BASE)
      expect(result.coins_written).toBe(state.coins.length)
      expect(result.coins_written).toBeGreaterThan(16 * 5)
      expect(result.txoutset_hash).toBe(state.commitment)
      expect(fs.existsSync(`${file}.tmp`)).toBe(false)

      const loaded = yield* fresh((store) =>
        Effect.gen(function* () {
          const r = yield* loadTxOutSet(file, regtest, result.snapshot_id)
          const snapshot = yield* (yield* Chain).snapshot
          return { r, after: yield* stateOf(store), snapshot }
        }),
      )
      expect(loaded.r).toMatchObject({
        coins_loaded: result.coins_written,
        tip_hash: result.base_hash,
        base_height: BASE,
        txoutset_hash: result.txoutset_hash,
        snapshot_id: result.snapshot_id,
      })
      expect(loaded.after).toEqual(state)
      expect(Option.map(loaded.snapshot, (s) => [s.baseHeight, s.status])).toEqual(
        Option.some([BASE, "assumed"]),
      )
    }),
  )

  it.effect("after loading, blocks above the base connect and the sets agree with a node that replayed", () =>
    Effect.gen(function* () {
      yield* setClock
      const { file, result } = yield* dumped(tmpDir())
      const replayed = yield* fresh((store) =>
        submitAll(above.blocks.slice(1)).pipe(Effect.zipRight(stateOf(store))),
      )
      const { followed, toFetch } = yield* fresh((store) =>
        Effect.gen(function* () {
          const chain = yield* Chain
          yield* loadTxOutSet(file, regtest, result.snapshot_id)
          // with the headers above the base known, Sync is offered only the blocks above it
          const last = yield* chain.submitHeaders(beyond.map((b) => b.header))
          const toFetch = yield* chain.blocksToFetch(last.last.hash, {
            max: 100,
            window: 1000,
            exclude: new Set(),
          })
          yield* submitAll(beyond)
          return { followed: yield* stateOf(store), toFetch: toFetch.map((b) => b.height) }
        }),
      )
      expect(toFetch).toEqual([BASE + 1, BASE + 2, BASE + 3, BASE + 4, BASE + 5])
      expect(followed.height).toBe(BASE + beyond.length)
      expect(followed).toEqual(replayed)
    }),
  )

  it.effect("a snapshot nobody committed is refused, whatever it says of itself", () =>
    Effect.gen(function* () {
      yield* setClock
      const { file } = yield* dumped(tmpDir())
      const outcome = yield* fresh((store) =>
        Effect.gen(function* () {
          const e = yield* Effect.flip(loadTxOutSet(file, regtest))
          const wrongId = yield* Effect.flip(loadTxOutSet(file, regtest, "00".repeat(32)))
          return { e, wrongId, after: yield* stateOf(store) }
        }),
      )
      expect(outcome.e).toMatchObject({ _tag: "SnapshotError", reason: "not-committed" })
      expect(outcome.e.message).toContain("regtest's assumeutxo list")
      expect(outcome.wrongId).toMatchObject({ reason: "not-committed" })
      expect(outcome.after).toEqual(genesisState)
    }),
  )

  it.effect("a byte changed in a chunk is refused by its chunk hash and the node stays at genesis", () =>
    Effect.gen(function* () {
      yield* setClock
      const { file, result } = yield* dumped(tmpDir())
      const layout = yield* Effect.scoped(
        Effect.map(openSnapshotFile(file, regtest), (s) => snapshotLayout(s.header)),
      )
      // a byte in the third chunk: two chunks are in the store by then and must be wiped
      flipByte(file, layout.chunkAt(2) + 40)
      const outcome = yield* fresh((store) =>
        Effect.gen(function* () {
          const e = yield* Effect.flip(loadTxOutSet(file, regtest, result.snapshot_id))
          return { e, after: yield* stateOf(store), snapshot: yield* (yield* Chain).snapshot }
        }),
      )
      expect(outcome.e).toMatchObject({ reason: "bad-chunk" })
      expect(outcome.e.message).toContain("chunk 2 does not match its committed hash")
      expect(outcome.after).toEqual(genesisState)
      expect(Option.isNone(outcome.snapshot)).toBe(true)
    }),
  )

  it.effect("a changed header field breaks the snapshot id; a changed block header breaks the chain", () =>
    Effect.gen(function* () {
      yield* setClock
      const dir = tmpDir()
      const { file, result } = yield* dumped(dir)
      const original = fs.readFileSync(file)
      const layout = yield* Effect.scoped(
        Effect.map(openSnapshotFile(file, regtest), (s) => snapshotLayout(s.header)),
      )
      // the base height field (offset 6 + 1 + 4 + 32)
      flipByte(file, 43)
      const field = yield* fresh(() => Effect.flip(loadTxOutSet(file, regtest, result.snapshot_id)))
      expect(field).toMatchObject({ reason: "bad-format" })
      expect(field.message).toContain("snapshot.id")
      // a nonce byte of header 50
      fs.writeFileSync(file, original)
      flipByte(file, layout.headersAt + 50 * 80 + 76)
      const outcome = yield* fresh((store) =>
        Effect.gen(function* () {
          const e = yield* Effect.flip(loadTxOutSet(file, regtest, result.snapshot_id))
          return { e, after: yield* stateOf(store) }
        }),
      )
      expect(outcome.e).toMatchObject({ reason: "bad-headers" })
      expect(outcome.after).toEqual(genesisState)
    }),
  )

  it.effect("a truncated file and a file of another network are refused", () =>
    Effect.gen(function* () {
      yield* setClock
      const { file, result } = yield* dumped(tmpDir())
      const bytes = fs.readFileSync(file)
      const cut = `${file}.cut`
      fs.writeFileSync(cut, bytes.subarray(0, bytes.length - 1))
      const truncated = yield* fresh(() => Effect.flip(loadTxOutSet(cut, regtest, result.snapshot_id)))
      expect(truncated).toMatchObject({ reason: "bad-format" })
      const other = yield* Effect.flip(Effect.scoped(openSnapshotFile(file, testnet)))
      expect(other).toMatchObject({ reason: "wrong-network" })
    }),
  )

  it.effect("a node that already has blocks refuses a snapshot", () =>
    Effect.gen(function* () {
      yield* setClock
      const { file, result } = yield* dumped(tmpDir())
      const outcome = yield* fresh((store) =>
        Effect.gen(function* () {
          yield* submitAll(source.blocks.slice(1, 4))
          const e = yield* Effect.flip(loadTxOutSet(file, regtest, result.snapshot_id))
          return { e, after: yield* stateOf(store) }
        }),
      )
      expect(outcome.e).toMatchObject({ reason: "not-at-genesis" })
      expect(outcome.after.height).toBe(3)
    }),
  )
})

describe("snapshot RPCs and --snapshot", () => {
  const rpc = (name: string) => snapshotMethods(regtest).find((m) => m.name === name)!

  it.effect(
    "dumptxoutset refuses an existing path; loadtxoutset answers -8 with the reason, then loads",
    () =>
      Effect.gen(function* () {
        yield* setClock
        const { file, result } = yield* dumped(tmpDir())
        const exists = yield* fresh(() => Effect.flip(rpc("dumptxoutset").invoke([file])))
        expect(exists).toMatchObject({ code: -8 })
        expect(exists.message).toContain("already exists")
        const outcome = yield* fresh((store) =>
          Effect.gen(function* () {
            const refused = yield* Effect.flip(rpc("loadtxoutset").invoke([file]))
            const badId = yield* Effect.flip(rpc("loadtxoutset").invoke([file, "xyz"]))
            const loaded = yield* rpc("loadtxoutset").invoke([file, result.snapshot_id])
            const status = yield* rpc("getsnapshotstatus").invoke([])
            return { refused, badId, loaded, status, after: yield* stateOf(store) }
          }),
        )
        expect(outcome.refused).toMatchObject({ code: -8 })
        expect(outcome.refused.message).toContain("not-committed")
        expect(outcome.badId).toMatchObject({ code: -32602 })
        expect(outcome.loaded).toMatchObject({ base_height: BASE, snapshot_id: result.snapshot_id })
        expect(outcome.status).toEqual({
          snapshot_id: result.snapshot_id,
          base_hash: result.base_hash,
          base_height: BASE,
          status: "assumed",
        })
        expect(outcome.after.commitment).toBe(result.txoutset_hash)
      }),
  )

  it.effect("--snapshot loads at start, and a restart with the flag keeps the chain it has", () =>
    Effect.gen(function* () {
      yield* setClock
      const { file, result } = yield* dumped(tmpDir())
      const heights = yield* fresh(() =>
        Effect.gen(function* () {
          const chain = yield* Chain
          yield* startFromSnapshot(file, regtest, result.snapshot_id)
          const first = (yield* chain.tip).height
          yield* submitAll(beyond.slice(0, 2))
          yield* startFromSnapshot(file, regtest, result.snapshot_id)
          return [first, (yield* chain.tip).height]
        }),
      )
      expect(heights).toEqual([BASE, BASE + 2])
      const refused = yield* fresh(() => Effect.flip(startFromSnapshot(file, regtest, undefined)))
      expect(refused).toMatchObject({ reason: "not-committed" })
    }),
  )
})

describe("a node started from a snapshot on a simulated network", () => {
  const mineAt = (node: SimNode, n: number) =>
    node.run(
      Effect.gen(function* () {
        const address = yield* (yield* Wallet).newAddress
        const key = Either.getOrThrow(decodeAddress(regtest.hrp, address)) as PublicKey
        return yield* (yield* Miner).generate(n, key)
      }),
    )
  const commitmentOf = (node: SimNode) =>
    node.run(
      Effect.map(
        Effect.flatMap(Chain, (c) => c.utxoCommitment),
        (c) => [c.height, toHex(c.commitment)],
      ),
    )

  it.scoped("--snapshot at start, then it syncs only the blocks above the base from a peer", () =>
    quiet(
      Effect.gen(function* () {
        yield* simTime
        const sim = yield* makeSimNetwork({ seed: 3, defaultLink: { latency: "20 millis" } })
        const configA = simConfig("10.0.0.1")
        const a = yield* startNode(sim, { ...configA, limits: { ...configA.limits, maxOutbound: 0 } })
        yield* mineAt(a, 120)
        const file = path.join(tmpDir(), "utxo.snap")
        const dump = yield* a.run(dumpTxOutSet(file, regtest))
        const above = yield* mineAt(a, 10)
        const aboveHex = new Set(above.map(toHex))

        const received: Array<string> = []
        const b = yield* startNode(
          sim,
          { ...simConfig("10.0.1.1", ["10.0.0.1"]), snapshot: file, snapshotHash: dump.snapshot_id },
          {
            probe: (e) => {
              if (e.direction === "in" && e.command === "block" && e.payload !== undefined)
                received.push(toHex(blockHashOf(e.payload.subarray(0, 80))))
            },
          },
        )
        // the node is at the base before any peer has sent it anything
        expect((yield* b.run(Effect.flatMap(Chain, (c) => c.tip))).height).toBe(120)
        yield* waitUntil(
          Effect.map(b.run(Effect.flatMap(Chain, (c) => c.tip)), (t) => t.height === 130),
          "30 seconds",
        )
        expect(yield* commitmentOf(b)).toEqual(yield* commitmentOf(a))
        // every block above the base arrived (blocks below it, if any yet, are the background check's)
        expect(new Set(received.filter((h) => aboveHex.has(h))).size).toBe(10)
      }),
    ),
  )
})

describe("snapshot chunks over P2P", () => {
  const mineAt = (node: SimNode, n: number) =>
    node.run(
      Effect.gen(function* () {
        const address = yield* (yield* Wallet).newAddress
        const key = Either.getOrThrow(decodeAddress(regtest.hrp, address)) as PublicKey
        return yield* (yield* Miner).generate(n, key)
      }),
    )
  const commitmentOf = (node: SimNode) =>
    node.run(
      Effect.map(
        Effect.flatMap(Chain, (c) => c.utxoCommitment),
        (c) => [c.height, toHex(c.commitment)],
      ),
    )
  const tipHeight = (node: SimNode) =>
    node.run(
      Effect.map(
        Effect.flatMap(Chain, (c) => c.tip),
        (t) => t.height,
      ),
    )

  it.scoped(
    "a fresh node loads a snapshot from three peers in parallel, refuses a tampered chunk and penalises its peer",
    () =>
      quiet(
        Effect.gen(function* () {
          yield* simTime
          const sim = yield* makeSimNetwork({ seed: 5, defaultLink: { latency: "20 millis" } })
          const configA = simConfig("10.0.0.1")
          const a = yield* startNode(sim, { ...configA, limits: { ...configA.limits, maxOutbound: 0 } })
          yield* mineAt(a, 120)
          const dir = tmpDir()
          const file = path.join(dir, "utxo.snap")
          // chunks of 16 coins, so the set spans enough chunks to spread over three peers
          const dump = yield* a.run(dumpTxOutSet(file, regtest, { chunkSize: 16 }))
          const layout = yield* Effect.scoped(
            Effect.map(openSnapshotFile(file, regtest), (s) => snapshotLayout(s.header)),
          )
          expect(layout.chunkAt(6)).toBeLessThan(fs.statSync(file).size)
          // B serves the file it started from; C too, but from a tampered copy
          const started = { snapshot: file, snapshotHash: dump.snapshot_id }
          const b = yield* startNode(sim, { ...simConfig("10.0.2.1", ["10.0.0.1"]), ...started })
          const c = yield* startNode(sim, { ...simConfig("10.0.3.1", ["10.0.0.1"]), ...started })
          const tampered = path.join(dir, "tampered.snap")
          fs.copyFileSync(file, tampered)
          // every chunk of C's copy is bad, so whichever chunk C is asked for is refused
          for (let i = 0; layout.chunkAt(i) < fs.statSync(file).size; i++)
            flipByte(tampered, layout.chunkAt(i) + 4 + 50)
          yield* c.run(
            Effect.flatMap(Effect.serviceOption(Snapshots), (s) =>
              Option.isSome(s) ? s.value.serve(tampered) : Effect.die("no Snapshots service"),
            ),
          )
          yield* mineAt(a, 10)
          yield* waitUntil(
            Effect.zipWith(tipHeight(b), tipHeight(c), (x, y) => x === 130 && y === 130),
            "30 seconds",
          )

          const chunksFrom = new Map<string, number>()
          const d = yield* startNode(
            sim,
            { ...simConfig("10.0.4.1", ["10.0.0.1", "10.0.2.1", "10.0.3.1"]), snapshotId: dump.snapshot_id },
            {
              probe: (e) => {
                if (e.direction === "in" && e.command === "snapchunk")
                  chunksFrom.set(e.remote.host, (chunksFrom.get(e.remote.host) ?? 0) + 1)
              },
            },
          )
          yield* waitUntil(
            Effect.map(tipHeight(d), (h) => h === 130),
            "60 seconds",
          )
          expect(yield* commitmentOf(d)).toEqual(yield* commitmentOf(a))
          const snapshot = yield* d.run(Effect.flatMap(Chain, (ch) => ch.snapshot))
          expect(Option.map(snapshot, (s) => [toHex(s.snapshotId), s.baseHeight])).toEqual(
            Option.some([dump.snapshot_id, 120]),
          )
          // chunks came from all three; C's bad chunk got it disconnected and banned
          expect([...chunksFrom.keys()].sort()).toEqual(["10.0.0.1", "10.0.2.1", "10.0.3.1"])
          const peers = yield* d.run(Effect.flatMap(Network, (n) => n.peers))
          expect(peers.map((p) => p.info.addr.host).sort()).toEqual(["10.0.0.1", "10.0.2.1"])
          expect(yield* d.run(Effect.flatMap(SpamFilter, (f) => f.isBanned("10.0.3.1")))).toBe(true)
          // D follows the tip before its background check of blocks 1..120 is done; then the check agrees
          const statusOf = (node: SimNode) =>
            node.run(
              Effect.map(
                Effect.flatMap(Chain, (ch) => ch.snapshot),
                Option.map((s) => s.status),
              ),
            )
          expect(yield* statusOf(d)).toEqual(Option.some("assumed"))
          yield* waitUntil(
            Effect.map(statusOf(d), (s) => Option.getOrUndefined(s) === "validated"),
            "120 seconds",
            "100 millis",
          )
          expect((yield* d.run(Effect.flatMap(Chain, (ch) => ch.syncStatus))).warnings).toBe("")
        }),
      ),
  )
})

describe("background validation below a snapshot", () => {
  const mineAt = (node: SimNode, n: number) =>
    node.run(
      Effect.gen(function* () {
        const address = yield* (yield* Wallet).newAddress
        const key = Either.getOrThrow(decodeAddress(regtest.hrp, address)) as PublicKey
        return yield* (yield* Miner).generate(n, key)
      }),
    )
  const tipHeight = (node: SimNode) =>
    node.run(
      Effect.map(
        Effect.flatMap(Chain, (c) => c.tip),
        (t) => t.height,
      ),
    )

  it.scoped(
    "a snapshot with a coin the history never made loads, then the check disagrees and the node halts",
    () =>
      quiet(
        Effect.gen(function* () {
          yield* simTime
          const sim = yield* makeSimNetwork({ seed: 7, defaultLink: { latency: "20 millis" } })
          const configA = simConfig("10.0.0.1")
          const a = yield* startNode(sim, { ...configA, limits: { ...configA.limits, maxOutbound: 0 } })
          yield* mineAt(a, 110)
          const dir = tmpDir()
          const file = path.join(dir, "utxo.snap")
          yield* a.run(dumpTxOutSet(file, regtest))
          // the forger adds one coin to the set and recomputes every hash: a self-consistent snapshot
          const forged = path.join(dir, "forged.snap")
          const real = yield* Effect.scoped(
            Effect.gen(function* () {
              const s = yield* openSnapshotFile(file, regtest)
              return { header: s.header, headers: s.headers!, chunk: yield* s.chunk(0) }
            }),
          )
          const entries = [
            ...Either.getOrThrow(decodeChunk(real.chunk)),
            {
              txid: new Uint8Array(32).fill(0xff),
              index: 0,
              coin: {
                value: 5_000_000_000n as Amount,
                pubkey: new Uint8Array(32).fill(7) as PublicKey,
                height: 1 as Height,
                coinbase: false,
              },
            },
          ]
          const chunk = encodeChunk(entries)
          const { header, bytes } = makeSnapshotHeader({
            ...real.header,
            coinCount: entries.length,
            txoutsetHash: muhashFinalize(muhashAdd(MUHASH_EMPTY, entries.map(entryElement))),
            chunkHashes: [sha256(chunk)],
          })
          fs.writeFileSync(forged, Buffer.concat([bytes, ...real.headers.map(encodeHeader), chunk]))
          const d = yield* startNode(sim, {
            ...simConfig("10.0.5.1", ["10.0.0.1"]),
            snapshot: forged,
            snapshotHash: toHex(header.snapshotId),
          })
          expect(yield* tipHeight(d)).toBe(110)
          yield* mineAt(a, 3)
          yield* waitUntil(
            Effect.map(tipHeight(d), (h) => h === 113),
            "30 seconds",
          )
          yield* waitUntil(
            Effect.map(
              d.run(Effect.flatMap(Chain, (c) => c.snapshot)),
              (s) => Option.getOrUndefined(s)?.status === "failed",
            ),
            "120 seconds",
            "100 millis",
          )
          const status = yield* d.run(Effect.flatMap(Chain, (c) => c.syncStatus))
          expect(status.warnings).toContain("disagrees")
          // it stops processing blocks: the next ones stay away
          yield* mineAt(a, 2)
          yield* advance("10 seconds", "100 millis")
          expect(yield* tipHeight(d)).toBe(113)
          expect(yield* tipHeight(a)).toBe(115)
        }),
      ),
  )
})

describe("a snapshot load interrupted by a crash", () => {
  it.effect(
    "coins written before the tip moved are wiped at the next start; a committed load keeps its base row",
    () =>
      Effect.gen(function* () {
        yield* setClock
        const { file, result } = yield* dumped(tmpDir())
        // a crash mid-load: the "loading" row and some coins, the tip still at genesis
        const crashed = makeMemoryStore()
        yield* Effect.gen(function* () {
          yield* crashed.table("snapshot").put("loading", new Uint8Array(64))
          yield* crashed.putCoins([[`${"ab".repeat(32)}:0`, source.utxos.coins.values().next().value!]])
        })
        const after = yield* stateOf(crashed).pipe(Effect.provide(chainLayer(crashed)))
        expect(after).toEqual(genesisState)
        expect(Option.isNone(yield* crashed.table("snapshot").get("loading"))).toBe(true)

        // a crash after the tip commit but before the rows: the next start writes the base row
        const committed = makeMemoryStore()
        yield* loadTxOutSet(file, regtest, result.snapshot_id).pipe(Effect.provide(chainLayer(committed)))
        const base = Option.getOrThrow(yield* committed.table("snapshot").get("base"))
        yield* committed.table("snapshot").write([
          ["base", undefined],
          ["loading", Uint8Array.from([...base.subarray(0, 32), ...base.subarray(69, 101)])],
        ])
        const restarted = yield* Effect.gen(function* () {
          return { state: yield* stateOf(committed), snapshot: yield* (yield* Chain).snapshot }
        }).pipe(Effect.provide(chainLayer(committed)))
        expect(restarted.state.height).toBe(BASE)
        expect(restarted.state.commitment).toBe(result.txoutset_hash)
        expect(
          Option.map(restarted.snapshot, (s) => [toHex(s.snapshotId), toHex(s.txoutsetHash), s.status]),
        ).toEqual(Option.some([result.snapshot_id, result.txoutset_hash, "assumed"]))
      }),
  )
})
