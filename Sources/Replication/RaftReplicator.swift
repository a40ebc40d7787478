// The replicated command log of every server (a `-dev` or `-bootstrap` server is a cluster of
// one voter): drives a RaftNode on the loop thread (ticks from a LoopTimer, messages from the
// RaftTransport), persists and applies on the disk thread with group commit, and answers
// writes once committed and applied.
import EventLoop
import Logging
import Metrics
import RaftCore
import StateStore
import Storage

/// Loop-confined, except `init`, which may run on any thread before `start` (it recovers the
/// log and state; it does not touch the transport).
public final class RaftReplicator {
    public let id: NodeID
    /// Read-only view of the state store for the loop thread (LMDB read transactions).
    public let reader: StateStore
    /// Called on the loop thread when applied commands become visible to `reader` (wakes
    /// blocking queries): one call per commit of the state's held write, for every batch in it,
    /// answers in order. After an installed snapshot replaced the whole state, `changedKeys` is
    /// `[""]`: every key may have changed (the empty key is never a real key).
    public var onApplied: ((AppliedBatch) -> Void)?
    /// Highest log index applied here and visible to `reader`: commands, no-ops and
    /// configuration entries alike. Commands applied in the state's held write
    /// (`stateCommitDelayMilliseconds`) count once that write commits.
    public internal(set) var lastAppliedIndex: UInt64
    /// Highest log index handed to the state store, visible or not.
    private(set) var lastIssuedApplyIndex: UInt64
    /// Index ranges of the command batches applied in the held write, oldest first; empty when
    /// every apply is visible.
    private var heldApplies: [(first: UInt64, last: UInt64)] = []
    /// Commits the held write when an apply has waited `stateCommitDelayMilliseconds`.
    private var stateCommitTimer: LoopTimer?
    private var stateCommitTimerArmed = false
    /// A commit of the held write is queued on the disk thread.
    private var stateCommitRequested = false

    let loop: Loop
    let config: RaftReplicatorConfig
    let logger: Logger
    let transport: RaftTransport
    let node: RaftNode
    let raftLog: LMDBRaftLog
    private let logEnvironment: Environment
    let stateEnvironment: Environment
    let disk = DiskThread(name: "conclave-raft-disk")
    let diskSide: ThreadHandoff<DiskSide>
    /// Dumps the state for InstallSnapshot streams without holding up the disk thread's commits.
    let snapshotThread = DiskThread(name: "conclave-raft-snapshot")
    /// Syncs periodic state checkpoints (RaftPersistBatch.swift).
    let checkpointThread = DiskThread(name: "conclave-state-sync")
    var snapshotMailbox: LoopMailbox<SnapshotEvent>?
    var snapshots = SnapshotActivity()
    /// Where snapshot streams keep their temporary files.
    let snapshotDirectory: String
    private var mailbox: LoopMailbox<DiskJobDone>?
    private var ticker: LoopTimer?
    private var drainScheduled = false
    var addressBook: [NodeID: String]
    private var addressBookDirty = false
    private(set) var started = false
    private(set) var closed = false

    /// Group commit: what the core hands out while a job is on disk forms the next job.
    private var accumulating = PersistBatch()
    private var inFlight: PersistBatch?
    /// The hard state last written to the log (term and vote must be durable before any
    /// message that depends on them; see startJobIfIdle for the commit index).
    private var persistedHardState: HardState
    /// A hard state whose only change is the commit index, not written yet.
    private var deferredHardState: HardState?

    var proposals: [UInt64: PendingProposal] = [:]
    private var reads: [UInt64: PendingRead] = [:]
    private var nextReadContext: UInt64 = 1
    var forwarding = ForwardingState()
    var membership: MembershipOperation?
    /// Highest index each peer acknowledged to this leader (from AppendEntries answers); the
    /// catch-up test before promoting a non-voter.
    var matchIndex: [NodeID: UInt64] = [:]
    /// Each follower's replication mode last logged ("probe", "replicate", "snapshot").
    var loggedReplicationModes: [NodeID: String] = [:]
    /// When this server last heard from the leader of its term (loop clock).
    private(set) var lastLeaderContactMilliseconds: UInt64?
    /// Where this server's transport can be reached by the others.
    private(set) var advertiseAddress: String?
    let metrics: RaftMetrics
    let peerMetrics: RaftMetrics.Peers

    private var observedRole: Role = .follower
    private var observedLeader: NodeID?
    private var observedConfiguration: Configuration

