// The probe cycle (SWIM §4: randomized round-robin, ping, ping-req through k members,
// suspect on silence) with Lifeguard's changes (awareness, nacks, the buddy system), and
// the relay side of ping-req.

extension Memberlist {
    // MARK: Probing (SWIM §4, Lifeguard)

    func startProbe() {
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

    func nextProbeTarget() -> Member? {
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

    /// A new round: a fresh random order (SWIM's round-robin). Reaping runs on its own timer.
    func reshuffleProbeOrder() {
        probeOrder = memberList.map(\.name)
        probeOrder.shuffle(using: &rng)
        probeCursor = 0
    }

    func sendIndirectProbes(_ p: inout Probe) {
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

    func probeAcked(seq: UInt32) {
        guard let p = probe, p.seq == seq else { return }
        // Lifeguard: a direct ack in time means we are healthy; an indirect one says nothing about us.
        if !p.indirectSent { awareness.apply(delta: -1) }
        stats.probesAcked += 1
        probe = nil
    }

    func probeFailed(_ p: Probe) {
        probe = nil
        stats.probesFailed += 1
        // Lifeguard: relays that stayed silent (no nack) suggest that we are the slow one.
        awareness.apply(delta: p.expectedNacks > 0 ? p.expectedNacks - p.nacks : 1)
        guard let target = member(named: p.target), target.state == .alive || target.state == .suspect else { return }
        if target.state == .alive { stats.suspicionsRaised += 1 }
        handleSuspect(incarnation: target.incarnation, node: target.name, from: config.name)
    }

    func handleAck(seq: UInt32) {
        if let r = relays.removeValue(forKey: seq) {
            send(.ack(seq: r.originSeq), to: r.originAddress)
        } else {
            probeAcked(seq: seq)
        }
    }

    func handleIndirectPing(seq origin: UInt32, target: String, targetAddress: String, wantNack: Bool, from: String) {
        if relays.count >= config.maxRelaysInFlight { stats.droppedRelays += 1; return }
        seq &+= 1
        relays[seq] = Relay(originAddress: from, originSeq: origin, deadlineMs: nowMs + config.probeTimeoutMs, wantNack: wantNack)
        send(.ping(seq: seq, target: target, source: config.name, sourceAddress: config.address), to: targetAddress)
    }

    func expireRelays() {
        let due = relays.filter { $0.value.deadlineMs <= nowMs }.keys.sorted()
        for k in due {
            let r = relays.removeValue(forKey: k)!
            if r.wantNack { send(.nack(seq: r.originSeq), to: r.originAddress) }
        }
    }

}
