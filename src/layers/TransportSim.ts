import { Duration, Effect, Exit, Fiber, Layer, Mailbox, Queue, Random, type Scope } from "effect"
import {
  ACCEPT_BACKLOG,
  type Connection,
  type Endpoint,
  type Listener,
  READ_BUFFER_CHUNKS,
  Transport,
  TransportError,
  type TransportService,
} from "./Transport.js"

/**
 * LinkOptions describe one (symmetric) link between two sim hosts.
 *
 * - `latency`: one-way delay of every write, and half the time `connect` takes (one round trip).
 * - `bandwidthBytesPerSecond`: writes are serialized on the link, so a write of n bytes occupies it
 *   for n / bandwidth seconds before its latency starts. Unset = unlimited.
 * - `loss`, `duplicate`, `reorder` (probabilities 0..1, default 0) act on whole writes: a write is
 *   dropped, delivered twice, or held back and delivered right after the next write on that
 *   connection. With the defaults a connection is a reliable ordered byte stream like TCP; non-zero
 *   values make it a message channel with faults, for testing that framing and peers survive them.
 *   Each write is one `Framer`-sized unit when the Peer writes whole frames.
 */
export interface LinkOptions {
  readonly latency: Duration.DurationInput
  readonly bandwidthBytesPerSecond?: number
  readonly loss?: number
  readonly duplicate?: number
  readonly reorder?: number
}

/** SimNetworkOptions seed the network's PRNG (all loss/duplicate/reorder rolls) and set the default link. */
export interface SimNetworkOptions {
  readonly seed: number
  /** defaultLink applies to host pairs without `setLink`; default 0 latency, unlimited, reliable. */
  readonly defaultLink?: LinkOptions
  /** receiveBufferChunks bounds each connection's unread writes; beyond it the link stalls (default READ_BUFFER_CHUNKS). */
  readonly receiveBufferChunks?: number
}

/**
 * SimNetwork is an in-memory network of named hosts. Time is `Effect.sleep` (TestClock drives it) and
 * randomness a `Random.make(seed)` held by the network, so one seed gives one delivery schedule.
 */
export interface SimNetwork {
  /** transport is host `host`'s Transport: it listens on `host` (ignoring `at.host`) and connects from it. */
  readonly transport: (host: string) => TransportService
  /** layer provides `transport(host)` as the Transport service. */
  readonly layer: (host: string) => Layer.Layer<Transport>
  /** setLink sets the link between `a` and `b` (both directions); it applies to later writes and connects. */
  readonly setLink: (a: string, b: string, link: LinkOptions) => Effect.Effect<void>
  /**
   * partition splits hosts into groups that cannot reach each other (hosts in no group form one more
   * group). Live connections across groups are reset at once (both `read`s fail with `reset`,
   * in-flight bytes are lost); new connects across them fail with `unreachable` until `heal`.
   */
  readonly partition: (groups: ReadonlyArray<ReadonlyArray<string>>) => Effect.Effect<void>
  /** heal removes the partition; reset connections stay reset, new connects succeed. */
  readonly heal: Effect.Effect<void>
}

type Segment =
  | { readonly bytes: Uint8Array; readonly at: number }
  | { readonly fin: true; readonly at: number }

/** Pipe is one direction of a sim connection: writes queue here and one fiber delivers them in order. */
interface Pipe {
  readonly inbox: Mailbox.Mailbox<Uint8Array, TransportError>
  readonly segments: Queue.Queue<Segment>
  fiber: Fiber.RuntimeFiber<void> | undefined
  busyUntil: number
  lastArrival: number
  pending: number
  held: Uint8Array | undefined
}

/** SimLinkState is shared by a connection's two ends. */
interface SimLinkState {
  readonly hosts: readonly [string, string]
  reset: TransportError | undefined
  readonly pipes: readonly [Pipe, Pipe]
  readonly closed: [boolean, boolean]
}

const pairKey = (a: string, b: string): string => (a < b ? `${a}\u0000${b}` : `${b}\u0000${a}`)

