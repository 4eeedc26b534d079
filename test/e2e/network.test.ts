import { writeFileSync } from "node:fs"
import { join } from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import { eventually, freePort, type NodeHandle, rpcAsync, startNode, workDir } from "./processes.js"

const work = workDir("fibercoin-net-")
afterAll(work.cleanup)

const COIN = 100_000_000

/** spawn starts a node named `name` in the work directory on fresh ports. */
const spawnNode = async (name: string, extra: ReadonlyArray<string> = []) =>
  startNode(work.running, join(work.dir, name), await freePort(), await freePort(), extra)

const peerOf = (node: NodeHandle) => `127.0.0.1:${node.p2p}`
const best = (node: NodeHandle) => rpcAsync(node, "getbestblockhash") as Promise<string>
const mempool = (node: NodeHandle) => rpcAsync(node, "getrawmempool") as Promise<Array<string>>
const connections = (node: NodeHandle) => rpcAsync(node, "getconnectioncount") as Promise<number>

/** sameTip waits until every node reports the same best block hash, and answers it. */
const sameTip = async (nodes: ReadonlyArray<NodeHandle>, ms: number) => {
  let hashes: Array<string> = []
  await eventually("the nodes share a tip", ms, async () => {
    hashes = await Promise.all(nodes.map(best))
    return hashes.every((h) => h === hashes[0])
  })
  return hashes[0]!
}

describe("P2P over real TCP on loopback (three processes)", () => {
  it("a line A–B–C shares blocks and transactions through the middle node", async () => {
    const a = await spawnNode("line-a")
    const b = await spawnNode("line-b", ["--connect", peerOf(a)])
    const c = await spawnNode("line-c", ["--connect", peerOf(b)])
    await eventually("A–B and B–C connected", 30_000, async () => (await connections(b)) === 2)
    expect(await connections(a)).toBe(1)
    expect(await connections(c)).toBe(1)
    const peersOfB = (await rpcAsync(b, "getpeerinfo")) as Array<{ inbound: boolean; subver: string }>
    expect(peersOfB.map((p) => p.inbound).sort()).toEqual([false, true])
    expect(peersOfB[0]!.subver).toMatch(/^\/fibercoin:/)

    const addressA = (await rpcAsync(a, "getnewaddress")) as string
    const mined = (await rpcAsync(a, "generatetoaddress", "110", addressA)) as Array<string>
    expect(await sameTip([a, b, c], 60_000)).toBe(mined[109])
    expect(await rpcAsync(c, "getblockcount")).toBe(110)

    // a payment made at A reaches C's mempool through B
    const addressC = (await rpcAsync(c, "getnewaddress")) as string
    const txid = (await rpcAsync(a, "sendtoaddress", addressC, String(3 * COIN))) as string
    await eventually("the tx reaches C", 30_000, async () => (await mempool(c)).includes(txid))
    expect(await mempool(b)).toContain(txid)

    // a block mined at B reaches A and C, and confirms the payment everywhere
    const addressB = (await rpcAsync(b, "getnewaddress")) as string
    const [atB] = (await rpcAsync(b, "generatetoaddress", "1", addressB)) as Array<string>
    expect(await sameTip([a, b, c], 30_000)).toBe(atB)
    await eventually("mempools empty", 10_000, async () =>
      (await Promise.all([a, b, c].map(mempool))).every((m) => m.length === 0),
    )
    const info = (await rpcAsync(c, "getblockchaininfo")) as {
      blocks: number
      headers: number
      initialblockdownload: boolean
      verificationprogress: number
    }
    expect(info).toMatchObject({
      blocks: 111,
      headers: 111,
      initialblockdownload: false,
      verificationprogress: 1,
    })
    expect(await rpcAsync(c, "getbalance", "0")).toBe(3 * COIN)
  })

  it("two nodes mined apart reconnect: the shorter branch reorgs and its tx is mined again", async () => {
    const config = join(work.dir, "no-outbound.json")
    // only the peers the test adds: no dialling back addresses learnt from the other node
    writeFileSync(config, JSON.stringify({ limits: { maxOutbound: 0 } }))
    const a = await spawnNode("fork-a", ["--config", config])
    const b = await spawnNode("fork-b", ["--config", config])
    await rpcAsync(a, "addnode", peerOf(b), "add")
    await eventually("A–B connected", 30_000, async () => (await connections(b)) === 1)
    const addressA = (await rpcAsync(a, "getnewaddress")) as string
    await rpcAsync(a, "generatetoaddress", "101", addressA)
    await sameTip([a, b], 60_000)

    // split: A stops keeping B connected
    await rpcAsync(a, "addnode", peerOf(b), "remove")
    await eventually("A–B apart", 30_000, async () => (await connections(a)) + (await connections(b)) === 0)

    const addressB = (await rpcAsync(b, "getnewaddress")) as string
    const txid = (await rpcAsync(a, "sendtoaddress", addressB, String(COIN))) as string
    const [tipA] = (await rpcAsync(a, "generatetoaddress", "1", addressA)) as Array<string>
    const block = (await rpcAsync(a, "getblock", tipA!)) as { tx: Array<string> }
    expect(block.tx).toContain(txid)
    const branchB = (await rpcAsync(b, "generatetoaddress", "3", addressB)) as Array<string>
    expect(await rpcAsync(a, "getblockcount")).toBe(102)

    // reconnect: A takes B's longer branch, and its payment goes back to the mempool
    await rpcAsync(a, "addnode", peerOf(b), "add")
    expect(await sameTip([a, b], 60_000)).toBe(branchB[2])
    await eventually("the tx is back in A's mempool", 30_000, async () => (await mempool(a)).includes(txid))
    await eventually("and relayed to B", 30_000, async () => (await mempool(b)).includes(txid))

    // mined later, on the winning branch
    const [confirming] = (await rpcAsync(b, "generatetoaddress", "1", addressB)) as Array<string>
    expect(await sameTip([a, b], 30_000)).toBe(confirming)
    const confirmed = (await rpcAsync(a, "getblock", confirming!)) as { tx: Array<string>; height: number }
    expect(confirmed.height).toBe(105)
    expect(confirmed.tx).toContain(txid)
    expect(await mempool(a)).toEqual([])
  })
})
