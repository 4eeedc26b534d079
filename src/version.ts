/** VERSION is fibercoin's release, shown by the programs and (later) in the P2P user agent. */
export const VERSION = "0.1.0"
