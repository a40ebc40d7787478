// The SWIM + Lifeguard membership state machine. It owns the member table, the probe
// cycle, suspicion timers, the broadcast queue and push-pull; it never reads a clock,
// touches a socket or draws randomness other than from the seed in its config. Inputs:
// receive / receiveStream / streamResult / tick / join / leave / updateTags, each with the
// caller's current time in ms. Outputs: `takeEffects()`.

public final class Memberlist {
    public let config: GossipConfig
    public private(set) var stats = GossipStats()

    // Member table: an array for deterministic iteration/random picks, an index by name.
    private var memberList: [Member] = []
    private var indexByName: [String: Int] = [:]
    private var probeOrder: [String] = []
    private var probeCursor = 0

    private var rng: GossipRandom
    private var awareness: Awareness
    private var broadcasts: BroadcastQueue
    private var suspicions: [String: Suspicion] = [:]
    private var effects: [GossipEffect] = []

    private struct Probe {
        var seq: UInt32
        var target: String
        var timeoutAtMs: Int64
        var endAtMs: Int64
        var indirectSent = false
        var expectedNacks = 0
        var nacks = 0
    }
    private var probe: Probe?
    private var nextProbeMs: Int64 = 0
    private var nextGossipMs: Int64 = 0
    private var nextPushPullMs: Int64 = 0

    private struct Relay { var originAddress: String; var originSeq: UInt32; var deadlineMs: Int64; var wantNack: Bool }
    private var relays: [UInt32: Relay] = [:]
    private var seq: UInt32 = 0

    private enum PendingStream { case pushPull, fallbackPing(probeSeq: UInt32) }
    private var streams: [UInt64: PendingStream] = [:]
    private var nextStreamID: UInt64 = 0

    private var leaving = false
    private var nowMs: Int64

    /// `knownMembers` restores a membership (e.g. from a snapshot) without events or gossip.
    public init(config: GossipConfig, nowMs: Int64 = 0, knownMembers: [Member] = []) throws(GossipConfigError) {
        try config.validate()
        self.config = config
        self.nowMs = nowMs
        rng = GossipRandom(state: config.randomSeed)
        awareness = Awareness(max: config.awarenessMaxMultiplier)
        broadcasts = BroadcastQueue(maxLength: config.maxBroadcastQueueLength)
        insert(Member(name: config.name, address: config.address, incarnation: 0, state: .alive, stateChangeMs: nowMs))
        for m in knownMembers where m.name != config.name && indexByName[m.name] == nil { insert(m) }
        probeOrder.shuffle(using: &rng)
        nextProbeMs = nowMs + Int64.random(in: 0..<config.probeIntervalMs, using: &rng)
        nextGossipMs = nowMs + Int64.random(in: 0..<config.gossipIntervalMs, using: &rng)
        nextPushPullMs = nowMs + currentPushPullIntervalMs()
    }

    // MARK: Reading state

    public var name: String { config.name }
    public var members: [Member] { memberList }
    public func member(named name: String) -> Member? { indexByName[name].map { memberList[$0] } }
    public var aliveCount: Int { memberList.reduce(0) { $0 + ($1.state == .alive ? 1 : 0) } }
    /// Lifeguard local health score (0 = healthy).
    public var healthScore: Int { awareness.score }
    public var pendingBroadcasts: Int { broadcasts.count }
    public var incarnation: UInt32 { memberList[indexByName[config.name]!].incarnation }
    /// The suspicion deadline we hold for `name`, if we suspect it.
    public func suspicionDeadlineMs(of name: String) -> Int64? { suspicions[name]?.deadlineMs }
    /// The earliest time at which `tick` has work to do.
    public var nextTimerMs: Int64 {
        var t = Swift.min(nextGossipMs, leaving ? Int64.max : (probe.map { $0.indirectSent ? $0.endAtMs : $0.timeoutAtMs } ?? nextProbeMs))
        if config.pushPullIntervalMs > 0 && !leaving { t = Swift.min(t, nextPushPullMs) }
        for s in suspicions.values { t = Swift.min(t, s.deadlineMs) }
        for r in relays.values { t = Swift.min(t, r.deadlineMs) }
        return t
    }

