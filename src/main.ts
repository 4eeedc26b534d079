#!/usr/bin/env node
/**
 * fibercoin's node program. The node itself (actors, storage, RPC, P2P) arrives with its issues;
 * until then this prints what exists: the networks, their genesis blocks re-validated by the
 * consensus rules at start, and the signature backend this machine would use. `--help` prints usage;
 * any other argument is a usage error (exit 2), as the contract says of bad flags.
 */
import { Either } from "effect"
import { checkBlock, contextualCheckBlock } from "./consensus/checkBlock.js"
import { networks } from "./consensus/params.js"
import { loadDefaultBackend } from "./layers/Signatures.js"
import { toHex } from "./schema/hex.js"
import { VERSION } from "./version.js"

const usage = `fibercoin ${VERSION}

usage: node dist/main.js [--help]

This build holds fibercoin's consensus core (schemas, codecs, rules, signatures). The running node
(config, storage, P2P, RPC, mining) is not built yet, so there are no other flags.`

const main = (args: ReadonlyArray<string>): number => {
  if (args.includes("--help") || args.includes("-h")) {
    console.log(usage)
    return 0
  }
  if (args.length > 0) {
    console.error(`unknown argument ${JSON.stringify(args[0])}: this build has no node yet (see --help)`)
    return 2
  }
  const { backend, fallbackReason } = loadDefaultBackend()
  console.log(`fibercoin ${VERSION}: consensus core only; the node is not built yet`)
  console.log(
    `signatures: ${backend.name}${fallbackReason === undefined ? "" : ` (fallback: ${fallbackReason})`}`,
  )
  for (const params of Object.values(networks)) {
    const ok =
      Either.isRight(checkBlock(params.genesis, params)) &&
      Either.isRight(contextualCheckBlock(params.genesis, 0, 0))
    console.log(
      `${params.name.padEnd(8)} p2p ${params.p2pPort} rpc ${params.rpcPort} udp ${params.udpPort} ` +
        `prefix ${params.hrp}1… genesis ${toHex(params.genesisHash)} ${ok ? "valid" : "INVALID"}`,
    )
    if (!ok) return 1
  }
  return 0
}

process.exitCode = main(process.argv.slice(2))
