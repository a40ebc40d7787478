// GossipConfig: every knob of the SWIM/Lifeguard core, with units in the names, the
// memberlist profiles (DefaultLANConfig / DefaultWANConfig / DefaultLocalConfig) as named
// constructors, and a validation that names the field it rejects.

public struct GossipConfig: Sendable, Equatable {
    /// Our member name; unique in the pool.
    public var name: String
    /// Our advertised address (opaque `host:port`), gossiped to others.
    public var address: String
    /// Seed of the only source of randomness (probe order, k random members, gossip targets).
    public var randomSeed: UInt64

    /// SWIM protocol period: one probe per interval (scaled by Lifeguard awareness).
    public var probeIntervalMs: Int64
    /// Time to wait for a direct ack before asking `indirectChecks` members (ping-req).
    public var probeTimeoutMs: Int64
    /// Number of members asked to probe a target indirectly (SWIM's k).
    public var indirectChecks: Int
    /// Whether a failed direct probe also asks the transport for a TCP (stream) ping.
    public var tcpFallbackProbe: Bool

    /// Suspicion min timeout = suspicionMult × max(1, log10(n)) × probeInterval.
    public var suspicionMult: Int
    /// Suspicion max timeout = suspicionMaxTimeoutMult × min (Lifeguard dynamic suspicion).
    public var suspicionMaxTimeoutMult: Int
    /// Each broadcast is sent up to retransmitMult × ceil(log10(n + 1)) times.
    public var retransmitMult: Int

    /// Interval of the piggyback-less gossip round, and members gossiped to per round.
    public var gossipIntervalMs: Int64
    public var gossipNodes: Int
    /// Dead/left members keep receiving gossip this long (so they learn they were declared dead).
    public var gossipToTheDeadMs: Int64
    /// A failed (dead) member is forgotten (event `reap`) this long after it failed (Serf ReconnectTimeout, 72 h).
    public var reconnectTimeoutMs: Int64
    /// A member that left is forgotten (event `reap`) this long after it left (Serf TombstoneTimeout, 24 h).
    public var tombstoneTimeoutMs: Int64
    /// After a member has been dead this long, another address may claim its name (memberlist
    /// DeadNodeReclaimTime; Consul sets 30 s so a node can come back with a new IP). 0 = never.
    public var deadNodeReclaimTimeMs: Int64 = 30_000

    // Serf layer: user events and queries (serf config.go).
    /// Recent Lamport times remembered to de-duplicate user events; older events are ignored (Serf EventBuffer).
    public var eventBufferSize: Int
    /// Recent Lamport times remembered to de-duplicate queries; older queries are ignored (Serf QueryBuffer).
    public var queryBufferSize: Int
    /// Maximum name + payload bytes of a user event we fire (Serf UserEventSizeLimit).
    public var userEventSizeLimitBytes: Int
    /// Maximum encoded size of a query we send (Serf QuerySizeLimit).
    public var querySizeLimitBytes: Int
    /// Maximum payload of a query response we send (Serf QueryResponseSizeLimit).
    public var maxQueryResponseBytes: Int
    /// Default query timeout = gossipInterval × queryTimeoutMult × ceil(log10(n + 1)) (Serf QueryTimeoutMult).
    public var queryTimeoutMult: Int
    /// Our own open queries, and received queries still awaiting our answer, each at most this many.
    public var maxPendingQueries: Int
    /// Distinct events (or queries) remembered per Lamport time; more are dropped.
    public var maxMessagesPerLamportTime: Int

    /// Full state exchange with one random member; scaled up with cluster size beyond 32
    /// members like memberlist's pushPullScale. 0 disables periodic push-pull.
    public var pushPullIntervalMs: Int64

    /// Lifeguard local health: the awareness score is kept in 0 ..< awarenessMaxMultiplier;
    /// probe interval and timeout are multiplied by (score + 1). 1 disables awareness.
    public var awarenessMaxMultiplier: Int

    /// Largest UDP packet we build (compound packets are filled up to this).
    public var udpBufferSizeBytes: Int
    /// Limits (TigerBeetle style: nothing grows without bound).
    public var maxBroadcastQueueLength: Int
    public var maxTagsBytes: Int
    public var maxPushPullMembers: Int
    public var maxRelaysInFlight: Int
    public var maxStreamsInFlight: Int

    /// memberlist DefaultLANConfig.
    public static func lan(name: String, address: String, randomSeed: UInt64) -> GossipConfig {
        GossipConfig(
            name: name, address: address, randomSeed: randomSeed,
            probeIntervalMs: 1_000, probeTimeoutMs: 500, indirectChecks: 3, tcpFallbackProbe: true,
            suspicionMult: 4, suspicionMaxTimeoutMult: 6, retransmitMult: 4,
            gossipIntervalMs: 200, gossipNodes: 3, gossipToTheDeadMs: 30_000,
            reconnectTimeoutMs: 72 * 3_600_000, tombstoneTimeoutMs: 24 * 3_600_000,
            eventBufferSize: 64, queryBufferSize: 64, userEventSizeLimitBytes: 512, querySizeLimitBytes: 1_024,
            maxQueryResponseBytes: 1_024, queryTimeoutMult: 16, maxPendingQueries: 256, maxMessagesPerLamportTime: 128,
            pushPullIntervalMs: 30_000, awarenessMaxMultiplier: 8,
            udpBufferSizeBytes: 1_400, maxBroadcastQueueLength: 4_096, maxTagsBytes: 512,
            maxPushPullMembers: WireLimits.maxPushPullMembers, maxRelaysInFlight: 256, maxStreamsInFlight: 64)
    }