/** makeSimNetwork builds a sim network whose delivery fibers live in the caller's scope. */
export const makeSimNetwork = (options: SimNetworkOptions): Effect.Effect<SimNetwork, never, Scope.Scope> =>
  Effect.gen(function* () {
    const netScope = yield* Effect.scope
    // the network's own time: a node whose clock is skewed (the simulator's --clock-skew) sends on it
    const netClock = yield* Effect.clock
    const rng = Random.make(options.seed)
    const receiveBufferChunks = options.receiveBufferChunks ?? READ_BUFFER_CHUNKS
    const defaultLink: LinkOptions = options.defaultLink ?? { latency: Duration.zero }
    const links = new Map<string, LinkOptions>()
    const listeners = new Map<string, { accepted: Queue.Queue<Connection>; live: Set<SimLinkState> }>()
    const live = new Set<SimLinkState>()
    const nextPort = new Map<string, number>()
    let groups: ReadonlyArray<ReadonlyArray<string>> | undefined
    let nextId = 1

    const linkFor = (a: string, b: string): LinkOptions => links.get(pairKey(a, b)) ?? defaultLink
    const groupOf = (host: string): number =>
      groups === undefined ? 0 : groups.findIndex((group) => group.includes(host))
    const reachable = (a: string, b: string): boolean => groupOf(a) === groupOf(b)
    const roll = (p: number | undefined): Effect.Effect<boolean> =>
      p === undefined || p <= 0 ? Effect.succeed(false) : Effect.map(rng.next, (x) => x < p)

    const makePipe = (): Effect.Effect<Pipe> =>
      Effect.gen(function* () {
        return {
          inbox: yield* Mailbox.make<Uint8Array, TransportError>(receiveBufferChunks),
          segments: yield* Queue.unbounded<Segment>(),
          fiber: undefined,
          busyUntil: 0,
          lastArrival: 0,
          pending: 0,
          held: undefined,
        }
      })

    /** deliver is a pipe's fiber: it sleeps until each segment's arrival, then waits for buffer room. */
    const deliver = (pipe: Pipe): Effect.Effect<void> =>
      Effect.gen(function* () {
        while (true) {
          const segment = yield* Queue.take(pipe.segments)
          const now = yield* netClock.currentTimeMillis
          if (segment.at > now) yield* Effect.sleep(Duration.millis(segment.at - now))
          if ("fin" in segment) {
            yield* pipe.inbox.end
            return
          }
          yield* pipe.inbox.offer(segment.bytes)
          pipe.pending -= segment.bytes.length
        }
      })

    /** enqueue schedules bytes (or FIN) behind everything already on the pipe. */
    const enqueue = (pipe: Pipe, link: LinkOptions, now: number, bytes: Uint8Array | undefined): void => {
      const bandwidth = link.bandwidthBytesPerSecond
      const size = bytes?.length ?? 0
      const txMillis = bandwidth === undefined || bandwidth <= 0 ? 0 : (size * 1000) / bandwidth
      pipe.busyUntil = Math.max(now, pipe.busyUntil) + txMillis
      const at = Math.max(pipe.busyUntil + Duration.toMillis(link.latency), pipe.lastArrival)
      pipe.lastArrival = at
      if (bytes === undefined) {
        Queue.unsafeOffer(pipe.segments, { fin: true, at })
      } else {
        pipe.pending += size
        Queue.unsafeOffer(pipe.segments, { bytes, at })
      }
    }

    const resetLink = (state: SimLinkState, detail: string): Effect.Effect<void> =>
      Effect.gen(function* () {
        if (state.reset !== undefined) return
        state.reset = new TransportError({ reason: "reset", detail })
        live.delete(state)
        for (const pipe of state.pipes) {
          pipe.pending = 0
          pipe.held = undefined
          if (pipe.fiber !== undefined) yield* Fiber.interrupt(pipe.fiber)
          yield* Queue.shutdown(pipe.segments)
          pipe.inbox.unsafeDone(Exit.fail(state.reset))
        }
      })

    /** end builds side `side` (0 = outbound/connector, 1 = inbound/acceptor) of a link. */
    const end = (
      state: SimLinkState,
      side: 0 | 1,
      id: number,
      local: Endpoint,
      remote: Endpoint,
    ): Connection => {
      const out = state.pipes[side]
      const inPipe = state.pipes[side === 0 ? 1 : 0]
      const closedError = new TransportError({ reason: "closed", detail: `connection ${id} is closed` })
      return {
        id,
        local,
        remote,
        direction: side === 0 ? "outbound" : "inbound",
        read: Mailbox.toStream(inPipe.inbox),
        write: (bytes) =>
          Effect.gen(function* () {
            if (state.reset !== undefined) return yield* Effect.fail(state.reset)
            if (state.closed[side]) return yield* Effect.fail(closedError)
            const link = linkFor(state.hosts[0], state.hosts[1])
            const now = yield* netClock.currentTimeMillis
            const copy = bytes.slice()
            if (yield* roll(link.loss)) return
            const duplicate = yield* roll(link.duplicate)
            if (out.held === undefined && (yield* roll(link.reorder))) {
              out.held = copy
              return
            }
            enqueue(out, link, now, copy)
            if (duplicate) enqueue(out, link, now, copy)
            if (out.held !== undefined) {
              enqueue(out, link, now, out.held)
              out.held = undefined
            }
          }),
        pendingWriteBytes: Effect.sync(() => out.pending + (out.held?.length ?? 0)),
        close: Effect.gen(function* () {
          if (state.closed[side] || state.reset !== undefined) return
          state.closed[side] = true
          inPipe.inbox.unsafeDone(Exit.void)
          const link = linkFor(state.hosts[0], state.hosts[1])
          const now = yield* netClock.currentTimeMillis
          if (out.held !== undefined) enqueue(out, link, now, out.held)
          out.held = undefined
          enqueue(out, link, now, undefined)
          if (state.closed[0] && state.closed[1]) live.delete(state)
        }),
        abort: Effect.gen(function* () {
          if (state.reset !== undefined) return
          state.closed[side] = true
          inPipe.inbox.unsafeDone(Exit.void)
          yield* resetLink(state, `connection ${id} aborted by ${local.host}:${local.port}`)
        }),
      }
    }

    const ephemeralPort = (host: string): number => {
      const port = nextPort.get(host) ?? 49152
      nextPort.set(host, port + 1)
      return port
    }

    const transport = (host: string): TransportService => ({
      listen: (at) =>
        Effect.gen(function* () {
          let port = at.port
          if (port === 0) {
            do port = ephemeralPort(host)
            while (listeners.has(`${host}:${port}`))
          }
          const key = `${host}:${port}`
          if (listeners.has(key)) {
            return yield* Effect.fail(new TransportError({ reason: "in-use", detail: `${key} is bound` }))
          }
          const accepted = yield* Queue.dropping<Connection>(ACCEPT_BACKLOG)
          const entry = { accepted, live: new Set<SimLinkState>() }
          listeners.set(key, entry)
          yield* Effect.addFinalizer(() =>
            Effect.gen(function* () {
              listeners.delete(key)
              yield* Queue.shutdown(accepted)
              for (const state of entry.live) yield* resetLink(state, `listener ${key} closed`)
            }),
          )
          const listener: Listener = { local: { host, port }, accepted }
          return listener
        }),
      connect: (to) =>
        Effect.acquireRelease(
          Effect.gen(function* () {
            const rtt = Duration.times(Duration.decode(linkFor(host, to.host).latency), 2)
            yield* Effect.sleep(rtt)
            if (!reachable(host, to.host)) {
              return yield* Effect.fail(
                new TransportError({ reason: "unreachable", detail: `${host} cannot reach ${to.host}` }),
              )
            }
            const entry = listeners.get(`${to.host}:${to.port}`)
            if (entry === undefined) {
              return yield* Effect.fail(
                new TransportError({ reason: "refused", detail: `nothing listens on ${to.host}:${to.port}` }),
              )
            }
            const pipes: readonly [Pipe, Pipe] = [yield* makePipe(), yield* makePipe()]
            const state: SimLinkState = {
              hosts: [host, to.host],
              reset: undefined,
              pipes,
              closed: [false, false],
            }
            for (const pipe of pipes)
              pipe.fiber = yield* Effect.forkIn(Effect.interruptible(deliver(pipe)), netScope)
            const local = { host, port: ephemeralPort(host) }
            const outbound = end(state, 0, nextId++, local, to)
            const inbound = end(state, 1, nextId++, to, local)
            if (!Queue.unsafeOffer(entry.accepted, inbound)) {
              yield* resetLink(state, `${to.host}:${to.port} accept backlog full`)
              return yield* Effect.fail(
                new TransportError({
                  reason: "refused",
                  detail: `${to.host}:${to.port} accept backlog full`,
                }),
              )
            }
            live.add(state)
            entry.live.add(state)
            return outbound
          }),
          (conn) => conn.close,
        ),
    })

    const partition = (next: ReadonlyArray<ReadonlyArray<string>>): Effect.Effect<void> =>
      Effect.gen(function* () {
        groups = next
        for (const state of [...live]) {
          if (!reachable(state.hosts[0], state.hosts[1])) {
            yield* resetLink(state, `partition between ${state.hosts[0]} and ${state.hosts[1]}`)
          }
        }
      })

    return {
      transport,
      layer: (host) => Layer.succeed(Transport, transport(host)),
      setLink: (a, b, link) => Effect.sync(() => void links.set(pairKey(a, b), link)),
      partition,
      heal: Effect.sync(() => {
        groups = undefined
      }),
    }
  })
