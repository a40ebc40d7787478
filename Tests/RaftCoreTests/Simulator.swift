// A deterministic cluster simulator: N cores, virtual ticks, a network that drops, duplicates,
// delays, reorders and partitions, disks that lag and lose unsynced writes on a crash, and
// continuous checks of Raft's safety properties (§5.4, Figure 3). Every run is a seed.

import RaftCore
import TestSupport

struct SimulationOptions {
    /// Voters at bootstrap.
    var nodeCount = 3
    /// Servers outside the bootstrap configuration (empty log, no configuration), which the
    /// membership changes may add; they catch up by replication or snapshot.
    var spareNodes = 1
    var faultTicks = 300
    var livenessTicks = 400
    var dropPercent = 5
    var duplicatePercent = 3
    var maxDelayTicks = 4
    var crashes = true
    var partitions = true
    var reads = true
    var transfers = true
    var configurationChanges = true
    var compaction = true
    /// Leaders occasionally restore a user snapshot (RaftNode.restoreSnapshot). Off by default:
    /// until a quorum holds the restored point, a leader crash or a lost leadership can lose
    /// the restore while the old leader keeps it (the danger hashicorp/raft's Restore
    /// documents), which the state machine safety check rightly reports; runs with restores
    /// therefore leave out crashes, partitions and drops.
    var restores = false
    var raft = RaftConfig()
    /// Draw maxInflightMessages, maxAppendEntries, maxAppendBytes and heartbeatTicks per seed.
    var randomizeLimits = true
}

struct SimulationFailure: Error, CustomStringConvertible {
    var seed: UInt64
    var tick: Int
    var message: String
    var description: String { "seed=\(seed) tick=\(tick): \(message)" }
}

/// What a simulated disk holds: survives crashes.
struct DurableState {
    var hardState = HardState()
    var snapshot: Snapshot
    var entries: [Entry] = []

    var lastIndex: UInt64 { snapshot.metadata.index + UInt64(entries.count) }
}

struct PendingWrite {
    var hardState: HardState?
    var snapshot: Snapshot?
    var entries: [Entry]
    var heldMessages: [Message]
}

/// The replicated state machine: a running hash of applied entries.
struct StateMachine {
    var applied: UInt64
    var hash: UInt64

    static let emptyHash: UInt64 = 0xCBF2_9CE4_8422_2325

    init(snapshot: Snapshot) {
        applied = snapshot.metadata.index
        hash = snapshot.data.count == 8 ? snapshot.data.reduce(0) { $0 << 8 | UInt64($1) } : StateMachine.emptyHash
    }

    mutating func apply(_ e: Entry) {
        hash = fnv(hash, e.term)
        hash = fnv(hash, UInt64(e.kind.rawValue))
        for b in e.data { hash = fnv(hash, UInt64(b)) }
        applied = e.index
    }

    var snapshotData: [UInt8] { (0 ..< 8).map { UInt8(truncatingIfNeeded: hash >> UInt64(56 - 8 * $0)) } }

    private func fnv(_ h: UInt64, _ v: UInt64) -> UInt64 { (h ^ v) &* 0x100_0000_01B3 }
}

final class SimNode {
    let id: NodeID
    var core: RaftNode?
    var durable: DurableState
    var diskQueue: [PendingWrite] = []
    var machine: StateMachine
    /// The snapshot the application holds in memory (taken or installed), to ship to peers.
    var latestSnapshot: Snapshot
    var lastSeenCommit: UInt64 = 0
    /// The state a user restore loaded, for the Ready that carries the restore's point.
    var pendingRestoreData: [UInt8]?

    init(id: NodeID, bootstrap: Configuration) {
        self.id = id
        let snapshot = Snapshot(metadata: SnapshotMetadata(index: 0, term: 0, configuration: bootstrap), data: [])
        durable = DurableState(snapshot: snapshot)
        machine = StateMachine(snapshot: snapshot)
        latestSnapshot = snapshot
    }

    func start(config: RaftConfig, seed: UInt64) {
        let log = MemoryRaftLog(snapshot: durable.snapshot.metadata, entries: durable.entries)
        core = RaftNode(id: id, config: config, log: log, hardState: durable.hardState, seed: seed)
        machine = StateMachine(snapshot: durable.snapshot)
        latestSnapshot = durable.snapshot
        lastSeenCommit = durable.snapshot.metadata.index
    }

