// GET /v1/snapshot (https://developer.hashicorp.com/consul/api-docs/snapshot): an atomic,
// point-in-time archive of the server state, with X-Consul-Index. Without ?stale the read is
// linearizable (leadership confirmed, everything committed applied first); with ?stale any
// server answers from its own state. Our archive format is our own (SnapshotArchive);
// restore (PUT) is not supported.
import HTTP
import Replication

extension HTTPAPI {
    func handleSnapshot(_ responder: HTTPResponder) {
        guard inLocalDatacenter(responder) else { return }
        if responder.request.method == "PUT" {
            responder.respond(.text(status: 501, "snapshot restore is not supported by this agent"))
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
