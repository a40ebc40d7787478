// Forwarding to the leader over the Raft transport. Writes: a follower sends a submitted
// command and completes the caller once the leader answers (committed and applied on the
// leader) or the forward times out. Reads: a follower asks the leader for a read index and
// serves the read once it has applied that index itself (thesis §6.4.1).
// Frames (after the transport's length prefix):
//   request       0xF0, request id u64, origin server u64, command bytes
//   response      0xF1, request id u64, index u64, term u64, code u8, text (UTF-8)
//   read request  0xF3, request id u64, origin server u64
//   read response 0xF4, as a response (a granted read index is a committed outcome's index)
//   commit index  0xF5, request id u64, origin server u64: the leader answers a read response
//                 with its commit index at once, no quorum round (Consul's default consistency)
//   operator      0xF6, request id u64, origin server u64, operation u8 (1 remove server,
//                 2 transfer leadership), target server u64 (0: the leader picks); answered
//                 with a response frame
// (0xF2 is the hello frame and 0xFF the first byte of address records: see RaftMembership.)
import RaftCore
import StateStore
import Storage

struct ForwardingState {
    var nextRequestID: UInt64 = 1
    var outstanding: [UInt64: Outstanding] = [:]
    var outstandingReads: [UInt64: OutstandingRead] = [:]
    /// Read indexes granted by the leader that this server has not applied yet.
    var readsWaitingForApply: [(index: UInt64, deadlineMilliseconds: UInt64, completion: (Result<UInt64, RaftCommitError>) -> Void)] = []

    var count: Int { outstanding.count + outstandingReads.count + readsWaitingForApply.count }
    /// The term in which this server, as leader, saw an entry of its own term committed: from
    /// then on its commit index is a default-consistency read point (cached so a read does
    /// not look up the term of the commit index in the log each time).
    var leaderCommittedInTerm: UInt64 = 0

    struct OutstandingRead {
        var leader: NodeID
        var deadlineMilliseconds: UInt64
        var completion: (Result<UInt64, RaftCommitError>) -> Void
    }

    struct Outstanding {
        var leader: NodeID
        var deadlineMilliseconds: UInt64
        var completion: (Result<CommitOutcome, RaftCommitError>) -> Void
        /// An operator request (transfer, removal) may itself move the leadership, and the old
        /// leader still answers it: a leader change does not end it early.
        var isOperatorRequest = false
    }
}

enum ForwardFrame: Equatable {
    case request(id: UInt64, origin: NodeID, command: [UInt8])
    case response(id: UInt64, outcome: ForwardOutcome)
    case readRequest(id: UInt64, origin: NodeID)
    case readResponse(id: UInt64, outcome: ForwardOutcome)
    case commitIndexRequest(id: UInt64, origin: NodeID)
    case operatorRequest(id: UInt64, origin: NodeID, operation: OperatorOperation, target: NodeID)

    enum OperatorOperation: UInt8, Equatable {
        case removeServer = 1
        case transferLeadership = 2
    }

    static let requestKind: UInt8 = 0xF0
    static let responseKind: UInt8 = 0xF1
    static let readRequestKind: UInt8 = 0xF3
    static let readResponseKind: UInt8 = 0xF4
    static let commitIndexRequestKind: UInt8 = 0xF5
    static let operatorRequestKind: UInt8 = 0xF6

    func encoded() -> [UInt8] {
        switch self {
        case let .request(id, origin, command):
            return [Self.requestKind] + id.bigEndianBytes + origin.bigEndianBytes + command
        case let .response(id, outcome):
            let (index, term, code, text) = outcome.wire
            return [Self.responseKind] + id.bigEndianBytes + index.bigEndianBytes + term.bigEndianBytes + [code] + Array(text.utf8)
        case let .readRequest(id, origin):
            return [Self.readRequestKind] + id.bigEndianBytes + origin.bigEndianBytes
        case let .readResponse(id, outcome):
            let (index, term, code, text) = outcome.wire
            return [Self.readResponseKind] + id.bigEndianBytes + index.bigEndianBytes + term.bigEndianBytes + [code] + Array(text.utf8)
        case let .commitIndexRequest(id, origin):
            return [Self.commitIndexRequestKind] + id.bigEndianBytes + origin.bigEndianBytes
        case let .operatorRequest(id, origin, operation, target):
            return [Self.operatorRequestKind] + id.bigEndianBytes + origin.bigEndianBytes + [operation.rawValue] + target.bigEndianBytes
        }
    }

