import * as net from "node:net"
import { Context, Effect, Exit, Layer, Mailbox, Queue, Schema, type Scope, type Stream } from "effect"

/** Endpoint is a host (IP literal or sim host name) and port. Port 0 in `listen` means "any free port". */
export interface Endpoint {
  readonly host: string
  readonly port: number
}

/**
 * TransportError is why a connection or listener failed: `refused` (nobody listens there), `reset`
 * (the peer or the network tore the connection down), `closed` (written after a local close),
 * `timeout`, `unreachable` (no route, e.g. across a sim partition), `in-use` (listen address taken).
 */
export class TransportError extends Schema.TaggedError<TransportError>()("TransportError", {
  reason: Schema.Literal("refused", "reset", "closed", "timeout", "unreachable", "in-use"),
  detail: Schema.String,
}) {
  override get message(): string {
    return `transport ${this.reason}: ${this.detail}`
  }
}

/**
 * Connection is one reliable, ordered byte stream to a peer. Only the Peer actor that owns it reads
 * and writes it: `read` is single-consumer (two readers would split the bytes between them).
 * Reads are held in a bounded buffer; when the owner stops reading, the transport stops reading from
 * the socket (TCP pause / sim link stall), so the remote's `pendingWriteBytes` grows instead of our
 * memory. That is what lets the remote drop us by byte budget (a slow-reader / memory-exhaustion
 * defence, as Core's `-maxsendbuffer` disconnect).
 */
export interface Connection {
  readonly id: number
  readonly remote: Endpoint
  readonly local: Endpoint
  readonly direction: "inbound" | "outbound"
  /** transport names the medium for getpeerinfo: TCP (the default when absent) or a UDP session (issue 8) */
  readonly transport?: "tcp" | "udp"
  /** remotePublicKey is the remote's static session key, authenticated by the handshake (UDP sessions; absent over TCP) */
  readonly remotePublicKey?: Uint8Array
  /** read is the received chunks, split anywhere (feed them to `Framer.push`); it ends when the peer or we close, and fails with `reset`. */
  readonly read: Stream.Stream<Uint8Array, TransportError>
  /**
   * write queues the bytes behind earlier writes and returns at once; it never waits for the peer.
   * Fails with `closed` after `close`/`abort`, `reset` after the connection was reset. The caller
   * checks `pendingWriteBytes` against its budget and aborts a peer that is over it.
   */
  readonly write: (bytes: Uint8Array) => Effect.Effect<void, TransportError>
  /** pendingWriteBytes is the bytes written but not yet accepted by the OS (TCP) / the remote's receive buffer (sim). */
  readonly pendingWriteBytes: Effect.Effect<number>
  /** close flushes pending writes then closes (FIN); our own `read` ends at once. Idempotent. */
  readonly close: Effect.Effect<void>
  /**
   * abort drops pending writes and resets the connection: for dropping a peer over its byte budget.
   * The remote's `read` fails with `reset` (over TCP it may instead just end, as the OS reports it).
   */
  readonly abort: Effect.Effect<void>
}

/** Listener is a bound endpoint: `local` is the actual address (the port chosen when asked for 0). */
export interface Listener {
  readonly local: Endpoint
  /** accepted holds inbound connections not yet taken; when full, new inbound connections are dropped (SYN-flood guard). */
  readonly accepted: Queue.Dequeue<Connection>
}

/** TransportService is the contract every Transport layer keeps; test/layers/Transport.test.ts holds TCP and sim to it. */
export interface TransportService {
  /**
   * listen binds `at`; it closes with the scope, and so do the inbound connections it accepted
   * (taken or not), so a node's shutdown leaves no sockets behind.
   */
  readonly listen: (at: Endpoint) => Effect.Effect<Listener, TransportError, Scope.Scope>
  /** connect opens an outbound connection, closed (gracefully) with the scope. */
  readonly connect: (to: Endpoint) => Effect.Effect<Connection, TransportError, Scope.Scope>
}

/** Transport is the byte-stream edge the Peer actors use: TCP in a node (`layerTcp`), simulated in tests and sims (TransportSim). */
export class Transport extends Context.Tag("fibercoin/Transport")<Transport, TransportService>() {}

/** READ_BUFFER_CHUNKS bounds each connection's unread chunks (each at most one socket read, ~64 KiB). */
export const READ_BUFFER_CHUNKS = 64
/** ACCEPT_BACKLOG bounds inbound connections accepted but not yet taken from `Listener.accepted`. */
export const ACCEPT_BACKLOG = 128

const errnoReason = (err: NodeJS.ErrnoException): TransportError["reason"] => {
  switch (err.code) {
    case "ECONNREFUSED":
      return "refused"
    case "ETIMEDOUT":
      return "timeout"
    case "EHOSTUNREACH":
    case "ENETUNREACH":
    case "EADDRNOTAVAIL":
      return "unreachable"
    case "EADDRINUSE":
      return "in-use"
    default:
      return "reset"
  }
}

