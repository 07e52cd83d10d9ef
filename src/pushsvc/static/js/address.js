// The page's addresses: #/ (the overview), #/topics/NAME (a topic view) and
// #/topics/NAME?group=TAG:VALUE&group=... (one group of a grouping topic), written like the
// API's `?group=`. Tag and value are each percent-encoded, so the first bare colon separates
// them; a tag with no colon is one the group's events lack (null in its key), which the API
// has no filter for.

export function topicHash(name) {
  return `#/topics/${encodeURIComponent(name)}`;
}

export function groupHash(name, key) {
  const pairs = Object.entries(key).map(([tag, value]) => (value === null
    ? `group=${encodeURIComponent(tag)}`
    : `group=${encodeURIComponent(tag)}:${encodeURIComponent(value)}`));
  return `${topicHash(name)}?${pairs.join("&")}`;
}

/** `{name, group}` (group: the key, or null for the whole topic) for a topic's address;
 *  null for the overview or an address that is not one of ours. */
export function parseRoute(hash) {
  const match = /^#\/topics\/([^?]+)(?:\?(.*))?$/.exec(hash);
  if (!match) return null;
  try {
    const name = decodeURIComponent(match[1]);
    if (match[2] === undefined) return { name, group: null };
    const key = {};
    for (const item of match[2].split("&")) {
      if (!item.startsWith("group=")) return null;
      const pair = item.slice("group=".length);
      const colon = pair.indexOf(":");
      if (colon < 0) key[decodeURIComponent(pair)] = null;
      else key[decodeURIComponent(pair.slice(0, colon))] = decodeURIComponent(pair.slice(colon + 1));
    }
    return { name, group: key };
  } catch (_error) {
    return null; // malformed percent-encoding
  }
}