    /// Total: any payload gives a frame or nil.
    static func decode(_ bytes: [UInt8]) -> ForwardFrame? {
        func u64(_ at: Int) -> UInt64? {
            guard at + 8 <= bytes.count else { return nil }
            return UInt64(bigEndianBytes: bytes[at ..< at + 8])
        }
        switch bytes.first {
        case requestKind:
            guard let id = u64(1), let origin = u64(9) else { return nil }
            return .request(id: id, origin: origin, command: Array(bytes[17...]))
        case readRequestKind:
            guard let id = u64(1), let origin = u64(9), bytes.count == 17 else { return nil }
            return .readRequest(id: id, origin: origin)
        case commitIndexRequestKind:
            guard let id = u64(1), let origin = u64(9), bytes.count == 17 else { return nil }
            return .commitIndexRequest(id: id, origin: origin)
        case operatorRequestKind:
            guard bytes.count == 26, let id = u64(1), let origin = u64(9),
                  let operation = OperatorOperation(rawValue: bytes[17]), let target = u64(18) else { return nil }
            return .operatorRequest(id: id, origin: origin, operation: operation, target: target)
        case responseKind, readResponseKind:
            guard let id = u64(1), let index = u64(9), let term = u64(17), bytes.count >= 26 else { return nil }
            let text = String(decoding: bytes[26...], as: UTF8.self)
            guard let outcome = ForwardOutcome(index: index, term: term, code: bytes[25], text: text) else { return nil }
            return bytes[0] == responseKind ? .response(id: id, outcome: outcome) : .readResponse(id: id, outcome: outcome)
        default:
            return nil
        }
    }
}

/// The leader's answer to a forwarded write.
enum ForwardOutcome: Equatable {
    case committed(CommitOutcome)
    case failed(RaftCommitError)

    init(_ result: Result<CommitOutcome, RaftCommitError>) {
        switch result {
        case let .success(outcome): self = .committed(outcome)
        case let .failure(error): self = .failed(error)
        }
    }

    var result: Result<CommitOutcome, RaftCommitError> {
        switch self {
        case let .committed(outcome): return .success(outcome)
        case let .failed(error): return .failure(error)
        }
    }

    var wire: (UInt64, UInt64, UInt8, String) {
        switch self {
        case let .committed(outcome):
            switch outcome.result {
            case .success(true): return (outcome.index, 0, 0, "")
            case .success(false): return (outcome.index, 0, 1, "")
            case let .failed(message): return (outcome.index, 0, 2, message)
            }
        case let .failed(error):
            switch error {
            case let .notLeader(address): return (0, 0, 10, address ?? "")
            case let .leadershipLost(index, term): return (index, term, 11, "")
            case .leadershipTransferInProgress: return (0, 0, 12, "")
            case let .overloaded(pending, limit): return (UInt64(pending), UInt64(limit), 13, "")
            case let .tooLarge(bytes, limit): return (UInt64(bytes), UInt64(limit), 14, "")
            case let .timeout(what): return (0, 0, 15, what)
            case let .storage(message): return (0, 0, 16, message)
            case .closed: return (0, 0, 17, "")
            case let .rejected(reason): return (0, 0, 18, reason)
            }
        }
    }

