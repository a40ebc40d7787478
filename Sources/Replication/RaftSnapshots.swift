// Snapshots (§7) for the replicator: log compaction, and InstallSnapshot over its own stream.
// The state lives in LMDB and skips entries at or below its applied index, so:
// - compaction needs no copy: sync the state environment (it commits with MDB_NOMETASYNC),
//   then drop the log prefix up to `applied - trailingLogs`;
// - a follower behind the leader's snapshot point S receives a dump of the leader's whole state
//   (one consistent read transaction, taken after S was applied, so it holds every command
//   through S and maybe more, up to the state's applied index A), loads it in one write
//   transaction, and only then steps the core with the InstallSnapshot (metadata S). Entries
//   S+1...A that arrive afterwards are already in the state and the state store skips them
//   (applied-index check), which is why shipping a dump newer than S is safe.
// Both ends stream the dump through a temporary file (SnapshotTempFile) written and read on
// the snapshot thread; the loop thread only moves chunks between the file jobs and the socket.
import Crypto
import EventLoop
import Foundation
import Logging
import RaftCore
import StateStore

enum SnapshotEvent: Sendable {
    /// The state environment was synced while the core had applied through `appliedIndex`.
    case stateSynced(appliedIndex: UInt64)
    case stateSyncFailed(String)
    case dumpReady(peer: NodeID, stream: UInt64, Result<StateDump, SnapshotFailure>)
    /// A chunk of a leader's dump file, read for sending.
    case chunkRead(peer: NodeID, stream: UInt64, Result<[UInt8], SnapshotFailure>)
    /// A follower wrote `bytes` of a received chunk to its file (or failed to).
    case chunkWritten(stream: UInt64, bytes: Int, failure: String?)
    case installLoaded(stream: UInt64, Result<StateSnapshot.LoadOutcome, SnapshotFailure>)
    case archiveDumped(request: UInt64, Result<(UInt64, [UInt8]), SnapshotFailure>)
    case archiveReady(request: UInt64, index: UInt64, archive: [UInt8])
    /// A user restore's archive was verified (its index and dump) or refused (RaftRestore.swift).
    case restoreVerified(Result<(UInt64, [UInt8]), SnapshotFailure>)
    case restoreLoaded(Result<StateSnapshot.LoadOutcome, SnapshotFailure>)
}

/// A leader's dump, in its temporary file.
struct StateDump: Sendable {
    var appliedIndex: UInt64
    var size: Int
    var checksum: [UInt8]
}

struct SnapshotFailure: Error, Sendable { var reason: String }

/// A leader's stream of its state to one follower.
final class OutgoingSnapshot {
    let id: UInt64
    let peer: NodeID
    let term: UInt64
    let metadata: SnapshotMetadata
    let file: SnapshotTempFile
    var dump: StateDump?
    var connection: TCPConnection?
    var sent = 0
    /// A chunk is being read from the file on the snapshot thread.
    var reading = false
    var trailerSent = false
    var lastProgressMilliseconds: UInt64
    var lastPendingBytes = 0
    var frames = FrameDecoder(maxFrameBytes: 64)

    init(id: UInt64, peer: NodeID, term: UInt64, metadata: SnapshotMetadata, file: SnapshotTempFile, now: UInt64) {
        self.id = id
        self.file = file
        self.peer = peer
        self.term = term
        self.metadata = metadata
        lastProgressMilliseconds = now
    }
}

/// A follower's inbound snapshot stream.
final class IncomingSnapshot {
    let id: UInt64
    let connection: TCPConnection
    var frames: FrameDecoder
    var stream: SnapshotStreamDecoder
    let file: SnapshotTempFile
    /// Bytes handed to the snapshot thread and not yet written; reading pauses above a bound.
    var unwrittenBytes = 0
    var pausedForDisk = false
    var hasher = SHA256()
    var loading = false
    var lastProgressMilliseconds: UInt64

    init(id: UInt64, connection: TCPConnection, frames: FrameDecoder, file: SnapshotTempFile,
         maxSnapshotBytes: Int, now: UInt64) {
        self.id = id
        self.file = file
        self.connection = connection
        self.frames = frames
        stream = SnapshotStreamDecoder(maxSnapshotBytes: maxSnapshotBytes)
        lastProgressMilliseconds = now
    }
}

