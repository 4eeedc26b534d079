import { readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import { regtest } from "../../src/consensus/params.js"
import { FRAME_HEADER_BYTES } from "../../src/schema/frame.js"
import { INV_TX, InvMessage, PingMessage } from "../../src/schema/wire.js"
import { cliAsync, eventually, freePort, type NodeHandle, rpcAsync, startNode, workDir } from "./processes.js"
import { WireClient } from "./wireClient.js"

const work = workDir("fibercoin-spam-")
afterAll(work.cleanup)

/** the misbehaving peers dial from here; honest ones from 127.0.0.1 (CONTRACT: a ban of one does not touch the other) */
const BAD_HOST = "127.0.0.9"
const HONEST_HOST = "127.0.0.1"
/** how fast the node must answer an honest peer or an RPC while it is being attacked */
const SERVED_WITHIN_MS = 2_000
/** how soon "at once" is: a refused connection is reset as soon as it is accepted */
const AT_ONCE_MS = 1_000

/** spawnNode starts a node named `name` on fresh ports, with `config` as its node.json when given. */
const spawnNode = async (name: string, config?: object) => {
  const extra: Array<string> = []
  if (config !== undefined) {
    const file = join(work.dir, `${name}.json`)
    writeFileSync(file, JSON.stringify(config))
    extra.push("--config", file)
  }
  return startNode(work.running, join(work.dir, name), await freePort(), await freePort(), extra)
}

/** dial opens a wire connection to the node's P2P port from `from`. */
const dial = (node: NodeHandle, from: string) => WireClient.connect({ port: node.p2p, localAddress: from })

/**
 * rpcTimed calls a method over HTTP with the node's cookie, without spawning a CLI process (whose own
 * start-up would be timed too), and answers the result and how long the node took.
 */
const rpcTimed = async (node: NodeHandle, method: string, params: Array<unknown> = []) => {
  const cookie = readFileSync(join(node.dataDir, ".cookie"), "utf8").trim()
  const started = Date.now()
  const response = await fetch(`http://127.0.0.1:${node.rpc}/`, {
    method: "POST",
    headers: { authorization: `Basic ${Buffer.from(cookie).toString("base64")}` },
    body: JSON.stringify({ jsonrpc: "2.0", id: 1, method, params }),
    signal: AbortSignal.timeout(10_000),
  })
  const body = (await response.json()) as { result?: unknown; error?: { message: string } | null }
  if (body.error) throw new Error(`${method}: ${body.error.message}`)
  return { result: body.result, ms: Date.now() - started }
}

/** honestPeer dials from 127.0.0.1, handshakes and pings; answers the handshake and ping times. */
const honestPeer = async (node: NodeHandle) => {
  const client = await dial(node, HONEST_HOST)
  try {
    const started = Date.now()
    await client.handshake(10_000)
    const handshakeMs = Date.now() - started
    const pingMs = await client.ping(10_000)
    return { handshakeMs, pingMs }
  } finally {
    client.destroy()
  }
}

/**
 * dialUnlessReset dials from `from`; undefined when the node reset the connection so fast that the
 * reset beat the connect callback (a refused connection is reset as soon as it is accepted).
 */
const dialUnlessReset = async (node: NodeHandle, from: string) => {
  try {
    return await dial(node, from)
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ECONNRESET") return undefined
    throw e
  }
}

/** lifetimeOfRefused dials from `from` and answers how long (ms from the dial) the node let the connection live. */
const lifetimeOfRefused = async (node: NodeHandle, from: string) => {
  const started = Date.now()
  const client = await dialUnlessReset(node, from)
  if (client === undefined) return Date.now() - started
  await Promise.race([client.closed, sleep(5_000)])
  client.destroy()
  return (client.closedAt ?? Number.POSITIVE_INFINITY) - started
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** vmRssKiB reads a process's resident set size from /proc (Linux). */
const vmRssKiB = (pid: number): number => {
  const match = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))
  if (match === null) throw new Error(`no VmRSS in /proc/${pid}/status`)
  return Number(match[1])
}

/** seededBytes is `n` pseudo-random bytes from a seed (mulberry32): the same junk on every run. */
const seededBytes = (seed: number, n: number): Uint8Array => {
  let s = seed >>> 0
  const out = new Uint8Array(n)
  for (let i = 0; i < n; i++) {
    s = (s + 0x6d2b79f5) >>> 0
    let t = s
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    out[i] = (t ^ (t >>> 14)) >>> 24
  }
  return out
}

/** FLOOD_FRAMES bounds a flood; FLOOD_BATCH frames go out in one write. */
const FLOOD_FRAMES = 200_000
const FLOOD_BATCH = 1_000

/**
 * startFlood writes valid frames (pings and one-item tx invs, alternately) as fast as the socket takes
 * them, until FLOOD_FRAMES are out or the connection closes; `sent` counts the frames handed to it.
 */