    struct PendingProposal {
        var term: UInt64
        var completion: (Result<CommitOutcome, RaftCommitError>) -> Void
        /// For consul.raft.commitTime.
        var proposedAtNanoseconds: UInt64 = 0
    }

    private struct PendingRead {
        var deadlineMilliseconds: UInt64
        var completion: (Result<UInt64, RaftCommitError>) -> Void
    }

    /// - Parameters:
    ///   - transport: this server's transport, already listening; the replicator owns it from now
    ///     on (it sets its handlers and closes it on `close`).
    ///   - bootstrap: every voter of a new cluster with its address, this server included.
    ///     Written only when the log is empty; a restarting server recovers from its data dir.
    ///     A server joining an existing cluster passes nil and is added by the leader's `addServer`.
    ///   - advertiseAddress: this server's "host:port" for the others; defaults to its bootstrap
    ///     entry, else 127.0.0.1 and the transport's port.
    ///   - metricsFactory: where metrics go (see RaftMetrics); nil: the process-wide MetricsSystem.
    public init(id: NodeID, loop: Loop, dataDirectory: String, transport: RaftTransport,
                bootstrap: [NodeID: String]? = nil, advertiseAddress: String? = nil,
                config: RaftReplicatorConfig = RaftReplicatorConfig(), logger: Logger,
                metricsFactory: (any MetricsFactory)? = nil) throws {
        try config.validate()
        precondition(id != 0, "raft: server id 0 is reserved (it stands for 'no vote')")
        self.id = id
        self.loop = loop
        self.config = config
        var logger = logger
        logger[metadataKey: "server"] = "\(id)"
        self.logger = logger
        self.transport = transport
        // The log commits without fsync too: its durability is the journal's synced record per
        // disk job (RaftDiskSide.swift), and a checkpoint lets the journal reuse its space.
        let logDirectory = DataLayout.logDirectory(dataDirectory)
        if case let .rolledBack(from, to) = try EnvironmentCheckpoint.recover(directory: logDirectory) {
            logger.warning("raft: log stopped after its last checkpoint; rolled back to it, the journal replays the rest",
                           metadata: ["from_txn": "\(from)", "to_txn": "\(to)"])
        }
        logEnvironment = try Environment(directory: logDirectory, durability: .noSync)
        // The state is rebuilt from the log past its last checkpoint, so its commits skip
        // LMDB's fsync (EnvironmentCheckpoint.swift).
        let stateDirectory = DataLayout.stateDirectory(dataDirectory)
        let recovery = try EnvironmentCheckpoint.recover(directory: stateDirectory)
        if case let .rolledBack(from, to) = recovery {
            logger.warning("raft: state store stopped after its last checkpoint; rolled back to it, the log replays the rest",
                           metadata: ["from_txn": "\(from)", "to_txn": "\(to)"])
        }
        stateEnvironment = try Environment(directory: stateDirectory, durability: .noSync)
        snapshotDirectory = DataLayout.snapshotTempDirectory(dataDirectory)
        SnapshotTempFile.prepare(directory: snapshotDirectory)
        let writer = try RaftLogWriter(environment: logEnvironment)
        let journal = try Journal(directory: logDirectory, fileBytes: config.journalFileBytes)
        let replay = try writer.replay(journal)
        if replay.records > 0 {
            logger.info("raft: replayed log batches from the journal", metadata: [
                "records": "\(replay.records)", "through_sequence": "\(replay.nextSequence - 1)"])
        }
        let recovered = try writer.recover(bootstrap: bootstrap)
        // Before any new commit, each store's durable point is what is there now.
        let logCheckpoint = EnvironmentCheckpoint(environment: logEnvironment)
        try logCheckpoint.take(nowNanoseconds: monotonicNanoseconds())
        journal.startWriting(nextSequence: replay.nextSequence)
        raftLog = try LMDBRaftLog(environment: logEnvironment, snapshot: recovered.snapshot,
                                  lastIndexInLMDB: recovered.lastIndex)
        let state = try StateStore(environment: stateEnvironment)
        reader = try StateStore(environment: stateEnvironment)
        let checkpoint = EnvironmentCheckpoint(environment: stateEnvironment)
        try checkpoint.take(nowNanoseconds: monotonicNanoseconds())
        lastAppliedIndex = try state.appliedIndex()
        lastIssuedApplyIndex = lastAppliedIndex
        // No check of the state's applied index against the snapshot point: the state records
        // only commands, so it may lag the snapshot point by no-op and configuration entries.
        // The state is synced before the log drops entries (compaction, installed snapshots).
        addressBook = recovered.addressBook
        self.advertiseAddress = advertiseAddress
        metrics = RaftMetrics(factory: metricsFactory ?? MetricsSystem.factory)
        peerMetrics = RaftMetrics.Peers(factory: metrics.factory)
        diskSide = ThreadHandoff(value: DiskSide(writer: writer, state: state, checkpoint: checkpoint, logCheckpoint: logCheckpoint,
                                                 journal: journal, metrics: metrics, config: config,
                                                 checkpointThread: checkpointThread))
        node = RaftNode(id: id, config: config.raft, log: raftLog, hardState: recovered.hardState,
                        seed: config.seed ?? UInt64.random(in: 1 ... .max))
        observedConfiguration = node.configuration
        persistedHardState = recovered.hardState
        logger.info("raft: initial configuration", metadata: [
            "index": "\(node.configurationIndex)", "voters": "\(node.configuration.voters)",
            "non_voters": "\(node.configuration.nonVoters)", "term": "\(node.term)",
            "last_index": "\(node.lastIndex)"])
    }

