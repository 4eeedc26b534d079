import { describe, expect, it } from "@effect/vitest"
import { type Context, Effect, Either, Option, type Scope, Stream } from "effect"
import { Chain } from "../../src/actors/Chain.js"
import { FilterIndex } from "../../src/actors/FilterIndex.js"
import { Miner } from "../../src/actors/Miner.js"
import { Network } from "../../src/actors/PeerManager.js"
import { Wallet } from "../../src/actors/Wallet.js"
import { decodeAddress } from "../../src/consensus/address.js"
import { buildFilter, filterHash, filterHeader, ZERO_FILTER_HEADER } from "../../src/consensus/blockFilter.js"
import { regtest } from "../../src/consensus/params.js"
import type { TransportError } from "../../src/layers/Transport.js"
import { makeSimNetwork, type SimNetwork } from "../../src/layers/TransportSim.js"
import { decodeBlock } from "../../src/schema/block.js"
import { encodeMessage, type FrameEvent, Framer } from "../../src/schema/frame.js"
import { toHex } from "../../src/schema/hex.js"
import { hostToBytes } from "../../src/schema/netaddr.js"
import type { BlockHash, PublicKey } from "../../src/schema/primitives.js"
import {
  type Command,
  GetCFCheckptMessage,
  GetCFHeadersMessage,
  GetCFiltersMessage,
  MAX_GETCFILTERS,
  SERVICE_FILTERS,
  SERVICE_FULL,
  VerackMessage,
  VersionMessage,
  type WireMessage,
} from "../../src/schema/wire.js"
import {
  P2P_PORT,
  quiet,
  type SimNode,
  type SimServices,
  simConfig,
  simTime,
  startNode,
  waitUntil,
} from "../support/simnet.js"

/**
 * Compact block filters served on a simulated network (issue 9): a node that synced its blocks from
 * another answers a raw peer's getcfheaders, getcfilters and getcfcheckpt with what blockFilter.ts
 * computes from the same blocks here, and scores requests BIP157 does not allow.
 */

const magic = regtest.magic
const NODE_A = "10.0.0.1"
const NODE_B = "10.0.1.1"

const mineAt = (node: SimNode, n: number) =>
  node.run(
    Effect.gen(function* () {
      const address = yield* (yield* Wallet).newAddress
      const key = Either.getOrThrow(decodeAddress(regtest.hrp, address)) as PublicKey
      return yield* (yield* Miner).generate(n, key)
    }),
  )

const tipOf = (node: SimNode) => node.run(Effect.flatMap(Chain, (c) => c.tip))

/** withIndex runs an effect against a node's FilterIndex (full nodes have one; SimServices does not list it). */
const withIndex = <A, E>(node: SimNode, effect: Effect.Effect<A, E, FilterIndex | SimServices>) =>
  Effect.provide(effect, node.context as Context.Context<SimServices | FilterIndex>)

/** expected is the filters and filter headers of `node`'s active chain, computed here from its blocks. */
const expected = (node: SimNode) =>
  node.run(
    Effect.gen(function* () {
      const chain = yield* Chain
      const tip = yield* chain.tip
      const out: Array<{ hash: BlockHash; filter: Uint8Array; filterHash: Uint8Array; header: Uint8Array }> =
        []
      let prev = ZERO_FILTER_HEADER
      for (let h = 0; h <= tip.height; h++) {
        const hash = Option.getOrThrow(yield* chain.hashAt(h))
        const bytes = Option.getOrThrow(yield* Effect.orDie(chain.block(hash)))
        const block = Either.getOrThrow(decodeBlock(bytes))
        const filter = buildFilter(block, hash)
        prev = filterHeader(filterHash(filter), prev)
        out.push({ hash, filter, filterHash: filterHash(filter), header: prev })
      }
      return out
    }),
  )

/** RawPeer is the test's end of a connection to a node, speaking frames. */
interface RawPeer {
  readonly send: (...msgs: ReadonlyArray<WireMessage>) => Effect.Effect<void>
  readonly messages: <C extends Command>(command: C) => Array<Extract<WireMessage, { readonly _tag: C }>>
  readonly ended: () => boolean
}