struct SnapshotActivity {
    /// A state sync for compaction is on the disk thread.
    var syncing = false
    var nextCheckMilliseconds: UInt64 = 0
    /// At most one stream per peer.
    var outgoing: [NodeID: OutgoingSnapshot] = [:]
    /// At most one inbound stream at a time.
    var incoming: IncomingSnapshot?
    var nextStreamID: UInt64 = 1
    /// Snapshot archives being made (GET /v1/snapshot), by request.
    var archives: [UInt64: (Result<(index: UInt64, archive: [UInt8]), RaftCommitError>) -> Void] = [:]
    /// The last snapshot each peer acknowledged, and when.
    var recentlySent: [NodeID: (index: UInt64, atMilliseconds: UInt64)] = [:]
    /// The user restore in progress (PUT /v1/snapshot), at most one.
    var restore: RestoreOperation?
    /// Counters (a metrics backend would export these).
    var sent = 0
    var installed = 0
    var failedStreams = 0
}

extension RaftReplicator {
    /// The snapshot point of the log (Consul's last_snapshot_index / last_snapshot_term).
    public var lastSnapshotIndex: UInt64 { node.snapshotMetadata.index }
    public var lastSnapshotTerm: UInt64 { node.snapshotMetadata.term }
    /// Snapshots streamed to followers and installed from a leader since start.
    public var snapshotsSent: Int { snapshots.sent }
    public var snapshotsInstalled: Int { snapshots.installed }

    // MARK: Compaction

    func snapshotTick() {
        restoreTick()
        let now = loop.nowMilliseconds
        for outgoing in Array(snapshots.outgoing.values) { pump(outgoing) }
        for outgoing in Array(snapshots.outgoing.values)
        where now > outgoing.lastProgressMilliseconds + config.snapshotStallTimeoutMilliseconds {
            endOutgoing(outgoing, failure: "no progress in \(config.snapshotStallTimeoutMilliseconds) ms")
        }
        if let incoming = snapshots.incoming, !incoming.loading,
           now > incoming.lastProgressMilliseconds + config.snapshotStallTimeoutMilliseconds {
            endIncoming(incoming, failure: "no progress in \(config.snapshotStallTimeoutMilliseconds) ms")
        }
        guard now >= snapshots.nextCheckMilliseconds else { return }
        snapshots.nextCheckMilliseconds = now + config.snapshotIntervalMilliseconds
        maybeStartCompaction()
    }

    private func compactionTarget(applied: UInt64) -> UInt64? {
        let point = node.snapshotMetadata.index
        guard applied >= point + config.snapshotThreshold, applied > config.trailingLogs else { return nil }
        let target = applied - config.trailingLogs
        return target > point ? target : nil
    }

    private func maybeStartCompaction() {
        guard !snapshots.syncing, let mailbox = snapshotMailbox else { return }
        let applied = node.appliedIndex
        guard compactionTarget(applied: applied) != nil else { return }
        snapshots.syncing = true
        logger.info("raft: starting snapshot up to", metadata: ["index": "\(applied)"])
        // The state commits without fsync: checkpoint it through `applied` before the log
        // forgets how to rebuild it.
        let side = diskSide
        disk.submit {
            do {
                try side.value.commitState()
                try side.value.checkpoint.take(nowNanoseconds: monotonicNanoseconds())
                _ = mailbox.send(.stateSynced(appliedIndex: applied))
            } catch {
                _ = mailbox.send(.stateSyncFailed("\(error)"))
            }
        }
    }

