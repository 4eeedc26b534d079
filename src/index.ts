/**
 * fibercoin as a library: the schemas and binary codecs, the pure consensus rules, the service layers
 * (signatures, verification pool, chain storage), the actors, and `nodeLayer(config)`: a whole node to
 * embed in another program (see examples/embedded.ts).
 */

export * as Actor from "./actors/Actor.js"
export {
  Chain,
  type ChainConfig,
  ChainCorrupt,
  ChainEvent,
  type ChainServiceApi,
  defaultChainConfig,
  layer as layerChain,
  type SubmitResult,
  type TipInfo,
} from "./actors/Chain.js"
export {
  type AcceptResult,
  Mempool,
  type MempoolEntry,
  MempoolEvent,
  type MempoolInfo,
  type MempoolPolicy,
  MempoolReject,
  type MempoolService,
} from "./actors/Mempool.js"
export { Miner, MinerError, type MinerInfo, type MinerService } from "./actors/Miner.js"
export { Wallet, WalletError, type WalletService } from "./actors/Wallet.js"
export * from "./consensus/address.js"
export * from "./consensus/assemble.js"
export * from "./consensus/checkBlock.js"
export * from "./consensus/checkTx.js"
export * from "./consensus/errors.js"
export * from "./consensus/hash.js"
export * from "./consensus/merkle.js"
export * from "./consensus/muhash.js"
export * from "./consensus/params.js"
export * from "./consensus/pow.js"
export * from "./consensus/sighash.js"
export * from "./consensus/signature.js"
export * from "./consensus/utxo.js"
export * from "./layers/ChainStore.js"
export * from "./layers/ChainStoreLmdb.js"
export * from "./layers/Signatures.js"
export * from "./layers/SigVerifier.js"
export { layer as nodeLayer, run as runNode, services as nodeServices } from "./node/Node.js"
export * from "./schema/binary.js"
export * from "./schema/block.js"
export * from "./schema/blockFile.js"
export * from "./schema/chain.js"
export * from "./schema/coin.js"
export {
  ConfigError,
  ConfigFile,
  checkConfig,
  decodeConfigFile,
  type HostPort,
  type NodeConfig,
  parseHostPort,
  resolveConfig,
} from "./schema/config.js"
export * from "./schema/DecodeError.js"
export * from "./schema/hex.js"
export * from "./schema/primitives.js"
export * from "./schema/tx.js"
export { VERSION } from "./version.js"