    public func takeEffects() -> [GossipEffect] {
        defer { effects.removeAll(keepingCapacity: true) }
        return effects
    }

    // MARK: Inputs

    /// Ask each address for a full state exchange (push-pull with the join flag).
    public func join(addresses: [String], nowMs: Int64) {
        advance(nowMs)
        for a in addresses where a != config.address { openStream(.pushPull, to: a, message: pushPullMessage(join: true)) }
    }

    /// Graceful leave: gossip `dead` about ourselves from ourselves; others report `leave`.
    public func leave(nowMs: Int64) throws(GossipError) {
        advance(nowMs)
        if leaving { throw .alreadyLeft }
        leaving = true
        probe = nil
        let me = memberList[indexByName[config.name]!]
        handleDead(incarnation: me.incarnation, node: me.name, from: me.name)
    }

    /// New tags for ourselves: a higher incarnation gossiped as `alive`.
    public func updateTags(_ tags: [String: String], nowMs: Int64) throws(GossipError) {
        advance(nowMs)
        let size = tags.reduce(0) { $0 + $1.key.utf8.count + $1.value.utf8.count }
        if size > config.maxTagsBytes || tags.count > WireLimits.maxTagPairs { throw .tagsTooLarge(size: size, limit: config.maxTagsBytes) }
        if leaving { throw .alreadyLeft }
        let i = indexByName[config.name]!
        memberList[i].tags = tags
        memberList[i].incarnation &+= 1
        memberList[i].stateChangeMs = nowMs
        queueAlive(memberList[i])
        effects.append(.event(.update(memberList[i])))
    }

    /// A UDP datagram from `address`.
    public func receive(_ bytes: [UInt8], from address: String, nowMs: Int64) {
        advance(nowMs)
        let messages: [GossipMessage]
        do { messages = try GossipWire.decodePacket(bytes) } catch { stats.decodeErrors += 1; return }
        for m in messages { handle(m, from: address) }
    }

    /// A stream opened by a peer carrying one message; returns the reply to write back.
    public func receiveStream(_ bytes: [UInt8], from address: String, nowMs: Int64) -> [UInt8]? {
        advance(nowMs)
        guard bytes.count <= WireLimits.maxStreamBytes else { stats.decodeErrors += 1; return nil }
        let message: GossipMessage
        do { message = try GossipWire.decodeMessage(bytes) } catch { stats.decodeErrors += 1; return nil }
        switch message {
        case let .ping(seq, target, _, _):
            if !target.isEmpty && target != config.name { return nil }
            return GossipWire.encode(.ack(seq: seq))
        case let .pushPull(_, remote):
            let reply = GossipWire.encode(pushPullMessage(join: false))
            merge(remote)
            return reply
        default:
            handle(message, from: address)
            return nil
        }
    }

    /// The reply to a stream we asked for with `openStream` (nil: failed or timed out).
    public func streamResult(id: UInt64, reply: [UInt8]?, nowMs: Int64) {
        advance(nowMs)
        guard let pending = streams.removeValue(forKey: id), let reply else { return }
        guard reply.count <= WireLimits.maxStreamBytes else { stats.decodeErrors += 1; return }
        let message: GossipMessage
        do { message = try GossipWire.decodeMessage(reply) } catch { stats.decodeErrors += 1; return }
        switch (pending, message) {
        case let (.pushPull, .pushPull(_, remote)):
            merge(remote)
        case let (.fallbackPing(probeSeq), .ack(seq)) where seq == probeSeq:
            probeAcked(seq: seq)
        default:
            break
        }
    }