const fromErrno = (err: NodeJS.ErrnoException): TransportError =>
  new TransportError({ reason: errnoReason(err), detail: err.message })

/**
 * tcpConnection wraps a connected socket. Handlers stay synchronous: each chunk goes straight into
 * the bounded read mailbox; if it is full the socket is paused until the owner catches up.
 */
const tcpConnection = (socket: net.Socket, id: number, direction: Connection["direction"]): Connection => {
  const inbox = Effect.runSync(Mailbox.make<Uint8Array, TransportError>(READ_BUFFER_CHUNKS))
  let failure: TransportError | undefined
  let closed = false
  socket.on("data", (chunk: Buffer) => {
    if (inbox.unsafeOffer(chunk)) return
    socket.pause()
    Effect.runFork(
      Effect.andThen(
        inbox.offer(chunk),
        Effect.sync(() => {
          if (!socket.destroyed) socket.resume()
        }),
      ),
    )
  })
  socket.on("end", () => inbox.unsafeDone(Exit.void))
  socket.on("error", (err: NodeJS.ErrnoException) => {
    failure = new TransportError({ reason: "reset", detail: err.message })
    inbox.unsafeDone(Exit.fail(failure))
  })
  socket.on("close", () => inbox.unsafeDone(Exit.void))
  const remote = { host: socket.remoteAddress ?? "", port: socket.remotePort ?? 0 }
  const local = { host: socket.localAddress ?? "", port: socket.localPort ?? 0 }
  return {
    id,
    remote,
    local,
    direction,
    read: Mailbox.toStream(inbox),
    write: (bytes) =>
      Effect.suspend(() => {
        if (failure !== undefined) return Effect.fail(failure)
        if (closed || socket.destroyed || socket.writableEnded) {
          return Effect.fail(new TransportError({ reason: "closed", detail: `connection ${id} is closed` }))
        }
        socket.write(bytes)
        return Effect.void
      }),
    pendingWriteBytes: Effect.sync(() => (socket.destroyed ? 0 : socket.writableLength)),
    close: Effect.sync(() => {
      closed = true
      inbox.unsafeDone(Exit.void)
      socket.destroySoon()
    }),
    abort: Effect.sync(() => {
      closed = true
      inbox.unsafeDone(Exit.void)
      if (!socket.destroyed) socket.resetAndDestroy()
    }),
  }
}

/** makeTcp builds the TCP TransportService on node:net (Nagle off: frames are sent as written). */
const makeTcp = (): TransportService => {
  let nextId = 1
  const connect = (to: Endpoint): Effect.Effect<Connection, TransportError, Scope.Scope> =>
    Effect.acquireRelease(
      Effect.async<Connection, TransportError>((resume) => {
        const socket = net.connect({ host: to.host, port: to.port, noDelay: true })
        const onError = (err: NodeJS.ErrnoException) => resume(Effect.fail(fromErrno(err)))
        socket.once("error", onError)
        socket.once("connect", () => {
          socket.off("error", onError)
          resume(Effect.succeed(tcpConnection(socket, nextId++, "outbound")))
        })
        return Effect.sync(() => socket.destroy())
      }),
      (conn) => conn.close,
    )

  const listen = (at: Endpoint): Effect.Effect<Listener, TransportError, Scope.Scope> =>
    Effect.gen(function* () {
      const accepted = yield* Effect.acquireRelease(
        Queue.dropping<Connection>(ACCEPT_BACKLOG),
        Queue.shutdown,
      )
      const inbound = new Set<Connection>()
      const server = yield* Effect.acquireRelease(
        Effect.async<net.Server, TransportError>((resume) => {
          const server = net.createServer({ noDelay: true }, (socket) => {
            const conn = tcpConnection(socket, nextId++, "inbound")
            if (!accepted.unsafeOffer(conn)) {
              socket.destroy()
              return
            }
            inbound.add(conn)
            socket.once("close", () => inbound.delete(conn))
          })
          // Errors after listening (none expected for a bound server) must not crash the process.
          server.on("error", (err: NodeJS.ErrnoException) => resume(Effect.fail(fromErrno(err))))
          server.listen(at.port, at.host, () => resume(Effect.succeed(server)))
          return Effect.sync(() => server.close())
        }),
        // The port is free once close() returns; inbound connections flush what was written, then close.
        (server) =>
          Effect.andThen(
            Effect.sync(() => server.close()),
            Effect.forEach(inbound, (conn) => conn.close, { discard: true }),
          ),
      )
      const address = server.address()
      const local =
        address !== null && typeof address === "object" ? { host: address.address, port: address.port } : at
      return { local, accepted }
    })

  return { listen, connect }
}

/** layerTcp provides Transport over real TCP sockets (node:net). */
export const layerTcp: Layer.Layer<Transport> = Layer.sync(Transport, makeTcp)
