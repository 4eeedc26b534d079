/**
 * Embedding a fibercoin node in another program: an in-memory regtest node as an Effect layer, driven
 * through its actors directly (no RPC). Run it with `npx tsx examples/embedded.ts`. Outside this
 * repository, import from "fibercoin" instead of "../src/index.js".
 */
import { Effect } from "effect"
import {
  Chain,
  decodeAddress,
  Miner,
  networks,
  nodeLayer,
  resolveConfig,
  toHex,
  Wallet,
} from "../src/index.js"

const config = resolveConfig({ network: "regtest", storage: "memory", mining: { enabled: false } }, {})

const program = Effect.gen(function* () {
  const chain = yield* Chain
  const wallet = yield* Wallet
  const miner = yield* Miner

  const address = yield* wallet.newAddress
  const key = decodeAddress(networks.regtest.hrp, address)
  if (key._tag === "Left") return yield* Effect.die(key.left)
  yield* miner.generate(101, key.right)
  console.log(`height ${(yield* chain.tip).height}, balance ${yield* wallet.balance()}`)

  const friend = yield* wallet.newAddress
  const txid = yield* wallet.send(friend, 1_000_000_000n)
  yield* miner.generate(1, key.right)
  const paid = (yield* wallet.listUnspent()).find((u) => u.txid === toHex(txid) && u.address === friend)
  console.log(
    `paid ${paid?.amount} units to the friend in ${toHex(txid)}, ${paid?.confirmations} confirmation`,
  )
})

Effect.runPromise(program.pipe(Effect.provide(nodeLayer(config)))).catch((e) => {
  console.error(e)
  process.exitCode = 1
})
