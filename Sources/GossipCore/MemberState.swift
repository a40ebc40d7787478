// Membership state precedence (memberlist state.go: alive/suspect/dead by incarnation),
// refutation, suspicion timeouts, push-pull merge, dissemination and the member table.

extension Memberlist {
    // MARK: State precedence (memberlist state.go: aliveNode / suspectNode / deadNode)

    func handleAlive(incarnation inc: UInt32, node: String, address: String, tags: [String: String]) {
        if tagsBytes(tags) > config.maxTagsBytes { stats.rejectedUpdates += 1; return }
        if node == config.name {
            let me = memberList[indexByName[node]!]
            // Someone holds a newer or different view of us: outbid it.
            if !leaving && (inc > me.incarnation || (inc == me.incarnation && (tags != me.tags || address != me.address))) {
                refute(accusedIncarnation: inc)
            }
            return
        }
        guard let i = indexByName[node] else {
            let m = Member(name: node, address: address, incarnation: inc, state: .alive, tags: tags, stateChangeMs: nowMs)
            insert(m)
            insertIntoProbeOrder(node)
            queueAlive(m)
            effects.append(.event(.join(m)))
            return
        }
        let old = memberList[i]
        // Names are unique in a pool: a different address may take over a name only once its
        // holder has left, or has been dead for deadNodeReclaimTimeMs (memberlist's rule).
        let reclaimable = old.state == .left
            || (old.state == .dead && config.deadNodeReclaimTimeMs > 0 && nowMs - old.stateChangeMs >= config.deadNodeReclaimTimeMs)
        if address != old.address && !reclaimable {
            stats.nameConflicts += 1
            effects.append(.event(.conflict(existing: old, claimedBy: address)))
            return
        }
        if inc <= old.incarnation { return }
        suspicions[node] = nil
        memberList[i].incarnation = inc
        memberList[i].address = address
        memberList[i].tags = tags
        if old.state != .alive { memberList[i].state = .alive; memberList[i].stateChangeMs = nowMs }
        queueAlive(memberList[i])
        if old.state.isDeadOrLeft {
            effects.append(.event(.join(memberList[i])))
        } else if old.tags != tags || old.address != address {
            effects.append(.event(.update(memberList[i])))
        }
    }

    func handleSuspect(incarnation inc: UInt32, node: String, from: String) {
        guard let i = indexByName[node] else { return }
        let m = memberList[i]
        if inc < m.incarnation { return }
        if suspicions[node] != nil {
            if suspicions[node]!.confirm(from: from) {
                broadcasts.enqueue(node: node, bytes: GossipWire.encode(.suspect(incarnation: inc, node: node, from: from)))
            }
            return
        }
        if m.state != .alive { return }
        if node == config.name {
            if !leaving { refute(accusedIncarnation: inc) }
            return
        }
        memberList[i].incarnation = inc
        memberList[i].state = .suspect
        memberList[i].stateChangeMs = nowMs
        let n = memberList.count
        var k = config.suspicionMult - 2
        if aliveCount - 2 < k { k = 0 }  // too few members to expect confirmations
        let minMs = GossipMath.suspicionTimeoutMs(mult: config.suspicionMult, members: n, probeIntervalMs: config.probeIntervalMs)
        let maxMs = Int64(config.suspicionMaxTimeoutMult) * minMs
        suspicions[node] = Suspicion(from: from, startMs: nowMs, minMs: minMs, maxMs: maxMs, expectedConfirmations: k)
        broadcasts.enqueue(node: node, bytes: GossipWire.encode(.suspect(incarnation: inc, node: node, from: from)))
    }

    func handleDead(incarnation inc: UInt32, node: String, from: String) {
        guard let i = indexByName[node] else { return }
        let m = memberList[i]
        if inc < m.incarnation { return }
        suspicions[node] = nil
        if m.state.isDeadOrLeft { return }
        if node == config.name && !leaving {
            refute(accusedIncarnation: inc)
            return
        }
        memberList[i].incarnation = inc
        memberList[i].state = from == node ? .left : .dead
        memberList[i].stateChangeMs = nowMs
        if let at = reapAtMs(memberList[i]) { nextReapMs = Swift.min(nextReapMs, at) }
        broadcasts.enqueue(node: node, bytes: GossipWire.encode(.dead(incarnation: inc, node: node, from: from)))
        if node != config.name {
            effects.append(.event(from == node ? .leave(memberList[i]) : .failed(memberList[i])))
        }
    }