    /// Must run on the loop thread before anything else.
    public func start() {
        loop.assertInLoopThread()
        guard !started, !closed else { return }
        started = true
        mailbox = LoopMailbox<DiskJobDone>(loop: loop) { [weak self] done in
            for item in done { self?.jobFinished(item) }
        }
        for (peer, address) in addressBook where peer != id { transport.setAddress(address, for: peer) }
        let ownAddress = advertiseAddress ?? addressBook[id] ?? "127.0.0.1:\(transport.port)"
        advertiseAddress = ownAddress
        if addressBook[id] != ownAddress {
            addressBook[id] = ownAddress
            markAddressBookDirty()
        }
        transport.connectionPreamble = HelloFrame(id: id, address: ownAddress).encoded()
        transport.onMessage = { [weak self] message in self?.receive(message) }
        transport.onControlFrame = { [weak self] payload in self?.receiveControlFrame(payload) }
        snapshotMailbox = LoopMailbox<SnapshotEvent>(loop: loop) { [weak self] events in
            for event in events { self?.snapshotEvent(event) }
        }
        transport.streamHandlers[StreamKind.snapshot] = { [weak self] connection, firstFrame, decoder in
            guard let self else { connection.closeNow(); return }
            self.acceptSnapshotStream(connection, firstFrame: firstFrame, decoder: decoder)
        }
        stateCommitTimer = LoopTimer(loop: loop)
        let ticker = LoopTimer(loop: loop)
        ticker.start(afterMilliseconds: config.tickIntervalMilliseconds,
                     repeatMilliseconds: config.tickIntervalMilliseconds) { [weak self] in self?.tick() }
        self.ticker = ticker
        logger.info("raft: entering follower state", metadata: ["term": "\(node.term)"])
        drain()
    }

    // MARK: State

    public var isLeader: Bool { node.role == .leader }
    public var term: UInt64 { node.term }
    public var leaderID: NodeID? { node.leader }
    /// The leader's address ("host:port" of its Raft transport), when one is known.
    public var leaderAddress: String? { node.leader.flatMap { addressBook[$0] } }
    /// Every member of the current configuration (voters and non-voters) with its address.
    public var peers: [NodeID: String] {
        Dictionary(uniqueKeysWithValues: node.configuration.members.map { ($0, addressBook[$0] ?? "") })
    }
    public var configuration: Configuration { node.configuration }
    public var commitIndex: UInt64 { node.commitIndex }

    // MARK: Client calls

