// Gossip key rotation, as Consul's `keyring` command and /v1/operator/keyring: the asking
// agent sends an internal query to the LAN pool; every member (the asker too) applies the
// operation to its own keyring, saves it, and answers; the asker sums up the answers.
import Foundation
import Gossip
import GossipCore

enum KeyringOperation: String {
    case list = "list-keys", install = "install-key", use = "use-key", remove = "remove-key"

    var queryName: String { "_serf_" + rawValue }
    static func isInternal(queryName: String) -> Bool { queryName.hasPrefix("_serf_") }
    init?(queryName: String) {
        guard queryName.hasPrefix("_serf_") else { return nil }
        self.init(rawValue: String(queryName.dropFirst("_serf_".count)))
    }
}

/// One member's answer: whether it applied the operation, and the keys it now holds
/// (primary first). Small JSON; it must fit a query response (1 KiB).
struct KeyringAnswer {
    var ok: Bool
    var error: String
    var keys: [String]

    func encoded() -> [UInt8] {
        let object: [String: Any] = ["ok": ok, "error": error, "keys": keys]
        return Array((try? JSONSerialization.data(withJSONObject: object)) ?? Data())
    }

    init(ok: Bool, error: String = "", keys: [String] = []) {
        self.ok = ok
        self.error = error
        self.keys = keys
    }

    /// Total: an unreadable answer counts as a failure from that member.
    init(decoding bytes: [UInt8]) {
        guard let object = (try? JSONSerialization.jsonObject(with: Data(bytes))) as? [String: Any] else {
            self.init(ok: false, error: "unreadable keyring answer")
            return
        }
        self.init(ok: object["ok"] as? Bool ?? false, error: object["error"] as? String ?? "",
                  keys: object["keys"] as? [String] ?? [])
    }
}

/// What the asker learned: Consul's KeyringResponse for the LAN pool.
struct KeyringResult {
    var numNodes: Int
    var answers: [String: KeyringAnswer]
    var keys: [String: Int] {
        var counts: [String: Int] = [:]
        for answer in answers.values { for key in answer.keys { counts[key, default: 0] += 1 } }
        return counts
    }
    var primaryKeys: [String: Int] {
        var counts: [String: Int] = [:]
        for answer in answers.values { if let first = answer.keys.first { counts[first, default: 0] += 1 } }
        return counts
    }
    var failures: [String: String] { answers.filter { !$0.value.ok }.mapValues(\.error) }
    /// Every member answered and none failed.
    var succeeded: Bool { failures.isEmpty && answers.count >= numNodes }
}

final class KeyringCollection {
    let numNodes: Int
    var answers: [String: KeyringAnswer] = [:]
    let completion: (KeyringResult) -> Void
    init(numNodes: Int, completion: @escaping (KeyringResult) -> Void) {
        self.numNodes = numNodes
        self.completion = completion
    }
    func result() -> KeyringResult { KeyringResult(numNodes: numNodes, answers: answers) }
}

extension AgentGossip {
    /// Asks every LAN member to apply `operation`; `completion` runs on the loop thread once
    /// the query's deadline passed (answers arriving later are not counted).
    func keyring(_ operation: KeyringOperation, key: String?, completion: @escaping (Result<KeyringResult, Error>) -> Void) {
        guard let lan else {
            completion(.failure(AgentError.startup("gossip is disabled (-serf-lan-port -1)")))
            return
        }
        guard lan.keyring != nil else {
            completion(.failure(AgentError.startup("Gossip encryption is not enabled on this agent (start it with -encrypt)")))
            return
        }
        let alive = lan.members.filter { $0.serfStatus == 1 }.count
        do {
            try lan.query(name: operation.queryName, payload: Array((key ?? "").utf8)) { id in
                keyringQueries[id] = KeyringCollection(numNodes: alive) { completion(.success($0)) }
            }
        } catch {
            completion(.failure(error))
        }
    }

    /// Applies an operation another member (or we) asked for, saves the keyring, answers.
    func answerKeyringQuery(_ id: QueryID, name: String, payload: [UInt8]) {
        guard let lan else { return }
        let answer: KeyringAnswer
        if let operation = KeyringOperation(queryName: name), let keyring = lan.keyring {
            let key = String(decoding: payload, as: UTF8.self)
            do {
                let updated: GossipKeyring
                switch operation {
                case .list: updated = keyring
                case .install: updated = try keyring.installing(base64Key: key)
                case .use: updated = try keyring.using(base64Key: key)
                case .remove: updated = try keyring.removing(base64Key: key)
                }
                if operation != .list {
                    try Self.saveKeyring(updated, dataDir: dataDir)
                    lan.replaceKeyring(updated)
                    wan?.replaceKeyring(updated)
                }
                answer = KeyringAnswer(ok: true, keys: updated.base64Keys)
            } catch {
                answer = KeyringAnswer(ok: false, error: "\(error)", keys: keyring.base64Keys)
            }
        } else {
            answer = KeyringAnswer(ok: false, error: lan.keyring == nil ? "Gossip encryption is not enabled" : "unknown keyring operation \(name)")
        }
        do { try lan.respond(to: id, payload: answer.encoded()) } catch {
            agentLogger.debug("keyring answer not sent", metadata: ["error": "\(error)"])
        }
    }

    /// `<data-dir>/serf/local.keyring`: the keys as a JSON list, primary first (Consul's file).
    static func saveKeyring(_ keyring: GossipKeyring, dataDir: String) throws {
        let dir = dataDir + "/serf"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let path = dir + "/local.keyring"
        let data = try JSONSerialization.data(withJSONObject: keyring.base64Keys)
        try data.write(to: URL(fileURLWithPath: path), options: .atomic)
        chmod(path, 0o600)
    }
}
