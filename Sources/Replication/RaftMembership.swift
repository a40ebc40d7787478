// Membership on top of the core's single-server changes (thesis §4.1): `addServer` adds a
// server as a non-voter, waits until it has caught up, then promotes it (thesis §4.2.1);
// `removeServer` removes one. Addresses travel in the log as address records (normal entries
// starting with 0xFF that never reach the state store), so every server, and any later leader,
// can reach every member; a hello frame on each new connection tells a joining server where
// the leader listens before it has applied anything.
import RaftCore
import Storage

/// A normal log entry carrying one server's address: 0xFF, 0x01, id u64, UTF-8 address.
enum AddressRecord {
    static let firstByte: UInt8 = 0xFF

    static func encode(id: NodeID, address: String) -> [UInt8] {
        [firstByte, 0x01] + id.bigEndianBytes + Array(address.utf8)
    }

    static func isRecord(_ entry: Entry) -> Bool { entry.kind == .normal && entry.data.first == firstByte }

    static func decode(_ data: [UInt8]) -> (NodeID, String)? {
        guard data.count > 10, data[0] == firstByte, data[1] == 0x01,
              let id = UInt64(bigEndianBytes: data[2 ..< 10]) else { return nil }
        return (id, String(decoding: data[10...], as: UTF8.self))
    }
}

/// Sent first on every outbound connection: 0xF2, id u64, UTF-8 address.
struct HelloFrame: Equatable {
    static let kind: UInt8 = 0xF2
    var id: NodeID
    var address: String

    func encoded() -> [UInt8] { [Self.kind] + id.bigEndianBytes + Array(address.utf8) }

    static func decode(_ bytes: [UInt8]) -> HelloFrame? {
        guard bytes.count > 9, bytes[0] == kind, let id = UInt64(bigEndianBytes: bytes[1 ..< 9]) else { return nil }
        return HelloFrame(id: id, address: String(decoding: bytes[9...], as: UTF8.self))
    }
}

/// One membership change at a time, driven from the ticks.
struct MembershipOperation {
    enum Kind: Equatable {
        case add(NodeID, address: String)
        case remove(NodeID)
    }
    var kind: Kind
    var deadlineMilliseconds: UInt64
    var completion: (Result<Void, RaftCommitError>) -> Void
}

extension RaftReplicator {
    /// Adds a server (leader only): records its address in the log, adds it as a non-voter,
    /// and promotes it to voter once it has replicated up to the commit index. Completes when
    /// the promotion is committed and applied here.
    public func addServer(_ server: NodeID, address: String, completion: @escaping (Result<Void, RaftCommitError>) -> Void) {
        loop.assertInLoopThread()
        guard begin(.add(server, address: address), completion: completion) else { return }
        if addressBook[server] != address {
            learnAddress(address, for: server)
        }
        // The records precede the configuration entry in the log, so whoever holds the
        // configuration holds the addresses too. Every member's is recorded: the bootstrap
        // addresses live only in the founders' stable stores, and the new server needs them
        // to reach the others after a restart or as a candidate.
        var book = addressBook.filter { node.configuration.isMember($0.key) }
        book[server] = address
        for (member, memberAddress) in book.sorted(by: { $0.key < $1.key }) {
            if case .accepted = node.propose(AddressRecord.encode(id: member, address: memberAddress)) { continue }
            failMembership(.notLeader(leaderAddress: leaderAddress))
            return
        }
        logger.info("raft: updating configuration", metadata: ["command": "AddNonvoter", "server-id": "\(server)",
                                                               "server-addr": "\(address)"])
        advanceMembership()
    }

    /// Removes a server (voter or non-voter; leader only). Completes when the configuration
    /// without it is committed and applied here.
    public func removeServer(_ server: NodeID, completion: @escaping (Result<Void, RaftCommitError>) -> Void) {
        loop.assertInLoopThread()
        guard begin(.remove(server), completion: completion) else { return }
        logger.info("raft: updating configuration", metadata: ["command": "RemoveServer", "server-id": "\(server)"])
        advanceMembership()
    }