    /// Proposes a command. The completion runs on the loop thread once the command is committed
    /// and applied here (or failed). On a follower the write is forwarded to the leader when
    /// `forwardToLeader` (default: `config.forwardWritesToLeader`) is true and a leader is
    /// known; otherwise it fails fast with `.notLeader(leaderAddress)`.
    public func submit(_ command: [UInt8], forwardToLeader: Bool? = nil,
                       completion: @escaping (Result<CommitOutcome, RaftCommitError>) -> Void) {
        loop.assertInLoopThread()
        guard started, !closed else { completion(.failure(.closed)); return }
        guard command.first != AddressRecord.firstByte else {
            completion(.failure(.rejected("commands may not start with byte \(AddressRecord.firstByte), reserved for Raft")))
            return
        }
        guard !restoreRefusesProposals else {
            completion(.failure(.rejected("a snapshot restore is in progress; retry")))
            return
        }
        guard proposals.count < config.maxPendingProposals else {
            completion(.failure(.overloaded(pending: proposals.count, limit: config.maxPendingProposals)))
            return
        }
        switch node.propose(command) {
        case let .accepted(index, term):
            // An earlier proposal at this index was overwritten by another term before this
            // server led again (expireWaiters had no tick in between to notice).
            if let stale = proposals.updateValue(PendingProposal(term: term, completion: completion,
                                                                 proposedAtNanoseconds: monotonicNanoseconds()), forKey: index) {
                stale.completion(.failure(.leadershipLost(index: index, term: stale.term)))
            }
            drainAtEndOfTurn()
        case let .notLeader(leader):
            if forwardToLeader ?? config.forwardWritesToLeader, let leader, leader != id {
                forward(command, to: leader, completion: completion)
            } else {
                completion(.failure(.notLeader(leaderAddress: leader.flatMap { addressBook[$0] })))
            }
        case .leadershipTransferInProgress:
            completion(.failure(.leadershipTransferInProgress))
        case let .tooLarge(bytes, limit):
            completion(.failure(.tooLarge(bytes: bytes, limit: limit)))
        case let .tooManyUncommitted(limit):
            completion(.failure(.overloaded(pending: limit, limit: limit)))
        case .configurationChangeInProgress, .invalidConfigurationChange:
            preconditionFailure("propose answered with a configuration-change result")
        }
    }

    /// A linearizable read point (thesis §6.4): completes with an index once the leader was
    /// confirmed by a quorum and this server has applied that index; reads of `reader` are
    /// then consistent (Consul's `?consistent`). A follower asks the leader for the index
    /// (§6.4.1) when `forwardToLeader` (default: `config.forwardWritesToLeader`) is true,
    /// else fails with `.notLeader(leaderAddress)`.
    public func readIndex(forwardToLeader: Bool? = nil, completion: @escaping (Result<UInt64, RaftCommitError>) -> Void) {
        loop.assertInLoopThread()
        guard started, !closed else { completion(.failure(.closed)); return }
        guard reads.count < config.maxPendingReads else {
            completion(.failure(.overloaded(pending: reads.count, limit: config.maxPendingReads)))
            return
        }
        let context = nextReadContext
        nextReadContext += 1
        switch node.readIndex(context: context) {
        case .pending:
            reads[context] = PendingRead(deadlineMilliseconds: loop.nowMilliseconds + config.readTimeoutMilliseconds,
                                         completion: completion)
            drainAtEndOfTurn()
        case let .notLeader(leader):
            if forwardToLeader ?? config.forwardWritesToLeader, let leader, leader != id {
                forwardReadIndex(to: leader, completion: completion)
            } else {
                completion(.failure(.notLeader(leaderAddress: leader.flatMap { addressBook[$0] })))
            }
        case let .tooManyPendingReads(limit):
            completion(.failure(.overloaded(pending: limit, limit: limit)))
        }
    }

    // MARK: Inputs

    private func tick() {
        guard !closed else { return }
        node.tick()
        sampleReplicationMetrics()
        logReplicationModeChanges()
        expireWaiters()
        snapshotTick()
        drain()
    }

    private func receive(_ message: Message) {
        guard !closed, message.to == id else { return }
        if case let .appendEntriesResponse(response) = message.body, response.success, node.role == .leader,
           message.term == node.term {
            matchIndex[message.from] = max(matchIndex[message.from] ?? 0, response.index)
        }
        observeAppendResponse(message)
        if case let .installSnapshotResponse(response) = message.body, node.role == .leader, message.term == node.term {
            matchIndex[message.from] = max(matchIndex[message.from] ?? 0, response.lastIndex)
        }
        logger.debug("raft: message received", metadata: ["from": "\(message.from)", "term": "\(message.term)"])
        node.step(message)
        if message.from == node.leader, message.term == node.term {
            switch message.body {
            case .appendEntries, .heartbeat, .installSnapshot: lastLeaderContactMilliseconds = loop.nowMilliseconds
            default: break
            }
        }
        drainAtEndOfTurn()
    }