    /// SWIM refutation: gossip ourselves alive with an incarnation above the accusation.
    /// Lifeguard: having to refute also means others find us slow, so our score rises.
    func refute(accusedIncarnation inc: UInt32) {
        let i = indexByName[config.name]!
        memberList[i].incarnation = Swift.max(memberList[i].incarnation, inc) &+ 1
        stats.refutations += 1
        awareness.apply(delta: 1)
        queueAlive(memberList[i])
    }

    func expireSuspicions() {
        let due = suspicions.filter { $0.value.deadlineMs <= nowMs }.keys.sorted()
        for name in due {
            guard let m = member(named: name) else { suspicions[name] = nil; continue }
            suspicions[name] = nil
            if m.state == .suspect { handleDead(incarnation: m.incarnation, node: name, from: config.name) }
        }
    }

    // MARK: Reaping (serf.go reap: failed after ReconnectTimeout, left after TombstoneTimeout)

    /// When a failed or left member (never ourselves) is due to be forgotten.
    func reapAtMs(_ m: Member) -> Int64? {
        if m.name == config.name { return nil }
        switch m.state {
        case .dead: return m.stateChangeMs &+ config.reconnectTimeoutMs
        case .left: return m.stateChangeMs &+ config.tombstoneTimeoutMs
        case .alive, .suspect: return nil
        }
    }

    /// Forget members whose reap time has come (event `reap` for each) and find the next reap time.
    func reapMembers() {
        guard nowMs >= nextReapMs else { return }
        var next = Int64.max
        var due: [Member] = []
        for m in memberList {
            guard let at = reapAtMs(m) else { continue }
            if at <= nowMs { due.append(m) } else { next = Swift.min(next, at) }
        }
        for m in due { remove(m.name); effects.append(.event(.reap(m))) }
        nextReapMs = next
    }

    // MARK: Push-pull (anti-entropy)

    func pushPullMessage(join: Bool) -> GossipMessage {
        let snapshot = memberList.prefix(config.maxPushPullMembers).map {
            MemberSnapshot(name: $0.name, address: $0.address, incarnation: $0.incarnation, state: $0.state, tags: $0.tags)
        }
        return .pushPull(join: join, members: snapshot)
    }

    /// memberlist mergeState: a remote `dead` only makes us suspect (we may still reach it).
    func merge(_ remote: [MemberSnapshot]) {
        for s in remote {
            switch s.state {
            case .alive: handleAlive(incarnation: s.incarnation, node: s.name, address: s.address, tags: s.tags)
            case .left: handleDead(incarnation: s.incarnation, node: s.name, from: s.name)
            case .dead, .suspect: handleSuspect(incarnation: s.incarnation, node: s.name, from: config.name)
            }
        }
    }

    func currentPushPullIntervalMs() -> Int64 {
        GossipMath.pushPullIntervalMs(base: config.pushPullIntervalMs, members: memberList.count)
    }

    // MARK: Dissemination

    var retransmitLimit: Int { GossipMath.retransmitLimit(mult: config.retransmitMult, members: memberList.count) }

    func queueAlive(_ m: Member) {
        broadcasts.enqueue(node: m.name, bytes: GossipWire.encode(.alive(incarnation: m.incarnation, node: m.name, address: m.address, tags: m.tags)))
    }

