import { Schema } from "effect"

/**
 * RuleError is every consensus rule failure, for a transaction or a block. `reason` is Bitcoin Core's
 * reject reason where Core has one (`bad-txns-vin-empty`, `bad-txnmrklroot`, `high-hash`, …) and
 * `banScore` is how much a peer that sent it misbehaved (0: not the sender's fault, e.g. a stale or
 * premature block; 100: provably invalid). `corruptionPossible` marks failures that a corrupted or
 * mutated copy could cause (a bad merkle root), where the block hash itself must not be marked invalid,
 * as Core's BLOCK_MUTATED. The network code alone turns these into penalties (bcoin's VerifyError).
 */
export class RuleError extends Schema.TaggedError<RuleError>()("RuleError", {
  scope: Schema.Literal("tx", "block", "header"),
  reason: Schema.String,
  banScore: Schema.Number,
  detail: Schema.String,
  corruptionPossible: Schema.Boolean,
}) {
  override get message(): string {
    return this.detail === "" ? this.reason : `${this.reason} (${this.detail})`
  }
}

/** txError builds a transaction rule failure (ban score 100 unless stated). */
export const txError = (reason: string, detail = "", banScore = 100): RuleError =>
  new RuleError({ scope: "tx", reason, banScore, detail, corruptionPossible: false })

/** blockError builds a block rule failure. */
export const blockError = (
  reason: string,
  detail = "",
  banScore = 100,
  corruptionPossible = false,
): RuleError => new RuleError({ scope: "block", reason, banScore, detail, corruptionPossible })

/** headerError builds a header rule failure. */
export const headerError = (reason: string, detail = "", banScore = 100): RuleError =>
  new RuleError({ scope: "header", reason, banScore, detail, corruptionPossible: false })