    func crash() {
        core = nil
        diskQueue = []
    }
}

struct InFlightMessage {
    var deliverAt: Int
    var message: Message
}

final class Simulation {
    let seed: UInt64
    let options: SimulationOptions
    var random: SeededGenerator
    var now = 0
    var nodes: [SimNode] = []
    var network: [InFlightMessage] = []
    /// Partition group per node index; messages between groups are lost.
    var partition: [Int]?
    var faultsActive = true
    var failure: SimulationFailure?

    // Checker state.
    var leaderOfTerm: [UInt64: NodeID] = [:]
    var entryFingerprints: [UInt64: [UInt64: (data: [UInt8], kind: EntryKind, prevTerm: UInt64)]] = [:]
    var committedTerms: [UInt64: UInt64] = [:]
    var highestCommitted: UInt64 = 0
    var appliedHashes: [UInt64: UInt64] = [:]
    var readFloor: [UInt64: UInt64] = [:]
    var nextReadContext: UInt64 = 1
    var proposalCounter: UInt64 = 0
    var stats = Stats()

    struct Stats: Equatable {
        var messages = 0
        var elections = 0
        var crashes = 0
        var snapshotsSent = 0
        var readsServed = 0
        var configurationChanges = 0
        var transfers = 0
        var snapshotsInstalled = 0
        var timeoutNowDelivered = 0
        var restores = 0
    }

    init(seed: UInt64, options: SimulationOptions) {
        self.seed = seed
        var random = SeededGenerator(seed: seed)
        var options = options
        if options.randomizeLimits {
            // Stress the window and the batching with small and large limits.
            options.raft.maxInflightMessages = 1 + Int(random.next() % 16)
            options.raft.maxAppendEntries = 1 + Int(random.next() % 64)
            options.raft.maxAppendBytes = [64, 256, 1 << 20][Int(random.next() % 3)]
            options.raft.heartbeatTicks = 1 + Int(random.next() % 2)
            // Without pre-vote, competing candidates share terms far more often.
            options.raft.preVote = random.next() % 4 != 0
            options.raft.checkQuorum = random.next() % 4 != 0
        }
        self.options = options
        self.random = random
        let bootstrap = Configuration(voters: (1 ... UInt64(options.nodeCount)).map { $0 })
        for i in 1 ... options.nodeCount + options.spareNodes {
            let node = SimNode(id: UInt64(i), bootstrap: i <= options.nodeCount ? bootstrap : Configuration(voters: []))
            node.start(config: options.raft, seed: random.next())
            nodes.append(node)
        }
    }

    func percent(_ p: Int) -> Bool { Int(random.next() % 100) < p }
    func perMille(_ p: Int) -> Bool { Int(random.next() % 1000) < p }
    func pick<T>(_ xs: [T]) -> T { xs[Int(random.next() % UInt64(xs.count))] }

    func fail(_ message: String) {
        if failure == nil { failure = SimulationFailure(seed: seed, tick: now, message: message) }
    }

    // MARK: Running

    func run() -> SimulationFailure? {
        for _ in 0 ..< options.faultTicks {
            step()
            if failure != nil { return failure }
        }
        heal()
        checkLiveness()
        return failure
    }

    func step() {
        now += 1
        if faultsActive { injectFaults() }
        clientActions()
        for node in nodes {
            node.core?.tick()
            drain(node)
        }
        deliverDueMessages()
        diskProgress()
        check()
    }

    func heal() {
        faultsActive = false
        partition = nil
        for node in nodes where node.core == nil { restart(node) }
    }

    /// After the faults stop: a leader emerges and a new proposal commits within the bound.
    func checkLiveness() {
        var proposed: (index: UInt64, term: UInt64)?
        for _ in 0 ..< options.livenessTicks {
            step()
            if failure != nil { return }
            if let p = proposed, committedTerms[p.index] == p.term { return }
            if let p = proposed, let t = committedTerms[p.index], t != p.term { proposed = nil }
            if proposed == nil || now % (4 * options.raft.electionTicks) == 0 {
                for node in nodes {
                    guard let core = node.core, core.role == .leader else { continue }
                    proposalCounter += 1
                    if case let .accepted(index, term) = core.propose(payload(proposalCounter)) { proposed = (index, term) }
                    drain(node)
                }
            }
        }
        fail("liveness: no proposal committed within \(options.livenessTicks) ticks after healing")
    }

