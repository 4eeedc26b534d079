import { spawnSync } from "node:child_process"
import { join } from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import { eventually, freePort, type NodeHandle, root, rpcAsync, startNode, workDir } from "./processes.js"

const work = workDir("fibercoin-snapshot-")
afterAll(work.cleanup)

interface TxOutSetInfo {
  readonly height: number
  readonly hash_serialized: string
}

const count = (node: NodeHandle) => rpcAsync(node, "getblockcount") as Promise<number>
const txoutset = (node: NodeHandle) => rpcAsync(node, "gettxoutsetinfo") as Promise<TxOutSetInfo>
const stop = (node: NodeHandle) => {
  node.process.kill("SIGTERM")
  return node.exited
}

describe("UTXO snapshots between real processes (issue 9)", () => {
  it("dumptxoutset at one node, --snapshot at a fresh one: same set, it follows the tip, the history checks out", async () => {
    const a = await startNode(work.running, join(work.dir, "a"), await freePort(), await freePort())
    const address = (await rpcAsync(a, "getnewaddress")) as string
    await rpcAsync(a, "generatetoaddress", "150", address)
    const file = join(work.dir, "utxo.snap")
    const dump = (await rpcAsync(a, "dumptxoutset", file)) as {
      coins_written: number
      base_height: number
      txoutset_hash: string
      snapshot_id: string
    }
    expect(dump.base_height).toBe(150)
    expect(dump.txoutset_hash).toBe((await txoutset(a)).hash_serialized)

    // nobody committed it and the operator names no id: the node refuses to start, saying why
    const refused = spawnSync(
      process.execPath,
      [
        "dist/main.js",
        "--datadir",
        join(work.dir, "refused"),
        "--role",
        "full",
        "--storage",
        "memory",
        "--rpc",
        `127.0.0.1:${await freePort()}`,
        "--listen",
        `127.0.0.1:${await freePort()}`,
        "--udp",
        "127.0.0.1:0",
        "--snapshot",
        file,
      ],
      { cwd: root, encoding: "utf8", timeout: 60_000 },
    )
    expect(refused.status).toBe(1)
    expect(refused.stderr).toContain("not-committed")

    const flags = ["--snapshot", file, "--snapshot-hash", dump.snapshot_id, "--connect", `127.0.0.1:${a.p2p}`]
    const b = await startNode(work.running, join(work.dir, "b"), await freePort(), await freePort(), flags)
    expect(await count(b)).toBe(150)
    expect((await txoutset(b)).hash_serialized).toBe(dump.txoutset_hash)
    await rpcAsync(a, "generatetoaddress", "5", address)
    await eventually("b follows a to 155", 60_000, async () => (await count(b)) === 155)
    expect((await txoutset(b)).hash_serialized).toBe((await txoutset(a)).hash_serialized)
    await eventually("the background check of blocks 1..150 agrees", 120_000, async () => {
      const status = (await rpcAsync(b, "getsnapshotstatus")) as { status: string } | null
      return status?.status === "validated"
    })
    expect(((await rpcAsync(b, "getblockchaininfo")) as { warnings: string }).warnings).toBe("")

    // a restart with the same flags keeps the chain it has (and the snapshot's verdict)
    expect(await stop(b)).toBe(0)
    const again = await startNode(work.running, b.dataDir, b.rpc, b.p2p, flags)
    expect(await count(again)).toBeGreaterThanOrEqual(155)
    expect(((await rpcAsync(again, "getsnapshotstatus")) as { status: string }).status).toBe("validated")
    expect(await stop(again)).toBe(0)
    expect(await stop(a)).toBe(0)
  })
})
