import type { ChildProcess } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import {
  createLab,
  type Lab,
  labAddresses,
  nodeScript,
  removeStaleLabs,
  requireTools,
  startBackground,
  tcpListenScript,
  tcpProbeScript,
  udpAskScript,
  udpEchoServerScript,
} from "./netns.js"
import { rpcWrappedAsync, startWrappedNode, type WrappedNode } from "./processes.js"

/**
 * Issue 8's real-network test: two nodes, each behind its own Linux NAT (iptables MASQUERADE in a
 * router namespace), and one public rendezvous node R. The NAT'd nodes learn their public endpoints
 * from R, punch through both NATs, become peers over a UDP session and sync blocks and a payment.
 * They have no TCP peers at all, so whatever they sync came over UDP. Where the host cannot build
 * the namespaces (not root, `ip` or `iptables` missing) the test fails, saying what is missing.
 * The NAT routers also drop unsolicited WAN input, as home routers do (see `createLab` for why a
 * bare MASQUERADE router deadlocks simultaneous punching). A and B log at debug level: a failure
 * prints the last 80 lines of each node's output, which then show the dial and the punch.
 */

const COIN = 100_000_000
/** in each namespace the regtest default ports are free: every namespace has its own stack */
const RPC_PORT = 18443
const P2P_PORT = 18444
const UDP_PORT = 18445
const rendezvousEndpoint = `${labAddresses.rendezvous}:${UDP_PORT}`

const dir = mkdtempSync(join(tmpdir(), "fibercoin-nat-"))
const running: Array<ChildProcess> = []
const background: Array<ChildProcess> = []
let lab: Lab | undefined
const nodes: { r?: WrappedNode; a?: WrappedNode; b?: WrappedNode } = {}
/** failed names the first step that failed: the steps after it build on it, so they fail at once */
let failed: string | undefined

afterAll(() => {
  for (const p of [...running, ...background]) p.kill("SIGKILL")
  const failures = lab?.destroy() ?? []
  rmSync(dir, { recursive: true, force: true })
  if (failures.length > 0) throw new Error(`could not delete the lab's namespaces: ${failures.join("; ")}`)
})

/** logs is the last 80 lines of each node's output, for a failure message. */
const logs = () =>
  Object.entries(nodes)
    .map(
      ([name, node]) =>
        `---- node ${name} (last 80 lines) ----\n${node.output.split("\n").slice(-80).join("\n")}`,
    )
    .join("\n")

/** step runs a part of the scenario; on failure its error carries every node's log. */
const step = async <A>(what: string, body: () => Promise<A>, always = false): Promise<A> => {
  if (failed !== undefined && !always) throw new Error(`${what}: not run, an earlier step failed (${failed})`)
  try {
    return await body()
  } catch (e) {
    failed = what
    const error = e as Error
    error.message = `${what}: ${error.message}\n${logs()}`
    throw error
  }
}

/** until polls `check` every 200 ms for at most `ms`, failing with `what` and the last value seen. */
const until = async <A>(
  what: string,
  ms: number,
  read: () => Promise<A>,
  ok: (a: A) => boolean,
): Promise<A> => {
  const started = Date.now()
  const deadline = started + ms
  let last: A | undefined
  let lastError: unknown
  while (Date.now() < deadline) {
    try {
      last = await read()
      if (ok(last)) {
        console.log(`nat e2e: ${what} after ${Date.now() - started} ms`)
        return last
      }
    } catch (e) {
      lastError = e
    }
    await new Promise((r) => setTimeout(r, 200))
  }
  throw new Error(
    `timed out after ${ms} ms waiting for ${what}; last seen: ${JSON.stringify(last)}${lastError === undefined ? "" : `; last error: ${(lastError as Error).message}`}`,
  )
}

const need = <A>(node: A | undefined, name: string): A => {
  if (node === undefined) throw new Error(`node ${name} is not running: an earlier step failed`)
  return node
}

interface NetworkInfo {
  nat: string
  publicaddress?: { address: string; port: number }
  nodekey?: string
  udpaddresses?: Array<string>
}
interface PeerInfo {
  addr: string
  inbound: boolean
  transport: string
}

