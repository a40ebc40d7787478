// The Serf layer on the gossip core (hashicorp/serf serf.go, lamport.go, query.go; our own
// code): user events and queries, each with its own Lamport clock, de-duplicated over a
// bounded window of recent Lamport times, spread through their own transmit-limited
// broadcast queues piggybacked after member updates. Query responses and acks go straight
// to the asker as packets and are never gossiped.

/// A Lamport clock (serf lamport.go): `increment` on a local send, `witness` on receive.
struct LamportClock {
    private(set) var time: UInt64 = 0
    /// Returns the time to stamp on a new message, then moves past it (saturating: a forged
    /// UInt64.max pins the clock rather than wrapping it back to 0).
    mutating func stamp() -> UInt64 {
        defer { if time < .max { time += 1 } }
        return time
    }
    /// A received time: our clock moves just past it if it is ahead of us.
    mutating func witness(_ t: UInt64) {
        if t >= time { time = t == .max ? t : t + 1 }
    }
}

/// What a user event is de-duplicated by at one Lamport time.
struct EventKey: Equatable {
    var name: String
    var payload: [UInt8]
}

/// One slot of the ring of recent Lamport times (Serf's eventBuffer / queryBuffer entry).
struct LamportSlot<Key: Equatable> {
    var ltime: UInt64
    var seen: [Key]
}

struct OutgoingQuery {
    var deadlineMs: Int64
    var acks: Set<String> = []
    var responses: Set<String> = []
}

struct IncomingQuery {
    var from: String
    var fromAddress: String
    var deadlineMs: Int64
    var responded = false
}

extension Memberlist {
    // MARK: Public API

    /// The current Lamport times of user events and queries.
    public var eventLamportTime: UInt64 { eventClock.time }
    public var queryLamportTime: UInt64 { queryClock.time }
    /// Our own queries still collecting responses.
    public var openQueries: Int { outgoingQueries.count }

    /// Serf UserEvent: stamp with the event clock, deliver here (`.user`) and gossip it to all.
    public func fireUserEvent(name: String, payload: [UInt8], coalesce: Bool = true, nowMs: Int64) throws(GossipError) {
        advance(nowMs)
        let size = name.utf8.count + payload.count
        if size > config.userEventSizeLimitBytes || name.utf8.count > WireLimits.maxStringBytes {
            throw .userEventTooLarge(size: size, limit: config.userEventSizeLimitBytes)
        }
        let ltime = eventClock.stamp()
        handleUserEvent(ltime: ltime, name: name, payload: payload, coalesce: coalesce)
    }

    /// The query timeout used when `query` gets none (Serf DefaultQueryTimeout).
    public var defaultQueryTimeoutMs: Int64 {
        GossipMath.defaultQueryTimeoutMs(gossipIntervalMs: config.gossipIntervalMs, mult: config.queryTimeoutMult, members: aliveCount)
    }

    /// Serf Query: gossip a request to every member (or those named in `filterNodes`); each
    /// surfaces `.query` and may `respond`. We collect `.queryResponse` / `.queryAck` until the
    /// deadline, then `.queryDone`. We are a recipient too, like Serf's local handleQuery.
    @discardableResult
    public func query(name: String, payload: [UInt8], timeoutMs: Int64? = nil, filterNodes: [String] = [],
                      requestAck: Bool = false, nowMs: Int64) throws(GossipError) -> QueryID {
        advance(nowMs)
        let timeout = timeoutMs ?? defaultQueryTimeoutMs
        if timeout <= 0 { throw .invalidQueryTimeout(ms: timeout) }
        if outgoingQueries.count >= config.maxPendingQueries { throw .tooManyPendingQueries(limit: config.maxPendingQueries) }
        let id = UInt32(truncatingIfNeeded: rng.next())
        let message = GossipMessage.query(ltime: queryClock.time, id: id, from: config.name, fromAddress: config.address,
                                          filterNodes: filterNodes, requestAck: requestAck, timeoutMs: UInt64(timeout),
                                          name: name, payload: payload)
        let size = GossipWire.encode(message).count
        if size > config.querySizeLimitBytes || name.utf8.count > WireLimits.maxStringBytes
            || filterNodes.count > WireLimits.maxQueryFilterNodes || filterNodes.contains(where: { $0.utf8.count > WireLimits.maxStringBytes }) {
            throw .queryTooLarge(size: size, limit: config.querySizeLimitBytes)
        }
        let ltime = queryClock.stamp()
        let qid = QueryID(ltime: ltime, id: id)
        outgoingQueries[qid] = OutgoingQuery(deadlineMs: nowMs + timeout)
        handleQuery(ltime: ltime, id: id, from: config.name, fromAddress: config.address, filterNodes: filterNodes,
                    requestAck: requestAck, timeoutMs: UInt64(timeout), name: name, payload: payload)
        return qid
    }

    /// Answer a query we surfaced as `.query`, once, before its deadline. The response goes
    /// directly to the asker (a packet), never through gossip.
    public func respond(to id: QueryID, payload: [UInt8], nowMs: Int64) throws(GossipError) {
        advance(nowMs)
        if payload.count > config.maxQueryResponseBytes {
            throw .queryResponseTooLarge(size: payload.count, limit: config.maxQueryResponseBytes)
        }
        guard let q = incomingQueries[id] else { throw .unknownQuery(id) }
        if nowMs >= q.deadlineMs { incomingQueries[id] = nil; throw .queryDeadlinePassed(id) }
        if q.responded { throw .alreadyResponded(id) }
        incomingQueries[id]!.responded = true
        sendQueryResponse(id, to: q, ack: false, payload: payload)
    }

