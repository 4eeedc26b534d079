/**
 * ibd-loopback: how fast a fresh node syncs a pre-built chain from loopback peers, against how fast
 * the same node imports the same blocks locally.
 *
 * - The chain: IBD_BLOCKS regtest blocks; after coinbase maturity each block spends and splits coins in
 *   up to TXS_PER_BLOCK real signed transactions.
 * - Baseline: a node (the whole node layer: LMDB, the verification pool, Chain, Mempool, Wallet)
 *   submitting every block to its Chain actor in order: the `--reindex`-style local import, in blocks/s.
 * - Value: a fresh in-process node of the same build syncing over real TCP on 127.0.0.1 from one, then
 *   three peer processes (`node dist/main.js` on copies of the baseline's data directory), from start
 *   to the last block connected, in blocks/s.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { cpSync, mkdtempSync, rmSync } from "node:fs"
import * as os from "node:os"
import { join } from "node:path"
import { Duration, Effect, Layer, Logger, LogLevel } from "effect"
import { Chain } from "../src/actors/Chain.js"
import { regtest } from "../src/consensus/params.js"
import type { SignatureBackend } from "../src/consensus/signature.js"
import * as Node from "../src/node/Node.js"
import { encodeBlock } from "../src/schema/block.js"
import { type NodeConfig, resolveConfig } from "../src/schema/config.js"
import { freePort as freePortOnLoopback } from "../test/e2e/processes.js"
import { pay, TestChain, testKey } from "../test/support/chain.js"

const IBD_BLOCKS = 1_200
const TXS_PER_BLOCK = 40

/** buildChain grows the fixture chain and returns its blocks' bytes (genesis excluded) and the tx count. */
const buildChain = (signer: SignatureBackend) => {
  const miner = testKey(signer, 1)
  const fixture = new TestChain(regtest, signer, miner)
  let txCount = 0
  for (let h = 1; h <= IBD_BLOCKS; h++) {
    const coins = fixture.matureCoins().filter((s) => s.coin.value >= 100_000n)
    const txs = coins.slice(0, TXS_PER_BLOCK).map((coin) => {
      const half = coin.coin.value / 2n
      return fixture.spend([coin], [pay(miner, half), pay(miner, half - 1_000n)])
    })
    txCount += txs.length
    fixture.connect(fixture.candidate(txs, { time: fixture.times[fixture.times.length - 1]! + 1 }))
  }
  return { blocks: fixture.blocks.slice(1).map(encodeBlock), txCount }
}

/** nodeConfig is a full node in `dataDir` listening on a free loopback port, connecting only to `connect`. */
const nodeConfig = (dataDir: string, connect: ReadonlyArray<number>): NodeConfig => {
  const c = resolveConfig(
    {},
    {
      dataDir,
      role: "full",
      listen: { host: "127.0.0.1", port: 0 },
      udp: { host: "127.0.0.1", port: 0 },
      ...(connect.length > 0 ? { connect: connect.map((port) => ({ host: "127.0.0.1", port })) } : {}),
    },
  )
  return { ...c, limits: { ...c.limits, maxOutbound: 0 } }
}

const silent = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  effect.pipe(Logger.withMinimumLogLevel(LogLevel.None))

/** localImport submits every block to a fresh node's Chain actor, in seconds. */
const localImport = (dataDir: string, blocks: ReadonlyArray<Uint8Array>) =>
  silent(
    Effect.scoped(
      Effect.gen(function* () {
        const ctx = yield* Layer.build(Node.layer(nodeConfig(dataDir, [])))
        const service = yield* Effect.provide(Chain, ctx)
        const t0 = performance.now()
        for (const b of blocks) yield* service.submitBlock(b)
        const seconds = (performance.now() - t0) / 1000
        const tip = yield* service.tip
        if (tip.height !== blocks.length)
          return yield* Effect.die(new Error(`local import reached ${tip.height}`))
        return seconds
      }),
    ),
  )

/** serve starts a peer process on a copy of the imported data directory and resolves once it listens. */
const serve = (dataDir: string, p2p: number, rpc: number) =>
  new Promise<ChildProcess>((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [
        "dist/main.js",
        "--datadir",
        dataDir,
        "--listen",
        `127.0.0.1:${p2p}`,
        "--rpc",
        `127.0.0.1:${rpc}`,
        "--role",
        "full",
        "--log-level",
        "info",
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    )
    let output = ""
    const onData = (d: Buffer) => {
      output += d.toString()
      if (output.includes("ready:")) resolve(child)
    }
    child.stdout!.on("data", onData)
    child.stderr!.on("data", onData)
    child.once("exit", (code) => reject(new Error(`peer exited ${code}: ${output}`)))
  })

/** sync runs a fresh in-process node connected to `ports` until it has every block, in seconds. */
const sync = (dataDir: string, ports: ReadonlyArray<number>, height: number) =>
  silent(
    Effect.scoped(
      Effect.gen(function* () {
        const t0 = performance.now()
        const ctx = yield* Layer.build(Node.layer(nodeConfig(dataDir, ports)))
        const chain = yield* Effect.provide(Chain, ctx)
        const deadline = t0 + 600_000
        while ((yield* chain.tip).height < height) {
          if (performance.now() > deadline)
            return yield* Effect.die(new Error("sync did not finish in 10 minutes"))
          yield* Effect.sleep(Duration.millis(10))
        }
        return (performance.now() - t0) / 1000
      }),
    ),
  )

const freePort = Effect.promise(freePortOnLoopback)

/** ibdBench measures the baseline import, then sync from one and from three loopback peers. */
export const ibdBench = (signer: SignatureBackend) =>
  Effect.gen(function* () {
    const { blocks, txCount } = buildChain(signer)
    const dir = yield* Effect.acquireRelease(
      Effect.sync(() => mkdtempSync(join(os.tmpdir(), "fibercoin-ibd-"))),
      (d) => Effect.sync(() => rmSync(d, { recursive: true, force: true })),
    )
    const base = join(dir, "base")
    const local = yield* localImport(base, blocks)
    const ports: Array<number> = []
    for (let i = 0; i < 3; i++) {
      const copy = join(dir, `peer-${i}`)
      cpSync(base, copy, { recursive: true })
      const [p2p, rpc] = [yield* freePort, yield* freePort]
      yield* Effect.acquireRelease(
        Effect.promise(() => serve(copy, p2p, rpc)),
        (child) => Effect.sync(() => child.kill("SIGKILL")),
      )
      ports.push(p2p)
    }
    const one = yield* sync(join(dir, "sync-1"), ports.slice(0, 1), blocks.length)
    const three = yield* sync(join(dir, "sync-3"), ports, blocks.length)
    return {
      blocks: blocks.length,
      txs: txCount,
      localPerSecond: blocks.length / local,
      onePeerPerSecond: blocks.length / one,
      threePeersPerSecond: blocks.length / three,
    }
  }).pipe(Effect.scoped)
