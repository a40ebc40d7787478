// The durable command log of a one-server cluster: commands are appended to the LMDB log
// with fsync, then applied to the state store, in batches (group commit). The Raft issue
// replaces how an entry becomes committed; append, apply and the loop/disk hand-off stay.
import EventLoop
import Logging
import StateStore
import Storage

public struct ReplicationConfig: Sendable {
    /// Most commands in one append+apply batch. Bounds the latency one batch adds.
    public var maxBatchCommands: Int = 4096
    /// Most command bytes in one batch (commands are at most a KV value plus its key).
    public var maxBatchBytes: Int = 16 << 20
    /// Commands waiting for the next batch; beyond this, submit fails fast with `.overloaded`
    /// instead of growing memory without bound.
    public var maxPendingCommands: Int = 65_536

    public init() {}

    public func validate() throws(ReplicationConfigError) {
        guard maxBatchCommands > 0 else { throw .invalid("maxBatchCommands must be > 0") }
        guard maxBatchBytes > 0 else { throw .invalid("maxBatchBytes must be > 0") }
        guard maxPendingCommands >= maxBatchCommands else {
            throw .invalid("maxPendingCommands must be >= maxBatchCommands")
        }
    }
}

public enum ReplicationConfigError: Error, CustomStringConvertible {
    case invalid(String)
    public var description: String {
        switch self { case .invalid(let m): return "replication config: \(m)" }
    }
}

public enum CommitError: Error, Equatable, CustomStringConvertible {
    case overloaded(pending: Int, limit: Int)
    case storage(String)
    case closed

    public var description: String {
        switch self {
        case .overloaded(let pending, let limit):
            return "too many writes in flight (\(pending), limit \(limit)); retry later"
        case .storage(let message): return "storage error: \(message)"
        case .closed: return "the log is shutting down"
        }
    }
}

/// What a committed command produced: its log index and the state machine's answer.
public struct CommitOutcome: Sendable, Equatable {
    public var index: UInt64
    public var result: ApplyResult
}

/// The directories inside a data dir. The log and the state are separate LMDB environments:
/// the log is synced on every commit; the state store commits with MDB_NOMETASYNC because
/// the log covers anything an OS crash undoes (recovery re-applies it).
public enum DataLayout {
    public static func logDirectory(_ dataDir: String) -> String { dataDir + "/raft" }
    public static func stateDirectory(_ dataDir: String) -> String { dataDir + "/state" }
    /// Temporary files of Raft snapshot streams (emptied at start).
    public static func snapshotTempDirectory(_ dataDir: String) -> String { dataDir + "/raft-snapshot-tmp" }
}

/// Loop-confined except for `init`, which runs before the loop starts (it recovers the state).
public final class SingleNodeLog {
    /// Read-only view of the state store for the loop thread (LMDB read transactions).
    public let reader: StateStore
    /// Called on the loop thread after each applied batch (wakes blocking queries).
    public var onApplied: ((AppliedBatch) -> Void)?
    public private(set) var lastAppliedIndex: UInt64

    private let loop: Loop
    private let logger: Logger
    private let config: ReplicationConfig
    private let logEnvironment: Environment
    private let stateEnvironment: Environment
    private let disk: DiskThread
    private let diskStores: ThreadHandoff<DiskStores>
    private var mailbox: LoopMailbox<BatchDone>?

    private var pending: [PendingCommand] = []
    private var batchInFlight = false
    private var closed = false

    private struct PendingCommand {
        var command: [UInt8]
        var completion: (Result<CommitOutcome, CommitError>) -> Void
    }

    /// Stores used only on the disk thread once `start` has run.
    final class DiskStores {
        let log: LogStore
        let state: StateStore
        init(log: LogStore, state: StateStore) { self.log = log; self.state = state }
    }

    private struct BatchDone: Sendable {
        var outcome: Result<AppliedBatch, CommitError>
        var firstIndex: UInt64
    }

    public init(loop: Loop, dataDirectory: String, config: ReplicationConfig = ReplicationConfig(),
                logger: Logger) throws {
        try config.validate()
        self.loop = loop
        self.logger = logger
        self.config = config
        logEnvironment = try Environment(directory: DataLayout.logDirectory(dataDirectory), durability: .full)
        stateEnvironment = try Environment(directory: DataLayout.stateDirectory(dataDirectory),
                                           durability: .noMetaSync)
        let log = try LogStore(environment: logEnvironment)
        let state = try StateStore(environment: stateEnvironment)
        reader = try StateStore(environment: stateEnvironment)
        lastAppliedIndex = try Self.recover(log: log, state: state, logger: logger)
        diskStores = ThreadHandoff(value: DiskStores(log: log, state: state))
        disk = DiskThread()
    }

