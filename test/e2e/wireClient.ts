import { randomBytes } from "node:crypto"
import * as net from "node:net"
import { regtest } from "../../src/consensus/params.js"
import { encodeMessage, FrameEvent, Framer } from "../../src/schema/frame.js"
import { hostToBytes } from "../../src/schema/netaddr.js"
import {
  type Command,
  PingMessage,
  VerackMessage,
  VersionMessage,
  type WireMessage,
} from "../../src/schema/wire.js"

/** WireClientOptions: where to dial, and from which local address (any of 127.0.0.0/8 on loopback). */
export interface WireClientOptions {
  readonly port: number
  readonly host?: string
  readonly localAddress?: string
  /** the network magic (regtest's by default) */
  readonly magic?: Uint8Array
}

/** BACKLOG_MESSAGES bounds the received messages a client keeps for `waitFor` (oldest dropped first). */
const BACKLOG_MESSAGES = 10_000

const RAW: ReadonlySet<Command> = new Set<Command>(["block", "tx"])

const randomNonce = (): bigint => randomBytes(8).readBigUInt64LE()

/**
 * WireClient is a test peer over a real TCP socket: it speaks the wire protocol (version/verack,
 * ping/pong) through the node's own Framer and encoder, or writes whatever bytes a test wants (junk,
 * lying headers, floods). It records when the node closed the connection. Used by the e2e spam tests.
 */
export class WireClient {
  /** connectedAt / closedAt are wall-clock ms (Date.now()) */
  readonly connectedAt = Date.now()
  closedAt: number | undefined = undefined
  /** the socket error that preceded the close, if any (ECONNRESET when the node resets) */
  error: Error | undefined = undefined
  /** closed resolves when the socket closes, whoever closed it */
  readonly closed: Promise<void>
  /** bytes the socket accepted for sending */
  get bytesWritten(): number {
    return this.socket.bytesWritten
  }

  /** received counts the messages received, by command (kept even when the backlog drops them) */
  readonly received = new Map<Command, number>()

  private readonly framer: Framer
  private readonly backlog: Array<WireMessage> = []
  private readonly waiters = new Set<() => void>()

  private constructor(
    readonly socket: net.Socket,
    readonly magic: Uint8Array,
  ) {
    this.framer = new Framer(magic, RAW)
    socket.on("data", (chunk: Buffer) => {
      for (const event of this.framer.push(chunk)) {
        if (!FrameEvent.$is("Message")(event)) continue
        const command = event.message._tag
        this.received.set(command, (this.received.get(command) ?? 0) + 1)
        this.backlog.push(event.message)
        if (this.backlog.length > BACKLOG_MESSAGES) this.backlog.shift()
      }
      this.wake()
    })
    socket.on("error", (err) => {
      this.error = err
    })
    this.closed = new Promise((resolve) =>
      socket.once("close", () => {
        this.closedAt = Date.now()
        this.wake()
        resolve()
      }),
    )
  }

  /** connect dials the node; it fails if the TCP connection cannot be made within `ms`. */
  static connect(options: WireClientOptions, ms = 5_000): Promise<WireClient> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({
        host: options.host ?? "127.0.0.1",
        port: options.port,
        noDelay: true,
        ...(options.localAddress === undefined ? {} : { localAddress: options.localAddress }),
      })
      const timer = setTimeout(() => {
        socket.destroy()
        reject(new Error(`connect to port ${options.port} timed out after ${ms} ms`))
      }, ms)
      socket.once("error", (err) => {
        clearTimeout(timer)
        reject(err)
      })
      socket.once("connect", () => {
        clearTimeout(timer)
        resolve(new WireClient(socket, options.magic ?? regtest.magic))
      })
    })
  }

  /** isClosed: the socket closed (the node closed or reset it, or we destroyed it). */
  get isClosed(): boolean {
    return this.closedAt !== undefined
  }

  /** lifetimeMs is how long the connection lived (so far, while open). */
  get lifetimeMs(): number {
    return (this.closedAt ?? Date.now()) - this.connectedAt
  }

  private wake(): void {
    for (const w of this.waiters) w()
  }

  /** write sends raw bytes; false when the socket is closed or its send buffer is full (see `drained`). */
  write(bytes: Uint8Array): boolean {
    if (this.socket.destroyed || this.socket.writableEnded) return false
    return this.socket.write(bytes)
  }

  /** encode frames a message for this client's network (to batch frames into one write). */
  encode(message: WireMessage): Uint8Array {
    return encodeMessage(this.magic, message)
  }

  /** send encodes and sends one message. */
  send(message: WireMessage): boolean {
    return this.write(this.encode(message))
  }

  /** drained resolves when the send buffer has room again, or the socket closed. */
  drained(): Promise<void> {
    if (this.isClosed || this.socket.writableLength === 0) return Promise.resolve()
    return new Promise((resolve) => {
      const done = () => {
        this.socket.off("drain", done)
        this.socket.off("close", done)
        resolve()
      }
      this.socket.once("drain", done)
      this.socket.once("close", done)
    })
  }

  /** waitFor resolves with (and removes) the first received message matching `test`; rejects after `ms` or on close. */
  waitFor<M extends WireMessage>(what: string, test: (m: WireMessage) => m is M, ms: number): Promise<M>
  waitFor(what: string, test: (m: WireMessage) => boolean, ms: number): Promise<WireMessage>
  waitFor(what: string, test: (m: WireMessage) => boolean, ms: number): Promise<WireMessage> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const i = this.backlog.findIndex(test)
        if (i >= 0) {
          finish()
          resolve(this.backlog.splice(i, 1)[0]!)
        } else if (this.isClosed) {
          finish()
          reject(
            new Error(
              `connection closed while waiting for ${what}${this.error ? ` (${this.error.message})` : ""}`,
            ),
          )
        }
      }
      const timer = setTimeout(() => {
        finish()
        reject(new Error(`timed out after ${ms} ms waiting for ${what}`))
      }, ms)
      const finish = () => {
        clearTimeout(timer)
        this.waiters.delete(check)
      }
      this.waiters.add(check)
      check()
    })
  }

  /** handshake sends our version, waits for the node's version and verack, and acknowledges its version. */
  async handshake(ms = 5_000): Promise<VersionMessage> {
    this.send(
      new VersionMessage({
        protocolVersion: 1,
        services: 0,
        bestHeight: 0,
        userAgent: "/e2e-wire-client:0.1/",
        nonce: randomNonce(),
        listenPort: 0,
        theirAddress: {
          host: hostToBytes(this.socket.remoteAddress ?? "127.0.0.1") ?? new Uint8Array(16),
          port: this.socket.remotePort ?? 0,
        },
      }),
    )
    const version = await this.waitFor("the node's version", (m) => m._tag === "version", ms)
    await this.waitFor("the node's verack", (m) => m._tag === "verack", ms)
    this.send(new VerackMessage())
    return version as VersionMessage
  }

  /** ping sends a ping and answers the ms until its pong came back; rejects after `ms`. */
  async ping(ms = 5_000): Promise<number> {
    const nonce = randomNonce()
    const sent = Date.now()
    this.send(new PingMessage({ nonce }))
    await this.waitFor("the pong", (m) => m._tag === "pong" && m.nonce === nonce, ms)
    return Date.now() - sent
  }

  /** destroy closes the socket from our side (idempotent). */
  destroy(): void {
    this.socket.destroy()
  }
}
