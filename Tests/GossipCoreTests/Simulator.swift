// A deterministic simulator for the gossip core: many members, virtual time, a network
// with loss, delay/jitter and partitions, killed members and paused ("slow") members.
// Every run is one seed; `GOSSIP_SIM_SEED` replays it.

import GossipCore
import TestSupport

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

func environment(_ key: String) -> String? { getenv(key).map { String(cString: $0) } }

/// The seed for a simulation: GOSSIP_SIM_SEED if set, else the given default. Printed.
func simulationSeed(_ fallback: UInt64, _ label: String) -> UInt64 {
    let seed = environment("GOSSIP_SIM_SEED").flatMap { UInt64($0) } ?? fallback
    print("[\(label)] seed=\(seed) (replay with GOSSIP_SIM_SEED=\(seed))")
    return seed
}

struct NetworkModel {
    var lossRate = 0.0
    /// Probability that a delivered datagram arrives twice (with its own delay).
    var duplicateRate = 0.0
    var delayMs: Int64 = 1
    var jitterMs: Int64 = 2
    /// A stream to an unreachable member fails after this long.
    var streamTimeoutMs: Int64 = 1_000
}

final class Simulator {
    enum Event {
        case packet(to: Int, from: String, bytes: [UInt8])
        case streamRequest(to: Int, from: Int, id: UInt64, bytes: [UInt8])
        case streamReply(to: Int, id: UInt64, reply: [UInt8]?)
        case timer(Int)
        case resume(Int)
    }
    struct Scheduled { var atMs: Int64; var order: UInt64; var event: Event }

    private(set) var nodes: [Memberlist?] = []
    private(set) var addresses: [String] = []
    private var indexByAddress: [String: Int] = [:]
    private var scheduledTimer: [Int64] = []
    private var heap: [Scheduled] = []
    private var order: UInt64 = 0
    private(set) var nowMs: Int64 = 0
    var network: NetworkModel
    var rng: SeededGenerator

    private(set) var killed: Set<Int> = []
    private var pausedUntil: [Int: Int64] = [:]
    private var pausedBacklog: [Int: [Event]] = [:]
    /// Extra inbound delay per member: an overloaded host whose receive loop lags behind.
    var slowInboundMs: [Int: ClosedRange<Int64>] = [:]
    /// Partition group per member; packets cross only between equal groups.
    var partitionGroup: [Int] = []

    /// Every membership event, with the member that observed it and when.
    var onEvent: ((_ observer: Int, _ event: MembershipEvent, _ atMs: Int64) -> Void)?
    private(set) var packetsDelivered = 0

    init(seed: UInt64, network: NetworkModel = NetworkModel()) {
        rng = SeededGenerator(seed: seed)
        self.network = network
    }

    static func name(_ i: Int) -> String { "n\(i)" }
    static func address(_ i: Int) -> String { "10.\(i / 250).\(i % 250).1:7946" }

    /// Create `count` members that already know each other (a warm cluster).
    func startWarmCluster(count: Int, configure: (inout GossipConfig) -> Void = { _ in }) {
        let known = (0..<count).map { Member(name: Simulator.name($0), address: Simulator.address($0)) }
        for _ in 0..<count { addMember(configure: configure, knownMembers: known) }
    }

    /// Add one member (knowing `knownMembers`); returns its index.
    @discardableResult
    func addMember(configure: (inout GossipConfig) -> Void = { _ in }, knownMembers: [Member] = []) -> Int {
        let i = nodes.count
        var c = GossipConfig.lan(name: Simulator.name(i), address: Simulator.address(i), randomSeed: rng.next())
        configure(&c)
        let node = try! Memberlist(config: c, nowMs: nowMs, knownMembers: knownMembers)
        nodes.append(node)
        addresses.append(c.address)
        indexByAddress[c.address] = i
        scheduledTimer.append(Int64.max)
        partitionGroup.append(0)
        scheduleTimer(i)
        return i
    }

    func node(_ i: Int) -> Memberlist { nodes[i]! }

    func kill(_ i: Int) { killed.insert(i) }

    /// The member processes nothing until `nowMs + durationMs` (a GC pause, an overloaded host);
    /// what arrives meanwhile waits in its socket buffers.
    func pause(_ i: Int, durationMs: Int64) {
        let until = nowMs + durationMs
        pausedUntil[i] = until
        push(until, .resume(i))
    }

    func isPaused(_ i: Int) -> Bool { pausedUntil[i] != nil }

    /// Apply a call on member i now, then route its effects.
    func perform(_ i: Int, _ body: (Memberlist) -> Void) {
        body(node(i))
        route(from: i)
        scheduleTimer(i)
    }

    // MARK: Running