    func snapshotEvent(_ event: SnapshotEvent) {
        guard !closed else { return }
        switch event {
        case let .stateSynced(applied):
            snapshots.syncing = false
            guard let target = compactionTarget(applied: applied) else { return }
            let from = node.snapshotMetadata.index + 1
            node.snapshotTaken(at: target)
            logger.info("raft: compacting logs", metadata: ["from": "\(from)", "to": "\(target)"])
            drain()
        case let .stateSyncFailed(reason):
            snapshots.syncing = false
            logger.error("raft: failed to sync the state for a snapshot", metadata: ["error": "\(reason)"])
        case let .dumpReady(peer, stream, result):
            dumpReady(peer: peer, stream: stream, result)
        case let .chunkRead(peer, stream, result):
            chunkRead(peer: peer, stream: stream, result)
        case let .chunkWritten(stream, bytes, failure):
            chunkWritten(stream: stream, bytes: bytes, failure: failure)
        case let .installLoaded(stream, result):
            installLoaded(stream: stream, result)
        case let .archiveDumped(request, result):
            archiveDumped(request: request, result)
        case let .archiveReady(request, index, archive):
            snapshots.archives.removeValue(forKey: request)?(.success((index, archive)))
        case let .restoreVerified(result):
            restoreVerified(result)
        case let .restoreLoaded(result):
            restoreLoaded(result)
        }
    }

    // MARK: Leader: sending

    func sendSnapshot(to peer: NodeID, term: UInt64, _ metadata: SnapshotMetadata) {
        if deferSnapshotForRestore(to: peer, term: term) { return }
        guard snapshots.outgoing[peer] == nil else {
            logger.debug("raft: snapshot to peer already in flight", metadata: ["peer": "\(peer)"])
            return
        }
        // The core resends after an election timeout without an answer; a stream that just
        // finished has its answer on the way (after the follower's restore is durable).
        if let recent = snapshots.recentlySent[peer], recent.index >= metadata.index,
           loop.nowMilliseconds < recent.atMilliseconds + 2 * UInt64(config.raft.electionTicks) * config.tickIntervalMilliseconds {
            return
        }
        guard let mailbox = snapshotMailbox, !transport.partitioned, transport.address(of: peer) != nil else { return }
        let stream = snapshots.nextStreamID
        snapshots.nextStreamID += 1
        let file = SnapshotTempFile(path: snapshotDirectory + "/send-\(peer)-\(stream).tmp")
        snapshots.outgoing[peer] = OutgoingSnapshot(id: stream, peer: peer, term: term, metadata: metadata, file: file,
                                                    now: loop.nowMilliseconds)
        logger.info("raft: sending snapshot to peer", metadata: [
            "peer": "\(peer)", "index": "\(metadata.index)", "term": "\(metadata.term)"])
        let environment = stateEnvironment
        let limit = config.maxSnapshotBytes
        snapshotThread.submit {
            let result: Result<StateDump, SnapshotFailure>
            do {
                file.create()
                var hasher = SHA256()
                var size = 0
                let (applied, _) = try StateSnapshot.dump(environment) { piece in
                    size += piece.count
                    guard size <= limit else {
                        throw SnapshotFailure(reason: "state dump exceeds maxSnapshotBytes \(limit)")
                    }
                    hasher.update(data: piece)
                    file.append(piece)
                }
                if let failure = file.failure { throw SnapshotFailure(reason: failure) }
                result = .success(StateDump(appliedIndex: applied, size: size, checksum: Array(hasher.finalize())))
            } catch let failure as SnapshotFailure {
                result = .failure(failure)
            } catch {
                result = .failure(SnapshotFailure(reason: "\(error)"))
            }
            _ = mailbox.send(.dumpReady(peer: peer, stream: stream, result))
        }
    }

    private func dumpReady(peer: NodeID, stream: UInt64, _ result: Result<StateDump, SnapshotFailure>) {
        guard let outgoing = snapshots.outgoing[peer], outgoing.id == stream else { return }
        let dump: StateDump
        switch result {
        case let .failure(failure):
            endOutgoing(outgoing, failure: failure.reason)
            return
        case let .success(value):
            dump = value
        }
        guard node.role == .leader, node.term == outgoing.term else {
            endOutgoing(outgoing, failure: "no longer the leader of term \(outgoing.term)")
            return
        }
        // The dump holds every command through the snapshot point: the log is compacted only
        // through entries the core had applied, and the state applies before the core hears.
        // (Its own applied index counts commands only, so it may read below the point.)
        guard let address = transport.address(of: peer), let (host, port) = RaftTransport.split(address) else {
            endOutgoing(outgoing, failure: "no address for the peer")
            return
        }
        outgoing.dump = dump
        outgoing.lastProgressMilliseconds = loop.nowMilliseconds
        TCPConnection.connect(on: loop, host: host, port: port) { [weak self, weak outgoing] result in
            guard let self, let outgoing, self.snapshots.outgoing[peer] === outgoing, !self.closed else {
                if case let .success(connection) = result { connection.close() }
                return
            }
            switch result {
            case let .failure(error):
                self.endOutgoing(outgoing, failure: "connect to \(address): \(error)")
            case let .success(connection):
                self.streamStarted(outgoing, connection)
            }
        }
    }

