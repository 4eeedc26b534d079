/**
 * remember adds `key` to an insertion-ordered set kept at most `max` long by forgetting the oldest
 * key: the bounded memories of the network actors (what a peer knows, recent rejects, blocks asked
 * for, announcements relayed), so no peer can make one grow without bound. With `touch`, a key
 * already present moves to the newest end (least recently used goes first); without it the set is
 * first in, first out. Called only by the fiber that owns the set.
 */
export const remember = (set: Set<string>, key: string, max: number, touch = false): void => {
  if (set.has(key)) {
    if (!touch) return
    set.delete(key)
  }
  set.add(key)
  if (set.size > max) set.delete(set.values().next().value!)
}

/** rememberEntry is `remember` for a map: sets `key` to `value` as the newest entry, forgetting the oldest beyond `max`. */
export const rememberEntry = <V>(map: Map<string, V>, key: string, value: V, max: number): void => {
  map.delete(key)
  map.set(key, value)
  if (map.size > max) map.delete(map.keys().next().value!)
}