    // MARK: User events (serf.go handleUserEvent)

    /// Returns whether the event was new (delivered and queued for gossip).
    @discardableResult
    func handleUserEvent(ltime: UInt64, name: String, payload: [UInt8], coalesce: Bool) -> Bool {
        eventClock.witness(ltime)
        let window = UInt64(config.eventBufferSize)
        if eventClock.time > window && ltime < eventClock.time - window {
            stats.staleEventsIgnored += 1
            return false
        }
        let key = EventKey(name: name, payload: payload)
        guard remember(key, at: ltime, in: &eventBuffer) else { return false }
        serfBroadcastSeq += 1
        eventBroadcasts.enqueue(node: "event/\(serfBroadcastSeq)",
                                bytes: GossipWire.encode(.userEvent(ltime: ltime, name: name, payload: payload, coalesce: coalesce)))
        effects.append(.event(.user(name: name, payload: payload, ltime: ltime, coalesce: coalesce)))
        return true
    }

    /// Record `key` at `ltime` in a ring of recent Lamport times; false if already seen there
    /// (or the slot is full). A slot holding an older time is recycled.
    func remember<Key: Equatable>(_ key: Key, at ltime: UInt64, in ring: inout [LamportSlot<Key>?]) -> Bool {
        let idx = Int(ltime % UInt64(ring.count))
        if let slot = ring[idx], slot.ltime == ltime {
            if slot.seen.contains(key) { return false }
            if slot.seen.count >= config.maxMessagesPerLamportTime { stats.eventsDroppedAtFullLTime += 1; return false }
            ring[idx]!.seen.append(key)
            return true
        }
        if let slot = ring[idx], slot.ltime > ltime {
            // A newer time owns the slot: this one is outside the window already.
            return false
        }
        ring[idx] = LamportSlot(ltime: ltime, seen: [key])
        return true
    }

    // MARK: Queries (serf.go handleQuery / handleQueryResponse, query.go)

    func handleQuery(ltime: UInt64, id: UInt32, from: String, fromAddress: String, filterNodes: [String],
                     requestAck: Bool, timeoutMs: UInt64, name: String, payload: [UInt8]) {
        queryClock.witness(ltime)
        let window = UInt64(config.queryBufferSize)
        if queryClock.time > window && ltime < queryClock.time - window {
            stats.staleQueriesIgnored += 1
            return
        }
        guard remember(id, at: ltime, in: &queryBuffer) else { return }
        serfBroadcastSeq += 1
        queryBroadcasts.enqueue(node: "query/\(serfBroadcastSeq)",
                                bytes: GossipWire.encode(.query(ltime: ltime, id: id, from: from, fromAddress: fromAddress,
                                                                filterNodes: filterNodes, requestAck: requestAck,
                                                                timeoutMs: timeoutMs, name: name, payload: payload)))
        if !filterNodes.isEmpty && !filterNodes.contains(config.name) { return }
        let qid = QueryID(ltime: ltime, id: id)
        // Timeouts beyond a day are clamped (a forged value must not overflow the clock).
        let deadline = nowMs + Int64(Swift.min(timeoutMs, 86_400_000))
        if incomingQueries.count >= config.maxPendingQueries {
            // Forget the one closest to its deadline (or past it).
            let victim = incomingQueries.min { a, b in
                a.value.deadlineMs != b.value.deadlineMs ? a.value.deadlineMs < b.value.deadlineMs
                    : (a.key.ltime, a.key.id) < (b.key.ltime, b.key.id)
            }!.key
            incomingQueries[victim] = nil
            stats.droppedInboundQueries += 1
        }
        let incoming = IncomingQuery(from: from, fromAddress: fromAddress, deadlineMs: deadline)
        incomingQueries[qid] = incoming
        if requestAck { sendQueryResponse(qid, to: incoming, ack: true, payload: []) }
        effects.append(.event(.query(id: qid, from: from, name: name, payload: payload, ltime: ltime)))
    }

    func sendQueryResponse(_ id: QueryID, to q: IncomingQuery, ack: Bool, payload: [UInt8]) {
        if q.from == config.name {
            handleQueryResponse(id, from: config.name, ack: ack, payload: payload)
        } else {
            send(.queryResponse(ltime: id.ltime, id: id.id, from: config.name, ack: ack, payload: payload), to: q.fromAddress)
        }
    }

    func handleQueryResponse(_ id: QueryID, from: String, ack: Bool, payload: [UInt8]) {
        guard let q = outgoingQueries[id], nowMs < q.deadlineMs else { stats.lateQueryResponses += 1; return }
        if ack {
            if outgoingQueries[id]!.acks.insert(from).inserted {
                effects.append(.event(.queryAck(id: id, from: from)))
            } else {
                stats.duplicateQueryResponses += 1
            }
        } else {
            if outgoingQueries[id]!.responses.insert(from).inserted {
                effects.append(.event(.queryResponse(id: id, from: from, payload: payload)))
            } else {
                stats.duplicateQueryResponses += 1
            }
        }
    }

    /// Close our queries whose deadline passed (`.queryDone`), and forget received ones.
    func expireQueries() {
        if !outgoingQueries.isEmpty {
            let due = outgoingQueries.filter { $0.value.deadlineMs <= nowMs }.keys
                .sorted { ($0.ltime, $0.id) < ($1.ltime, $1.id) }
            for id in due {
                outgoingQueries[id] = nil
                effects.append(.event(.queryDone(id: id)))
            }
        }
        if !incomingQueries.isEmpty {
            incomingQueries = incomingQueries.filter { $0.value.deadlineMs > nowMs }
        }
    }
}