    private func streamStarted(_ outgoing: OutgoingSnapshot, _ connection: TCPConnection) {
        guard let dump = outgoing.dump else { return }
        outgoing.connection = connection
        connection.onRead = { [weak self, weak outgoing] bytes in
            guard let self, let outgoing else { return }
            outgoing.frames.feed(bytes)
            do throws(FrameError) {
                while let frame = try outgoing.frames.next() {
                    guard frame.count == 2, frame[0] == SnapshotFrameKind.ack else {
                        self.endOutgoing(outgoing, failure: "unexpected answer from the peer")
                        return
                    }
                    if frame[1] == 0 {
                        self.snapshots.sent += 1
                        self.snapshots.recentlySent[outgoing.peer] = (outgoing.metadata.index, self.loop.nowMilliseconds)
                        self.logger.info("raft: snapshot sent to peer", metadata: [
                            "peer": "\(outgoing.peer)", "index": "\(outgoing.metadata.index)", "bytes": "\(dump.size)"])
                        self.endOutgoing(outgoing, failure: nil)
                    } else {
                        self.endOutgoing(outgoing, failure: "the peer refused the snapshot")
                    }
                    return
                }
            } catch {
                self.endOutgoing(outgoing, failure: "bad answer from the peer: \(error)")
            }
        }
        connection.onClose = { [weak self, weak outgoing] error in
            guard let self, let outgoing, self.snapshots.outgoing[outgoing.peer] === outgoing else { return }
            self.endOutgoing(outgoing, failure: "connection closed: \(error.map { "\($0)" } ?? "EOF")")
        }
        connection.startReading()
        var book = addressBook
        book[id] = advertiseAddress
        let header = SnapshotStreamHeader(leader: id, term: outgoing.term, metadata: outgoing.metadata,
                                          addressBook: book, dumpSize: UInt64(dump.size),
                                          appliedIndex: dump.appliedIndex)
        connection.write(Framing.frame(header.encoded()))
        pump(outgoing)
    }

    /// Asks the snapshot thread for the next chunk while the socket's queue is below the
    /// window (backpressure), one chunk at a time; then writes the trailer. Called as the
    /// stream starts, as each chunk arrives, and on every tick.
    private func pump(_ outgoing: OutgoingSnapshot) {
        guard let connection = outgoing.connection, let dump = outgoing.dump, !connection.isClosed,
              let mailbox = snapshotMailbox else { return }
        let now = loop.nowMilliseconds
        if connection.pendingWriteBytes < outgoing.lastPendingBytes { outgoing.lastProgressMilliseconds = now }
        outgoing.lastPendingBytes = connection.pendingWriteBytes
        if outgoing.sent < dump.size {
            guard !outgoing.reading, connection.pendingWriteBytes < config.snapshotWindowBytes else { return }
            outgoing.reading = true
            let (file, offset, count) = (outgoing.file, outgoing.sent, min(config.snapshotChunkBytes, dump.size - outgoing.sent))
            let (peer, stream) = (outgoing.peer, outgoing.id)
            snapshotThread.submit {
                let result: Result<[UInt8], SnapshotFailure>
                if let bytes = file.read(at: offset, count: count), bytes.count == count {
                    result = .success(bytes)
                } else {
                    result = .failure(SnapshotFailure(reason: file.failure ?? "the dump file is shorter than \(offset + count) bytes"))
                }
                _ = mailbox.send(.chunkRead(peer: peer, stream: stream, result))
            }
        } else if !outgoing.trailerSent {
            connection.write(Framing.frame([SnapshotFrameKind.trailer] + dump.checksum))
            outgoing.trailerSent = true
            outgoing.lastProgressMilliseconds = now
        }
    }

