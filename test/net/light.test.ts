import { describe, expect, it } from "@effect/vitest"
import { type Context, Deferred, Effect, Either } from "effect"
import { Chain } from "../../src/actors/Chain.js"
import { LightClient } from "../../src/actors/LightClient.js"
import { Mempool } from "../../src/actors/Mempool.js"
import { Miner } from "../../src/actors/Miner.js"
import type { ProbeEvent } from "../../src/actors/net.js"
import { Network } from "../../src/actors/PeerManager.js"
import { Wallet } from "../../src/actors/Wallet.js"
import { decodeAddress } from "../../src/consensus/address.js"
import { regtest } from "../../src/consensus/params.js"
import { ChainStore } from "../../src/layers/ChainStore.js"
import { makeSimNetwork } from "../../src/layers/TransportSim.js"
import { lightChainMethods } from "../../src/rpc/lightMethods.js"
import type { RpcError } from "../../src/rpc/Server.js"
import { toHex } from "../../src/schema/hex.js"
import type { PublicKey } from "../../src/schema/primitives.js"
import { INV_BLOCK } from "../../src/schema/wire.js"
import {
  quiet,
  type SimNode,
  type SimServices,
  simConfig,
  simTime,
  startNode,
  waitUntil,
} from "../support/simnet.js"

const COIN = 100_000_000n

/** mineAt mines `n` blocks at `node` paying a fresh address of its wallet. */
const mineAt = (node: SimNode, n: number) =>
  node.run(
    Effect.gen(function* () {
      const address = yield* (yield* Wallet).newAddress
      const key = Either.getOrThrow(decodeAddress(regtest.hrp, address)) as PublicKey
      return yield* (yield* Miner).generate(n, key)
    }),
  )

/** inLight runs `effect` with the light node's own services too (SimServices names a full node's) */
const inLight = <A, E>(node: SimNode, effect: Effect.Effect<A, E, SimServices | LightClient | ChainStore>) =>
  Effect.provide(effect, node.context as Context.Context<SimServices | LightClient | ChainStore>)

const tipOf = (node: SimNode) => node.run(Effect.flatMap(Chain, (c) => c.tip))
const scanned = (node: SimNode) =>
  inLight(
    node,
    Effect.flatMap(LightClient, (l) => l.status),
  )
const wallet = (node: SimNode) => node.run(Wallet)