    func payload(_ n: UInt64) -> [UInt8] { (0 ..< 8).map { UInt8(truncatingIfNeeded: n >> UInt64(8 * $0)) } }

    // MARK: Faults and clients

    func injectFaults() {
        if options.crashes {
            let down = nodes.filter { $0.core == nil }
            if perMille(8), down.count < (options.nodeCount - 1) / 2 + (options.nodeCount > 3 ? 1 : 0) {
                let up = nodes.filter { $0.core != nil }
                if !up.isEmpty {
                    pick(up).crash()
                    stats.crashes += 1
                }
            }
            for node in down where percent(4) { restart(node) }
        }
        if options.partitions {
            if partition == nil, perMille(10) {
                partition = nodes.map { _ in Int(random.next() % 2) }
            } else if partition == nil, perMille(10), let leader = leaders().first {
                // Cut the leader off right after it took proposals: the Figure 8 material.
                partition = nodes.map { $0.id == leader.id ? 1 : 0 }
            } else if partition != nil, percent(4) {
                partition = nil
            }
        }
        if options.crashes, perMille(6), nodes.filter({ $0.core == nil }).count < (options.nodeCount - 1) / 2,
           let victim = nodes.first(where: { n in n.core != nil && n.diskQueue.contains { $0.hardState != nil } }) {
            // Crash with a vote or term change still unsynced: it must be as if it never happened.
            victim.crash()
            stats.crashes += 1
        }
        if options.crashes, perMille(4), let leader = leaders().first,
           nodes.filter({ $0.core == nil }).count < (options.nodeCount - 1) / 2 {
            leader.crash()
            stats.crashes += 1
        }
    }

    func restart(_ node: SimNode) {
        node.start(config: options.raft, seed: random.next())
    }

    func leaders() -> [SimNode] { nodes.filter { $0.core?.role == .leader } }

    func clientActions() {
        for node in leaders() {
            guard let core = node.core else { continue }
            if percent(30) {
                proposalCounter += 1
                _ = core.propose(payload(proposalCounter))
            }
            if options.reads, percent(5) {
                let context = nextReadContext
                nextReadContext += 1
                if core.readIndex(context: context) == .pending { readFloor[context] = highestCommitted }
            }
            if options.transfers, perMille(8) {
                let targets = core.configuration.voters.filter { $0 != node.id }
                if !targets.isEmpty, core.transferLeadership(to: pick(targets)) == .started { stats.transfers += 1 }
            }
            if options.configurationChanges, perMille(15) { changeConfiguration(core) }
            if options.restores, perMille(40) { restore(node, core) }
            drain(node)
        }
        if options.compaction {
            for node in nodes where percent(3) {
                guard let core = node.core else { continue }
                let applied = core.appliedIndex
                if applied > core.snapshotMetadata.index + 3 { compact(node, core, through: applied) }
            }
        }
    }

    func changeConfiguration(_ core: RaftNode) {
        let c = core.configuration
        let all = nodes.map(\.id)
        let minimumVoters = options.nodeCount >= 5 ? 3 : 2
        let change: ConfigurationChange
        if let learner = c.nonVoters.first, percent(70) {
            change = .promoteToVoter(learner)
        } else if c.voters.count > minimumVoters, percent(50) {
            change = .remove(pick(c.voters))
        } else if let outsider = all.first(where: { !c.isMember($0) }) {
            change = .addNonVoter(outsider)
        } else if c.voters.count > minimumVoters {
            change = .remove(pick(c.voters))
        } else {
            return
        }
        if case .accepted = core.proposeConfigurationChange(change) { stats.configurationChanges += 1 }
    }

    /// A user restore: the application's state becomes a new one (a distinct hash), the log a
    /// snapshot point past its last index.
    func restore(_ node: SimNode, _ core: RaftNode) {
        let target = core.lastIndex + 1 + random.next() % 3
        guard case let .restored(index, _) = core.restoreSnapshot(at: target) else { return }
        stats.restores += 1
        let hash = 0xA5A5_0000_0000_0000 | index
        node.pendingRestoreData = (0 ..< 8).map { UInt8(truncatingIfNeeded: hash >> UInt64(56 - 8 * $0)) }
    }

