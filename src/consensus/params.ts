import type { Block } from "../schema/block.js"
import type { Amount, BlockHash, PublicKey, TxId } from "../schema/primitives.js"
import type { Tx } from "../schema/tx.js"
import { encodeTx } from "../schema/tx.js"
import { headerHash } from "./checkBlock.js"
import { NULL_INDEX } from "./checkTx.js"
import { txidOf } from "./hash.js"
import { merkleRoot } from "./merkle.js"
import { blockSubsidy, compactToTarget, type PowParams } from "./pow.js"
import type { AssumeUtxo } from "./snapshot.js"

/** NetworkName is one of the three chains a node can run. */
export type NetworkName = "regtest" | "testnet" | "mainnet"

/** NetworkParams fixes a chain: wire magic, default ports, address prefix, and every consensus constant. */
export interface NetworkParams extends PowParams {
  readonly name: NetworkName
  /** 4 bytes that start every P2P frame; a frame with another magic is from another network */
  readonly magic: Uint8Array
  readonly p2pPort: number
  readonly rpcPort: number
  readonly udpPort: number
  /** bech32m human-readable prefix of addresses */
  readonly hrp: string
  /** blocks between subsidy halvings */
  readonly halvingInterval: number
  /** generatetoaddress is allowed (regtest only) */
  readonly mineBlocksOnDemand: boolean
  readonly genesis: Block
  readonly genesisHash: BlockHash
  /**
   * assumeutxo lists the UTXO snapshots a node may load without an operator's word (issue 9; Core's
   * m_assumeutxo_data): each pins a base block, its height, the set's MuHash and the snapshot id,
   * reviewed like any consensus constant. Empty until a network has history worth skipping.
   */
  readonly assumeutxo: ReadonlyArray<AssumeUtxo>
}

/**
 * GENESIS_KEY is BIP341's NUMS point H (nobody knows its secret key): the genesis coinbase pays it,
 * and, as in Bitcoin, the genesis coinbase is never added to the UTXO set.
 */
const GENESIS_KEY = Uint8Array.from(
  Buffer.from("50929b74c1a04954b78b4b6035e97a5e078a5a0f28ec96d547bfee9ace803ac0", "hex"),
) as PublicKey

const GENESIS_MESSAGE = "fibercoin genesis 2026-11-25: correct first, fast second"

/** makeGenesis builds a genesis block: a coinbase committing to height 0 and a message, and its header. */
export const makeGenesis = (time: number, bits: number, nonce: number, halvingInterval: number): Block => {
  const message = new TextEncoder().encode(GENESIS_MESSAGE)
  const witness = new Uint8Array(4 + message.length)
  witness.set(message, 4)
  const coinbase: Tx = {
    version: 1,
    inputs: [{ prevout: { txid: new Uint8Array(32) as TxId, index: NULL_INDEX }, witness }],
    outputs: [{ value: blockSubsidy(0, halvingInterval) as Amount, pubkey: GENESIS_KEY }],
    lockTime: 0,
  }
  const { root } = merkleRoot([txidOf(encodeTx(coinbase))])
  return {
    header: { version: 1, prev: new Uint8Array(32) as BlockHash, merkleRoot: root, time, bits, nonce },
    txs: [coinbase],
  }
}

const network = (
  base: Omit<NetworkParams, "genesis" | "genesisHash" | "powLimit">,
  genesisTime: number,
  genesisNonce: number,
): NetworkParams => {
  const genesis = makeGenesis(genesisTime, base.powLimitBits, genesisNonce, base.halvingInterval)
  return {
    ...base,
    powLimit: compactToTarget(base.powLimitBits).target,
    genesis,
    genesisHash: headerHash(genesis.header),
  }
}

/** regtest: trivial proof of work (about every other hash is a block), no retargeting, halving every 150 blocks. */
export const regtest: NetworkParams = network(
  {
    name: "regtest",
    magic: Uint8Array.of(0xfa, 0xbf, 0xb5, 0xda),
    p2pPort: 18444,
    rpcPort: 18443,
    udpPort: 18445,
    hrp: "fcrt",
    powLimitBits: 0x207fffff,
    targetSpacingSeconds: 60,
    retargetInterval: 1440,
    noRetargeting: true,
    halvingInterval: 150,
    mineBlocksOnDemand: true,
    assumeutxo: [],
  },
  1_795_564_800,
  1,
)

/**
 * publicConsensus is what testnet and mainnet share: one-minute blocks, a daily retarget with the ×4
 * clamp, halving every 210,000 blocks, and a pow limit of 2^236, which keeps Core's invariant
 * powLimit < 2^256 / (4 × timespan) so retarget arithmetic stays within 256 bits.
 */
const publicConsensus = {
  powLimitBits: 0x1e0fffff,
  targetSpacingSeconds: 60,
  retargetInterval: 1440,
  noRetargeting: false,
  halvingInterval: 210_000,
  mineBlocksOnDemand: false,
} as const

/**
 * testnet: one-minute blocks, retargeting daily (×4 clamp), halving every 210,000 blocks. The pow limit
 * (2^236) keeps Core's invariant powLimit < 2^256 / (4 × timespan), so retarget arithmetic stays in 256 bits.
 */
export const testnet: NetworkParams = network(
  {
    name: "testnet",
    magic: Uint8Array.of(0x0b, 0x11, 0x09, 0x07),
    p2pPort: 28444,
    rpcPort: 28443,
    udpPort: 28445,
    hrp: "tfc",
    ...publicConsensus,
    assumeutxo: [],
  },
  1_795_564_801,
  1_541_528,
)

/** mainnet: as testnet (own magic, ports, prefix and genesis). */
export const mainnet: NetworkParams = network(
  {
    name: "mainnet",
    magic: Uint8Array.of(0xf1, 0xbe, 0xc0, 0x1d),
    p2pPort: 8888,
    rpcPort: 8887,
    udpPort: 8889,
    hrp: "fc",
    ...publicConsensus,
    assumeutxo: [],
  },
  1_795_564_800,
  4_424,
)

/** networks by name. */
export const networks: Readonly<Record<NetworkName, NetworkParams>> = { regtest, testnet, mainnet }