describe("a light node on a simulated network of full nodes (TestClock)", () => {
  it.scoped(
    "tracks the tip from headers and filters, sees a payment with its confirmations, spends it, and keeps no block body",
    () =>
      quiet(
        Effect.gen(function* () {
          yield* simTime
          const sim = yield* makeSimNetwork({ seed: 21, defaultLink: { latency: "20 millis" } })
          const a = yield* startNode(sim, simConfig("10.0.0.1"))
          const b = yield* startNode(sim, simConfig("10.0.1.1", ["10.0.0.1"]))
          // everything the light node sends, to check what it tells its peers
          const sent: Array<ProbeEvent> = []
          const light = yield* startNode(
            sim,
            { ...simConfig("10.0.2.1", ["10.0.0.1", "10.0.1.1"]), role: "light" },
            { probe: (e) => e.direction === "out" && sent.push(e) },
          )
          yield* mineAt(a, 110)
          yield* waitUntil(
            Effect.map(scanned(light), (s) => s.height === 110),
            "120 seconds",
            "100 millis",
          )
          const aTip = yield* tipOf(a)
          expect(toHex((yield* scanned(light)).hash)).toBe(toHex(aTip.hash))
          // headers only: the light node's Chain connected no block
          expect((yield* tipOf(light)).height).toBe(0)

          // a pays the light wallet; one block later the light wallet sees it with one confirmation
          const address = yield* (yield* wallet(light)).newAddress
          const txid = yield* a.run(Effect.flatMap(Wallet, (w) => w.send(address, 5n * COIN)))
          yield* waitUntil(
            Effect.map(b.run(Effect.flatMap(Mempool, (m) => m.txids)), (ids) =>
              ids.some((id) => toHex(id) === toHex(txid)),
            ),
            "30 seconds",
          )
          yield* mineAt(a, 1)
          yield* waitUntil(
            Effect.map(scanned(light), (s) => s.height === 111),
            "60 seconds",
            "100 millis",
          )
          const lightWallet = yield* wallet(light)
          expect(yield* lightWallet.balance(1)).toBe(5n * COIN)
          const [coin] = yield* lightWallet.listUnspent(1)
          expect(coin).toMatchObject({ txid: toHex(txid), amount: 5n * COIN, confirmations: 1 })
          yield* mineAt(b, 2)
          yield* waitUntil(
            Effect.map(scanned(light), (s) => s.height === 113),
            "60 seconds",
            "100 millis",
          )
          expect((yield* lightWallet.listUnspent(1))[0]!.confirmations).toBe(3)

          // the light wallet pays a back: its transaction reaches the full nodes' pools and confirms
          const back = yield* (yield* wallet(a)).newAddress
          const spend = yield* lightWallet.send(back, 2n * COIN)
          yield* waitUntil(
            Effect.map(a.run(Effect.flatMap(Mempool, (m) => m.txids)), (ids) =>
              ids.some((id) => toHex(id) === toHex(spend)),
            ),
            "30 seconds",
          )
          yield* mineAt(a, 1)
          yield* waitUntil(
            Effect.map(scanned(light), (s) => s.height === 114),
            "60 seconds",
            "100 millis",
          )
          const left = yield* lightWallet.balance(1)
          expect(left).toBeGreaterThan(3n * COIN - COIN / 100n)
          expect(left).toBeLessThan(3n * COIN)
          expect((yield* light.run(Effect.flatMap(Mempool, (m) => m.txids))).length).toBe(0)

          // no block bodies in the light node's store
          const stored = yield* inLight(
            light,
            Effect.flatMap(ChainStore, (s) => s.getBlock(aTip.hash)).pipe(Effect.orDie),
          )
          expect(stored._tag).toBe("None")
          expect((yield* light.run(Effect.flatMap(Network, (n) => n.peers))).length).toBe(2)

          // privacy: it asked for filters, headers and whole blocks only — never for a transaction or a
          // proof of one, and no request carried the wallet's keys or its coins' outpoints
          const commands = new Set(sent.map((e) => e.command))
          for (const c of ["getproof", "getcfcheckpt"]) expect(commands.has(c as never)).toBe(false)
          expect(commands.has("getcfilters")).toBe(true)
          const asked = sent.flatMap((e) => (e.message?._tag === "getdata" ? e.message.items : []))
          expect(asked.length).toBeGreaterThan(0)
          expect(asked.every((i) => i.type === INV_BLOCK)).toBe(true)
          const secrets = [
            ...(yield* lightWallet.listUnspent(0)).map((u) => u.txid),
            toHex(Either.getOrThrow(decodeAddress(regtest.hrp, address))),
          ]
          for (const e of sent) {
            if (e.command === "tx" || e.command === "inv" || e.message === undefined) continue // its own payment
            const text = JSON.stringify(e.message, (_, v) =>
              v instanceof Uint8Array ? toHex(v) : typeof v === "bigint" ? v.toString() : v,
            )
            for (const secret of secrets) expect(text.includes(secret)).toBe(false)
          }

          // RPC: chain methods answer from headers; what needs bodies or a UTXO set says why not
          const methods = lightChainMethods({
            params: regtest,
            startedAt: 0,
            shutdown: yield* Deferred.make<void>(),
          })
          const call = (name: string, params: ReadonlyArray<unknown> = []) => {
            const m = methods.find((x) => x.name === name)!
            const run = m.invoke(params) as Effect.Effect<
              unknown,
              RpcError,
              SimServices | LightClient | ChainStore
            >
            return inLight(light, Effect.either(run))
          }
          expect(yield* call("getblockcount")).toEqual(Either.right(114))
          const info = yield* call("getblockchaininfo")
          expect(Either.getOrThrow(info)).toMatchObject({
            blocks: 114,
            headers: 114,
            initialblockdownload: false,
          })
          expect(yield* call("getblockhash", [114])).toEqual(Either.right(toHex((yield* tipOf(a)).hash)))
          for (const name of [
            "getblock",
            "gettxout",
            "gettxoutsetinfo",
            "getrawtransaction",
            "generatetoaddress",
          ]) {
            const refused = yield* call(name, [toHex(aTip.hash)])
            expect(Either.isLeft(refused) && refused.left.code).toBe(-32601)
            expect(Either.isLeft(refused) && refused.left.message).toMatch(/light node/)
          }
        }),
      ),
    { timeout: 120_000 },
  )
})
