import { toHex } from "../schema/hex.js"

/**
 * KeyWindow is the set of keys a wallet watches: keystore indexes [0, derived), kept `lookahead`
 * beyond the last one handed out or paid (BIP44's gap limit). The Wallet and a light node's
 * LightClient each keep one, so they watch the same keys. Owned by one actor's fiber.
 */
export class KeyWindow {
  /** x-only key (hex) → key index */
  readonly keys = new Map<string, number>()
  derived = 0

  constructor(
    private readonly publicKey: (index: number) => Uint8Array,
    readonly lookahead: number,
  ) {}

  /** deriveUpTo watches keys [0, upTo). */
  deriveUpTo(upTo: number): void {
    for (; this.derived < upTo; this.derived++)
      this.keys.set(toHex(this.publicKey(this.derived)), this.derived)
  }

  /** ownerOf is the key index paid by `pubkey`, if ours; a payment near the end of the window widens it. */
  ownerOf(pubkey: Uint8Array): number | undefined {
    const index = this.keys.get(toHex(pubkey))
    if (index !== undefined && index + this.lookahead >= this.derived)
      this.deriveUpTo(index + 1 + this.lookahead)
    return index
  }
}
