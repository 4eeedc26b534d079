import * as dgram from "node:dgram"
import { isIPv6 } from "node:net"
import { Effect, Exit, Layer, Mailbox, type Scope } from "effect"
import {
  DatagramError,
  type DatagramService,
  type DatagramSocket,
  Datagrams,
  MAX_DATAGRAM_BYTES,
  RECEIVE_BUFFER_DATAGRAMS,
  type ReceivedDatagram,
} from "./Datagram.js"

/**
 * UdpDatagramSocket is a DatagramSocket on node:dgram with its drop counter: `dropped` is how many
 * datagrams were discarded on arrival because `received` was full or they were over MAX_DATAGRAM_BYTES
 * (no peer of ours sends those, and dropping them bounds the buffer to ~1.2 MB per socket).
 */
export interface UdpDatagramSocket extends DatagramSocket {
  readonly dropped: Effect.Effect<number>
}

const errnoReason = (err: NodeJS.ErrnoException): DatagramError["reason"] => {
  switch (err.code) {
    case "EADDRINUSE":
      return "in-use"
    case "EMSGSIZE":
      return "too-large"
    case "ENETUNREACH":
    case "EHOSTUNREACH":
      return "unreachable"
    case "ERR_SOCKET_DGRAM_NOT_RUNNING":
      return "closed"
    default:
      return "io"
  }
}

const fromErrno = (err: NodeJS.ErrnoException): DatagramError =>
  new DatagramError({ reason: errnoReason(err), detail: err.message })

/**
 * udpSocket wraps a bound dgram socket. The message handler is synchronous: each datagram goes
 * straight into the bounded `received` mailbox or is dropped (UDP has no back pressure to apply).
 */
const udpSocket = (socket: dgram.Socket, bufferDatagrams: number): UdpDatagramSocket => {
  const inbox = Effect.runSync(Mailbox.make<ReceivedDatagram>(bufferDatagrams))
  const address = socket.address()
  const local = { host: address.address, port: address.port }
  let dropped = 0
  let closed = false
  socket.on("message", (msg: Buffer, rinfo: dgram.RemoteInfo) => {
    const data = new Uint8Array(msg.buffer, msg.byteOffset, msg.length)
    if (
      data.length > MAX_DATAGRAM_BYTES ||
      !inbox.unsafeOffer({ from: { host: rinfo.address, port: rinfo.port }, data })
    ) {
      dropped += 1
    }
  })
  // Errors after binding (e.g. ICMP reports on some platforms) must not crash the process; UDP is lossy anyway.
  socket.on("error", () => {})
  socket.on("close", () => {
    closed = true
    inbox.unsafeDone(Exit.void)
  })
  const closedError = () =>
    new DatagramError({ reason: "closed", detail: `${local.host}:${local.port} is closed` })
  return {
    local,
    send: (to, data) =>
      Effect.suspend(() => {
        if (closed) return Effect.fail(closedError())
        if (data.length > MAX_DATAGRAM_BYTES) {
          return Effect.fail(
            new DatagramError({
              reason: "too-large",
              detail: `${data.length} bytes is over ${MAX_DATAGRAM_BYTES}`,
            }),
          )
        }
        return Effect.async<void, DatagramError>((resume) => {
          try {
            socket.send(data, to.port, to.host, (err) =>
              resume(err === null || err === undefined ? Effect.void : Effect.fail(fromErrno(err))),
            )
          } catch (err) {
            resume(Effect.fail(fromErrno(err as NodeJS.ErrnoException)))
          }
        })
      }),
    received: Mailbox.toStream(inbox),
    close: Effect.sync(() => {
      if (closed) return
      closed = true
      inbox.unsafeDone(Exit.void)
      socket.close()
    }),
    dropped: Effect.sync(() => dropped),
  }
}

/**
 * makeUdp builds the UDP DatagramService on node:dgram: `udp6` for an IPv6 host literal, else `udp4`.
 * `bufferDatagrams` bounds each socket's unread datagrams (RECEIVE_BUFFER_DATAGRAMS by default).
 */
export const makeUdp = (bufferDatagrams = RECEIVE_BUFFER_DATAGRAMS): DatagramService => ({
  bind: (at): Effect.Effect<UdpDatagramSocket, DatagramError, Scope.Scope> =>
    Effect.acquireRelease(
      Effect.async<UdpDatagramSocket, DatagramError>((resume) => {
        const socket = dgram.createSocket({ type: isIPv6(at.host) ? "udp6" : "udp4", reuseAddr: false })
        const onError = (err: NodeJS.ErrnoException) => {
          socket.close()
          resume(Effect.fail(fromErrno(err)))
        }
        socket.once("error", onError)
        socket.once("listening", () => {
          socket.off("error", onError)
          resume(Effect.succeed(udpSocket(socket, bufferDatagrams)))
        })
        try {
          socket.bind(at.port, at.host)
        } catch (err) {
          resume(Effect.fail(fromErrno(err as NodeJS.ErrnoException)))
        }
        // Interrupted before "listening": the half-open socket must not outlive the bind.
        return Effect.sync(() => socket.close())
      }),
      (socket) => socket.close,
    ),
})

/** layerUdp is the node's Datagrams service: real UDP sockets. */
export const layerUdp: Layer.Layer<Datagrams> = Layer.sync(Datagrams, () => makeUdp())
