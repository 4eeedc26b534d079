import { subnetOf } from "../schema/netaddr.js"
import type { PeerId } from "./net.js"

/** EvictionCandidate is what eviction weighs of one inbound peer. */
export interface EvictionCandidate {
  readonly id: PeerId
  readonly host: string
  readonly connectedAt: number
  /** undefined: no pong yet (sorts as slowest) */
  readonly pingMs: number | undefined
  readonly lastBlockAt: number
  readonly lastTxAt: number
}

/** how many peers each protection keeps (Core's SelectNodeToEvict) */
const PROTECT_BY_PING = 8
const PROTECT_BY_TX = 4
const PROTECT_BY_BLOCK = 4
const PROTECT_BY_GROUP = 4

/** protect removes the `n` best candidates by `better` (descending) from the list. */
const protect = (
  list: Array<EvictionCandidate>,
  n: number,
  better: (a: EvictionCandidate, b: EvictionCandidate) => number,
): Array<EvictionCandidate> => {
  const sorted = [...list].sort(better)
  const kept = new Set(sorted.slice(0, n).map((c) => c.id))
  return list.filter((c) => !kept.has(c.id))
}

/**
 * selectEviction picks the inbound peer to drop when a new inbound connection finds every slot taken,
 * or none when all are protected. Core's rule, deterministic here: protect the peers of the 4 rarest
 * /16 groups (an attacker owning a few subnets cannot push out the diverse rest), the 8 lowest-latency,
 * the 4 that most recently gave us a new transaction and the 4 a new block, then the longest-connected
 * half of the rest; among what remains, drop the youngest peer of the /16 with the most connections.
 * Pure: the caller passes the candidates (inbound, non-static).
 */
export const selectEviction = (candidates: ReadonlyArray<EvictionCandidate>): PeerId | undefined => {
  let list = [...candidates]
  const groupSize = new Map<string, number>()
  for (const c of list) groupSize.set(subnetOf(c.host, 16), (groupSize.get(subnetOf(c.host, 16)) ?? 0) + 1)
  list = protect(
    list,
    PROTECT_BY_GROUP,
    (a, b) => groupSize.get(subnetOf(a.host, 16))! - groupSize.get(subnetOf(b.host, 16))! || a.id - b.id,
  )
  list = protect(
    list,
    PROTECT_BY_PING,
    (a, b) => (a.pingMs ?? Infinity) - (b.pingMs ?? Infinity) || a.id - b.id,
  )
  list = protect(list, PROTECT_BY_TX, (a, b) => b.lastTxAt - a.lastTxAt || a.id - b.id)
  list = protect(list, PROTECT_BY_BLOCK, (a, b) => b.lastBlockAt - a.lastBlockAt || a.id - b.id)
  list = protect(list, Math.floor(list.length / 2), (a, b) => a.connectedAt - b.connectedAt || a.id - b.id)
  if (list.length === 0) return undefined
  const groups = new Map<string, Array<EvictionCandidate>>()
  for (const c of list) {
    const g = subnetOf(c.host, 16)
    const members = groups.get(g) ?? []
    members.push(c)
    groups.set(g, members)
  }
  // the biggest /16; between equally big ones, the one with the youngest peer (Core), so that peers
  // of distinct /16s connecting last are the ones to go, not the oldest survivors of the protections
  const youngestOf = (members: Array<EvictionCandidate>) =>
    members.reduce((young, c) => (c.connectedAt > young.connectedAt ? c : young))
  let biggest: Array<EvictionCandidate> = []
  for (const members of groups.values()) {
    if (
      members.length > biggest.length ||
      (members.length === biggest.length && youngestOf(members).connectedAt > youngestOf(biggest).connectedAt)
    )
      biggest = members
  }
  return youngestOf(biggest).id
}