    /// Fire every timer due at `nowMs`: probe steps, relay nacks, suspicion timeouts, gossip, push-pull.
    public func tick(nowMs: Int64) {
        advance(nowMs)
        if var p = probe {
            if !p.indirectSent && nowMs >= p.timeoutAtMs {
                sendIndirectProbes(&p)
                probe = p
            }
            if nowMs >= p.endAtMs { probeFailed(p) }
        }
        if probe == nil && !leaving && nowMs >= nextProbeMs { startProbe() }
        expireRelays()
        expireSuspicions()
        if nowMs >= nextGossipMs {
            nextGossipMs = Swift.max(nextGossipMs + config.gossipIntervalMs, nowMs)
            gossip()
        }
        if config.pushPullIntervalMs > 0 && !leaving && nowMs >= nextPushPullMs {
            nextPushPullMs = nowMs + currentPushPullIntervalMs()
            if let peer = randomMembers(1, where: { $0.state == .alive }).first {
                openStream(.pushPull, to: peer.address, message: pushPullMessage(join: false))
            }
        }
    }

    private func advance(_ now: Int64) {
        precondition(now >= nowMs, "time went backwards: \(now) < \(nowMs)")
        nowMs = now
    }

    // MARK: Probing (SWIM §4, Lifeguard)

    private func startProbe() {
        nextProbeMs = nowMs + config.probeIntervalMs
        guard let target = nextProbeTarget() else { return }
        seq &+= 1
        let p = Probe(seq: seq, target: target.name, timeoutAtMs: nowMs + awareness.scale(config.probeTimeoutMs),
                      endAtMs: nowMs + awareness.scale(config.probeIntervalMs))
        probe = p
        stats.probesStarted += 1
        var extra: [GossipMessage] = []
        if target.state == .suspect {
            // Lifeguard buddy system: tell a suspect at once, so it can refute.
            extra.append(.suspect(incarnation: target.incarnation, node: target.name, from: config.name))
        }
        send(.ping(seq: p.seq, target: target.name, source: config.name, sourceAddress: config.address), to: target.address, extra: extra)
    }

    private func nextProbeTarget() -> Member? {
        var checked = 0
        while checked <= probeOrder.count {
            if probeCursor >= probeOrder.count { reshuffleProbeOrder() }
            if probeOrder.isEmpty { return nil }
            let name = probeOrder[probeCursor]
            probeCursor += 1
            checked += 1
            guard let i = indexByName[name], name != config.name else { continue }
            let m = memberList[i]
            if m.state.isDeadOrLeft { continue }
            return m
        }
        return nil
    }

    /// A new round: forget long-dead members, then a fresh random order (SWIM's round-robin).
    private func reshuffleProbeOrder() {
        let expired = memberList.filter { $0.state.isDeadOrLeft && nowMs - $0.stateChangeMs >= config.reapAfterMs && $0.name != config.name }
        for m in expired { remove(m.name); effects.append(.event(.reap(m))) }
        probeOrder = memberList.map(\.name)
        probeOrder.shuffle(using: &rng)
        probeCursor = 0
    }

    private func sendIndirectProbes(_ p: inout Probe) {
        p.indirectSent = true
        guard let target = member(named: p.target) else { return }
        let relays = randomMembers(config.indirectChecks, where: { $0.state == .alive && $0.name != p.target })
        for r in relays {
            p.expectedNacks += 1
            send(.indirectPing(seq: p.seq, target: target.name, targetAddress: target.address, source: config.name,
                               sourceAddress: config.address, wantNack: true), to: r.address)
        }
        if config.tcpFallbackProbe {
            openStream(.fallbackPing(probeSeq: p.seq), to: target.address,
                       message: .ping(seq: p.seq, target: target.name, source: config.name, sourceAddress: config.address))
        }
    }

    private func probeAcked(seq: UInt32) {
        guard let p = probe, p.seq == seq else { return }
        // Lifeguard: a direct ack in time means we are healthy; an indirect one says nothing about us.
        if !p.indirectSent { awareness.apply(delta: -1) }
        stats.probesAcked += 1
        probe = nil
    }

    private func probeFailed(_ p: Probe) {
        probe = nil
        stats.probesFailed += 1
        // Lifeguard: relays that stayed silent (no nack) suggest that we are the slow one.
        awareness.apply(delta: p.expectedNacks > 0 ? p.expectedNacks - p.nacks : 1)
        guard let target = member(named: p.target), target.state == .alive || target.state == .suspect else { return }
        if target.state == .alive { stats.suspicionsRaised += 1 }
        handleSuspect(incarnation: target.incarnation, node: target.name, from: config.name)
    }

