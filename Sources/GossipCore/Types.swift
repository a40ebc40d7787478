// What the core reports to its caller: members, membership events, and effects (packets
// to send, streams to open, events) drained with `takeEffects()`.

public struct Member: Sendable, Equatable {
    public var name: String
    public var address: String
    public var incarnation: UInt32
    public var state: MemberState
    public var tags: [String: String]
    /// Virtual time (ms) of the last state change, as passed in by the caller.
    public var stateChangeMs: Int64

    public init(name: String, address: String, incarnation: UInt32 = 0, state: MemberState = .alive,
                tags: [String: String] = [:], stateChangeMs: Int64 = 0) {
        self.name = name; self.address = address; self.incarnation = incarnation; self.state = state
        self.tags = tags; self.stateChangeMs = stateChangeMs
    }
}

public enum MembershipEvent: Sendable, Equatable {
    case join(Member)
    /// Graceful leave (the member announced it).
    case leave(Member)
    /// Declared dead after a suspicion timed out.
    case failed(Member)
    /// Tags or address changed.
    case update(Member)
    /// A failed member was forgotten after `reconnectTimeoutMs`, a left one after `tombstoneTimeoutMs`.
    case reap(Member)
    /// Another address claims the name of a member we know (not left): the claim is refused,
    /// since names are unique in a pool (memberlist's "conflicting address").
    case conflict(existing: Member, claimedBy: String)

    // Serf layer (serf event.go): delivered once per member.
    /// A user event (ours included), once per (ltime, name, payload).
    case user(name: String, payload: [UInt8], ltime: UInt64, coalesce: Bool)
    /// A query for the application; answer with `respond(to:payload:nowMs:)` before its deadline.
    case query(id: QueryID, from: String, name: String, payload: [UInt8], ltime: UInt64)
    /// For the asker: one response per responding member, until the deadline.
    case queryResponse(id: QueryID, from: String, payload: [UInt8])
    /// For the asker: one ack per member that received the query (if acks were requested).
    case queryAck(id: QueryID, from: String)
    /// For the asker: the deadline passed; later responses are dropped.
    case queryDone(id: QueryID)
}

/// A query, named by its Lamport time and the asker's random id (Serf's (LTime, ID)).
public struct QueryID: Hashable, Sendable, CustomStringConvertible {
    public var ltime: UInt64
    public var id: UInt32
    public init(ltime: UInt64, id: UInt32) { self.ltime = ltime; self.id = id }
    public var description: String { "query(\(ltime)/\(id))" }
}

public enum StreamKind: Sendable, Equatable {
    /// Full state exchange (join or periodic anti-entropy).
    case pushPull
    /// TCP fallback for a probe whose UDP ping got no ack.
    case fallbackPing
}

public enum GossipEffect: Sendable, Equatable {
    /// Send one UDP datagram.
    case sendPacket(to: String, bytes: [UInt8])
    /// Open a stream to `to`, write `bytes` (one message), read one reply message and hand it
    /// back with `streamResult(id:reply:nowMs:)` (reply nil on connection failure or timeout).
    case openStream(id: UInt64, kind: StreamKind, to: String, bytes: [UInt8])
    case event(MembershipEvent)
}

/// Counters an operator (and the simulator) can read.
public struct GossipStats: Sendable, Equatable {
    public var probesStarted = 0
    public var probesAcked = 0
    public var probesFailed = 0
    /// Times this member began suspecting another (from its own failed probe).
    public var suspicionsRaised = 0
    /// Times this member refuted a suspicion or death about itself.
    public var refutations = 0
    public var packetsSent = 0
    public var decodeErrors = 0
    /// Alive messages ignored because their tags exceed `maxTagsBytes`.
    public var rejectedUpdates = 0
    /// Alive messages refused because another address already holds the name.
    public var nameConflicts = 0
    public var droppedRelays = 0
    public var droppedStreams = 0
    /// User events / queries ignored because they are older than the buffer window.
    public var staleEventsIgnored = 0
    public var staleQueriesIgnored = 0
    /// Events / queries beyond `maxMessagesPerLamportTime` at one Lamport time.
    public var eventsDroppedAtFullLTime = 0
    /// Query responses (or acks) that arrived after the deadline or for an unknown query.
    public var lateQueryResponses = 0
    /// Second responses (or acks) from the same member to the same query.
    public var duplicateQueryResponses = 0
    /// Inbound queries forgotten unanswered because `maxPendingQueries` were open.
    public var droppedInboundQueries = 0
}

public enum GossipError: Error, Equatable, Sendable {
    case tagsTooLarge(size: Int, limit: Int)
    case alreadyLeft
    /// name + payload over `userEventSizeLimitBytes`.
    case userEventTooLarge(size: Int, limit: Int)
    /// Encoded query over `querySizeLimitBytes`.
    case queryTooLarge(size: Int, limit: Int)
    /// Response payload over `maxQueryResponseBytes`.
    case queryResponseTooLarge(size: Int, limit: Int)
    /// `maxPendingQueries` of our own queries are still open.
    case tooManyPendingQueries(limit: Int)
    case invalidQueryTimeout(ms: Int64)
    /// `respond` for a query we never received, or already forgot.
    case unknownQuery(QueryID)
    case queryDeadlinePassed(QueryID)
    case alreadyResponded(QueryID)
}