const dial = (
  sim: SimNetwork,
  node: SimNode,
  host: string,
): Effect.Effect<RawPeer, TransportError | Error, Scope.Scope> =>
  Effect.gen(function* () {
    const conn = yield* sim.transport(host).connect({ host: node.host, port: P2P_PORT })
    const received: Array<FrameEvent> = []
    const framer = new Framer(magic, new Set<Command>(["block", "tx"]))
    let ended = false
    yield* Stream.runForEach(conn.read, (chunk) =>
      Effect.sync(() => void received.push(...framer.push(chunk))),
    ).pipe(
      Effect.ensuring(
        Effect.sync(() => {
          ended = true
        }),
      ),
      Effect.ignore,
      Effect.forkScoped,
    )
    const messages = <C extends Command>(command: C) =>
      received.flatMap((e) =>
        e._tag === "Message" && e.message._tag === command
          ? [e.message as Extract<WireMessage, { readonly _tag: C }>]
          : [],
      )
    const send = (...msgs: ReadonlyArray<WireMessage>) =>
      Effect.forEach(msgs, (m) => Effect.ignore(conn.write(encodeMessage(magic, m))), { discard: true })
    yield* send(
      new VersionMessage({
        protocolVersion: 1,
        services: 0,
        bestHeight: 0,
        userAgent: "/filters-test:0.1/",
        nonce: 77n,
        listenPort: 0,
        theirAddress: { host: hostToBytes(node.host)!, port: P2P_PORT },
      }),
      new VerackMessage(),
    )
    yield* waitUntil(
      Effect.sync(() => messages("verack").length === 1),
      "5 seconds",
    )
    return { send, messages, ended: () => ended }
  })

/** scoreOf is the node's misbehaviour score of the peer from `host`. */
const scoreOf = (node: SimNode, host: string) =>
  node.run(
    Effect.map(
      Effect.flatMap(Network, (n) => n.peers),
      (peers) => peers.find((p) => p.info.addr.host === host)?.stats.banScore,
    ),
  )