    private func handleAck(seq: UInt32) {
        if let r = relays.removeValue(forKey: seq) {
            send(.ack(seq: r.originSeq), to: r.originAddress)
        } else {
            probeAcked(seq: seq)
        }
    }

    private func handleIndirectPing(seq origin: UInt32, target: String, targetAddress: String, wantNack: Bool, from: String) {
        if relays.count >= config.maxRelaysInFlight { stats.droppedRelays += 1; return }
        seq &+= 1
        relays[seq] = Relay(originAddress: from, originSeq: origin, deadlineMs: nowMs + config.probeTimeoutMs, wantNack: wantNack)
        send(.ping(seq: seq, target: target, source: config.name, sourceAddress: config.address), to: targetAddress)
    }

    private func expireRelays() {
        let due = relays.filter { $0.value.deadlineMs <= nowMs }.keys.sorted()
        for k in due {
            let r = relays.removeValue(forKey: k)!
            if r.wantNack { send(.nack(seq: r.originSeq), to: r.originAddress) }
        }
    }

    // MARK: Message dispatch

    private func handle(_ m: GossipMessage, from address: String) {
        switch m {
        case let .ping(seq, target, _, _):
            if !target.isEmpty && target != config.name { return }
            send(.ack(seq: seq), to: address)
        case let .indirectPing(seq, target, targetAddress, _, _, wantNack):
            handleIndirectPing(seq: seq, target: target, targetAddress: targetAddress, wantNack: wantNack, from: address)
        case let .ack(seq):
            handleAck(seq: seq)
        case let .nack(seq):
            if probe?.seq == seq { probe!.nacks += 1 }
        case let .suspect(inc, node, from):
            handleSuspect(incarnation: inc, node: node, from: from)
        case let .alive(inc, node, addr, tags):
            handleAlive(incarnation: inc, node: node, address: addr, tags: tags)
        case let .dead(inc, node, from):
            handleDead(incarnation: inc, node: node, from: from)
        case .pushPull:
            break  // only over streams
        }
    }

    // MARK: State precedence (memberlist state.go: aliveNode / suspectNode / deadNode)

