import { Data } from "effect"
import type { RuleError } from "../consensus/errors.js"
import type { DecodeError } from "../schema/DecodeError.js"
import type { Command } from "../schema/wire.js"

/**
 * spamPolicy is the SpamFilter's policy (not consensus): the limits a peer lives under and what each
 * kind of misbehaviour costs it. Pure values and functions; the SpamFilter actor and the per-connection
 * guards it hands out apply them. Every number here is a config key (`spam.*` in node.json).
 */

/** BucketLimit is a token bucket: `burst` tokens at most, refilled at `rate` tokens a second. */
export interface BucketLimit {
  readonly rate: number
  readonly burst: number
}

/** SpamPolicy: the per-IP, per-peer and per-message-type limits. */
export interface SpamPolicy {
  /** new connections from one IP (International Dollar's "< 50 per 10 s"); excess is refused and scored against the IP */
  readonly connections: BucketLimit
  /** messages of any kind from one peer; excess is dropped and scored */
  readonly messages: BucketLimit
  /**
   * bytes from one peer. A byte stream cannot drop half a frame, so excess is not read: the socket is
   * paused until the bucket refills (the peer's own send buffer fills, not our memory)
   */
  readonly bytes: BucketLimit
  /** inv entries from one peer (Core's MAX_PEER_TX_ANNOUNCEMENTS is 5,000 outstanding) */
  readonly inv: BucketLimit
  /** addresses from one peer (Core: 0.1/s, burst 1,000) */
  readonly addr: BucketLimit
  /** transactions from one peer: each costs signature checks (expensive validation) */
  readonly tx: BucketLimit
  /** blocks from one peer that nobody asked for (honest nodes announce, then serve on request) */
  readonly unrequestedBlocks: BucketLimit
  /**
   * datagram requests from one IP: rendezvous echo, register and introduce, and UDP session OPENs
   * (each costs a signature check or an X25519 agreement); excess is dropped unanswered, not scored
   * (a datagram's source address can be spoofed)
   */
  readonly datagrams: BucketLimit
  /**
   * compact filter requests from one peer (getcfilters, getcfheaders, getcfcheckpt, issue 9), each
   * costing the blocks it asks for (a checkpoint request: its checkpoints); excess is dropped and scored
   */
  readonly filters: BucketLimit
  /** items one getdata may ask of us; a larger one is dropped and scored (we serve one at a time) */
  readonly maxGetDataItems: number
  /** inbound connections from one IP, one /24 (IPv6 /64), one /16 (IPv6 /48) at a time */
  readonly maxInboundPerIp: number
  readonly maxInboundPer24: number
  readonly maxInboundPer16: number
  /** the misbehaviour score at which a peer is disconnected and its address banned (Core: 100) */
  readonly banThreshold: number
  /** how long a ban lasts, seconds (limits.banSeconds); 0 disconnects without banning */
  readonly banSeconds: number
  /** IP scores (refused connections) are forgotten after this many seconds without a new one */
  readonly ipScoreMemorySeconds: number
}

/**
 * defaultSpamPolicy: generous for honest peers (a syncing peer sends ~16 blocks at a time, trickled
 * invs, one addr a day), tight for floods.
 */
export const defaultSpamPolicy: SpamPolicy = {
  connections: { rate: 5, burst: 50 },
  messages: { rate: 500, burst: 5_000 },
  bytes: { rate: 32 * 1024 * 1024, burst: 64 * 1024 * 1024 },
  inv: { rate: 1_000, burst: 10_000 },
  addr: { rate: 0.1, burst: 1_000 },
  tx: { rate: 100, burst: 1_000 },
  unrequestedBlocks: { rate: 1 / 60, burst: 10 },
  datagrams: { rate: 5, burst: 40 },
  filters: { rate: 2_000, burst: 20_000 },
  maxGetDataItems: 1_000,
  maxInboundPerIp: 8,
  maxInboundPer24: 16,
  maxInboundPer16: 32,
  banThreshold: 100,
  banSeconds: 86_400,
  ipScoreMemorySeconds: 600,
}

/**
 * TokenBucket counts tokens for one limit; time comes in from the caller (the Clock), so TestClock
 * drives it. Owned by one fiber (the peer's, or the SpamFilter actor's for per-IP buckets).
 */
export class TokenBucket {
  private tokens: number
  private at: number

  constructor(
    readonly limit: BucketLimit,
    nowMs: number,
  ) {
    this.tokens = limit.burst
    this.at = nowMs
  }

  private refill(nowMs: number): void {
    if (nowMs > this.at) {
      this.tokens = Math.min(this.limit.burst, this.tokens + ((nowMs - this.at) / 1000) * this.limit.rate)
    }
    this.at = Math.max(this.at, nowMs)
  }