    /// Fails reads past their deadline, and proposals whose entry is no longer in this
    /// server's log as proposed (another leader overwrote or truncated it).
    private func expireWaiters() {
        if !reads.isEmpty {
            let now = loop.nowMilliseconds
            for (context, read) in reads where read.deadlineMilliseconds <= now {
                reads[context] = nil
                read.completion(.failure(.timeout("no quorum confirmed the read in \(config.readTimeoutMilliseconds) ms")))
            }
        }
        if !proposals.isEmpty, node.role != .leader {
            for (index, proposal) in proposals where node.term(at: index) != proposal.term {
                proposals[index] = nil
                proposal.completion(.failure(.leadershipLost(index: index, term: proposal.term)))
            }
        }
        expireForwards()
        advanceMembership()
    }

    // MARK: Ready

    /// Drains once at the end of this loop turn instead of now. Proposals, reads and messages
    /// that arrive in one turn (many HTTP requests parsed from one poll, several AppendEntries
    /// read from one socket) then leave as one Ready: one AppendEntries per follower carrying
    /// all of the turn's entries, and one disk job, instead of one each per request.
    func drainAtEndOfTurn() {
        guard !drainScheduled else { return }
        drainScheduled = true
        loop.atEndOfTurn { [weak self] in
            guard let self else { return }
            self.drainScheduled = false
            self.drain()
        }
    }

    /// Takes everything the core produced: sends what may go now, queues the rest for the
    /// next disk job, serves confirmed reads, and starts a disk job if none is running.
    func drain() {
        guard started, !closed else { return }
        // Past the bound, the rest waits for the job that is about to start (or is running):
        // its completion drains again.
        while accumulating.committed.count < config.maxApplyEntriesPerBatch, let ready = node.ready() {
            for out in ready.messages {
                if case let .installSnapshot(install) = out.message.body {
                    // The snapshot's data travels on its own stream (RaftSnapshots.swift).
                    sendSnapshot(to: out.message.to, term: out.message.term, install.snapshot.metadata)
                } else if out.mayPrecedePersistence {
                    sendCounted(out.message)
                } else {
                    accumulating.heldMessages.append(out.message)
                }
            }
            accumulating.add(ready)
            for read in ready.readStates {
                // The core releases a read once its index is applied; readers see it once the
                // held write commits.
                guard let pending = reads.removeValue(forKey: read.context) else { continue }
                waitForApply(read.index, deadlineMilliseconds: pending.deadlineMilliseconds, pending.completion)
            }
        }
        observeState()
        startJobIfIdle()
    }

    private func startJobIfIdle() {
        guard inFlight == nil, !closed, let mailbox else { return }
        if addressBookDirty {
            accumulating.addressBook = addressBook
            addressBookDirty = false
        }
        if let compaction = raftLog.takePendingCompaction() { accumulating.compaction = compaction }
        guard !accumulating.isEmpty else { return }
        var batch = accumulating
        batch.restoreGeneration = raftLog.restoreGeneration
        accumulating = PersistBatch()
        inFlight = batch
        var hardState = batch.hardState ?? deferredHardState
        if let state = hardState, state.term == persistedHardState.term, state.votedFor == persistedHardState.votedFor,
           batch.entries.isEmpty, batch.addressBook == nil, batch.restore == nil, batch.compaction == nil {
            // Only the commit index moved. Raft keeps it volatile (Figure 2; it is re-learned
            // from the leader, or recomputed by a lone leader, after a restart), so it does not
            // cost a synced log commit of its own: it rides along with the next log write.
            // Without this, every commit on the leader, and every commit a follower learns,
            // was a full log fsync in series with the state apply.
            deferredHardState = state
            hardState = nil
        } else {
            deferredHardState = nil
        }
        if let hardState { persistedHardState = hardState }
        let job = DiskJob(hardState: hardState, entries: batch.entries,
                          commands: batch.committed.filter {
                              $0.kind == .normal && $0.index > lastIssuedApplyIndex && !AddressRecord.isRecord($0)
                          },
                          addressBook: batch.addressBook, restore: batch.restore, compaction: batch.compaction,
                          commitApply: config.stateCommitDelayMilliseconds == 0 || !forwarding.readsWaitingForApply.isEmpty)
        guard job.writesLog || !job.commands.isEmpty else {
            // Nothing to write and no job on disk: every earlier write is durable already.
            jobFinished(DiskJobDone(applied: nil))
            return
        }
        let side = diskSide
        let disk = self.disk
        // A job that installs a snapshot reports once, at the end: its log and state change together.
        let reportLogFirst = batch.restore == nil
        disk.submit {
            mailbox.send(Self.run(job, on: side.value, logDurable: {
                if reportLogFirst { mailbox.send(DiskJobDone(applied: nil, logOnly: true)) }
            }))
            side.value.maintain(disk: disk, nowNanoseconds: monotonicNanoseconds())
        }
    }