describe("compact block filters on a simulated network", () => {
  it.scoped("a node that synced its blocks serves their filters and filter headers as computed here", () =>
    quiet(
      Effect.gen(function* () {
        yield* simTime
        const sim = yield* makeSimNetwork({ seed: 9 })
        const configA = simConfig(NODE_A)
        const a = yield* startNode(sim, { ...configA, limits: { ...configA.limits, maxOutbound: 0 } })
        const b = yield* startNode(sim, simConfig(NODE_B, [NODE_A]))
        yield* mineAt(a, 12)
        yield* waitUntil(
          Effect.map(tipOf(b), (t) => t.height === 12),
          "20 seconds",
        )
        const tip = (yield* tipOf(b)).hash
        yield* waitUntil(
          withIndex(
            b,
            Effect.map(
              Effect.flatMap(FilterIndex, (i) => i.header(tip)),
              Option.isSome,
            ),
          ),
          "5 seconds",
        )
        const want = yield* expected(a)
        // B announces that it serves filters
        const [bAtA] = yield* a.run(Effect.flatMap(Network, (n) => n.peers))
        expect((bAtA!.info.services & SERVICE_FILTERS) !== 0).toBe(true)
        expect((bAtA!.info.services & SERVICE_FULL) !== 0).toBe(true)

        const peer = yield* dial(sim, b, "10.9.0.2")
        yield* peer.send(new GetCFHeadersMessage({ filterType: 0, startHeight: 0, stopHash: tip }))
        yield* waitUntil(
          Effect.sync(() => peer.messages("cfheaders").length === 1),
          "5 seconds",
        )
        const headers = peer.messages("cfheaders")[0]!
        expect(toHex(headers.stopHash)).toBe(toHex(tip))
        expect(toHex(headers.previousFilterHeader)).toBe(toHex(ZERO_FILTER_HEADER))
        expect(headers.filterHashes.map(toHex)).toEqual(want.map((w) => toHex(w.filterHash)))
        // the asker rebuilds the header chain from them: it ends at the tip's filter header
        const rebuilt = headers.filterHashes.reduce(
          (prev, h) => filterHeader(h, prev),
          headers.previousFilterHeader,
        )
        expect(toHex(rebuilt)).toBe(toHex(want[12]!.header))

        // a range in the middle: the header before it, then its filters one by one, in order
        yield* peer.send(new GetCFHeadersMessage({ filterType: 0, startHeight: 5, stopHash: want[9]!.hash }))
        yield* peer.send(new GetCFiltersMessage({ filterType: 0, startHeight: 3, stopHash: tip }))
        yield* waitUntil(
          Effect.sync(
            () => peer.messages("cfheaders").length === 2 && peer.messages("cfilter").length === 10,
          ),
          "5 seconds",
        )
        const middle = peer.messages("cfheaders")[1]!
        expect(toHex(middle.previousFilterHeader)).toBe(toHex(want[4]!.header))
        expect(middle.filterHashes.map(toHex)).toEqual(want.slice(5, 10).map((w) => toHex(w.filterHash)))
        const filters = peer.messages("cfilter")
        expect(filters.map((f) => toHex(f.blockHash))).toEqual(want.slice(3).map((w) => toHex(w.hash)))
        expect(filters.map((f) => toHex(f.filter))).toEqual(want.slice(3).map((w) => toHex(w.filter)))
        expect(filters.every((f) => f.filterType === 0)).toBe(true)

        // checkpoints every 1,000 blocks: none below height 1,000
        yield* peer.send(new GetCFCheckptMessage({ filterType: 0, stopHash: tip }))
        yield* waitUntil(
          Effect.sync(() => peer.messages("cfcheckpt").length === 1),
          "5 seconds",
        )
        expect(peer.messages("cfcheckpt")[0]!.filterHeaders).toEqual([])
        expect(yield* scoreOf(b, "10.9.0.2")).toBe(0)
      }),
    ),
  )

  it.scoped("requests BIP157 does not allow are refused and scored; the filters bucket limits the rest", () =>
    quiet(
      Effect.gen(function* () {
        yield* simTime
        const sim = yield* makeSimNetwork({ seed: 10 })
        const config = simConfig(NODE_A)
        const node = yield* startNode(
          sim,
          { ...config, limits: { ...config.limits, maxOutbound: 0 } },
          { spam: { filters: { rate: 0, burst: MAX_GETCFILTERS + 20 } } },
        )
        const hashes = yield* mineAt(node, MAX_GETCFILTERS + 1)
        const tip = hashes[hashes.length - 1]!
        yield* waitUntil(
          withIndex(
            node,
            Effect.map(
              Effect.flatMap(FilterIndex, (i) => i.header(tip)),
              Option.isSome,
            ),
          ),
          "10 seconds",
        )
        const host = "10.9.0.3"
        const peer = yield* dial(sim, node, host)
        const scored = (score: number) =>
          waitUntil(
            Effect.map(scoreOf(node, host), (s) => s === score),
            "2 seconds",
          )
        // 1,002 blocks from genesis: one more than a getcfilters may ask (BIP157's 1,000 is MAX_GETCFILTERS)
        yield* peer.send(new GetCFiltersMessage({ filterType: 0, startHeight: 0, stopHash: tip }))
        yield* scored(20)
        // a start above the stop, an unknown stop hash, another filter type: each a violation
        yield* peer.send(new GetCFHeadersMessage({ filterType: 0, startHeight: 10, stopHash: hashes[3]! }))
        yield* scored(40)
        yield* peer.send(
          new GetCFHeadersMessage({ filterType: 0, startHeight: 0, stopHash: new Uint8Array(32) }),
        )
        yield* scored(60)
        yield* peer.send(new GetCFCheckptMessage({ filterType: 1, stopHash: tip }))
        yield* scored(80)
        expect(peer.messages("cfilter").length + peer.messages("cfheaders").length).toBe(0)
        // in the bucket (1,020 blocks, no refill): 1,000 filters answered, then 30 more are too many
        yield* peer.send(new GetCFiltersMessage({ filterType: 0, startHeight: 2, stopHash: tip }))
        yield* waitUntil(
          Effect.sync(() => peer.messages("cfilter").length === MAX_GETCFILTERS),
          "10 seconds",
        )
        // the checkpoint at height 1,000 is the chain's: a request costs its checkpoints (1)
        yield* peer.send(new GetCFCheckptMessage({ filterType: 0, stopHash: tip }))
        yield* waitUntil(
          Effect.sync(() => peer.messages("cfcheckpt").length === 1),
          "2 seconds",
        )
        const index = yield* withIndex(node, FilterIndex)
        const at1000 = Option.getOrThrow(yield* node.run(Effect.flatMap(Chain, (c) => c.hashAt(1000))))
        const header1000 = Option.getOrThrow(yield* index.header(at1000))
        expect(peer.messages("cfcheckpt")[0]!.filterHeaders.map(toHex)).toEqual([toHex(header1000)])
        yield* peer.send(new GetCFHeadersMessage({ filterType: 0, startHeight: 972, stopHash: tip }))
        yield* scored(90)
        expect(peer.messages("cfheaders").length).toBe(0)
        expect(peer.ended()).toBe(false)
      }),
    ),
  )
})
