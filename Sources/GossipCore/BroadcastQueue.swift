// The transmit-limited broadcast queue (memberlist queue.go, our own code): each update is
// piggybacked up to a retransmit limit, least-transmitted and newest first; a newer update
// about a member replaces the queued one; the queue has a hard maximum length.

struct BroadcastQueue {
    struct Item {
        var node: String
        var bytes: [UInt8]
        var transmits: Int
        var id: UInt64
    }
    private(set) var items: [String: Item] = [:]
    private var nextID: UInt64 = 0
    let maxLength: Int

    init(maxLength: Int) { self.maxLength = maxLength }

    var count: Int { items.count }

    /// Queue an encoded update about `node`, invalidating any older update about it.
    mutating func enqueue(node: String, bytes: [UInt8]) {
        nextID += 1
        items[node] = Item(node: node, bytes: bytes, transmits: 0, id: nextID)
        if items.count > maxLength {
            // Drop the update that has done the most work (most transmits, then oldest).
            let victim = items.values.max { a, b in
                a.transmits != b.transmits ? a.transmits < b.transmits : a.id > b.id
            }!
            items[victim.node] = nil
        }
    }

    /// Updates that fit in `bytesAvailable`, counting `overheadEach` framing bytes per
    /// update; each one returned counts one transmit and leaves the queue at `limit`.
    mutating func take(bytesAvailable: Int, overheadEach: Int, limit: Int, maxParts: Int = WireLimits.maxCompoundParts - 1) -> [[UInt8]] {
        if items.isEmpty || bytesAvailable <= overheadEach || maxParts <= 0 { return [] }
        let ordered = items.values.sorted { a, b in
            a.transmits != b.transmits ? a.transmits < b.transmits : a.id > b.id
        }
        var used = 0
        var out: [[UInt8]] = []
        for item in ordered {
            if out.count >= maxParts { break }
            let size = item.bytes.count + overheadEach
            if used + size > bytesAvailable { continue }
            used += size
            out.append(item.bytes)
            let sent = item.transmits + 1
            if sent >= limit { items[item.node] = nil } else { items[item.node]!.transmits = sent }
        }
        return out
    }
}

/// Lifeguard local health awareness (memberlist awareness.go): a score in 0 ..< max that
/// stretches our own probe interval and timeout by (score + 1) when we are the slow one.
struct Awareness {
    let max: Int
    private(set) var score = 0
    init(max: Int) { self.max = max }
    mutating func apply(delta: Int) { score = Swift.min(Swift.max(score + delta, 0), max - 1) }
    func scale(_ ms: Int64) -> Int64 { ms * Int64(score + 1) }
}

/// Lifeguard dynamic suspicion (memberlist suspicion.go): the timeout starts at max and
/// shrinks logarithmically toward min as k independent members confirm the suspicion.
struct Suspicion {
    let startMs: Int64
    let minMs: Int64
    let maxMs: Int64
    let expectedConfirmations: Int
    private(set) var confirmers: Set<String>
    private(set) var deadlineMs: Int64

    init(from: String, startMs: Int64, minMs: Int64, maxMs: Int64, expectedConfirmations k: Int) {
        self.startMs = startMs; self.minMs = minMs; self.maxMs = maxMs; self.expectedConfirmations = k
        confirmers = [from]  // the first suspecter is not an independent confirmation
        deadlineMs = startMs + GossipMath.suspicionTimeoutMs(confirmations: 0, expected: k, minMs: minMs, maxMs: maxMs)
    }

    /// Returns true when `from` is a new independent confirmation (worth re-gossiping).
    mutating func confirm(from: String) -> Bool {
        if confirmers.count - 1 >= expectedConfirmations || confirmers.contains(from) { return false }
        confirmers.insert(from)
        deadlineMs = startMs + GossipMath.suspicionTimeoutMs(confirmations: confirmers.count - 1, expected: expectedConfirmations,
                                                             minMs: minMs, maxMs: maxMs)
        return true
    }
    var confirmations: Int { confirmers.count - 1 }
}

/// SplitMix64, the core's only source of randomness, seeded from the config.
struct GossipRandom: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