    private func begin(_ kind: MembershipOperation.Kind, completion: @escaping (Result<Void, RaftCommitError>) -> Void) -> Bool {
        guard started, !closed else { completion(.failure(.closed)); return false }
        guard node.role == .leader else { completion(.failure(.notLeader(leaderAddress: leaderAddress))); return false }
        guard membership == nil else { completion(.failure(.rejected("another membership change is in progress"))); return false }
        membership = MembershipOperation(kind: kind,
                                         deadlineMilliseconds: loop.nowMilliseconds + config.membershipChangeTimeoutMilliseconds,
                                         completion: completion)
        return true
    }

    /// One step of the pending change; runs on every tick.
    func advanceMembership() {
        guard let operation = membership, !closed else { return }
        if loop.nowMilliseconds >= operation.deadlineMilliseconds {
            failMembership(.timeout("membership change \(operation.kind) did not complete in \(config.membershipChangeTimeoutMilliseconds) ms"))
            return
        }
        guard node.role == .leader else {
            failMembership(.notLeader(leaderAddress: leaderAddress))
            return
        }
        let configuration = node.configuration
        let settled = node.configurationIndex <= node.commitIndex && node.configurationIndex <= lastAppliedIndex
        guard settled else { return }  // one uncommitted change at a time (thesis §4.1)
        switch operation.kind {
        case let .add(server, _):
            if configuration.isVoter(server) {
                completeMembership()
            } else if configuration.nonVoters.contains(server) {
                // Caught up: it holds everything committed so far (hashicorp/raft promotes
                // once a non-voter's match index reaches the leader's commit index).
                if matchIndex[server] ?? 0 >= node.commitIndex {
                    propose(.promoteToVoter(server))
                }
            } else {
                propose(.addNonVoter(server))
            }
        case let .remove(server):
            if configuration.isMember(server) {
                propose(.remove(server))
            } else {
                completeMembership()
            }
        }
    }

    private func propose(_ change: ConfigurationChange) {
        switch node.proposeConfigurationChange(change) {
        case .accepted:
            logger.info("raft: configuration change proposed", metadata: ["change": "\(change)"])
            drain()
        case .configurationChangeInProgress, .leadershipTransferInProgress, .tooManyUncommitted:
            break  // retried on the next tick
        case let .invalidConfigurationChange(error):
            failMembership(.rejected("\(error)"))
        case let .notLeader(leader):
            failMembership(.notLeader(leaderAddress: leader.flatMap { addressBook[$0] }))
        case let .tooLarge(bytes, limit):
            failMembership(.tooLarge(bytes: bytes, limit: limit))
        }
    }

    private func completeMembership() {
        guard let operation = membership else { return }
        membership = nil
        logger.info("raft: membership change completed", metadata: ["change": "\(operation.kind)"])
        operation.completion(.success(()))
    }

    func failMembership(_ error: RaftCommitError) {
        guard let operation = membership else { return }
        membership = nil
        logger.warning("raft: membership change failed", metadata: ["change": "\(operation.kind)", "error": "\(error)"])
        operation.completion(.failure(error))
    }

    /// Address records take effect when applied, on every server alike.
    func committedEntriesApplied(_ entries: [Entry]) {
        for entry in entries where AddressRecord.isRecord(entry) {
            guard let (server, address) = AddressRecord.decode(entry.data) else {
                logger.error("raft: undecodable address record", metadata: ["index": "\(entry.index)"])
                continue
            }
            if addressBook[server] != address { learnAddress(address, for: server) }
        }
    }

    /// A hello frame: a server we have no address for tells us where it listens.
    func receiveHello(_ payload: [UInt8]) -> Bool {
        guard let hello = HelloFrame.decode(payload) else { return false }
        if hello.id != id, addressBook[hello.id] == nil {
            logger.info("raft: learned peer address", metadata: ["peer": "\(hello.id)", "address": "\(hello.address)"])
            learnAddress(hello.address, for: hello.id)
        }
        return true
    }

    func learnAddress(_ address: String, for server: NodeID) {
        addressBook[server] = address
        if server != id { transport.setAddress(address, for: server) }
        markAddressBookDirty()
    }
}