    init?(index: UInt64, term: UInt64, code: UInt8, text: String) {
        func int(_ v: UInt64) -> Int { Int(clamping: v) }
        switch code {
        case 0: self = .committed(CommitOutcome(index: index, result: .success(true)))
        case 1: self = .committed(CommitOutcome(index: index, result: .success(false)))
        case 2: self = .committed(CommitOutcome(index: index, result: .failed(text)))
        case 10: self = .failed(.notLeader(leaderAddress: text.isEmpty ? nil : text))
        case 11: self = .failed(.leadershipLost(index: index, term: term))
        case 12: self = .failed(.leadershipTransferInProgress)
        case 13: self = .failed(.overloaded(pending: int(index), limit: int(term)))
        case 14: self = .failed(.tooLarge(bytes: int(index), limit: int(term)))
        case 15: self = .failed(.timeout(text))
        case 16: self = .failed(.storage(text))
        case 17: self = .failed(.closed)
        case 18: self = .failed(.rejected(text))
        default: return nil
        }
    }
}

extension RaftReplicator {
    func forward(_ command: [UInt8], to leader: NodeID,
                 completion: @escaping (Result<CommitOutcome, RaftCommitError>) -> Void) {
        guard forwarding.count < config.maxOutstandingForwards else {
            completion(.failure(.overloaded(pending: forwarding.count, limit: config.maxOutstandingForwards)))
            return
        }
        let requestID = forwarding.nextRequestID
        forwarding.nextRequestID += 1
        forwarding.outstanding[requestID] = ForwardingState.Outstanding(
            leader: leader, deadlineMilliseconds: loop.nowMilliseconds + config.forwardTimeoutMilliseconds,
            completion: completion)
        logger.debug("raft: forwarding write to leader", metadata: ["leader": "\(leader)", "request": "\(requestID)"])
        transport.sendFrame(ForwardFrame.request(id: requestID, origin: id, command: command).encoded(), to: leader)
    }

    func receiveControlFrame(_ payload: [UInt8]) {
        guard !closed else { return }
        switch ForwardFrame.decode(payload) {
        case let .request(requestID, origin, command):
            // Never forward again: a leader change in between answers .notLeader instead.
            submit(command, forwardToLeader: false) { [weak self] result in
                guard let self, !self.closed else { return }
                self.transport.sendFrame(ForwardFrame.response(id: requestID, outcome: ForwardOutcome(result)).encoded(),
                                         to: origin)
            }
        case let .response(requestID, outcome):
            forwarding.outstanding.removeValue(forKey: requestID)?.completion(outcome.result)
        case let .readRequest(requestID, origin):
            readIndex(forwardToLeader: false) { [weak self] result in
                guard let self, !self.closed else { return }
                let outcome = ForwardOutcome(result.map { CommitOutcome(index: $0, result: .success(true)) })
                self.transport.sendFrame(ForwardFrame.readResponse(id: requestID, outcome: outcome).encoded(), to: origin)
            }
        case let .commitIndexRequest(requestID, origin):
            leaderReadIndex(forwardToLeader: false) { [weak self] result in
                guard let self, !self.closed else { return }
                let outcome = ForwardOutcome(result.map { CommitOutcome(index: $0, result: .success(true)) })
                self.transport.sendFrame(ForwardFrame.readResponse(id: requestID, outcome: outcome).encoded(), to: origin)
            }
        case let .operatorRequest(requestID, origin, operation, target):
            let answer: (Result<NodeID, RaftCommitError>) -> Void = { [weak self] result in
                guard let self, !self.closed else { return }
                let outcome = ForwardOutcome(result.map { CommitOutcome(index: $0, result: .success(true)) })
                self.transport.sendFrame(ForwardFrame.response(id: requestID, outcome: outcome).encoded(), to: origin)
            }
            switch operation {
            case .removeServer:
                removePeer(target, forwardToLeader: false) { answer($0.map { target }) }
            case .transferLeadership:
                transferLeadership(to: target == 0 ? nil : target, forwardToLeader: false, completion: answer)
            }
        case let .readResponse(requestID, outcome):
            guard let read = forwarding.outstandingReads.removeValue(forKey: requestID) else { return }
            switch outcome.result {
            case let .success(granted):
                waitForApply(granted.index, deadlineMilliseconds: read.deadlineMilliseconds, read.completion)
            case let .failure(error):
                read.completion(.failure(error))
            }
        case nil:
            if receiveHello(payload) { return }
            logger.warning("raft: undecodable control frame dropped", metadata: ["bytes": "\(payload.count)"])
        }
    }