    private func jobFinished(_ done: DiskJobDone) {
        guard !closed else { return }
        if done.commitRequestAnswered {
            stateCommitRequested = false
            if let committed = done.committed { stateCommitted(committed) }
            scheduleStateCommit()
            return
        }
        guard var batch = inFlight else { return }
        if done.logOnly {
            // The log is durable, the apply still runs: acknowledge now (a follower's answer,
            // the leader's own match) rather than one state commit later.
            logPersisted(batch)
            batch.persistReported = true
            inFlight = batch
            drain()
            return
        }
        inFlight = nil
        if let written = done.writtenThrough, batch.restoreGeneration == raftLog.restoreGeneration {
            raftLog.writtenTo(index: written.index, term: written.term)
        }
        if let restore = batch.restore, batch.restoreGeneration == raftLog.restoreGeneration {
            node.persisted(upTo: restore.index, term: restore.term)
            stateReplaced(through: restore.index)
            logger.info("raft: snapshot installed", metadata: ["index": "\(restore.index)", "term": "\(restore.term)"])
        }
        if !batch.persistReported { logPersisted(batch) }
        var results: [UInt64: ApplyResult] = [:]
        if let (indexes, applied) = done.applied {
            for (index, result) in zip(indexes, applied.results) { results[index] = result }
            if let first = indexes.first, let last = indexes.last { heldApplies.append((first, last)) }
        }
        for entry in batch.committed {
            lastIssuedApplyIndex = max(lastIssuedApplyIndex, entry.index)
            guard let proposal = proposals.removeValue(forKey: entry.index) else { continue }
            if proposal.term == entry.term {
                recordCommit(proposal)
                proposal.completion(.success(CommitOutcome(index: entry.index,
                                                           result: results[entry.index] ?? .failed("not applied"))))
            } else {
                proposal.completion(.failure(.leadershipLost(index: entry.index, term: proposal.term)))
            }
        }
        for ready in batch.readies { node.advance(ready) }
        restoreTick()
        if !batch.committed.isEmpty { committedEntriesApplied(batch.committed) }
        if let committed = done.committed {
            stateCommitted(committed)
        } else {
            advanceVisibleIndex()
        }
        scheduleStateCommit()
        drain()
    }

    /// The held write committed through `committed.lastIndex`: those applies are visible.
    private func stateCommitted(_ committed: AppliedBatch) {
        heldApplies.removeAll { $0.last <= committed.lastIndex }
        advanceVisibleIndex()
        onApplied?(committed)
    }

    /// A snapshot replaced the whole state through `index` (the held write committed first).
    func stateReplaced(through index: UInt64) {
        heldApplies.removeAll { $0.last <= index }
        lastIssuedApplyIndex = max(lastIssuedApplyIndex, index)
        lastAppliedIndex = max(lastAppliedIndex, index)
    }

    /// `lastAppliedIndex` up to what readers can see, and the reads waiting for it served.
    private func advanceVisibleIndex() {
        let visible = heldApplies.first.map { $0.first - 1 } ?? lastIssuedApplyIndex
        guard visible > lastAppliedIndex else { return }
        lastAppliedIndex = visible
        releaseReadsWaitingForApply()
    }

    /// Applies wait in the held write at most `stateCommitDelayMilliseconds`, and not at all
    /// once a read waits for one of them.
    func scheduleStateCommit() {
        guard let oldest = heldApplies.first, !stateCommitRequested, let timer = stateCommitTimer else { return }
        if forwarding.readsWaitingForApply.contains(where: { $0.index >= oldest.first }) {
            requestStateCommit()
        } else if !stateCommitTimerArmed {
            stateCommitTimerArmed = true
            timer.start(afterMilliseconds: config.stateCommitDelayMilliseconds) { [weak self] in
                self?.stateCommitTimerArmed = false
                self?.requestStateCommit()
            }
        }
    }

