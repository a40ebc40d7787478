// Snapshots (§7) for the replicator: log compaction, and InstallSnapshot over its own stream.
// The state lives in LMDB and skips entries at or below its applied index, so:
// - compaction needs no copy: sync the state environment (it commits with MDB_NOMETASYNC),
//   then drop the log prefix up to `applied - trailingLogs`;
// - a follower behind the leader's snapshot point S receives a dump of the leader's whole state
//   at its applied index A >= S (a consistent read transaction), loads it in one write
//   transaction, and only then steps the core with the InstallSnapshot (metadata S). Entries
//   S+1...A that arrive afterwards are already in the state and the state store skips them
//   (applied-index check), which is why shipping a dump newer than S is safe.
import Crypto
import EventLoop
import Logging
import RaftCore
import StateStore

enum SnapshotEvent: Sendable {
    /// The state environment was synced while the core had applied through `appliedIndex`.
    case stateSynced(appliedIndex: UInt64)
    case stateSyncFailed(String)
    case dumpReady(peer: NodeID, stream: UInt64, Result<StateDump, SnapshotFailure>)
    case installLoaded(stream: UInt64, Result<StateSnapshot.LoadOutcome, SnapshotFailure>)
}

struct StateDump: Sendable {
    var appliedIndex: UInt64
    var bytes: [UInt8]
    var checksum: [UInt8]
}

struct SnapshotFailure: Error, Sendable { var reason: String }

/// A leader's stream of its state to one follower.
final class OutgoingSnapshot {
    let id: UInt64
    let peer: NodeID
    let term: UInt64
    let metadata: SnapshotMetadata
    var dump: StateDump?
    var connection: TCPConnection?
    var sent = 0
    var trailerSent = false
    var lastProgressMilliseconds: UInt64
    var lastPendingBytes = 0
    var frames = FrameDecoder(maxFrameBytes: 64)

    init(id: UInt64, peer: NodeID, term: UInt64, metadata: SnapshotMetadata, now: UInt64) {
        self.id = id
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
    var buffer: [UInt8] = []
    var hasher = SHA256()
    var loading = false
    var lastProgressMilliseconds: UInt64

    init(id: UInt64, connection: TCPConnection, frames: FrameDecoder, maxSnapshotBytes: Int, now: UInt64) {
        self.id = id
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
    /// The last snapshot each peer acknowledged, and when.
    var recentlySent: [NodeID: (index: UInt64, atMilliseconds: UInt64)] = [:]
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
        // The state commits without syncing its meta page: make it durable through `applied`
        // before the log forgets how to rebuild it.
        let environment = stateEnvironment
        disk.submit {
            do {
                try environment.sync()
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
        case let .installLoaded(stream, result):
            installLoaded(stream: stream, result)
        }
    }

    // MARK: Leader: sending

    func sendSnapshot(to peer: NodeID, term: UInt64, _ metadata: SnapshotMetadata) {
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
        snapshots.outgoing[peer] = OutgoingSnapshot(id: stream, peer: peer, term: term, metadata: metadata,
                                                    now: loop.nowMilliseconds)
        logger.info("raft: sending snapshot to peer", metadata: [
            "peer": "\(peer)", "index": "\(metadata.index)", "term": "\(metadata.term)"])
        let environment = stateEnvironment
        let limit = config.maxSnapshotBytes
        snapshotThread.submit {
            let result: Result<StateDump, SnapshotFailure>
            do {
                let (applied, bytes) = try StateSnapshot.dump(environment)
                if bytes.count > limit {
                    result = .failure(SnapshotFailure(reason: "state dump of \(bytes.count) bytes exceeds maxSnapshotBytes \(limit)"))
                } else {
                    result = .success(StateDump(appliedIndex: applied, bytes: bytes, checksum: Array(SHA256.hash(data: bytes))))
                }
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
        // The state is never behind the log's snapshot point (compaction follows the apply).
        guard dump.appliedIndex >= outgoing.metadata.index else {
            endOutgoing(outgoing, failure: "state at \(dump.appliedIndex) is behind the snapshot at \(outgoing.metadata.index)")
            return
        }
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
                            "peer": "\(outgoing.peer)", "index": "\(outgoing.metadata.index)", "bytes": "\(dump.bytes.count)"])
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
                                          addressBook: book, dumpSize: UInt64(dump.bytes.count),
                                          appliedIndex: dump.appliedIndex)
        connection.write(Framing.frame(header.encoded()))
        pump(outgoing)
    }

    /// Writes chunks while the socket's queue is below the window (backpressure), then the
    /// trailer. Called as the stream starts and on every tick.
    private func pump(_ outgoing: OutgoingSnapshot) {
        guard let connection = outgoing.connection, let dump = outgoing.dump, !connection.isClosed else { return }
        let now = loop.nowMilliseconds
        if connection.pendingWriteBytes < outgoing.lastPendingBytes { outgoing.lastProgressMilliseconds = now }
        while outgoing.sent < dump.bytes.count, connection.pendingWriteBytes < config.snapshotWindowBytes {
            let end = min(dump.bytes.count, outgoing.sent + config.snapshotChunkBytes)
            var payload: [UInt8] = [SnapshotFrameKind.chunk]
            payload.reserveCapacity(1 + end - outgoing.sent)
            payload += dump.bytes[outgoing.sent ..< end]
            connection.write(Framing.frame(payload))
            outgoing.sent = end
            outgoing.lastProgressMilliseconds = now
        }
        if outgoing.sent == dump.bytes.count, !outgoing.trailerSent {
            connection.write(Framing.frame([SnapshotFrameKind.trailer] + dump.checksum))
            outgoing.trailerSent = true
            outgoing.lastProgressMilliseconds = now
        }
        outgoing.lastPendingBytes = connection.pendingWriteBytes
    }

    private func endOutgoing(_ outgoing: OutgoingSnapshot, failure: String?) {
        guard snapshots.outgoing[outgoing.peer] === outgoing else { return }
        snapshots.outgoing[outgoing.peer] = nil
        outgoing.dump = nil
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
        let incoming = IncomingSnapshot(id: snapshots.nextStreamID, connection: connection, frames: decoder,
                                        maxSnapshotBytes: config.maxSnapshotBytes, now: loop.nowMilliseconds)
        snapshots.nextStreamID += 1
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
            // Grows as chunks arrive beyond this: a header alone cannot make us allocate a lot.
            incoming.buffer.reserveCapacity(Int(min(header.dumpSize, 64 << 20)))
            logger.info("raft: receiving snapshot", metadata: [
                "leader": "\(header.leader)", "index": "\(header.metadata.index)", "term": "\(header.metadata.term)",
                "bytes": "\(header.dumpSize)"])
        case let .chunk(bytes):
            incoming.hasher.update(data: bytes)
            incoming.buffer += bytes
        case let .trailer(checksum):
            guard Array(incoming.hasher.finalize()) == checksum, let header = incoming.stream.header else {
                endIncoming(incoming, failure: "checksum mismatch")
                return
            }
            load(incoming, header)
        }
    }

