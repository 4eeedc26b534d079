import { Either } from "effect"
import { describe, expect, it } from "vitest"
import { defaultSpamPolicy } from "../../src/actors/spamPolicy.js"
import { spamPolicyOf } from "../../src/node/Node.js"
import {
  checkConfig,
  decodeConfigFile,
  parseHostPort,
  parsePeerAddress,
  peerAddressText,
  resolveConfig,
} from "../../src/schema/config.js"

const decode = (json: unknown) => decodeConfigFile(JSON.stringify(json), "node.json")
const errorOf = (json: unknown) => {
  const r = decode(json)
  return Either.isLeft(r) ? r.left.message : "accepted"
}

describe("node.json", () => {
  it("the embedded default is a regtest miner with RPC on 127.0.0.1:18443 and data in ./.fibercoin", () => {
    const c = resolveConfig({}, {})
    expect(c).toMatchObject({
      network: "regtest",
      role: "miner",
      dataDir: "./.fibercoin",
      storage: "lmdb",
      rpc: { listen: { host: "127.0.0.1", port: 18443 } },
      listen: { host: "127.0.0.1", port: 18444 },
      udp: { host: "127.0.0.1", port: 18445 },
      mining: { enabled: true, minTxs: 0, workers: 1 },
      limits: {
        maxInbound: 117,
        maxOutbound: 8,
        maxMempoolBytes: 300_000_000,
        handshakeTimeoutSeconds: 60,
        banSeconds: 86_400,
      },
    })
  })

  it("defaults follow the network: testnet ports, full role, mining off", () => {
    const c = resolveConfig({ network: "testnet" }, {})
    expect([c.listen.port, c.rpc.listen.port, c.udp.port, c.role, c.mining.enabled]).toEqual([
      28444,
      28443,
      28445,
      "full",
      false,
    ])
  })

  it("decodes the contract's example file", () => {
    const r = decode({
      network: "regtest",
      dataDir: "./.fibercoin",
      role: "miner",
      storage: "lmdb",
      listen: "127.0.0.1:18444",
      rpc: { listen: "127.0.0.1:18443", user: "u", password: "p" },
      connect: [],
      addnode: ["127.0.0.1:18544"],
      udp: "127.0.0.1:18445",
      rendezvous: ["127.0.0.1:18545"],
      mining: { enabled: true, address: "fcrt1p", minTxs: 0, workers: 1 },
      limits: {
        maxInbound: 117,
        maxOutbound: 8,
        maxMempoolBytes: 300000000,
        handshakeTimeoutSeconds: 60,
        banSeconds: 86400,
      },
      log: { level: "info", format: "pretty" },
    })
    expect(Either.isRight(r)).toBe(true)
  })

  it("an unknown key is an error that names it", () => {
    expect(errorOf({ netwrok: "regtest" })).toContain("netwrok")
    expect(errorOf({ rpc: { port: 1 } })).toMatch(/rpc[\s\S]*port/)
  })

  it("a wrong type names the key and what was expected", () => {
    const m = errorOf({ mining: { minTxs: "two" } })
    expect(m).toContain("minTxs")
    expect(m).toContain("number")
    expect(errorOf({ network: "moonnet" })).toMatch(/network[\s\S]*"regtest"/)
  })

  it("a malformed endpoint says what form it expects", () => {
    expect(errorOf({ listen: "localhost" })).toContain('expected "host:port"')
    expect(errorOf({ rpc: { listen: "127.0.0.1:99999" } })).toContain("listen")
    expect(parseHostPort("[::1]:18444")).toEqual({ host: "::1", port: 18444 })
  })

  it("text that is not JSON is refused with the parser's message", () => {
    const r = decodeConfigFile("{ network: regtest", "x.json")
    expect(Either.isLeft(r) && r.left.message).toMatch(/^x\.json: not JSON/)
  })

  it("flags override the file; addnode accumulates", () => {
    const c = resolveConfig(
      { network: "regtest", dataDir: "a", addnode: [{ host: "127.0.0.1", port: 1 }] },
      { dataDir: "b", addnode: [{ host: "127.0.0.1", port: 2 }], reindex: true },
    )
    expect([c.dataDir, c.addnode.map((a) => a.port), c.reindex]).toEqual(["b", [1, 2], true])
  })

  it("refuses an rpc user without a password, and a mining light node", () => {
    expect(Either.isLeft(checkConfig(resolveConfig({ rpc: { user: "u" } }, {})))).toBe(true)
    expect(Either.isLeft(checkConfig(resolveConfig({ role: "light", mining: { enabled: true } }, {})))).toBe(
      true,
    )
  })

  it("the spam section overrides the policy's defaults key by key; banSeconds comes from limits", () => {
    const file = decode({
      spam: { messages: { rate: 50, burst: 100 }, maxInboundPerIp: 2 },
      limits: { banSeconds: 600 },
    })
    if (Either.isLeft(file)) throw new Error(file.left.message)
    const policy = spamPolicyOf(resolveConfig(file.right, {}))
    expect(policy).toEqual({
      ...defaultSpamPolicy,
      messages: { rate: 50, burst: 100 },
      maxInboundPerIp: 2,
      banSeconds: 600,
    })
    expect(spamPolicyOf(resolveConfig({}, {}))).toEqual(defaultSpamPolicy)
  })

  it("spam.datagrams reaches the policy; the registration caps stay out of it (the Rendezvous takes them)", () => {
    const file = decode({
      spam: { datagrams: { rate: 1, burst: 2 }, maxRegistrations: 7, maxRegistrationsPerIp: 1 },
    })
    if (Either.isLeft(file)) throw new Error(file.left.message)
    const config = resolveConfig(file.right, {})
    expect(config.spam).toMatchObject({ maxRegistrations: 7, maxRegistrationsPerIp: 1 })
    expect(spamPolicyOf(config)).toEqual({ ...defaultSpamPolicy, datagrams: { rate: 1, burst: 2 } })
    expect(errorOf({ spam: { datagrams: { rate: 5 } } })).toMatch(/datagrams[\s\S]*burst/)
    expect(errorOf({ spam: { maxRegistrationsPerIp: -1 } })).toMatch(/maxRegistrationsPerIp/)
    expect(errorOf({ spam: { maxRegistrations: 1.5 } })).toMatch(/maxRegistrations/)
  })

  it("a bad spam key is refused, naming it", () => {
    expect(errorOf({ spam: { messages: { rate: -1, burst: 5 } } })).toMatch(/messages[\s\S]*rate/)
    expect(errorOf({ spam: { inv: { rate: 5 } } })).toMatch(/inv[\s\S]*burst/)
    expect(errorOf({ spam: { banThreshold: 0 } })).toMatch(/banThreshold/)
    expect(errorOf({ spam: { floods: 1 } })).toMatch(/floods/)
  })

  it("addnode and connect take udp:<node key>@server for a NAT'd node, and refuse a malformed one naming the key", () => {
    const key = "ab".repeat(32)
    const file = decode({
      addnode: [`udp:${key}@192.0.2.1:18445`, "10.0.0.1:18444"],
      connect: [`udp:${key}@[::1]:9`],
    })
    if (Either.isLeft(file)) throw new Error(file.left.message)
    const c = resolveConfig(file.right, {})
    expect(c.addnode.map(peerAddressText)).toEqual([`udp:${key}@192.0.2.1:18445`, "10.0.0.1:18444"])
    expect(c.addnode[0]!.nodeKey).toEqual(new Uint8Array(32).fill(0xab))
    expect(c.addnode[1]!.nodeKey).toBeUndefined()
    expect(peerAddressText(c.connect[0]!)).toBe(`udp:${key}@[::1]:9`)
    // a short key, a non-hex key, no server, a bad server port
    for (const bad of [
      `udp:${key.slice(2)}@1.2.3.4:1`,
      `udp:${"zz".repeat(32)}@1.2.3.4:1`,
      `udp:${key}`,
      `udp:${key}@1.2.3.4:70000`,
    ]) {
      expect(parsePeerAddress(bad)).toBeUndefined()
      expect(errorOf({ addnode: [bad] })).toMatch(/addnode[\s\S]*udp:<64-hex node key>@host:port/)
    }
  })
})
