// /v1/kv: Consul's key/value API. Reads go to the state store on the loop thread; writes
// become KV commands in the durable log and answer once applied.
import HTTP
import Replication
import StateStore

extension HTTPAPI {
    /// LMDB's key limit (mdb_env_get_maxkeysize with the default page size).
    static let maxKeyBytes = 511

    func handleKV(_ responder: HTTPResponder) {
        let request = responder.request
        let key = request.path.hasPrefix("/v1/kv/") ? String(request.path.dropFirst("/v1/kv/".count)) : ""
        if key.utf8.count > Self.maxKeyBytes {
            responder.respond(.text(status: 400, "Key too large: \(key.utf8.count) bytes, max size: \(Self.maxKeyBytes) bytes"))
            return
        }
        switch request.method {
        case "GET", "HEAD": kvGet(responder, key: key)
        case "PUT", "POST": kvPut(responder, key: key)
        case "DELETE": kvDelete(responder, key: key)
        default: _ = allow(responder, ["GET", "PUT", "DELETE"])
        }
    }

    private func kvGet(_ responder: HTTPResponder, key: String) {
        guard let options = queryOptions(responder) else { return }
        let query = responder.request.query
        guard let store = log?.reader else { respondCommitError(responder, .notLeader(leaderAddress: nil)); return }
        if query.has("keys") {
            let separator = query.first("separator").flatMap { $0.isEmpty ? nil : $0 }
            blockingRead(responder, options, scope: .prefix(key), replicatedState: true) {
                do {
                    let (index, keys) = try store.keys(prefix: key, separator: separator)
                    if keys.isEmpty { return (index, HTTPResponse(status: 404)) }
                    var body: [UInt8] = [UInt8(ascii: "[")]
                    for (i, k) in keys.enumerated() {
                        if i > 0 { body.append(UInt8(ascii: ",")) }
                        JSONText.appendQuoted(k, to: &body)
                    }
                    body.append(UInt8(ascii: "]"))
                    return (index, .json(status: 200, body))
                } catch {
                    return (0, .text(status: 500, "\(error)"))
                }
            }
        } else if query.has("recurse") {
            blockingRead(responder, options, scope: .prefix(key), replicatedState: true) {
                do {
                    let (index, entries) = try store.list(prefix: key)
                    if entries.isEmpty { return (index, HTTPResponse(status: 404)) }
                    return (index, .json(status: 200, Self.renderEntries(entries)))
                } catch {
                    return (0, .text(status: 500, "\(error)"))
                }
            }
        } else {
            if key.isEmpty {
                responder.respond(.text(status: 400, "Missing key name"))
                return
            }
            let raw = query.has("raw")
            blockingRead(responder, options, scope: .key(key), replicatedState: true) {
                do {
                    let (index, entry) = try store.get(key)
                    guard let entry else { return (index, HTTPResponse(status: 404)) }
                    if raw {
                        var response = HTTPResponse(status: 200)
                        response.headers.add("Content-Type", "application/octet-stream")
                        response.body = entry.value
                        return (index, response)
                    }
                    return (index, .json(status: 200, Self.renderEntries([entry])))
                } catch {
                    return (0, .text(status: 500, "\(error)"))
                }
            }
        }
    }