const networkInfo = (node: WrappedNode) => rpcWrappedAsync(node, "getnetworkinfo") as Promise<NetworkInfo>
const peerInfo = (node: WrappedNode) => rpcWrappedAsync(node, "getpeerinfo") as Promise<Array<PeerInfo>>
const best = (node: WrappedNode) => rpcWrappedAsync(node, "getbestblockhash") as Promise<string>

describe("NAT traversal over real Linux NATs (network namespaces, iptables MASQUERADE)", {
  timeout: 120_000,
}, () => {
  it("the host builds two NATs and a public network, and the NATs isolate their hosts", () =>
    step("building the lab", async () => {
      const tools = requireTools()
      removeStaleLabs(tools)
      lab = createLab(tools)
      const l = lab

      // R's side of the internet sees each host at its NAT's WAN address, not its private one
      background.push(await startBackground(l, l.pub, udpEchoServerScript, [labAddresses.rendezvous, "9999"]))
      const seenA = await nodeScript(l, l.hostA, udpAskScript, [labAddresses.rendezvous, "9999"], 5_000)
      const seenB = await nodeScript(l, l.hostB, udpAskScript, [labAddresses.rendezvous, "9999"], 5_000)
      expect(seenA.stdout.trim()).toMatch(new RegExp(`^${labAddresses.wanA.replaceAll(".", "\\.")}:\\d+$`))
      expect(seenB.stdout.trim()).toMatch(new RegExp(`^${labAddresses.wanB.replaceAll(".", "\\.")}:\\d+$`))

      // hostB listens; its own router reaches it, hostA reaches neither its private address nor,
      // unsolicited, the same port on its NAT's public address
      background.push(await startBackground(l, l.hostB, tcpListenScript, [labAddresses.hostB, "7000"]))
      const fromRouter = await nodeScript(l, l.natB, tcpProbeScript, [labAddresses.hostB, "7000"], 3_000)
      expect(fromRouter.stdout.trim()).toBe("connected")
      const fromA = await nodeScript(l, l.hostA, tcpProbeScript, [labAddresses.hostB, "7000"], 3_000)
      expect(fromA.stdout.trim()).not.toBe("connected")
      const throughNat = await nodeScript(l, l.hostA, tcpProbeScript, [labAddresses.wanB, "7000"], 1_500)
      expect(throughNat.stdout.trim()).not.toBe("connected")
      for (const p of background.splice(0)) p.kill("SIGKILL")
    }))

  it("the NAT'd nodes learn their public endpoints from the rendezvous node and register there", async () => {
    const l = need(lab, "lab")
    const start = (ns: string, name: string, host: string, extra: ReadonlyArray<string>) =>
      startWrappedNode(running, l.exec(ns, []), {
        dataDir: join(dir, name),
        rpc: RPC_PORT,
        listen: `${host}:${P2P_PORT}`,
        udp: `${host}:${UDP_PORT}`,
        extra,
      })
    nodes.r = await step("starting R", () => start(l.pub, "r", labAddresses.rendezvous, []))
    nodes.a = await step("starting A", () =>
      start(l.hostA, "a", labAddresses.hostA, ["--rendezvous", rendezvousEndpoint, "--log-level", "debug"]),
    )
    nodes.b = await step("starting B", () =>
      start(l.hostB, "b", labAddresses.hostB, ["--rendezvous", rendezvousEndpoint, "--log-level", "debug"]),
    )
    const { a, b } = nodes
    await step("NAT discovery", async () => {
      for (const [node, wan] of [
        [a, labAddresses.wanA],
        [b, labAddresses.wanB],
      ] as const) {
        const info = await until(
          `${wan}'s node to be registered at R`,
          20_000,
          () => networkInfo(node),
          (i) => (i.udpaddresses?.length ?? 0) > 0,
        )
        expect(info.nat).toBe("cone")
        // MASQUERADE keeps the port when it is free, but the node must not assume it
        expect(info.publicaddress?.address).toBe(wan)
        expect(info.publicaddress?.port).toBeTypeOf("number")
        expect(info.nodekey).toMatch(/^[0-9a-f]{64}$/)
        expect(info.udpaddresses).toEqual([`udp:${info.nodekey}@${rendezvousEndpoint}`])
      }
    })
  })

  it("B dials A through R by its udp address: a punched session, peers over UDP, and A's blocks sync", async () => {
    const a = need(nodes.a, "A")
    const b = need(nodes.b, "B")
    await step("punch, connect and sync", async () => {
      const addressA = (await rpcWrappedAsync(a, "getnewaddress")) as string
      const mined = (await rpcWrappedAsync(a, "generatetoaddress", "101", addressA)) as Array<string>
      expect(mined).toHaveLength(101)
      const udpAddressA = (await networkInfo(a)).udpaddresses![0]!
      // no peers yet: neither node has any TCP address to dial
      expect(await peerInfo(a)).toEqual([])
      expect(await peerInfo(b)).toEqual([])

      await rpcWrappedAsync(b, "addnode", udpAddressA, "add")
      const peersB = await until(
        "B to have A as a peer",
        20_000,
        () => peerInfo(b),
        (p) => p.length > 0,
      )
      expect(peersB).toHaveLength(1)
      expect(peersB[0]).toMatchObject({ inbound: false, transport: "udp" })
      const peersA = await until(
        "A to have B as a peer",
        10_000,
        () => peerInfo(a),
        (p) => p.length > 0,
      )
      expect(peersA).toHaveLength(1)
      expect(peersA[0]).toMatchObject({ inbound: true, transport: "udp" })
      // A sees B where B's NAT maps it: the datagrams came through both NATs
      expect(peersA[0]!.addr.startsWith(`${labAddresses.wanB}:`)).toBe(true)

      await until(
        "B's tip to be A's",
        30_000,
        () => best(b),
        (h) => h === mined[100],
      )
      expect(await rpcWrappedAsync(b, "getblockcount")).toBe(101)
    })
  })

  it("a payment from A relays to B over UDP and confirms in A's next block", async () => {
    const a = need(nodes.a, "A")
    const b = need(nodes.b, "B")
    await step("payment", async () => {
      const addressB = (await rpcWrappedAsync(b, "getnewaddress")) as string
      const txid = (await rpcWrappedAsync(a, "sendtoaddress", addressB, String(5 * COIN))) as string
      await until(
        "the payment in B's mempool",
        20_000,
        () => rpcWrappedAsync(b, "getrawmempool") as Promise<Array<string>>,
        (m) => m.includes(txid),
      )
      const addressA = (await rpcWrappedAsync(a, "getnewaddress")) as string
      const [block] = (await rpcWrappedAsync(a, "generatetoaddress", "1", addressA)) as Array<string>
      await until(
        "B's tip to be A's new block",
        20_000,
        () => best(b),
        (h) => h === block,
      )
      expect(await rpcWrappedAsync(b, "getbalance")).toBe(5 * COIN)
      const unspent = (await rpcWrappedAsync(b, "listunspent")) as Array<{
        txid: string
        amount: number
        confirmations: number
      }>
      expect(unspent).toEqual([expect.objectContaining({ txid, amount: 5 * COIN, confirmations: 1 })])
      expect(await rpcWrappedAsync(b, "getrawmempool")).toEqual([])
      // still one peer each, over UDP only; R introduced them and relayed none of it
      expect((await peerInfo(b)).map((p) => p.transport)).toEqual(["udp"])
      expect((await peerInfo(a)).map((p) => p.transport)).toEqual(["udp"])
      expect(await peerInfo(need(nodes.r, "R"))).toEqual([])
    })
  })

  it("every node stops on SIGTERM with exit code 0", async () => {
    const all = [need(nodes.a, "A"), need(nodes.b, "B"), need(nodes.r, "R")]
    await step(
      "shutdown",
      async () => {
        for (const node of all) node.process.kill("SIGTERM")
        const codes = await Promise.race([
          Promise.all(all.map((n) => n.exited)),
          new Promise<string>((r) => setTimeout(() => r("still running after 15 s"), 15_000)),
        ])
        expect(codes).toEqual([0, 0, 0])
      },
      true,
    )
  })
})