    private func handleAlive(incarnation inc: UInt32, node: String, address: String, tags: [String: String]) {
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

    private func handleSuspect(incarnation inc: UInt32, node: String, from: String) {
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

    private func handleDead(incarnation inc: UInt32, node: String, from: String) {
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
        broadcasts.enqueue(node: node, bytes: GossipWire.encode(.dead(incarnation: inc, node: node, from: from)))
        if node != config.name {
            effects.append(.event(from == node ? .leave(memberList[i]) : .failed(memberList[i])))
        }
    }

    /// SWIM refutation: gossip ourselves alive with an incarnation above the accusation.
    /// Lifeguard: having to refute also means others find us slow, so our score rises.
    private func refute(accusedIncarnation inc: UInt32) {
        let i = indexByName[config.name]!
        memberList[i].incarnation = Swift.max(memberList[i].incarnation, inc) &+ 1
        stats.refutations += 1
        awareness.apply(delta: 1)
        queueAlive(memberList[i])
    }

    private func expireSuspicions() {
        let due = suspicions.filter { $0.value.deadlineMs <= nowMs }.keys.sorted()
        for name in due {
            guard let m = member(named: name) else { suspicions[name] = nil; continue }
            suspicions[name] = nil
            if m.state == .suspect { handleDead(incarnation: m.incarnation, node: name, from: config.name) }
        }
    }

    // MARK: Push-pull (anti-entropy)

    private func pushPullMessage(join: Bool) -> GossipMessage {
        let snapshot = memberList.prefix(config.maxPushPullMembers).map {
            MemberSnapshot(name: $0.name, address: $0.address, incarnation: $0.incarnation, state: $0.state, tags: $0.tags)
        }
        return .pushPull(join: join, members: snapshot)
    }

    /// memberlist mergeState: a remote `dead` only makes us suspect (we may still reach it).
    private func merge(_ remote: [MemberSnapshot]) {
        for s in remote {
            switch s.state {
            case .alive: handleAlive(incarnation: s.incarnation, node: s.name, address: s.address, tags: s.tags)
            case .left: handleDead(incarnation: s.incarnation, node: s.name, from: s.name)
            case .dead, .suspect: handleSuspect(incarnation: s.incarnation, node: s.name, from: config.name)
            }
        }
    }

    private func currentPushPullIntervalMs() -> Int64 {
        GossipMath.pushPullIntervalMs(base: config.pushPullIntervalMs, members: memberList.count)
    }

    // MARK: Dissemination

    private var retransmitLimit: Int { GossipMath.retransmitLimit(mult: config.retransmitMult, members: memberList.count) }

    private func queueAlive(_ m: Member) {
        broadcasts.enqueue(node: m.name, bytes: GossipWire.encode(.alive(incarnation: m.incarnation, node: m.name, address: m.address, tags: m.tags)))
    }

    private func gossip() {
        if broadcasts.count == 0 { return }
        let targets = randomMembers(config.gossipNodes, where: { m in
            switch m.state {
            case .alive, .suspect: true
            case .dead, .left: nowMs - m.stateChangeMs < config.gossipToTheDeadMs
            }
        })
        for t in targets {
            let parts = broadcasts.take(bytesAvailable: config.udpBufferSizeBytes - 2, overheadEach: 2, limit: retransmitLimit)
            if parts.isEmpty { return }
            emitPacket(parts.count == 1 ? parts[0] : GossipWire.encodeCompound(parts), to: t.address)
        }
    }

    /// Send a message with as many queued broadcasts piggybacked as fit in the MTU.
    private func send(_ message: GossipMessage, to address: String, extra: [GossipMessage] = []) {
        var parts = [GossipWire.encode(message)] + extra.map(GossipWire.encode)
        let used = parts.reduce(0) { $0 + $1.count + 2 } + 2
        parts += broadcasts.take(bytesAvailable: config.udpBufferSizeBytes - used, overheadEach: 2, limit: retransmitLimit)
        emitPacket(parts.count == 1 ? parts[0] : GossipWire.encodeCompound(parts), to: address)
    }

    private func emitPacket(_ bytes: [UInt8], to address: String) {
        stats.packetsSent += 1
        effects.append(.sendPacket(to: address, bytes: bytes))
    }

    private func openStream(_ kind: PendingStream, to address: String, message: GossipMessage) {
        if streams.count >= config.maxStreamsInFlight { stats.droppedStreams += 1; return }
        nextStreamID += 1
        streams[nextStreamID] = kind
        let k: StreamKind = if case .pushPull = kind { .pushPull } else { .fallbackPing }
        effects.append(.openStream(id: nextStreamID, kind: k, to: address, bytes: GossipWire.encode(message)))
    }

    // MARK: Member table

    private func insert(_ m: Member) {
        indexByName[m.name] = memberList.count
        memberList.append(m)
        probeOrder.append(m.name)
    }

    /// SWIM: a new member goes to a random position of the current round.
    private func insertIntoProbeOrder(_ name: String) {
        probeOrder.removeLast()  // `insert` appended it
        let at = Int.random(in: 0...probeOrder.count, using: &rng)
        probeOrder.insert(name, at: at)
        if at < probeCursor { probeCursor += 1 }
    }

    private func remove(_ name: String) {
        guard let i = indexByName.removeValue(forKey: name) else { return }
        let last = memberList.count - 1
        if i != last { memberList[i] = memberList[last]; indexByName[memberList[i].name] = i }
        memberList.removeLast()
        suspicions[name] = nil
    }

    /// Up to k distinct random members other than us that satisfy `filter` (memberlist kRandomNodes).
    private func randomMembers(_ k: Int, where filter: (Member) -> Bool) -> [Member] {
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
}