    func compact(_ node: SimNode, _ core: RaftNode, through index: UInt64) {
        // Only a snapshot of durable state: not while an installed snapshot is still being written.
        guard node.machine.applied == index, !node.diskQueue.contains(where: { $0.snapshot != nil }) else { return }
        core.snapshotTaken(at: index)
        let snapshot = Snapshot(metadata: core.snapshotMetadata, data: node.machine.snapshotData)
        // The application's snapshot write is synchronous here; the log prefix goes with it.
        node.latestSnapshot = snapshot
        if snapshot.metadata.index > node.durable.snapshot.metadata.index {
            let drop = Int(min(index, node.durable.lastIndex) - node.durable.snapshot.metadata.index)
            node.durable.entries.removeFirst(drop)
            node.durable.snapshot = snapshot
        }
    }

    // MARK: Network

    func send(_ m: Message, from node: SimNode) {
        var message = m
        if case var .installSnapshot(install) = message.body {
            // The core references the snapshot; the transport supplies its bytes.
            guard node.latestSnapshot.metadata == install.snapshot.metadata else {
                fail("node \(node.id) sent a snapshot it does not hold: \(install.snapshot.metadata)")
                return
            }
            install.snapshot.data = node.latestSnapshot.data
            message.body = .installSnapshot(install)
            stats.snapshotsSent += 1
        }
        // Every message crosses the wire codec.
        do {
            let decoded = try Message.decode(message.encoded())
            if decoded != message { fail("codec round-trip changed \(message)") }
        } catch {
            fail("codec rejected a valid message: \(error)")
        }
        stats.messages += 1
        if faultsActive && percent(options.dropPercent) { return }
        let copies = faultsActive && percent(options.duplicatePercent) ? 2 : 1
        for _ in 0 ..< copies {
            let delay = 1 + Int(random.next() % UInt64(faultsActive ? options.maxDelayTicks : 2))
            network.append(InFlightMessage(deliverAt: now + delay, message: message))
        }
    }

    func deliverDueMessages() {
        var due: [Message] = []
        var later: [InFlightMessage] = []
        for m in network {
            if m.deliverAt <= now { due.append(m.message) } else { later.append(m) }
        }
        network = later
        due.shuffle(using: &random)
        for m in due {
            let from = Int(m.from - 1), to = Int(m.to - 1)
            if let p = partition, p[from] != p[to] { continue }
            let node = nodes[to]
            guard let core = node.core else { continue }
            if m.body == .timeoutNow { stats.timeoutNowDelivered += 1 }
            core.step(m)
            drain(node)
        }
    }

    // MARK: Ready and disk

    func drain(_ node: SimNode) {
        guard let core = node.core else { return }
        while var ready = core.ready() {
            if var restored = ready.snapshot, let data = node.pendingRestoreData {
                // The leader's own restore: its state is the restored one, and the snapshot it
                // sends its followers must be that state.
                node.pendingRestoreData = nil
                restored.data = data
                ready.snapshot = restored
                node.latestSnapshot = restored
            }
            for e in ready.entries { recordEntry(e, prevTerm: core.term(at: e.index - 1), node: node) }
            var held: [Message] = []
            for out in ready.messages {
                if out.mayPrecedePersistence { send(out.message, from: node) } else { held.append(out.message) }
            }
            node.diskQueue.append(PendingWrite(hardState: ready.hardState, snapshot: ready.snapshot,
                                               entries: ready.entries, heldMessages: held))
            if let snapshot = ready.snapshot {
                stats.snapshotsInstalled += 1
                node.machine = StateMachine(snapshot: snapshot)
                node.latestSnapshot = snapshot
                checkApplied(index: snapshot.metadata.index, hash: node.machine.hash, node: node)
            }
            for e in ready.committedEntries {
                if e.index != node.machine.applied + 1 {
                    fail("node \(node.id) applies \(e.index) after \(node.machine.applied)")
                    return
                }
                node.machine.apply(e)
                checkApplied(index: e.index, hash: node.machine.hash, node: node)
            }
            for read in ready.readStates {
                stats.readsServed += 1
                if let floor = readFloor[read.context], read.index < floor {
                    fail("read \(read.context) at index \(read.index) misses commit \(floor) known before it began")
                }
                if node.machine.applied < read.index { fail("read released before its index was applied") }
            }
            core.advance(ready)
        }
        // The safety properties hold after every step of every node, not just per tick.
        check()
    }