    /// memberlist DefaultWANConfig: slower probes, longer suspicion, gossip to one more member.
    public static func wan(name: String, address: String, randomSeed: UInt64) -> GossipConfig {
        var c = lan(name: name, address: address, randomSeed: randomSeed)
        c.suspicionMult = 6
        c.pushPullIntervalMs = 60_000
        c.probeTimeoutMs = 3_000
        c.probeIntervalMs = 5_000
        c.gossipNodes = 4
        c.gossipIntervalMs = 500
        c.gossipToTheDeadMs = 60_000
        return c
    }

    /// memberlist DefaultLocalConfig: loopback, fast and small.
    public static func local(name: String, address: String, randomSeed: UInt64) -> GossipConfig {
        var c = lan(name: name, address: address, randomSeed: randomSeed)
        c.indirectChecks = 1
        c.retransmitMult = 2
        c.suspicionMult = 3
        c.pushPullIntervalMs = 15_000
        c.probeTimeoutMs = 200
        c.probeIntervalMs = 1_000
        c.gossipIntervalMs = 100
        c.gossipToTheDeadMs = 15_000
        return c
    }

    /// Rejects nonsense, naming the field.
    public func validate() throws(GossipConfigError) {
        func bad(_ field: String, _ why: String) -> GossipConfigError { .invalid(field: field, reason: why) }
        if name.isEmpty || name.utf8.count > WireLimits.maxStringBytes { throw bad("name", "must be 1...\(WireLimits.maxStringBytes) bytes") }
        if address.isEmpty || address.utf8.count > WireLimits.maxStringBytes { throw bad("address", "must be 1...\(WireLimits.maxStringBytes) bytes") }
        if probeIntervalMs <= 0 { throw bad("probeIntervalMs", "must be > 0") }
        if deadNodeReclaimTimeMs < 0 { throw bad("deadNodeReclaimTimeMs", "must be >= 0 (0 = never)") }
        if probeTimeoutMs <= 0 || probeTimeoutMs > probeIntervalMs { throw bad("probeTimeoutMs", "must be in 1...probeIntervalMs") }
        if indirectChecks < 0 || indirectChecks > 16 { throw bad("indirectChecks", "must be in 0...16") }
        if suspicionMult < 1 { throw bad("suspicionMult", "must be >= 1") }
        if suspicionMaxTimeoutMult < 1 { throw bad("suspicionMaxTimeoutMult", "must be >= 1") }
        if retransmitMult < 1 { throw bad("retransmitMult", "must be >= 1") }
        if gossipIntervalMs <= 0 { throw bad("gossipIntervalMs", "must be > 0") }
        if gossipNodes < 0 { throw bad("gossipNodes", "must be >= 0") }
        if gossipToTheDeadMs < 0 { throw bad("gossipToTheDeadMs", "must be >= 0") }
        if reconnectTimeoutMs < 0 { throw bad("reconnectTimeoutMs", "must be >= 0") }
        if tombstoneTimeoutMs < 0 { throw bad("tombstoneTimeoutMs", "must be >= 0") }
        if pushPullIntervalMs < 0 { throw bad("pushPullIntervalMs", "must be >= 0 (0 disables)") }
        if awarenessMaxMultiplier < 1 { throw bad("awarenessMaxMultiplier", "must be >= 1 (1 disables awareness)") }
        if udpBufferSizeBytes < 512 || udpBufferSizeBytes > 65_000 { throw bad("udpBufferSizeBytes", "must be in 512...65000") }
        if maxBroadcastQueueLength < 1 { throw bad("maxBroadcastQueueLength", "must be >= 1") }
        if maxTagsBytes < 0 || maxTagsBytes > WireLimits.maxTagsBytes { throw bad("maxTagsBytes", "must be in 0...\(WireLimits.maxTagsBytes)") }
        if maxPushPullMembers < 1 || maxPushPullMembers > WireLimits.maxPushPullMembers { throw bad("maxPushPullMembers", "must be in 1...\(WireLimits.maxPushPullMembers)") }
        if maxRelaysInFlight < 1 { throw bad("maxRelaysInFlight", "must be >= 1") }
        if maxStreamsInFlight < 1 { throw bad("maxStreamsInFlight", "must be >= 1") }
        if eventBufferSize < 1 || eventBufferSize > 1 << 20 { throw bad("eventBufferSize", "must be in 1...\(1 << 20)") }
        if queryBufferSize < 1 || queryBufferSize > 1 << 20 { throw bad("queryBufferSize", "must be in 1...\(1 << 20)") }
        // Each must fit in one datagram with its header (type, ltime, lengths; a response also carries our name).
        let eventRoom = udpBufferSizeBytes - Self.userEventOverheadBytes
        if userEventSizeLimitBytes < 1 || userEventSizeLimitBytes > eventRoom { throw bad("userEventSizeLimitBytes", "must be in 1...\(eventRoom) (udpBufferSizeBytes minus header)") }
        if querySizeLimitBytes < 64 || querySizeLimitBytes > udpBufferSizeBytes { throw bad("querySizeLimitBytes", "must be in 64...udpBufferSizeBytes") }
        let responseRoom = udpBufferSizeBytes - Self.queryResponseOverheadBytes - name.utf8.count
        if maxQueryResponseBytes < 0 || maxQueryResponseBytes > responseRoom { throw bad("maxQueryResponseBytes", "must be in 0...\(responseRoom) (udpBufferSizeBytes minus header and name)") }
        if queryTimeoutMult < 1 { throw bad("queryTimeoutMult", "must be >= 1") }
        if maxPendingQueries < 1 { throw bad("maxPendingQueries", "must be >= 1") }
        if maxMessagesPerLamportTime < 1 { throw bad("maxMessagesPerLamportTime", "must be >= 1") }
    }
}

