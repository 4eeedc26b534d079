import { Effect, type Random } from "effect"
import type { Topology } from "./options.js"

/**
 * topology.ts places the nodes: each one's host, who it dials, and (topology `nat`) which NAT it sits
 * behind. Node 0 is the hub of a star and the rendezvous server of `nat`. Hosts are fixed by index,
 * so a seed and the options give one network.
 */

/** RENDEZVOUS_HOST is the public rendezvous node of topology `nat` (node 0). */
export const RENDEZVOUS_HOST = "203.0.113.1"

/** Placement is one node's place: its host, the hosts it dials, and its NAT's public host if behind one. */
export interface Placement {
  readonly index: number
  readonly host: string
  /** TCP peers it dials and keeps (config `connect`; topology `nat`'s NAT'd nodes `addnode` the rendezvous node instead) */
  readonly dials: ReadonlyArray<string>
  readonly natPublicHost: string | undefined
}

/** publicHost is node `i`'s address on the open network: a distinct /16 for the first 256 nodes. */
const publicHost = (i: number): string => `10.${i & 255}.${(i >> 8) & 255}.1`
/** natHosts are the `k`th NAT'd node's private address and its NAT's public address. */
const natHosts = (k: number): { readonly privateHost: string; readonly publicHost: string } => ({
  privateHost: `172.16.${(k >> 8) & 255}.${(k & 255) + 1}`,
  publicHost: `100.64.${(k >> 8) & 255}.${(k & 255) + 1}`,
})

/**
 * randomEdges is a random spanning tree (node i dials a random earlier node) plus about one extra
 * edge per node, each dialled by its later node; `rng` is the run's own seeded PRNG.
 */
const randomEdges = (count: number, rng: Random.Random) =>
  Effect.gen(function* () {
    const dials = Array.from({ length: count }, () => new Set<number>())
    for (let i = 1; i < count; i++) dials[i]!.add(yield* rng.nextIntBetween(0, i))
    for (let i = 2; i < count; i++) {
      const j = yield* rng.nextIntBetween(0, i)
      dials[i]!.add(j)
    }
    return dials.map((s) => [...s].sort((a, b) => a - b))
  })

/** place lays out `count` nodes in `topology`, drawing random edges from `rng`. */
export const place = (
  topology: Topology,
  count: number,
  rng: Random.Random,
): Effect.Effect<ReadonlyArray<Placement>> =>
  Effect.gen(function* () {
    switch (topology) {
      case "line":
        return Array.from({ length: count }, (_, i) => ({
          index: i,
          host: publicHost(i),
          dials: i === 0 ? [] : [publicHost(i - 1)],
          natPublicHost: undefined,
        }))
      case "star":
        return Array.from({ length: count }, (_, i) => ({
          index: i,
          host: publicHost(i),
          dials: i === 0 ? [] : [publicHost(0)],
          natPublicHost: undefined,
        }))
      case "random": {
        const edges = yield* randomEdges(count, rng)
        return edges.map((dials, i) => ({
          index: i,
          host: publicHost(i),
          dials: dials.map(publicHost),
          natPublicHost: undefined,
        }))
      }
      case "nat": {
        // node 0 the rendezvous server, then the public half, then the NAT'd half
        const natted = Math.floor(count / 2)
        const open = count - natted
        const edges = yield* randomEdges(open, rng)
        const hostOf = (i: number) => (i === 0 ? RENDEZVOUS_HOST : publicHost(i))
        const placements: Array<Placement> = edges.map((dials, i) => ({
          index: i,
          host: hostOf(i),
          dials: dials.map(hostOf),
          natPublicHost: undefined,
        }))
        for (let k = 0; k < natted; k++) {
          const hosts = natHosts(k)
          placements.push({
            index: open + k,
            host: hosts.privateHost,
            dials: [RENDEZVOUS_HOST],
            natPublicHost: hosts.publicHost,
          })
        }
        return placements
      }
    }
  })