    func diskProgress() {
        for node in nodes {
            guard node.core != nil, !node.diskQueue.isEmpty, percent(70) else { continue }
            let n = 1 + Int(random.next() % UInt64(node.diskQueue.count))
            for _ in 0 ..< n {
                guard node.core != nil, !node.diskQueue.isEmpty else { break }
                complete(node.diskQueue.removeFirst(), on: node)
            }
        }
    }

    func complete(_ write: PendingWrite, on node: SimNode) {
        if let snapshot = write.snapshot {
            node.durable.snapshot = snapshot
            node.durable.entries = []
        }
        if let first = write.entries.first {
            let base = node.durable.snapshot.metadata.index
            guard first.index > base, first.index <= node.durable.lastIndex + 1 else {
                fail("node \(node.id) disk write at \(first.index) does not follow its log (base \(base), last \(node.durable.lastIndex))")
                return
            }
            node.durable.entries.removeSubrange(Int(first.index - base - 1)...)
            node.durable.entries.append(contentsOf: write.entries)
        }
        if let hs = write.hardState {
            if hs.term < node.durable.hardState.term { fail("node \(node.id) persisted a lower term") }
            node.durable.hardState = hs
        }
        if node.durable.hardState.commitIndex > node.durable.lastIndex {
            fail("node \(node.id) durable commit \(node.durable.hardState.commitIndex) beyond durable log \(node.durable.lastIndex)")
        }
        for m in write.heldMessages { send(m, from: node) }
        guard let core = node.core else { return }
        if let last = write.entries.last {
            core.persisted(upTo: last.index, term: last.term)
        } else if let snapshot = write.snapshot {
            core.persisted(upTo: snapshot.metadata.index, term: snapshot.metadata.term)
        }
        drain(node)
    }

    // MARK: Safety checks

    /// Log matching (§5.3): an (index, term) names one entry, whose predecessor has one term;
    /// by induction equal (index, term) means equal prefixes.
    func recordEntry(_ e: Entry, prevTerm: UInt64?, node: SimNode) {
        guard let prevTerm else { fail("node \(node.id) appended \(e.index) without a predecessor"); return }
        if let seen = entryFingerprints[e.index]?[e.term] {
            if seen.data != e.data || seen.kind != e.kind || seen.prevTerm != prevTerm {
                fail("log matching: node \(node.id) has a different entry at index \(e.index) term \(e.term)")
            }
        } else {
            entryFingerprints[e.index, default: [:]][e.term] = (e.data, e.kind, prevTerm)
        }
    }

    /// State machine safety (§5.4.3): every node applies the same state at each index.
    func checkApplied(index: UInt64, hash: UInt64, node: SimNode) {
        if let seen = appliedHashes[index] {
            if seen != hash { fail("state machine safety: node \(node.id) diverges at index \(index) (seen \(String(seen, radix: 16)) now \(String(hash, radix: 16))") }
        } else {
            appliedHashes[index] = hash
        }
    }

    func check() {
        for node in nodes {
            guard let core = node.core else { continue }
            // Election safety (§5.2): at most one leader per term.
            if core.role == .leader {
                if let other = leaderOfTerm[core.term] {
                    if other != node.id { fail("election safety: \(other) and \(node.id) both lead term \(core.term)") }
                } else {
                    leaderOfTerm[core.term] = node.id
                    stats.elections += 1
                    // Leader completeness (§5.4): the new leader holds every committed entry.
                    for (index, term) in committedTerms where index > core.snapshotMetadata.index {
                        if core.term(at: index) != term {
                            fail("leader completeness: leader \(node.id) of term \(core.term) lacks committed \(index)/\(term)")
                        }
                    }
                }
            }
            // Committed entries are never lost or changed: a commit index only ever covers
            // the entries recorded as committed.
            if core.commitIndex < node.lastSeenCommit { node.lastSeenCommit = core.commitIndex }
            if core.commitIndex > node.lastSeenCommit {
                var index = max(node.lastSeenCommit + 1, core.snapshotMetadata.index + 1)
                while index <= core.commitIndex {
                    guard let term = core.term(at: index) else {
                        fail("node \(node.id) committed \(index) that it does not hold")
                        break
                    }
                    if let seen = committedTerms[index], seen != term {
                        fail("committed entry lost: index \(index) was term \(seen), node \(node.id) now commits term \(term)")
                    }
                    committedTerms[index] = term
                    index += 1
                }
                highestCommitted = max(highestCommitted, core.commitIndex)
                node.lastSeenCommit = core.commitIndex
            }
        }
    }
}