  /** take spends `n` tokens if there are that many; false (nothing spent) otherwise. */
  take(n: number, nowMs: number): boolean {
    this.refill(nowMs)
    if (n > this.tokens) return false
    this.tokens -= n
    return true
  }

  /** spend spends `n` tokens, going into debt; answers how many ms until the debt is repaid (0: none; at most a minute). */
  spend(n: number, nowMs: number): number {
    this.refill(nowMs)
    this.tokens -= n
    if (this.tokens >= 0) return 0
    // a rate of 0 never repays: pause a minute at a time
    return this.limit.rate <= 0
      ? 60_000
      : Math.min(60_000, Math.ceil((-this.tokens / this.limit.rate) * 1000))
  }
}

/** DatagramKind names the datagram requests the SpamFilter admits (rendezvous requests, session OPENs). */
export type DatagramKind = "echo" | "register" | "introduce" | "open"

/** FloodBucket names the per-peer buckets whose excess is dropped and scored. */
export type FloodBucket = "messages" | "inv" | "addr" | "tx" | "unrequestedBlocks" | "getdata" | "filters"

/**
 * Misbehavior is every typed failure a peer can commit, from the frame up to consensus; `scoreOf`
 * is the one mapping to a score (btcd's ErrToRejectErr, bcoin's VerifyError score).
 */
export type Misbehavior = Data.TaggedEnum<{
  /** the stream broke framing: wrong network magic, malformed or unknown command, length over its cap */
  BadFrame: { readonly error: DecodeError }
  /** a frame's checksum does not match its payload */
  // biome-ignore lint/complexity/noBannedTypes: Data.TaggedEnum spells a case without fields `{}`
  BadChecksum: {}
  /** a payload that does not decode (after a good checksum); `error.what` names the message */
  Malformed: { readonly error: DecodeError }
  /** a message other than version/verack before the handshake finished, or a second version */
  ProtocolViolation: { readonly detail: string }
  /** a consensus rule failure of a block, header or transaction the peer sent */
  Invalid: { readonly error: RuleError }
  /** a message dropped because it exceeded one of the peer's buckets */
  Flood: { readonly bucket: FloodBucket }
  /** an item nobody asked the peer for, beyond what the unrequested bucket allows */
  Unrequested: { readonly command: Command }
  /**
   * a signed datagram request whose signature does not verify (a rendezvous register or introduce
   * from a source that proved its address with a cookie): each cost us a signature verification
   */
  BadSignature: { readonly what: string }
  /** it served data that provably contradicts the chain (a light client's filter check, issue 9) */
  Lied: { readonly what: string }
}>
export const Misbehavior = Data.taggedEnum<Misbehavior>()

/** FLOOD_SCORE: each message dropped for exceeding a bucket; ten in a row ban a flooder. */
export const FLOOD_SCORE = 10

/**
 * scoreOf is how much a misbehaviour costs the peer (100 bans at the default threshold):
 *
 * | failure | score | why |
 * |---|---|---|
 * | wrong magic, length over cap, malformed command | 100 | junk or an attack: nothing it says can be understood |
 * | bad checksum | 50 | TCP does not corrupt payloads; only a broken or hostile sender does |
 * | payload that does not decode | 20 | a bug or an attack; a few are tolerated |
 * | message before the handshake, second version | 20 | protocol violation (the peer is also dropped) |
 * | invalid block/header/tx | its RuleError.banScore | the consensus table decides: 100 for provably invalid, 0 for a stale or premature block or a tx spending what we lack or conflicting with our pool |
 * | bucket exceeded, unrequested beyond the allowance | 10 per message | floods; honest peers stay far below every bucket |
 * | bad signature on a datagram request | 20 | an honest node signs what it sends; each costs a verification, five ban |
 */
export const scoreOf = (m: Misbehavior): number =>
  Misbehavior.$match(m, {
    BadFrame: () => 100,
    BadChecksum: () => 50,
    Malformed: () => 20,
    ProtocolViolation: () => 20,
    Invalid: ({ error }) => error.banScore,
    Flood: () => FLOOD_SCORE,
    Unrequested: () => FLOOD_SCORE,
    BadSignature: () => 20,
    Lied: () => 100,
  })

/** describe is a misbehaviour for logs and ban reasons. */
export const describe = (m: Misbehavior): string =>
  Misbehavior.$match(m, {
    BadFrame: ({ error }) => `bad frame: ${error.message}`,
    BadChecksum: () => "bad checksum",
    Malformed: ({ error }) => `malformed payload: ${error.message}`,
    ProtocolViolation: ({ detail }) => `protocol violation: ${detail}`,
    Invalid: ({ error }) => `invalid ${error.scope}: ${error.message}`,
    Flood: ({ bucket }) => `flood: ${bucket} limit exceeded`,
    Unrequested: ({ command }) => `unrequested ${command}`,
    BadSignature: ({ what }) => `bad signature on ${what}`,
    Lied: ({ what }) => `served a wrong ${what}`,
  })