    /// Run until virtual time `untilMs`, or until `stop` (checked every `checkEveryMs`) is true.
    @discardableResult
    func run(untilMs: Int64, checkEveryMs: Int64 = 50, stop: (() -> Bool)? = nil) -> Bool {
        var nextCheck = nowMs + checkEveryMs
        while let top = heap.first, top.atMs <= untilMs {
            if let stop, top.atMs >= nextCheck {
                nowMs = Swift.max(nowMs, nextCheck)
                if stop() { return true }
                nextCheck += checkEveryMs
                continue
            }
            let e = popHeap()
            nowMs = e.atMs
            dispatch(e.event)
        }
        nowMs = Swift.max(nowMs, untilMs)
        if let stop { return stop() }
        return false
    }

    private func dispatch(_ event: Event) {
        switch event {
        case let .timer(i):
            guard scheduledTimer[i] == nowMs else { return }
            scheduledTimer[i] = Int64.max
            if killed.contains(i) || pausedUntil[i] != nil { return }
            perform(i) { $0.tick(nowMs: nowMs) }
        case let .resume(i):
            guard let until = pausedUntil[i], until == nowMs else { return }
            pausedUntil[i] = nil
            if killed.contains(i) { return }
            // Timers that fired during the pause run first, then the queued input.
            perform(i) { $0.tick(nowMs: nowMs) }
            for e in pausedBacklog.removeValue(forKey: i) ?? [] { deliver(e) }
        default:
            deliver(event)
        }
    }

    private func deliver(_ event: Event) {
        let target: Int
        switch event {
        case let .packet(to, _, _): target = to
        case let .streamRequest(to, _, _, _): target = to
        case let .streamReply(to, _, _): target = to
        default: return
        }
        if killed.contains(target) { return }
        if pausedUntil[target] != nil { pausedBacklog[target, default: []].append(event); return }
        switch event {
        case let .packet(to, from, bytes):
            packetsDelivered += 1
            perform(to) { $0.receive(bytes, from: from, nowMs: nowMs) }
        case let .streamRequest(to, from, id, bytes):
            var reply: [UInt8]?
            perform(to) { reply = $0.receiveStream(bytes, from: addresses[from], nowMs: nowMs) }
            push(nowMs + latency(), .streamReply(to: from, id: id, reply: reply))
        case let .streamReply(to, id, reply):
            perform(to) { $0.streamResult(id: id, reply: reply, nowMs: nowMs) }
        default:
            break
        }
    }

    private func route(from i: Int) {
        for effect in node(i).takeEffects() {
            switch effect {
            case let .sendPacket(to, bytes):
                guard let j = indexByAddress[to], reachable(i, j) else { continue }
                if network.lossRate > 0 && Double.random(in: 0..<1, using: &rng) < network.lossRate { continue }
                let copies = network.duplicateRate > 0 && Double.random(in: 0..<1, using: &rng) < network.duplicateRate ? 2 : 1
                for _ in 0..<copies {
                    let lag = slowInboundMs[j].map { Int64.random(in: $0, using: &rng) } ?? 0
                    push(nowMs + latency() + lag, .packet(to: j, from: addresses[i], bytes: bytes))
                }
            case let .openStream(id, _, to, bytes):
                if let j = indexByAddress[to], reachable(i, j) {
                    push(nowMs + latency(), .streamRequest(to: j, from: i, id: id, bytes: bytes))
                } else {
                    push(nowMs + network.streamTimeoutMs, .streamReply(to: i, id: id, reply: nil))
                }
            case let .event(e):
                onEvent?(i, e, nowMs)
            }
        }
    }

    private func reachable(_ i: Int, _ j: Int) -> Bool {
        !killed.contains(j) && partitionGroup[i] == partitionGroup[j]
    }

    private func latency() -> Int64 {
        network.delayMs + (network.jitterMs > 0 ? Int64.random(in: 0...network.jitterMs, using: &rng) : 0)
    }

    private func scheduleTimer(_ i: Int) {
        let next = Swift.max(node(i).nextTimerMs, nowMs + 1)
        if next < scheduledTimer[i] {
            scheduledTimer[i] = next
            push(next, .timer(i))
        }
    }

    // MARK: Binary heap ordered by (time, insertion order)

    private func push(_ at: Int64, _ event: Event) {
        order += 1
        heap.append(Scheduled(atMs: at, order: order, event: event))
        var c = heap.count - 1
        while c > 0 {
            let p = (c - 1) / 2
            if less(heap[c], heap[p]) { heap.swapAt(c, p); c = p } else { break }
        }
    }

    private func popHeap() -> Scheduled {
        let top = heap[0]
        let last = heap.removeLast()
        if !heap.isEmpty {
            heap[0] = last
            var p = 0
            while true {
                let l = 2 * p + 1, r = l + 1
                var m = p
                if l < heap.count && less(heap[l], heap[m]) { m = l }
                if r < heap.count && less(heap[r], heap[m]) { m = r }
                if m == p { break }
                heap.swapAt(p, m); p = m
            }
        }
        return top
    }

    private func less(_ a: Scheduled, _ b: Scheduled) -> Bool { a.atMs != b.atMs ? a.atMs < b.atMs : a.order < b.order }
}