    private func chunkRead(peer: NodeID, stream: UInt64, _ result: Result<[UInt8], SnapshotFailure>) {
        guard let outgoing = snapshots.outgoing[peer], outgoing.id == stream, let connection = outgoing.connection else { return }
        outgoing.reading = false
        switch result {
        case let .failure(failure):
            endOutgoing(outgoing, failure: failure.reason)
        case let .success(bytes):
            connection.write(Framing.frame([SnapshotFrameKind.chunk] + bytes))
            outgoing.sent += bytes.count
            outgoing.lastProgressMilliseconds = loop.nowMilliseconds
            pump(outgoing)
        }
    }

    private func endOutgoing(_ outgoing: OutgoingSnapshot, failure: String?) {
        guard snapshots.outgoing[outgoing.peer] === outgoing else { return }
        snapshots.outgoing[outgoing.peer] = nil
        outgoing.dump = nil
        let file = outgoing.file
        snapshotThread.submit { file.remove() }
        if let connection = outgoing.connection {
            connection.onRead = nil
            connection.onClose = nil
            connection.close()
        }
        if let failure {
            snapshots.failedStreams += 1
            logger.warning("raft: failed to send snapshot to peer", metadata: [
                "peer": "\(outgoing.peer)", "index": "\(outgoing.metadata.index)", "error": "\(failure)"])
        }
    }

    // MARK: Follower: receiving

    func acceptSnapshotStream(_ connection: TCPConnection, firstFrame: [UInt8], decoder: FrameDecoder) {
        guard !closed, !transport.partitioned, snapshots.incoming == nil else {
            logger.warning("raft: refusing a second snapshot stream", metadata: ["remote": "\(connection.remoteAddress)"])
            connection.closeNow()
            return
        }
        let stream = snapshots.nextStreamID
        snapshots.nextStreamID += 1
        let file = SnapshotTempFile(path: snapshotDirectory + "/receive-\(stream).tmp")
        snapshotThread.submit { file.create() }
        let incoming = IncomingSnapshot(id: stream, connection: connection, frames: decoder, file: file,
                                        maxSnapshotBytes: config.maxSnapshotBytes, now: loop.nowMilliseconds)
        snapshots.incoming = incoming
        connection.onRead = { [weak self, weak incoming] bytes in
            guard let self, let incoming else { return }
            incoming.frames.feed(bytes)
            self.receiveFrames(incoming)
        }
        connection.onClose = { [weak self, weak incoming] _ in
            guard let self, let incoming, self.snapshots.incoming === incoming, !incoming.loading else { return }
            self.endIncoming(incoming, failure: "the leader closed the stream before its end")
        }
        receiveFrame(firstFrame, incoming)
        receiveFrames(incoming)
    }

    private func receiveFrames(_ incoming: IncomingSnapshot) {
        while snapshots.incoming === incoming, !incoming.loading {
            do throws(FrameError) {
                guard let frame = try incoming.frames.next() else { return }
                receiveFrame(frame, incoming)
            } catch {
                endIncoming(incoming, failure: "\(error)")
                return
            }
        }
    }

    private func receiveFrame(_ frame: [UInt8], _ incoming: IncomingSnapshot) {
        guard snapshots.incoming === incoming else { return }
        incoming.lastProgressMilliseconds = loop.nowMilliseconds
        let event: SnapshotStreamDecoder.Event
        do throws(SnapshotStreamError) {
            event = try incoming.stream.decode(frame)
        } catch {
            endIncoming(incoming, failure: "\(error)")
            return
        }
        switch event {
        case let .header(header):
            logger.info("raft: receiving snapshot", metadata: [
                "leader": "\(header.leader)", "index": "\(header.metadata.index)", "term": "\(header.metadata.term)",
                "bytes": "\(header.dumpSize)"])
        case let .chunk(bytes):
            incoming.hasher.update(data: bytes)
            writeChunk(bytes, incoming)
        case let .trailer(checksum):
            guard Array(incoming.hasher.finalize()) == checksum, let header = incoming.stream.header else {
                endIncoming(incoming, failure: "checksum mismatch")
                return
            }
            load(incoming, header)
        }
    }