    /// Asks the leader for a read index; the read completes once this server applied it.
    func forwardReadIndex(to leader: NodeID, completion: @escaping (Result<UInt64, RaftCommitError>) -> Void) {
        sendReadRequest(to: leader, completion: completion) { ForwardFrame.readRequest(id: $0, origin: $1) }
    }

    /// Registers an outstanding read (bounded with everything else forwarded) and sends the
    /// request frame `frame(requestID, origin)` to the leader.
    private func sendReadRequest(to leader: NodeID, completion: @escaping (Result<UInt64, RaftCommitError>) -> Void,
                                 frame: (UInt64, NodeID) -> ForwardFrame) {
        guard forwarding.count < config.maxOutstandingForwards else {
            completion(.failure(.overloaded(pending: forwarding.count, limit: config.maxOutstandingForwards)))
            return
        }
        let requestID = forwarding.nextRequestID
        forwarding.nextRequestID += 1
        forwarding.outstandingReads[requestID] = ForwardingState.OutstandingRead(
            leader: leader, deadlineMilliseconds: loop.nowMilliseconds + config.readTimeoutMilliseconds, completion: completion)
        transport.sendFrame(frame(requestID, id).encoded(), to: leader)
    }

    /// Consul's default consistency: a read point that trusts the leader without a quorum
    /// round. The leader answers with its commit index; a follower asks the leader for it
    /// (one round trip, `.commitIndexRequest`). Completes once this server has applied that
    /// index, so a read after it sees every write the leader had committed when asked.
    /// Weaker than `readIndex` only while a deposed leader still believes it leads.
    public func leaderReadIndex(forwardToLeader: Bool? = nil, completion: @escaping (Result<UInt64, RaftCommitError>) -> Void) {
        loop.assertInLoopThread()
        guard started, !closed else { completion(.failure(.closed)); return }
        if node.role == .leader {
            // A new leader knows what earlier terms committed only once an entry of its own
            // term commits (§5.4.2; Consul waits for its barrier the same way): until then,
            // confirm with a read index instead.
            if forwarding.leaderCommittedInTerm != node.term {
                guard node.term(at: node.commitIndex) == node.term else {
                    readIndex(forwardToLeader: false, completion: completion)
                    return
                }
                forwarding.leaderCommittedInTerm = node.term
            }
            waitForApply(node.commitIndex, deadlineMilliseconds: loop.nowMilliseconds + config.readTimeoutMilliseconds, completion)
            return
        }
        guard forwardToLeader ?? config.forwardWritesToLeader, let leader = node.leader, leader != id else {
            completion(.failure(.notLeader(leaderAddress: leaderAddress)))
            return
        }
        sendReadRequest(to: leader, completion: completion) { ForwardFrame.commitIndexRequest(id: $0, origin: $1) }
    }

    /// Sends an operator request to the leader; its answer completes `completion` with the
    /// server acted on (the response frame's index).
    func forwardOperator(_ operation: ForwardFrame.OperatorOperation, target: NodeID, to leader: NodeID,
                         completion: @escaping (Result<NodeID, RaftCommitError>) -> Void) {
        guard forwarding.count < config.maxOutstandingForwards else {
            completion(.failure(.overloaded(pending: forwarding.count, limit: config.maxOutstandingForwards)))
            return
        }
        let requestID = forwarding.nextRequestID
        forwarding.nextRequestID += 1
        forwarding.outstanding[requestID] = ForwardingState.Outstanding(
            leader: leader, deadlineMilliseconds: loop.nowMilliseconds + config.membershipChangeTimeoutMilliseconds,
            completion: { result in completion(result.map(\.index)) }, isOperatorRequest: true)
        transport.sendFrame(ForwardFrame.operatorRequest(id: requestID, origin: id, operation: operation, target: target).encoded(),
                            to: leader)
    }