    /// Consul's DirEntry JSON: `[{"LockIndex":0,"Key":"k","Flags":0,"Value":"base64",
    /// "CreateIndex":1,"ModifyIndex":1}]`; Value is null when empty, Session only when held.
    static func renderEntries(_ entries: [KVEntry]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(entries.reduce(2) { $0 + 110 + $1.key.utf8.count + $1.value.count * 4 / 3 })
        out.append(UInt8(ascii: "["))
        for (i, entry) in entries.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            out.append(contentsOf: #"{"LockIndex":"#.utf8)
            out.append(contentsOf: String(entry.lockIndex).utf8)
            out.append(contentsOf: #","Key":"#.utf8)
            JSONText.appendQuoted(entry.key, to: &out)
            out.append(contentsOf: #","Flags":"#.utf8)
            out.append(contentsOf: String(entry.flags).utf8)
            out.append(contentsOf: #","Value":"#.utf8)
            if entry.value.isEmpty {
                out.append(contentsOf: "null".utf8)
            } else {
                out.append(UInt8(ascii: "\""))
                Base64.encode(entry.value, into: &out)
                out.append(UInt8(ascii: "\""))
            }
            if let session = entry.session {
                out.append(contentsOf: #","Session":"#.utf8)
                JSONText.appendQuoted(session, to: &out)
            }
            out.append(contentsOf: #","CreateIndex":"#.utf8)
            out.append(contentsOf: String(entry.createIndex).utf8)
            out.append(contentsOf: #","ModifyIndex":"#.utf8)
            out.append(contentsOf: String(entry.modifyIndex).utf8)
            out.append(UInt8(ascii: "}"))
        }
        out.append(UInt8(ascii: "]"))
        return out
    }

    private func kvPut(_ responder: HTTPResponder, key: String) {
        let request = responder.request
        let query = request.query
        guard inLocalDatacenter(responder) else { return }
        guard !key.isEmpty else {
            responder.respond(.text(status: 400, "Missing key name"))
            return
        }
        if query.has("acquire") || query.has("release") {
            responder.respond(.text(status: 400, "Sessions are not supported by this agent yet: ?acquire and ?release cannot be used"))
            return
        }
        guard request.body.count <= config.kvMaxValueSizeBytes else {
            responder.respond(.text(status: 413, "Request body(\(request.body.count) bytes) too large, max size: \(config.kvMaxValueSizeBytes) bytes. See https://developer.hashicorp.com/consul/docs/agent/config/config-files#kv_max_value_size."))
            return
        }
        var flags: UInt64 = 0
        if let text = query.first("flags"), !text.isEmpty {
            guard let parsed = UInt64(text) else {
                responder.respond(.text(status: 400, "Invalid flags: \"\(text)\" is not an unsigned integer"))
                return
            }
            flags = parsed
        }
        let command: KVCommand
        if let text = query.first("cas") {
            guard let index = UInt64(text) else {
                responder.respond(.text(status: 400, "Invalid cas index: \"\(text)\" is not an unsigned integer"))
                return
            }
            command = .checkAndSet(key: key, value: request.body, flags: flags, modifyIndex: index)
        } else {
            command = .set(key: key, value: request.body, flags: flags)
        }
        commit(responder, command)
    }

    private func kvDelete(_ responder: HTTPResponder, key: String) {
        let query = responder.request.query
        guard inLocalDatacenter(responder) else { return }
        let command: KVCommand
        if query.has("recurse") {
            command = .deleteTree(prefix: key)
        } else {
            guard !key.isEmpty else {
                responder.respond(.text(status: 400, "Missing key name"))
                return
            }
            if let text = query.first("cas") {
                guard let index = UInt64(text) else {
                    responder.respond(.text(status: 400, "Invalid cas index: \"\(text)\" is not an unsigned integer"))
                    return
                }
                command = .deleteCAS(key: key, modifyIndex: index)
            } else {
                command = .delete(key: key)
            }
        }
        commit(responder, command)
    }

    /// Submits a write and answers Consul's `true`/`false` once it is durable and applied.
    private func commit(_ responder: HTTPResponder, _ command: KVCommand) {
        guard let log else { respondCommitError(responder, .notLeader(leaderAddress: nil)); return }
        let encoded = command.encoded()
        holdForLeader({ done in log.append(encoded, completion: done) }) { [weak self] outcome in
            switch outcome {
            case .success(let commit):
                switch commit.result {
                case .success(let answer):
                    responder.respond(.json(status: 200, Array((answer ? "true" : "false").utf8)))
                case .failed(let message):
                    responder.respond(.text(status: 400, message))
                }
            case .failure(let error):
                self?.respondCommitError(responder, error)
            }
        }
    }
}
