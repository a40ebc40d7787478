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
    /// A dead or left member was forgotten after `reapAfterMs`.
    case reap(Member)
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
    public var droppedRelays = 0
    public var droppedStreams = 0
}

public enum GossipError: Error, Equatable, Sendable {
    case tagsTooLarge(size: Int, limit: Int)
    case alreadyLeft
}