    /// Hands a chunk to the snapshot thread for the temporary file; past a bound of unwritten
    /// bytes the stream stops reading until the disk catches up.
    private func writeChunk(_ bytes: [UInt8], _ incoming: IncomingSnapshot) {
        guard let mailbox = snapshotMailbox else { return }
        incoming.unwrittenBytes += bytes.count
        let (file, stream) = (incoming.file, incoming.id)
        snapshotThread.submit {
            file.append(bytes)
            _ = mailbox.send(.chunkWritten(stream: stream, bytes: bytes.count, failure: file.failure))
        }
        if incoming.unwrittenBytes > config.snapshotWindowBytes, !incoming.pausedForDisk {
            incoming.pausedForDisk = true
            incoming.connection.stopReading()
        }
    }

    private func chunkWritten(stream: UInt64, bytes: Int, failure: String?) {
        guard let incoming = snapshots.incoming, incoming.id == stream else { return }
        incoming.unwrittenBytes -= bytes
        if let failure {
            endIncoming(incoming, failure: failure)
            return
        }
        if incoming.pausedForDisk, incoming.unwrittenBytes <= config.snapshotWindowBytes / 2 {
            incoming.pausedForDisk = false
            if !incoming.loading {
                incoming.connection.startReading()
            }
        }
    }

    private func load(_ incoming: IncomingSnapshot, _ header: SnapshotStreamHeader) {
        guard let mailbox = snapshotMailbox else { return }
        incoming.loading = true
        incoming.connection.stopReading()
        logger.info("raft: installing snapshot", metadata: [
            "index": "\(header.metadata.index)", "applied_index": "\(header.appliedIndex)", "bytes": "\(header.dumpSize)"])
        let side = diskSide
        let stream = incoming.id
        let file = incoming.file
        let disk = self.disk
        // After the file's last write (the snapshot thread runs its jobs in order), on the disk
        // thread, so the load is ordered with the applies.
        snapshotThread.submit {
            file.close()
            let failure = file.failure
            disk.submit {
                let result: Result<StateSnapshot.LoadOutcome, SnapshotFailure>
                do {
                    if let failure { throw SnapshotFailure(reason: failure) }
                    try side.value.commitState()
                    let environment = side.value.state.environment
                    let outcome = try StateSnapshot.load(file: file.path, into: environment)
                    // Durable before the log drops its entries (the restore in the next disk job).
                    try side.value.checkpoint.take(nowNanoseconds: monotonicNanoseconds())
                    result = .success(outcome)
                } catch {
                    result = .failure(SnapshotFailure(reason: "\(error)"))
                }
                file.remove()
                _ = mailbox.send(.installLoaded(stream: stream, result))
            }
        }
    }

    private func installLoaded(stream: UInt64, _ result: Result<StateSnapshot.LoadOutcome, SnapshotFailure>) {
        guard let incoming = snapshots.incoming, incoming.id == stream, let header = incoming.stream.header else { return }
        switch result {
        case let .failure(failure):
            endIncoming(incoming, failure: "loading the state failed: \(failure.reason)")
            return
        case let .success(.loaded(applied)):
            stateReplaced(through: applied)
            onApplied?(AppliedBatch(everythingChangedThrough: applied))
        case let .success(.skipped(local)):
            logger.info("raft: snapshot state not loaded: the local state is as new", metadata: [
                "local_applied_index": "\(local)", "snapshot_applied_index": "\(header.appliedIndex)"])
        }
        for (server, address) in header.addressBook where server != id && addressBook[server] == nil {
            learnAddress(address, for: server)
        }
        snapshots.installed += 1
        incoming.connection.write(Framing.frame([SnapshotFrameKind.ack, 0]))
        snapshots.incoming = nil
        incoming.connection.onClose = nil
        incoming.connection.close()
        node.step(Message(from: header.leader, to: id, term: header.term,
                          body: .installSnapshot(InstallSnapshot(snapshot: Snapshot(metadata: header.metadata)))))
        drain()
    }