    private func load(_ incoming: IncomingSnapshot, _ header: SnapshotStreamHeader) {
        guard let mailbox = snapshotMailbox else { return }
        incoming.loading = true
        incoming.connection.stopReading()
        logger.info("raft: installing snapshot", metadata: [
            "index": "\(header.metadata.index)", "applied_index": "\(header.appliedIndex)", "bytes": "\(header.dumpSize)"])
        let bytes = incoming.buffer
        incoming.buffer = []
        let side = diskSide
        let stream = incoming.id
        // On the disk thread, so the load is ordered with the applies.
        disk.submit {
            let result: Result<StateSnapshot.LoadOutcome, SnapshotFailure>
            do {
                let environment = side.value.state.environment
                let outcome = try StateSnapshot.load(bytes, into: environment)
                // Durable before the log drops its entries (the restore in the next disk job).
                try environment.sync()
                result = .success(outcome)
            } catch {
                result = .failure(SnapshotFailure(reason: "\(error)"))
            }
            _ = mailbox.send(.installLoaded(stream: stream, result))
        }
    }

    private func installLoaded(stream: UInt64, _ result: Result<StateSnapshot.LoadOutcome, SnapshotFailure>) {
        guard let incoming = snapshots.incoming, incoming.id == stream, let header = incoming.stream.header else { return }
        switch result {
        case let .failure(failure):
            endIncoming(incoming, failure: "loading the state failed: \(failure.reason)")
            return
        case let .success(.loaded(applied)):
            lastAppliedIndex = max(lastAppliedIndex, applied)
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
        incoming.buffer = []
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
        for outgoing in Array(snapshots.outgoing.values) {
            outgoing.connection?.onClose = nil
            outgoing.connection?.closeNow()
        }
        snapshots.outgoing = [:]
        if let incoming = snapshots.incoming {
            incoming.connection.onClose = nil
            incoming.connection.closeNow()
            snapshots.incoming = nil
        }
    }
}