    private func requestStateCommit() {
        guard !heldApplies.isEmpty, !stateCommitRequested, !closed, let mailbox else { return }
        stateCommitRequested = true
        stateCommitTimer?.stop()
        stateCommitTimerArmed = false
        let side = diskSide
        disk.submit {
            do { try side.value.commitState() } catch {
                // Answered writes are in that transaction: without it the state disagrees with them.
                fatalError("raft: committing the state store failed: \(error)")
            }
            mailbox.send(DiskJobDone(applied: nil, committed: side.value.takeCommitReport(), commitRequestAnswered: true))
        }
    }

    /// The batch's log transaction is durable: its entries count for the core, and the messages
    /// that vouch for them go out.
    private func logPersisted(_ batch: PersistBatch) {
        if let last = batch.entries.last, batch.restoreGeneration == raftLog.restoreGeneration {
            node.persisted(upTo: last.index, term: last.term)
        }
        if let compaction = batch.compaction {
            logger.info("raft: snapshot complete up to", metadata: ["index": "\(compaction.index)", "term": "\(compaction.term)"])
        }
        for message in batch.heldMessages { sendCounted(message) }
    }

    /// Logs role, leader and membership changes in Consul's words.
    private func observeState() {
        let role = node.role
        if role != observedRole {
            let meta: Logger.Metadata = ["term": "\(node.term)"]
            switch role {
            case .leader:
                matchIndex = [:]
                logger.info("raft: election won", metadata: meta)
                logger.info("raft: entering leader state", metadata: meta)
            case .follower:
                if observedRole == .leader { logger.info("raft: leadership lost", metadata: meta) }
                logger.info("raft: entering follower state", metadata: meta)
            case .preCandidate:
                logger.info("raft: heartbeat timeout reached, starting election", metadata: meta)
            case .candidate:
                if observedRole == .follower { logger.info("raft: heartbeat timeout reached, starting election", metadata: meta) }
                logger.info("raft: entering candidate state", metadata: meta)
            }
            observedRole = role
        }
        if node.leader != observedLeader {
            observedLeader = node.leader
            if let leader = node.leader, leader != id {
                logger.info("raft: new leader", metadata: ["leader": "\(leader)", "address": "\(addressBook[leader] ?? "unknown")",
                                                           "term": "\(node.term)"])
            }
        }
        let configuration = node.configuration
        if configuration != observedConfiguration {
            if role == .leader {
                for added in configuration.members where !observedConfiguration.isMember(added) {
                    logger.info("raft: added peer, starting replication", metadata: ["peer": "\(added)"])
                }
                for removed in observedConfiguration.members where !configuration.isMember(removed) {
                    logger.info("raft: removed peer, stopping replication", metadata: ["peer": "\(removed)"])
                }
            }
            logger.info("raft: configuration changed", metadata: [
                "voters": "\(configuration.voters)", "non_voters": "\(configuration.nonVoters)"])
            observedConfiguration = configuration
        }
    }

    func markAddressBookDirty() { addressBookDirty = true }

    // MARK: Closing

    /// Fails everything waiting, lets the disk job finish, stops the disk thread, closes the
    /// transport and the environments. Runs on the loop thread.
    public func close() {
        loop.assertInLoopThread()
        guard !closed else { return }
        closed = true
        ticker?.close()
        ticker = nil
        stateCommitTimer?.close()
        stateCommitTimer = nil
        transport.close()
        let waiting = proposals
        proposals = [:]
        for proposal in waiting.values { proposal.completion(.failure(.closed)) }
        let waitingReads = reads
        reads = [:]
        for read in waitingReads.values { read.completion(.failure(.closed)) }
        failAllForwards()
        failMembership(.closed)
        closeSnapshotStreams()
        snapshotThread.stop()
        snapshotMailbox?.close()
        snapshotMailbox = nil
        let side = diskSide
        let logger = self.logger
        disk.submit {
            do { try side.value.closeStores() } catch {
                logger.warning("raft: final checkpoint failed; the next start replays from the last one",
                               metadata: ["error": "\(error)"])
            }
        }
        disk.stop()
        // A periodic checkpoint still syncing either hands its pin back before the final job
        // above (which releases it), after it (`adopt` after `release` drops it), or finds the
        // disk thread stopped (the pin goes with the dropped job): none outlives the close below.
        checkpointThread.stop()
        mailbox?.close()
        mailbox = nil
        logEnvironment.close()
        stateEnvironment.close()
        logger.info("raft: shut down")
    }
}