const startFlood = (client: WireClient) => {
  const state = { sent: 0, done: Promise.resolve() }
  const batch = (from: number) => {
    const frames: Array<Uint8Array> = []
    for (let i = from; i < from + FLOOD_BATCH; i++) {
      const hash = new Uint8Array(32)
      new DataView(hash.buffer).setUint32(0, i)
      frames.push(
        client.encode(
          i % 2 === 0
            ? new PingMessage({ nonce: BigInt(i) })
            : new InvMessage({ items: [{ type: INV_TX, hash }] }),
        ),
      )
    }
    return Buffer.concat(frames)
  }
  state.done = (async () => {
    while (!client.isClosed && state.sent < FLOOD_FRAMES) {
      const accepted = client.write(batch(state.sent))
      state.sent += FLOOD_BATCH
      if (!accepted) await client.drained()
    }
  })()
  return state
}

interface ListedBan {
  readonly address: string
  readonly ban_created: number
  readonly banned_until: number
  readonly ban_duration: number
  readonly time_remaining: number
  readonly ban_reason: string
}
const listBanned = (node: NodeHandle) => rpcAsync(node, "listbanned") as Promise<Array<ListedBan>>

describe("spam filter and DoS hardening over real TCP (a real node process on loopback)", () => {
  it("junk from one address gets every connection closed and the address banned, while honest peers and RPC are served", async () => {
    const node = await spawnNode("junk")
    const junk = Array.from({ length: 10 }, (_, i) => seededBytes(0x5eed + i, 4_096))
    // junk it is: none starts with the network magic
    for (const bytes of junk) expect(bytes.subarray(0, 4)).not.toEqual(regtest.magic)

    const attack = Promise.all(
      junk.map(async (bytes) => {
        const client = await dialUnlessReset(node, BAD_HOST)
        if (client === undefined) return true
        client.write(bytes)
        await Promise.race([client.closed, sleep(10_000)])
        const closedByNode = client.isClosed
        client.destroy()
        return closedByNode
      }),
    )
    // while the junk arrives: an honest peer handshakes and pings, RPC answers
    const [closed, honest, rpc] = await Promise.all([
      attack,
      honestPeer(node),
      rpcTimed(node, "getblockchaininfo"),
    ])
    expect(closed).toEqual(Array(10).fill(true))
    expect(honest.handshakeMs).toBeLessThan(SERVED_WITHIN_MS)
    expect(honest.pingMs).toBeLessThan(SERVED_WITHIN_MS)
    expect(rpc.ms).toBeLessThan(SERVED_WITHIN_MS)
    expect(rpc.result).toMatchObject({ chain: "regtest", blocks: 0 })

    expect((await listBanned(node)).map((b) => b.address)).toEqual([`${BAD_HOST}/32`])
    // afterwards too: ping and RPC answered, an honest peer still connects, the junk sender is turned away
    const after = await honestPeer(node)
    expect(after.pingMs).toBeLessThan(SERVED_WITHIN_MS)
    expect((await rpcTimed(node, "getblockchaininfo")).ms).toBeLessThan(SERVED_WITHIN_MS)
    expect(await lifetimeOfRefused(node, BAD_HOST)).toBeLessThan(AT_ONCE_MS)
  })

  it("a frame header announcing 100 MB is refused before buffering: the connection is closed and memory stays flat", async () => {
    const node = await spawnNode("huge-frame")
    const pid = node.process.pid!
    const client = await dial(node, BAD_HOST)
    // a handshaken peer, so the length cap is the only reason left to refuse the frame
    await client.handshake(10_000)
    const rssBefore = vmRssKiB(pid)
    let rssPeak = rssBefore
    const sampler = setInterval(() => {
      rssPeak = Math.max(rssPeak, vmRssKiB(pid))
    }, 20)

    const ANNOUNCED = 100_000_000
    const header = new Uint8Array(FRAME_HEADER_BYTES)
    header.set(regtest.magic, 0)
    header.set(new TextEncoder().encode("block"), 4)
    new DataView(header.buffer).setUint32(16, ANNOUNCED, true)
    client.write(header)
    // then keep sending the promised payload, as a memory-exhaustion attacker would
    const chunk = new Uint8Array(64 * 1024).fill(0xab)
    const deadline = Date.now() + 15_000
    let offered = 0
    while (!client.isClosed && offered < ANNOUNCED && Date.now() < deadline) {
      offered += chunk.length
      if (!client.write(chunk)) await client.drained()
    }
    await Promise.race([client.closed, sleep(5_000)])
    clearInterval(sampler)
    rssPeak = Math.max(rssPeak, vmRssKiB(pid))

    // the 100 MB were never held: the node's resident memory barely moved
    const growthMiB = (rssPeak - rssBefore) / 1024
    expect(growthMiB).toBeLessThan(32)
    expect(client.isClosed).toBe(true)
    expect(client.bytesWritten).toBeLessThan(ANNOUNCED)
    const rpc = await rpcTimed(node, "getblockcount")
    expect(rpc).toMatchObject({ result: 0 })
    expect(rpc.ms).toBeLessThan(SERVED_WITHIN_MS)
  })

  it("40 idle sockets that never say version are dropped after the handshake timeout, not before", async () => {
    const node = await spawnNode("idle", {
      limits: { handshakeTimeoutSeconds: 2, maxInbound: 64 },
      spam: { maxInboundPerIp: 64, maxInboundPer24: 64, maxInboundPer16: 64 },
    })
    const clients = await Promise.all(Array.from({ length: 40 }, () => dial(node, HONEST_HOST)))
    try {
      await Promise.race([Promise.all(clients.map((c) => c.closed)), sleep(15_000)])
      const lifetimes = clients.map((c) => (c.isClosed ? c.lifetimeMs : Number.POSITIVE_INFINITY))
      expect(lifetimes.filter((ms) => ms === Number.POSITIVE_INFINITY)).toHaveLength(0)
      expect(Math.min(...lifetimes)).toBeGreaterThanOrEqual(1_900)
      expect(Math.max(...lifetimes)).toBeLessThan(10_000)
    } finally {
      for (const c of clients) c.destroy()
    }
  })

  it("a ban set by the operator survives a restart, and clearbanned lifts it", async () => {
    let node = await spawnNode("restart")
    const set = await cliAsync(node, "setban", BAD_HOST, "add", "3600")
    expect(set.status, set.stderr).toBe(0)
    const [ban] = await listBanned(node)
    expect(ban).toMatchObject({ address: `${BAD_HOST}/32`, ban_duration: 3600 })
    expect(ban!.banned_until - ban!.ban_created).toBe(3600)

    expect(await rpcAsync(node, "stop")).toBe("fibercoin stopping")
    expect(await node.exited).toBe(0)
    node = await startNode(work.running, node.dataDir, node.rpc, node.p2p)

    const [kept] = await listBanned(node)
    expect(kept).toMatchObject({ address: `${BAD_HOST}/32`, banned_until: ban!.banned_until })
    expect(await lifetimeOfRefused(node, BAD_HOST)).toBeLessThan(AT_ONCE_MS)
    await honestPeer(node)

    expect((await cliAsync(node, "clearbanned")).status).toBe(0)
    expect(await listBanned(node)).toEqual([])
    const released = await dial(node, BAD_HOST)
    await released.handshake(10_000)
    released.destroy()
  })

  it("a peer flooding pings and invs as fast as it can does not starve honest peers or RPC", async () => {
    // buckets raised so the flooder is served rather than banned: the node must stay fair under load
    const node = await spawnNode("flood", {
      spam: {
        messages: { rate: 1_000_000, burst: 1_000_000 },
        inv: { rate: 1_000_000, burst: 1_000_000 },
      },
    })
    const flooder = await dial(node, BAD_HOST)
    await flooder.handshake(10_000)
    const flood = startFlood(flooder)
    try {
      // let the flood get going, then measure an honest peer and RPC while it lasts
      await eventually("the flood under way", 10_000, async () => flood.sent >= 20_000)
      const [honest, rpc] = await Promise.all([honestPeer(node), rpcTimed(node, "getblockcount")])
      // the node was still working through the flood: not every ping sent so far had its pong yet
      expect(flooder.isClosed).toBe(false)
      expect(flooder.received.get("pong") ?? 0).toBeLessThan(flood.sent / 2)
      expect(honest.handshakeMs).toBeLessThan(SERVED_WITHIN_MS)
      expect(honest.pingMs).toBeLessThan(SERVED_WITHIN_MS)
      expect(rpc).toMatchObject({ result: 0 })
      expect(rpc.ms).toBeLessThan(SERVED_WITHIN_MS)
    } finally {
      flooder.destroy()
      await flood.done
    }
  })

  it("under the default policy a flooder is cut off and banned after its burst, and honest peers are served meanwhile", async () => {
    const node = await spawnNode("flood-default")
    const flooder = await dial(node, BAD_HOST)
    await flooder.handshake(10_000)
    const flood = startFlood(flooder)
    const [honest, rpc] = await Promise.all([honestPeer(node), rpcTimed(node, "getblockcount")])
    await flood.done
    await Promise.race([flooder.closed, sleep(10_000)])

    expect(flooder.isClosed).toBe(true)
    // the message bucket's burst (5,000) and a little refill were answered, the rest dropped
    expect(flooder.received.get("pong") ?? 0).toBeLessThan(10_000)
    expect((await listBanned(node)).map((b) => b.address)).toEqual([`${BAD_HOST}/32`])
    expect(honest.pingMs).toBeLessThan(SERVED_WITHIN_MS)
    expect(rpc.ms).toBeLessThan(SERVED_WITHIN_MS)
    flooder.destroy()
  })
})
