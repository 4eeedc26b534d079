import { spawnSync } from "node:child_process"
import { writeFileSync } from "node:fs"
import { join } from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import { cli, freePort, json, outputContains, root, startNode, text, workDir } from "./processes.js"

const work = workDir("fibercoin-node-")
afterAll(work.cleanup)
const start = (dataDir: string, rpc: number, p2p: number, extra: ReadonlyArray<string> = []) =>
  startNode(work.running, dataDir, rpc, p2p, extra)

const COIN = 100_000_000

describe("a running regtest node (real process, loopback, temp data directory)", () => {
  it("mines, holds a mature coinbase, pays another address, confirms it, and keeps it all across a restart", async () => {
    const dataDir = join(work.dir, "a")
    const [rpc, p2p] = [await freePort(), await freePort()]
    let node = await start(dataDir, rpc, p2p)

    const mine = text(node, "getnewaddress")
    expect(mine).toMatch(/^fcrt1p[02-9ac-hj-np-z]+$/)
    const hashes = json(node, "generatetoaddress", "101", mine) as Array<string>
    expect(hashes).toHaveLength(101)
    expect(Number(text(node, "getblockcount"))).toBe(101)
    // exactly one mature coinbase: the block-1 reward (depth 101); block 2's is at depth 100
    expect(Number(text(node, "getbalance"))).toBe(50 * COIN)

    const other = text(node, "getnewaddress")
    const txid = text(node, "sendtoaddress", other, String(10 * COIN))
    expect(txid).toMatch(/^[0-9a-f]{64}$/)
    expect(json(node, "getrawmempool")).toEqual([txid])
    const raw = text(node, "getrawtransaction", txid)
    expect((json(node, "decoderawtransaction", raw) as { txid: string }).txid).toBe(txid)

    json(node, "generatetoaddress", "1", mine)
    expect(json(node, "getrawmempool")).toEqual([])
    const block = json(node, "getblock", text(node, "getbestblockhash")) as {
      height: number
      tx: Array<string>
    }
    expect(block.height).toBe(102)
    expect(block.tx).toHaveLength(2)
    expect(block.tx[1]).toBe(txid)
    const unspent = json(node, "listunspent") as Array<{
      txid: string
      address: string
      amount: number
      confirmations: number
    }>
    expect(unspent).toContainEqual(
      expect.objectContaining({ txid, address: other, amount: 10 * COIN, confirmations: 1 }),
    )
    const utxo = json(node, "gettxoutsetinfo") as {
      height: number
      total_amount: number
      hash_serialized: string
    }
    expect(utxo.height).toBe(102)
    expect(utxo.total_amount).toBe(102 * 50 * COIN) // fees move value, never create it

    // metrics: no auth, Prometheus text, the node's own numbers
    const metrics = await (await fetch(`http://127.0.0.1:${rpc}/metrics`)).text()
    expect(metrics).toMatch(/^chain_height 102$/m)
    expect(metrics).toMatch(/^mempool_transactions 0$/m)
    expect(metrics).toMatch(/^block_validation_seconds_count \d+$/m)
    expect(metrics).toMatch(/^rpc_calls_total\{[^}]*method="sendtoaddress"[^}]*\} 1$/m)
    expect((await fetch(`http://127.0.0.1:${rpc}/`, { method: "POST", body: "{}" })).status).toBe(401)

    const tip = text(node, "getbestblockhash")
    const balance = text(node, "getbalance")
    expect(text(node, "stop")).toBe("fibercoin stopping")
    expect(await node.exited).toBe(0)

    node = await start(dataDir, rpc, p2p)
    expect(text(node, "getbestblockhash")).toBe(tip)
    expect(text(node, "getbalance")).toBe(balance)
    expect((json(node, "gettxoutsetinfo") as { hash_serialized: string }).hash_serialized).toBe(
      utxo.hash_serialized,
    )

    // a second node on the same data directory refuses to start, with one clear line
    const second = spawnSync(
      process.execPath,
      ["dist/main.js", "--datadir", dataDir, "--rpc", `127.0.0.1:${await freePort()}`],
      {
        cwd: root,
        encoding: "utf8",
        timeout: 60_000,
      },
    )
    expect(second.status).toBe(1)
    expect(second.stderr).toContain("is locked by another fibercoin process")

    // bad input gets bitcoind's error codes and changes nothing
    const bad = cli(node, "sendtoaddress", "fc1notanaddress", "100")
    expect(bad.status).toBe(1)
    expect(bad.stderr).toMatch(/address/i)
    expect(cli(node, "sendtoaddress", other, "-5").status).toBe(1)
    expect(cli(node, "getrawtransaction", "00".repeat(32)).status).toBe(1)
    expect(text(node, "getbalance")).toBe(balance)

    node.process.kill("SIGTERM")
    expect(await node.exited).toBe(0)

    // --reindex rebuilds the UTXO set and tip from the stored blocks: same tip, same commitment
    node = await start(dataDir, rpc, p2p, ["--reindex"])
    expect(text(node, "getbestblockhash")).toBe(tip)
    expect((json(node, "gettxoutsetinfo") as { hash_serialized: string }).hash_serialized).toBe(
      utxo.hash_serialized,
    )
    expect(text(node, "getbalance")).toBe(balance)
    expect(await outputContains(node, "reindex: done at height 102")).toBe(true)
    node.process.kill("SIGINT")
    expect(await node.exited).toBe(0)
  })

  it("a bad config file or flag exits 2 naming the key", () => {
    const file = join(work.dir, "bad.json")
    writeFileSync(file, JSON.stringify({ network: "regtest", rpc: { prot: 1 } }))
    const r = spawnSync(process.execPath, ["dist/main.js", "--config", file], {
      cwd: root,
      encoding: "utf8",
      timeout: 60_000,
    })
    expect(r.status).toBe(2)
    expect(r.stderr).toContain("prot")
    const flag = spawnSync(process.execPath, ["dist/main.js", "--rpc", "nonsense"], {
      cwd: root,
      encoding: "utf8",
      timeout: 60_000,
    })
    expect(flag.status).toBe(2)
    expect(flag.stderr).toContain("--rpc")
  })
})
