// GET /v1/snapshot (https://developer.hashicorp.com/consul/api-docs/snapshot): an atomic,
// point-in-time archive of the server state, with X-Consul-Index. Without ?stale the read is
// linearizable (leadership confirmed, everything committed applied first); with ?stale any
// server answers from its own state. Our archive format is our own (SnapshotArchive).
// PUT restores an archive (the body) on the leader, which replicates it (RaftRestore.swift):
// 200 with an empty body once a quorum holds it; a follower forwards the request to the
// leader's server port, as Consul forwards to the leader; a bad archive answers 400 and
// changes nothing.
import HTTP
import Replication

extension HTTPAPI {
    func handleSnapshot(_ responder: HTTPResponder) {
        guard inLocalDatacenter(responder) else { return }
        if responder.request.method == "PUT" {
            restoreSnapshot(responder)
            return
        }
        guard allow(responder, ["GET"]) else { return }
        guard config.server else {
            responder.respond(.text(status: 500, "No known Consul servers"))
            return
        }
        let stale = responder.request.query.has("stale")
        let archive: () -> Void = { [weak self] in
            guard let self else { return }
            guard let raft = self.raft else { self.respondCommitError(responder, .notLeader(leaderAddress: nil)); return }
            raft.archiveSnapshot { [weak self] result in
                guard let self else { return }
                switch result {
                case let .success((index, bytes)):
                    var response = HTTPResponse(status: 200, body: bytes)
                    response.headers.add("Content-Type", "application/octet-stream")
                    self.addQueryMeta(&response, index: index, consistency: stale ? "stale" : "consistent")
                    responder.respond(response)
                case let .failure(error):
                    self.respondCommitError(responder, error)
                }
            }
        }
        if stale {
            archive()
            return
        }
        holdForLeader({ [weak self] (done: @escaping (Result<UInt64, RaftCommitError>) -> Void) in
            guard let log = self?.log else { done(.failure(.notLeader(leaderAddress: nil))); return }
            log.readBarrier(completion: done)
        }) { [weak self] result in
            switch result {
            case .success: archive()
            case let .failure(error): self?.respondCommitError(responder, error)
            }
        }
    }
}

extension HTTPAPI {
    /// The largest archive PUT /v1/snapshot takes (413 above it): the largest snapshot a
    /// server builds, plus the archive's header and checksum. The archive is held in memory
    /// while it is verified and loaded.
    static let maxRestoreBodyBytes = RaftReplicatorConfig().maxSnapshotBytes + (1 << 20)
    /// What a follower forwards to the leader: one RPC frame on the server port carries the
    /// whole request. A larger archive must be sent to the leader's HTTP API directly.
    static let maxForwardedRestoreBodyBytes = RaftTransportConfig().maxFrameBytes - (128 << 10)

    func restoreSnapshot(_ responder: HTTPResponder) {
        guard config.server else {
            responder.respond(.text(status: 500, "No known Consul servers"))
            return
        }
        let archive = responder.request.body
        holdForLeader({ [weak self] (done: @escaping (Result<UInt64, RaftCommitError>) -> Void) in
            guard let self, let raft = self.raft else { done(.failure(.notLeader(leaderAddress: nil))); return }
            if !raft.isLeader {
                if let leader = raft.leaderAddress {
                    guard archive.count <= Self.maxForwardedRestoreBodyBytes else {
                        responder.respond(.text(status: 413, "Snapshot of \(archive.count) bytes is larger than a follower forwards (\(Self.maxForwardedRestoreBodyBytes) bytes); send it to the leader's HTTP API (the leader's server address is \(leader))"))
                        return
                    }
                    // The leader answers; its answer (or the forwarding error) is the response.
                    self.forwardToLeader(responder, leader: leader)
                    return
                }
                done(.failure(.notLeader(leaderAddress: nil)))
                return
            }
            raft.restoreSnapshot(archive: archive) { result in
                switch result {
                case let .success(index): done(.success(index))
                case let .failure(.failed(error)): done(.failure(error))
                case let .failure(.invalidArchive(reason)):
                    responder.respond(.text(status: 400, "Invalid snapshot: \(reason)"))
                }
            }
        }) { [weak self] result in
            switch result {
            case .success:
                responder.respond(HTTPResponse(status: 200, body: []))
            case let .failure(error):
                self?.respondCommitError(responder, error)
            }
        }
    }

    private func forwardToLeader(_ responder: HTTPResponder, leader: String) {
        let client: RPCClient
        if let existing = leaderRPC {
            client = existing
        } else {
            client = RPCClient(loop: loop)
            leaderRPC = client
        }
        client.setServerAddress(leader)
        client.forward(responder)
    }
}
