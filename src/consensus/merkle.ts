import { bytesEqual } from "../schema/hex.js"
import { sha256d } from "./hash.js"

/**
 * Bitcoin's merkle tree over 32-byte leaves (txids): each inner node is sha256d(left ‖ right), and a level
 * with an odd number of nodes pairs its last node with itself. Pure; any fiber may call these.
 *
 * Second-preimage note: an inner node hashes exactly 64 bytes, so a 64-byte transaction could pose as an
 * inner node (the "merkle tree weakness", Core's 64-byte-tx rule). That cannot happen in fibercoin: the
 * smallest transaction encoding is larger than 64 bytes, so a leaf is never the preimage of a node.
 */

const ZERO_ROOT = new Uint8Array(32)

/** hashPair is an inner node: sha256d(left ‖ right) (also the partial merkle trees of merkleProof.ts). */
export const hashPair = (left: Uint8Array, right: Uint8Array): Uint8Array => {
  const buf = new Uint8Array(64)
  buf.set(left, 0)
  buf.set(right, 32)
  return sha256d(buf)
}

/** nextLevel hashes one level into the next, duplicating an odd last node. */
const nextLevel = (level: ReadonlyArray<Uint8Array>): Array<Uint8Array> => {
  const out: Array<Uint8Array> = []
  for (let i = 0; i < level.length; i += 2) {
    const left = level[i]!
    out.push(hashPair(left, level[i + 1] ?? left))
  }
  return out
}

/**
 * merkleRoot is Core's `ComputeMerkleRoot`. `mutated` is true when, at any level, two paired nodes
 * (positions 2k and 2k+1, both present) are equal: CVE-2012-2459, where repeating the last transactions
 * of a block gives a different, invalid block with the same root. A block whose root is mutated must be
 * rejected without marking its hash invalid (the honest block shares it). No leaves give 32 zero bytes;
 * one leaf is its own root.
 */
export const merkleRoot = (
  leaves: ReadonlyArray<Uint8Array>,
): { readonly root: Uint8Array; readonly mutated: boolean } => {
  if (leaves.length === 0) return { root: ZERO_ROOT.slice(), mutated: false }
  let mutated = false
  let level: ReadonlyArray<Uint8Array> = leaves
  while (level.length > 1) {
    for (let i = 0; i + 1 < level.length; i += 2) {
      if (bytesEqual(level[i]!, level[i + 1]!)) mutated = true
    }
    level = nextLevel(level)
  }
  return { root: level[0]!, mutated }
}

/**
 * merkleBranch lists the siblings on the path from leaf `index` to the root, lowest level first. Where the
 * node is the last of an odd-length level its sibling is itself. Throws a RangeError for an index outside
 * the leaves, a caller bug.
 */
export const merkleBranch = (leaves: ReadonlyArray<Uint8Array>, index: number): ReadonlyArray<Uint8Array> => {
  if (!Number.isInteger(index) || index < 0 || index >= leaves.length) {
    throw new RangeError(`leaf index ${index} outside 0..${leaves.length - 1}`)
  }
  const branch: Array<Uint8Array> = []
  let level: ReadonlyArray<Uint8Array> = leaves
  let position = index
  while (level.length > 1) {
    const node = level[position]!
    branch.push(level[position ^ 1] ?? node)
    level = nextLevel(level)
    position >>>= 1
  }
  return branch
}

/** treeDepth is the number of levels above the leaves in a tree of `leafCount` (>= 1) leaves. */
const treeDepth = (leafCount: number): number => {
  let depth = 0
  for (let n = leafCount; n > 1; n = Math.ceil(n / 2)) depth++
  return depth
}

/**
 * verifyMerkleBranch checks that `branch` proves `leaf` at `index` in a tree of `leafCount` leaves with
 * `root`. Against CVE-2012-2459 it also checks the branch's shape: its length must be the tree's depth,
 * `index` must be below `leafCount`, a node that is the last of an odd-length level must have itself as
 * sibling, and any other node must have a different sibling (an equal one means a mutated tree).
 *
 * `leafCount` is bound only through that shape: two counts that give `index` the same path shape (depth
 * and where it is an odd level's last node) accept the same branch, so take the count from a source the
 * caller trusts. 64-byte transactions, which could pose as inner nodes, do not exist in fibercoin (the
 * smallest transaction encoding is larger), so a leaf cannot be confused with a node.
 */
export const verifyMerkleBranch = (
  leaf: Uint8Array,
  index: number,
  leafCount: number,
  branch: ReadonlyArray<Uint8Array>,
  root: Uint8Array,
): boolean => {
  if (!Number.isSafeInteger(leafCount) || leafCount < 1) return false
  if (!Number.isSafeInteger(index) || index < 0 || index >= leafCount) return false
  if (leaf.length !== 32 || root.length !== 32) return false
  if (branch.length !== treeDepth(leafCount)) return false
  let node = leaf
  let position = index
  let width = leafCount
  for (const sibling of branch) {
    if (sibling.length !== 32) return false
    const lastOfOdd = width % 2 === 1 && position === width - 1
    const same = bytesEqual(sibling, node)
    if (lastOfOdd !== same) return false
    node = position % 2 === 0 ? hashPair(node, sibling) : hashPair(sibling, node)
    position = Math.floor(position / 2)
    width = Math.ceil(width / 2)
  }
  return bytesEqual(node, root)
}
