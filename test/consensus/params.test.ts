import { Either } from "effect"
import { describe, expect, it } from "vitest"
import { checkBlock, contextualCheckBlock, headerHash } from "../../src/consensus/checkBlock.js"
import { isCoinbase } from "../../src/consensus/checkTx.js"
import { networks } from "../../src/consensus/params.js"
import { blockWork } from "../../src/consensus/pow.js"
import { toHex } from "../../src/schema/hex.js"

const TWO_256 = 1n << 256n

describe("network parameters", () => {
  it.each(Object.values(networks))(
    "$name genesis passes the block checks and commits to height 0",
    (params) => {
      expect(Either.isRight(checkBlock(params.genesis, params))).toBe(true)
      expect(Either.isRight(contextualCheckBlock(params.genesis, 0, 0))).toBe(true)
      expect(isCoinbase(params.genesis.txs[0]!)).toBe(true)
      expect(toHex(headerHash(params.genesis.header))).toBe(toHex(params.genesisHash))
    },
  )

  it("genesis hashes are fixed: changing one is a new network", () => {
    expect(toHex(networks.regtest.genesisHash)).toBe(
      "2277affd606f08c2f98fd5bb88beb4776878c4ed30d42713775ff1503d54e4e7",
    )
    expect(toHex(networks.testnet.genesisHash)).toBe(
      "00000ea08d9209a750bd68e1f436d5fc16f60d01ebdbb656b702db701c88e544",
    )
    expect(toHex(networks.mainnet.genesisHash)).toBe(
      "00000a7594eb484f7bdfd56070aee0a766ac59b1da75829bd4bca504a426b7e6",
    )
  })

  it("match the contract's ports and address prefixes", () => {
    const table = Object.values(networks).map((p) => [p.name, p.p2pPort, p.rpcPort, p.udpPort, p.hrp])
    expect(table).toEqual([
      ["regtest", 18444, 18443, 18445, "fcrt"],
      ["testnet", 28444, 28443, 28445, "tfc"],
      ["mainnet", 8888, 8887, 8889, "fc"],
    ])
  })

  it("regtest halves every 150 blocks and does not retarget; the others retarget", () => {
    expect(networks.regtest.halvingInterval).toBe(150)
    expect(networks.regtest.noRetargeting).toBe(true)
    expect(networks.testnet.noRetargeting).toBe(false)
    expect(networks.mainnet.noRetargeting).toBe(false)
  })

  it("magics are distinct so a frame from another network is recognised", () => {
    const magics = new Set(Object.values(networks).map((p) => toHex(p.magic)))
    expect(magics.size).toBe(3)
  })

  it.each(Object.values(networks))(
    "$name retarget arithmetic cannot leave 256 bits (powLimit < 2^256 / (4 × timespan))",
    (p) => {
      if (p.noRetargeting) return expect(blockWork(p.powLimitBits) > 0n).toBe(true)
      expect(p.powLimit < TWO_256 / BigInt(4 * p.targetSpacingSeconds * p.retargetInterval)).toBe(true)
    },
  )
})