    private func endIncoming(_ incoming: IncomingSnapshot, failure: String) {
        guard snapshots.incoming === incoming else { return }
        snapshots.incoming = nil
        snapshots.failedStreams += 1
        if !incoming.loading {
            // A loading stream's file is removed by the load job.
            let file = incoming.file
            snapshotThread.submit { file.remove() }
        }
        logger.warning("raft: failed to install snapshot", metadata: [
            "remote": "\(incoming.connection.remoteAddress)", "error": "\(failure)"])
        incoming.connection.onRead = nil
        incoming.connection.onClose = nil
        if incoming.loading {
            incoming.connection.write(Framing.frame([SnapshotFrameKind.ack, 1]))
            incoming.connection.close()
        } else {
            incoming.connection.closeNow()
        }
    }

    func closeSnapshotStreams() {
        finishRestore(.failure(.failed(.closed)))
        let archives = snapshots.archives
        snapshots.archives = [:]
        for completion in archives.values { completion(.failure(.closed)) }
        for outgoing in Array(snapshots.outgoing.values) {
            outgoing.connection?.onClose = nil
            outgoing.connection?.closeNow()
            let file = outgoing.file
            snapshotThread.submit { file.remove() }
        }
        snapshots.outgoing = [:]
        if let incoming = snapshots.incoming {
            incoming.connection.onClose = nil
            incoming.connection.closeNow()
            snapshots.incoming = nil
            if !incoming.loading {
                let file = incoming.file
                snapshotThread.submit { file.remove() }
            }
        }
    }
}

// MARK: Snapshot archives (GET /v1/snapshot)

extension RaftReplicator {
    /// A snapshot archive of this server's state (SnapshotArchive format) and the index it was
    /// applied through. The dump runs on the snapshot thread; the completion runs on the loop.
    /// At most `maxConcurrentArchives` at once; more fail with `.overloaded`.
    public func archiveSnapshot(completion: @escaping (Result<(index: UInt64, archive: [UInt8]), RaftCommitError>) -> Void) {
        loop.assertInLoopThread()
        guard started, !closed, let mailbox = snapshotMailbox else { completion(.failure(.closed)); return }
        guard snapshots.archives.count < RaftReplicator.maxConcurrentArchives else {
            completion(.failure(.overloaded(pending: snapshots.archives.count, limit: RaftReplicator.maxConcurrentArchives)))
            return
        }
        let request = snapshots.nextStreamID
        snapshots.nextStreamID += 1
        snapshots.archives[request] = completion
        let environment = stateEnvironment
        let limit = config.maxSnapshotBytes
        snapshotThread.submit {
            let result: Result<(UInt64, [UInt8]), SnapshotFailure>
            do {
                var bytes: [UInt8] = []
                let (applied, _) = try StateSnapshot.dump(environment) { piece in
                    bytes += piece
                    guard bytes.count <= limit else { throw SnapshotFailure(reason: "state exceeds maxSnapshotBytes \(limit)") }
                }
                result = .success((applied, bytes))
            } catch let failure as SnapshotFailure {
                result = .failure(failure)
            } catch {
                result = .failure(SnapshotFailure(reason: "\(error)"))
            }
            _ = mailbox.send(.archiveDumped(request: request, result))
        }
    }

    static let maxConcurrentArchives = 2

    func archiveDumped(request: UInt64, _ result: Result<(UInt64, [UInt8]), SnapshotFailure>) {
        guard snapshots.archives[request] != nil, let mailbox = snapshotMailbox else { return }
        switch result {
        case let .failure(failure):
            snapshots.archives.removeValue(forKey: request)?(.failure(.storage(failure.reason)))
        case let .success((index, dump)):
            // The term of the entry the state was applied through (the log still holds it, or it
            // is the snapshot point); the current term if it was compacted away since.
            let term = node.term(at: index) ?? node.term
            let created = UInt64(Date().timeIntervalSince1970 * 1000)
            // Hashing a large dump is kept off the loop thread too.
            snapshotThread.submit {
                let archive = SnapshotArchive.encode(index: index, term: term, createdMilliseconds: created, dump: dump)
                _ = mailbox.send(.archiveReady(request: request, index: index, archive: archive))
            }
        }
    }
}