    /// Queued broadcasts that fit: member updates first, then queries, then user events
    /// (Serf's delegate fills what memberlist leaves), so Serf traffic never starves membership.
    func takeBroadcasts(bytesAvailable: Int, maxParts: Int) -> [[UInt8]] {
        let limit = retransmitLimit
        var parts = broadcasts.take(bytesAvailable: bytesAvailable, overheadEach: 2, limit: limit, maxParts: maxParts)
        for q in [0, 1] {
            let left = bytesAvailable - parts.reduce(0) { $0 + $1.count + 2 }
            let more = q == 0
                ? queryBroadcasts.take(bytesAvailable: left, overheadEach: 2, limit: limit, maxParts: maxParts - parts.count)
                : eventBroadcasts.take(bytesAvailable: left, overheadEach: 2, limit: limit, maxParts: maxParts - parts.count)
            parts += more
        }
        return parts
    }

    func gossip() {
        if broadcasts.count == 0 && eventBroadcasts.count == 0 && queryBroadcasts.count == 0 { return }
        let targets = randomMembers(config.gossipNodes, where: { m in
            switch m.state {
            case .alive, .suspect: true
            case .dead, .left: nowMs - m.stateChangeMs < config.gossipToTheDeadMs
            }
        })
        for t in targets {
            let parts = takeBroadcasts(bytesAvailable: config.udpBufferSizeBytes - 2, maxParts: WireLimits.maxCompoundParts - 1)
            if parts.isEmpty { return }
            emitPacket(parts.count == 1 ? parts[0] : GossipWire.encodeCompound(parts), to: t.address)
        }
    }

    /// Send a message with as many queued broadcasts piggybacked as fit in the MTU.
    func send(_ message: GossipMessage, to address: String, extra: [GossipMessage] = []) {
        var parts = [GossipWire.encode(message)] + extra.map(GossipWire.encode)
        let used = parts.reduce(0) { $0 + $1.count + 2 } + 2
        parts += takeBroadcasts(bytesAvailable: config.udpBufferSizeBytes - used, maxParts: WireLimits.maxCompoundParts - parts.count)
        emitPacket(parts.count == 1 ? parts[0] : GossipWire.encodeCompound(parts), to: address)
    }

    func emitPacket(_ bytes: [UInt8], to address: String) {
        stats.packetsSent += 1
        effects.append(.sendPacket(to: address, bytes: bytes))
    }

    func openStream(_ kind: PendingStream, to address: String, message: GossipMessage) {
        if streams.count >= config.maxStreamsInFlight { stats.droppedStreams += 1; return }
        nextStreamID += 1
        streams[nextStreamID] = kind
        let k: StreamKind = if case .pushPull = kind { .pushPull } else { .fallbackPing }
        effects.append(.openStream(id: nextStreamID, kind: k, to: address, bytes: GossipWire.encode(message)))
    }

    // MARK: Member table

    func insert(_ m: Member) {
        indexByName[m.name] = memberList.count
        memberList.append(m)
        probeOrder.append(m.name)
    }

    /// SWIM: a new member goes to a random position of the current round.
    func insertIntoProbeOrder(_ name: String) {
        probeOrder.removeLast()  // `insert` appended it
        let at = Int.random(in: 0...probeOrder.count, using: &rng)
        probeOrder.insert(name, at: at)
        if at < probeCursor { probeCursor += 1 }
    }

    func remove(_ name: String) {
        guard let i = indexByName.removeValue(forKey: name) else { return }
        let last = memberList.count - 1
        if i != last { memberList[i] = memberList[last]; indexByName[memberList[i].name] = i }
        memberList.removeLast()
        suspicions[name] = nil
    }

    /// Up to k distinct random members other than us that satisfy `filter` (memberlist kRandomNodes).
    func randomMembers(_ k: Int, where filter: (Member) -> Bool) -> [Member] {
        var out: [Member] = []
        var seen = Set<Int>()
        let n = memberList.count
        if k <= 0 || n <= 1 { return out }
        var attempts = 0
        while out.count < k && attempts < 3 * n {
            attempts += 1
            let i = Int.random(in: 0..<n, using: &rng)
            let m = memberList[i]
            if m.name == config.name || seen.contains(i) || !filter(m) { continue }
            seen.insert(i)
            out.append(m)
        }
        return out
    }

    func tagsBytes(_ tags: [String: String]) -> Int { tags.reduce(0) { $0 + $1.key.utf8.count + $1.value.utf8.count } }
}
