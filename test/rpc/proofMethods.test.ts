import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Either, Fiber, Option, Stream } from "effect"
import { Chain } from "../../src/actors/Chain.js"
import { verifyProof } from "../../src/consensus/merkleProof.js"
import { regtest } from "../../src/consensus/params.js"
import { makeSimNetwork, type SimNetwork } from "../../src/layers/TransportSim.js"
import { chainMethods, walletMethods } from "../../src/rpc/methods.js"
import { netMethods } from "../../src/rpc/netMethods.js"
import { proofMethods } from "../../src/rpc/proofMethods.js"
import type { RpcError } from "../../src/rpc/Server.js"
import { encodeMessage, type FrameEvent, Framer } from "../../src/schema/frame.js"
import { fromHex, toHex } from "../../src/schema/hex.js"
import { hostToBytes } from "../../src/schema/netaddr.js"
import { GetProofMessage, VerackMessage, VersionMessage } from "../../src/schema/wire.js"
import {
  P2P_PORT,
  quiet,
  type SimNode,
  settle,
  simConfig,
  simTime,
  startNode,
  waitUntil,
} from "../support/simnet.js"

/**
 * Merkle proofs as a user of bitcoind's RPCs and a light client on the wire rely on them: on in-memory
 * sim nodes, a payment's proof from gettxoutproof is accepted by verifytxoutproof while its block is
 * active, and a peer answers getproof with the same proof.
 */

const A = "10.0.0.1"
const B = "10.0.0.2"
const FAR = "10.0.9.9"

/** rpcOf calls `node`'s RPC handlers (chain, wallet, net and proof methods) with positional params. */
const rpcOf = (node: SimNode) =>
  Effect.gen(function* () {
    const shutdown = yield* Deferred.make<void>()
    const methods = [
      ...chainMethods({ params: regtest, startedAt: 0, shutdown }),
      ...walletMethods(),
      ...netMethods("test"),
      ...proofMethods(),
    ]
    return (name: string, params: ReadonlyArray<unknown> = []): Effect.Effect<unknown, RpcError> => {
      const m = methods.find((x) => x.name === name)
      if (m === undefined) return Effect.dieMessage(`no RPC method ${name}`)
      return node.run(m.invoke(params) as Effect.Effect<unknown, RpcError, never>)
    }
  })

/** errorOf is the code and message of a call that must fail. */
const errorOf = (call: Effect.Effect<unknown, RpcError>) =>
  Effect.map(Effect.flip(call), (e) => ({ code: e.code, message: e.message }))

const heightOf = (node: SimNode) =>
  node.run(
    Effect.map(
      Effect.flatMap(Chain, (c) => c.tip),
      (t) => t.height,
    ),
  )

/** paidNode: a node that mined 101 blocks, paid itself, and mined the payment into block 102. */
const paidNode = (sim: SimNetwork, host: string) =>
  Effect.gen(function* () {
    const node = yield* startNode(sim, simConfig(host))
    const rpc = yield* rpcOf(node)
    const address = (yield* rpc("getnewaddress")) as string
    yield* rpc("generatetoaddress", [101, address])
    const txid = (yield* rpc("sendtoaddress", [address, 1_000_000])) as string
    const [blockHash] = (yield* rpc("generatetoaddress", [1, address])) as Array<string>
    const block = (yield* rpc("getblock", [blockHash])) as { tx: Array<string> }
    expect(block.tx).toContain(txid)
    return { node, rpc, address, txid, blockHash: blockHash! }
  })