extension GossipConfig {
    /// Upper bounds of the framing around a user event (type, ltime, two lengths, flag) and a
    /// query response (type, ltime, id, name length, flag, payload length), in bytes.
    static let userEventOverheadBytes = 24
    static let queryResponseOverheadBytes = 24
}

public enum GossipConfigError: Error, Equatable, Sendable {
    case invalid(field: String, reason: String)
}

/// memberlist's scaling formulas (util.go), without Foundation.
public enum GossipMath {
    /// retransmitMult × ceil(log10(n + 1)).
    public static func retransmitLimit(mult: Int, members n: Int) -> Int {
        mult * decimalDigitsCeilLog10(max(1, n + 1))
    }

    /// suspicionMult × max(1, log10(max(1, n))) × probeInterval, in ms.
    public static func suspicionTimeoutMs(mult: Int, members n: Int, probeIntervalMs: Int64) -> Int64 {
        // Like memberlist: the scale in thousandths, so log10(100) gives exactly 2.000.
        let nodeScaleMilli = Int64((max(1.0, log10(Double(max(1, n)))) * 1_000).rounded())
        return Int64(mult) * nodeScaleMilli * probeIntervalMs / 1_000
    }

    /// memberlist pushPullScale: unchanged up to 32 members, then × (ceil(log2(n) - log2(32)) + 1).
    public static func pushPullIntervalMs(base: Int64, members n: Int) -> Int64 {
        if n <= 32 { return base }
        let multiplier = (log2(Double(n)) - 5).rounded(.up) + 1
        return Int64(Double(base) * multiplier)
    }

    /// Lifeguard: remaining suspicion time after `confirmations` independent suspicions.
    public static func suspicionTimeoutMs(confirmations c: Int, expected k: Int, minMs: Int64, maxMs: Int64) -> Int64 {
        if k < 1 { return minMs }
        let frac = ln(Double(c) + 1) / ln(Double(k) + 1)
        let raw = Double(maxMs) - frac * Double(maxMs - minMs)
        return max(minMs, Int64(raw.rounded(.down)))
    }

    /// Serf DefaultQueryTimeout: gossipInterval × queryTimeoutMult × ceil(log10(n + 1)), at least one interval.
    public static func defaultQueryTimeoutMs(gossipIntervalMs: Int64, mult: Int, members n: Int) -> Int64 {
        gossipIntervalMs * Int64(mult) * Int64(max(1, decimalDigitsCeilLog10(max(1, n + 1))))
    }

    /// ceil(log10(x)) for x >= 1, exactly, on integers.
    static func decimalDigitsCeilLog10(_ x: Int) -> Int {
        var p = 1, d = 0
        while p < x { p *= 10; d += 1 }
        return d
    }

    /// Natural logarithm for x > 0: x = m·2^e, ln x = e·ln2 + 2·atanh((m-1)/(m+1)).
    static func ln(_ x: Double) -> Double {
        precondition(x > 0, "ln of a non-positive number")
        let e = Double(x.exponent)
        let m = x.significand  // in [1, 2)
        let z = (m - 1) / (m + 1)  // in [0, 1/3)
        let z2 = z * z
        var term = z, sum = 0.0, k = 1.0
        for _ in 0..<30 { sum += term / k; term *= z2; k += 2 }
        return e * 0.693_147_180_559_945_3 + 2 * sum
    }
    static func log10(_ x: Double) -> Double { ln(x) / 2.302_585_092_994_045_7 }
    static func log2(_ x: Double) -> Double { ln(x) / 0.693_147_180_559_945_3 }
}