    /// Applies log entries that were appended (and so acknowledged as durable) but not yet
    /// applied when the process stopped. Entries already applied are not replayed.
    static func recover(log: LogStore, state: StateStore, logger: Logger) throws -> UInt64 {
        var applied = try state.appliedIndex()
        let last = log.lastIndex
        precondition(applied <= last || last == 0,
                     "state store applied index \(applied) is past the log's last index \(last)")
        if last > applied {
            logger.info("replaying unapplied log entries", metadata: [
                "from": "\(applied + 1)", "to": "\(last)"])
        }
        while applied < last {
            let entries = try log.entries(from: applied + 1, through: last, maxBytes: 16 << 20)
            guard let lastEntry = entries.last else { break }
            _ = try state.apply(entries.map { (index: $0.index, command: $0.data) })
            applied = lastEntry.index
        }
        return applied
    }

    /// Must run on the loop thread before the first `submit`.
    public func start() {
        loop.assertInLoopThread()
        mailbox = LoopMailbox<BatchDone>(loop: loop) { [weak self] done in
            for item in done { self?.batchFinished(item) }
        }
    }

    /// Queues a command for the next batch. The completion runs on the loop thread once the
    /// command is durable in the log and applied (or failed).
    public func submit(_ command: [UInt8], completion: @escaping (Result<CommitOutcome, CommitError>) -> Void) {
        loop.assertInLoopThread()
        guard !closed, mailbox != nil else { completion(.failure(.closed)); return }
        guard pending.count < config.maxPendingCommands else {
            completion(.failure(.overloaded(pending: pending.count, limit: config.maxPendingCommands)))
            return
        }
        pending.append(PendingCommand(command: command, completion: completion))
        if !batchInFlight { startBatch() }
    }

    /// Commands that arrive while a batch is on disk wait here and form the next batch:
    /// one fsync covers them all.
    private var inFlight: [PendingCommand] = []

    private func startBatch() {
        guard !pending.isEmpty, let mailbox else { return }
        var bytes = 0
        var count = 0
        for command in pending {
            if count > 0 && (count >= config.maxBatchCommands || bytes + command.command.count > config.maxBatchBytes) {
                break
            }
            bytes += command.command.count
            count += 1
        }
        inFlight = Array(pending.prefix(count))
        pending.removeFirst(count)
        batchInFlight = true
        let commands = inFlight.map(\.command)
        let stores = diskStores
        disk.submit {
            mailbox.send(Self.appendAndApply(commands, stores: stores.value))
        }
    }

    /// Runs on the disk thread.
    private static func appendAndApply(_ commands: [[UInt8]], stores: DiskStores) -> BatchDone {
        let first = stores.log.lastIndex + 1
        let entries = commands.enumerated().map { offset, command in
            LogEntry(index: first + UInt64(offset), term: 1, kind: .command, data: command)
        }
        do {
            try stores.log.append(entries)
        } catch {
            return BatchDone(outcome: .failure(.storage("log append: \(error)")), firstIndex: first)
        }
        do {
            let applied = try stores.state.apply(entries.map { (index: $0.index, command: $0.data) })
            return BatchDone(outcome: .success(applied), firstIndex: first)
        } catch {
            // The entries are durable but the state store refused them: continuing would
            // serve state that disagrees with the log. Stop loudly; a restart re-applies.
            fatalError("state store apply failed after durable append at index \(first): \(error)")
        }
    }

    private func batchFinished(_ done: BatchDone) {
        let batch = inFlight
        inFlight = []
        batchInFlight = false
        switch done.outcome {
        case .failure(let error):
            logger.error("write batch failed", metadata: ["error": "\(error)", "commands": "\(batch.count)"])
            for command in batch { command.completion(.failure(error)) }
        case .success(let applied):
            precondition(applied.results.count == batch.count, "apply returned \(applied.results.count) results for \(batch.count) commands")
            precondition(applied.lastIndex > lastAppliedIndex, "applied index went backwards")
            lastAppliedIndex = applied.lastIndex
            for (offset, command) in batch.enumerated() {
                command.completion(.success(CommitOutcome(index: done.firstIndex + UInt64(offset),
                                                          result: applied.results[offset])))
            }
            onApplied?(applied)
        }
        if !closed { startBatch() }
    }

    /// Fails queued commands, lets the batch on disk finish, stops the disk thread and
    /// closes the environments. Runs on the loop thread (during shutdown).
    public func close() {
        guard !closed else { return }
        closed = true
        let queued = pending
        pending = []
        for command in queued { command.completion(.failure(.closed)) }
        disk.stop()
        // A batch still on disk is durable but its answer can no longer reach the loop.
        let unanswered = inFlight
        inFlight = []
        for command in unanswered { command.completion(.failure(.closed)) }
        mailbox?.close()
        mailbox = nil
        logEnvironment.close()
        stateEnvironment.close()
    }
}