describe("gettxoutproof / verifytxoutproof on a sim node", () => {
  it.scoped("a payment's proof verifies to its txid, found through its unspent outputs or its block", () =>
    quiet(
      Effect.gen(function* () {
        yield* simTime
        const sim = yield* makeSimNetwork({ seed: 3 })
        const { rpc, txid, blockHash } = yield* paidNode(sim, A)
        const proof = (yield* rpc("gettxoutproof", [[txid]])) as string
        expect(yield* rpc("verifytxoutproof", [proof])).toEqual([txid])
        // the same proof when the block is named; its header is the block's
        expect(yield* rpc("gettxoutproof", [[txid], blockHash])).toBe(proof)
        expect(toHex(Either.getOrThrow(verifyProof(fromHex(proof)!)).blockHash)).toBe(blockHash)
        // the coinbase and the payment together, in block order whatever the order asked
        const block = (yield* rpc("getblock", [blockHash])) as { tx: Array<string> }
        const both = (yield* rpc("gettxoutproof", [[txid, block.tx[0]!]])) as string
        expect(yield* rpc("verifytxoutproof", [both])).toEqual([block.tx[0], txid])
      }),
    ),
  )

  it.scoped("unknown transactions and blocks are -5, bad txid lists -8, as bitcoind", () =>
    quiet(
      Effect.gen(function* () {
        yield* simTime
        const sim = yield* makeSimNetwork({ seed: 4 })
        const { rpc, txid, blockHash } = yield* paidNode(sim, A)
        const unknown = "ab".repeat(32)
        expect(yield* errorOf(rpc("gettxoutproof", [[unknown]]))).toEqual({
          code: -5,
          message: "Transaction not yet in block",
        })
        expect(yield* errorOf(rpc("gettxoutproof", [[txid, unknown]]))).toEqual({
          code: -5,
          message: "Not all transactions found in specified or retrieved block",
        })
        expect(yield* errorOf(rpc("gettxoutproof", [[txid], unknown]))).toEqual({
          code: -5,
          message: "Block not found",
        })
        const genesis = (yield* rpc("getblockhash", [0])) as string
        expect((yield* errorOf(rpc("gettxoutproof", [[txid], genesis]))).code).toBe(-5)
        expect(yield* errorOf(rpc("gettxoutproof", [[]]))).toEqual({
          code: -8,
          message: "Parameter 'txids' cannot be empty",
        })
        expect((yield* errorOf(rpc("gettxoutproof", [[txid, txid.toUpperCase()]]))).code).toBe(-8)
        expect((yield* errorOf(rpc("gettxoutproof", [["xyz"]]))).code).toBe(-32602)
        // a proof that is not a txoutproof at all is -5; one whose tree does not match its header is []
        expect((yield* errorOf(rpc("verifytxoutproof", ["00"]))).code).toBe(-5)
        const proof = fromHex((yield* rpc("gettxoutproof", [[txid], blockHash])) as string)!
        proof[proof.length - 40]! ^= 1
        expect(yield* rpc("verifytxoutproof", [toHex(proof)])).toEqual([])
      }),
    ),
  )

  it.scoped("after a reorg a proof of the replaced block verifies to []", () =>
    quiet(
      Effect.gen(function* () {
        yield* simTime
        const sim = yield* makeSimNetwork({ seed: 5, defaultLink: { latency: "10 millis" } })
        const { node, rpc, txid } = yield* paidNode(sim, A)
        const proof = (yield* rpc("gettxoutproof", [[txid]])) as string
        expect(yield* rpc("verifytxoutproof", [proof])).toEqual([txid])
        // B mines a longer chain on its own; A meets it and reorganises onto it
        const b = yield* startNode(sim, simConfig(B))
        const rpcB = yield* rpcOf(b)
        yield* rpcB("generatetoaddress", [105, (yield* rpcB("getnewaddress")) as string])
        yield* rpc("addnode", [`${B}:${P2P_PORT}`, "onetry"])
        yield* waitUntil(
          Effect.map(heightOf(node), (h) => h === 105),
          "30 seconds",
        )
        expect(yield* rpc("getbestblockhash")).toBe(yield* rpcB("getbestblockhash"))
        expect(yield* rpc("verifytxoutproof", [proof])).toEqual([])
      }),
    ),
  )
})

describe("getproof on the wire", () => {
  it.scoped("a peer asking for a proof of a payment gets one; an unknown block gets no answer", () =>
    quiet(
      Effect.gen(function* () {
        yield* simTime
        const sim = yield* makeSimNetwork({ seed: 6, defaultLink: { latency: "10 millis" } })
        const { txid, blockHash } = yield* paidNode(sim, A)
        // the far end: a scripted client that handshakes, then asks
        const dial = yield* Effect.fork(sim.transport(FAR).connect({ host: A, port: P2P_PORT }))
        yield* waitUntil(Effect.map(Fiber.poll(dial), Option.isSome), "5 seconds")
        const conn = yield* Fiber.join(dial)
        const received: Array<FrameEvent> = []
        const framer = new Framer(regtest.magic, new Set())
        yield* Effect.forkScoped(
          Stream.runForEach(conn.read, (chunk) =>
            Effect.sync(() => void received.push(...framer.push(chunk))),
          ),
        )
        const send = (...msgs: ReadonlyArray<Parameters<typeof encodeMessage>[1]>) =>
          Effect.forEach(msgs, (m) => conn.write(encodeMessage(regtest.magic, m)), { discard: true })
        const commands = () => received.map((e) => (e._tag === "Message" ? e.message._tag : e._tag))
        yield* send(
          new VersionMessage({
            protocolVersion: 1,
            services: 4,
            bestHeight: 0,
            userAgent: "/light:0/",
            nonce: 0x42n,
            listenPort: 0,
            theirAddress: { host: hostToBytes(A)!, port: P2P_PORT },
          }),
          new VerackMessage(),
        )
        yield* waitUntil(
          Effect.sync(() => commands().includes("verack")),
          "5 seconds",
        )
        yield* send(new GetProofMessage({ blockHash: new Uint8Array(32).fill(9), txids: [fromHex(txid)!] }))
        yield* send(new GetProofMessage({ blockHash: fromHex(blockHash)!, txids: [fromHex(txid)!] }))
        yield* waitUntil(
          Effect.sync(() => commands().includes("proof")),
          "5 seconds",
        )
        yield* settle
        const proofs = received.flatMap((e) =>
          e._tag === "Message" && e.message._tag === "proof" ? [e.message.bytes] : [],
        )
        // one answer only: the unknown block's request went unanswered
        expect(proofs).toHaveLength(1)
        const verified = Either.getOrThrow(verifyProof(proofs[0]!))
        expect(toHex(verified.blockHash)).toBe(blockHash)
        expect(verified.matches.map((m) => toHex(m.txid))).toEqual([txid])
      }),
    ),
  )
})