    func waitForApply(_ index: UInt64, deadlineMilliseconds: UInt64,
                              _ completion: @escaping (Result<UInt64, RaftCommitError>) -> Void) {
        if lastAppliedIndex >= index {
            completion(.success(index))
        } else {
            forwarding.readsWaitingForApply.append((index, deadlineMilliseconds, completion))
            // Applies waiting in the state's held write commit now (and the next job's at once).
            scheduleStateCommit()
        }
    }

    /// Completes once `reader` shows everything this server has applied (the state's held write
    /// committed): no read sees less than a write this server answered. No leader involved.
    public func localReadBarrier(completion: @escaping (Result<UInt64, RaftCommitError>) -> Void) {
        loop.assertInLoopThread()
        guard started, !closed else { completion(.failure(.closed)); return }
        waitForApply(lastIssuedApplyIndex, deadlineMilliseconds: loop.nowMilliseconds + config.readTimeoutMilliseconds, completion)
    }

    /// Serves the reads whose index is now visible; runs whenever the visible index moves.
    func releaseReadsWaitingForApply() {
        guard !forwarding.readsWaitingForApply.isEmpty else { return }
        let ready = forwarding.readsWaitingForApply.filter { $0.index <= lastAppliedIndex }
        forwarding.readsWaitingForApply.removeAll { $0.index <= lastAppliedIndex }
        for read in ready { read.completion(.success(read.index)) }
    }

    func expireForwards() {
        let now = loop.nowMilliseconds
        failForwardsToAFormerLeader()
        for (requestID, read) in forwarding.outstandingReads where read.deadlineMilliseconds <= now {
            forwarding.outstandingReads[requestID] = nil
            read.completion(.failure(.timeout("leader \(read.leader) did not grant a read index within \(config.readTimeoutMilliseconds) ms")))
        }
        let expired = forwarding.readsWaitingForApply.filter { $0.deadlineMilliseconds <= now }
        forwarding.readsWaitingForApply.removeAll { $0.deadlineMilliseconds <= now }
        for read in expired { read.completion(.failure(.timeout("read index not applied here within \(config.readTimeoutMilliseconds) ms"))) }
        guard !forwarding.outstanding.isEmpty else { return }
        for (requestID, forward) in forwarding.outstanding where forward.deadlineMilliseconds <= now {
            forwarding.outstanding[requestID] = nil
            forward.completion(.failure(.timeout(
                "leader \(forward.leader) did not answer a forwarded write within \(config.forwardTimeoutMilliseconds) ms")))
        }
    }

    /// Once another leader is known, the old one will never answer what it was sent (it died,
    /// or lost its leadership and answers only what it had applied). Waiting out the forward
    /// timeout would stall those callers for seconds after a failover, so they learn now: a read
    /// may simply be asked again (.notLeader with no address makes the HTTP layer retry it), a
    /// write may or may not have been committed, so it fails without a retry.
    private func failForwardsToAFormerLeader() {
        guard let current = node.leader else { return }
        for (requestID, read) in forwarding.outstandingReads where read.leader != current {
            forwarding.outstandingReads[requestID] = nil
            read.completion(.failure(.notLeader(leaderAddress: nil)))
        }
        for (requestID, forward) in forwarding.outstanding where forward.leader != current && !forward.isOperatorRequest {
            forwarding.outstanding[requestID] = nil
            forward.completion(.failure(.timeout(
                "leader \(forward.leader) was replaced by \(current) before answering a forwarded write; it may or may not have been applied")))
        }
    }

    func failAllForwards() {
        let outstanding = forwarding.outstanding
        let reads = Array(forwarding.outstandingReads.values.map(\.completion)) + forwarding.readsWaitingForApply.map(\.completion)
        forwarding = ForwardingState()
        for forward in outstanding.values { forward.completion(.failure(.closed)) }
        for read in reads { read(.failure(.closed)) }
    }
}
