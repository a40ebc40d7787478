// Services and checks registered through the API survive a restart: each is one JSON file in
// <data-dir>/services and <data-dir>/checks (as Consul keeps them), written atomically (temp
// file, fsync, rename) on a serial queue off the loop, in the order the changes happened.
import Foundation
import Glibc
import Logging

final class LocalStatePersistence: @unchecked Sendable {
    // Paths are immutable; file writes happen only on `queue`; `pending` is guarded by `lock`.
    let servicesDir: String
    let checksDir: String
    private let queue = DispatchQueue(label: "conclave.local-state-persist")
    private let logger = Logger(label: "agent.local")

    init(dataDir: String) {
        servicesDir = dataDir + "/services"
        checksDir = dataDir + "/checks"
    }

    /// IDs may hold any character ("web/1", "../x"): the file name is the ID percent-encoded
    /// to [A-Za-z0-9-_.], so it can never leave its folder.
    static func fileName(for id: String) -> String {
        var out = ""
        for byte in id.utf8 {
            let c = Character(UnicodeScalar(byte))
            if c.isASCII && (c.isLetter || c.isNumber || c == "-" || c == "_") {
                out.append(c)
            } else {
                out += String(format: "%%%02X", byte)
            }
        }
        return out + ".json"
    }

    func saveService(_ service: ServiceDefinition) {
        write(["Service": LocalDefinitions.registerJSON(service)], to: servicesDir, id: service.id)
    }

    func removeService(_ id: String) { remove(from: servicesDir, id: id) }

    func saveCheck(_ state: CheckState) {
        var check = LocalDefinitions.registerJSON(state.definition)
        // The status at save time is where the check starts after a restart (Consul keeps TTL
        // state the same way), so a passing TTL check does not flap critical on restart.
        check["Status"] = state.status.rawValue
        check["Output"] = state.output
        write(["Check": check], to: checksDir, id: state.definition.id)
    }

    func removeCheck(_ id: String) { remove(from: checksDir, id: id) }

    /// Blocks until every queued change is on disk (shutdown and tests).
    func flush() { queue.sync { drain() } }

    private func write(_ object: [String: Any], to dir: String, id: String) {
        guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) else { return }
        enqueue(dir + "/" + Self.fileName(for: id), .write(data))
    }

    private func remove(from dir: String, id: String) {
        enqueue(dir + "/" + Self.fileName(for: id), .remove)
    }

    private enum PendingChange { case write(Data), remove }
    // Guarded by `lock`: the latest change per file not yet on disk. Coalescing per file bounds
    // the backlog by the number of definitions, however fast TTL updates arrive.
    private let lock = NSLock()
    private var pending: [String: PendingChange] = [:]
    private var pendingOrder: [String] = []

    private func enqueue(_ path: String, _ change: PendingChange) {
        let schedule = lock.withLock { () -> Bool in
            if pending.updateValue(change, forKey: path) == nil {
                pendingOrder.append(path)
                return pendingOrder.count == 1
            }
            return false
        }
        if schedule { queue.async { [self] in drain() } }
    }

    private func drain() {
        while true {
            let next = lock.withLock { () -> (String, PendingChange)? in
                guard !pendingOrder.isEmpty else { return nil }
                let path = pendingOrder.removeFirst()
                guard let change = pending.removeValue(forKey: path) else { return nil }
                return (path, change)
            }
            guard let (path, change) = next else { return }
            switch change {
            case .remove:
                _ = unlink(path)
            case .write(let data):
                do {
                    try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent,
                                                            withIntermediateDirectories: true)
                    try Self.atomicWrite(data, to: path)
                } catch {
                    logger.error("failed to persist local definition", metadata: ["path": "\(path)", "error": "\(error)"])
                }
            }
        }
    }

    static func atomicWrite(_ data: Data, to path: String) throws {
        let temp = path + ".tmp"
        let fd = open(temp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw PersistError("open \(temp): \(String(cString: strerror(errno)))") }
        let ok = data.withUnsafeBytes { raw -> Bool in
            var offset = 0
            while offset < raw.count {
                let n = Glibc.write(fd, raw.baseAddress! + offset, raw.count - offset)
                if n < 0 { if errno == EINTR { continue }; return false }
                offset += n
            }
            return fsync(fd) == 0
        }
        close(fd)
        guard ok else { unlink(temp); throw PersistError("write \(temp): \(String(cString: strerror(errno)))") }
        guard rename(temp, path) == 0 else { throw PersistError("rename \(temp): \(String(cString: strerror(errno)))") }
    }

    struct PersistError: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }

    /// Everything persisted: services, then checks with their saved status. Unreadable files
    /// are skipped with a warning rather than stopping the agent.
    func load() -> (services: [(ServiceDefinition, [CheckDefinition])], checks: [(CheckDefinition, CheckStatus?, String?)]) {
        var services: [(ServiceDefinition, [CheckDefinition])] = []
        var checks: [(CheckDefinition, CheckStatus?, String?)] = []
        for (path, object) in Self.readObjects(in: servicesDir, logger: logger) {
            guard let service = object["Service"] as? [String: Any] else { continue }
            do { services.append(try LocalDefinitions.service(from: service)) } catch {
                logger.warning("skipping persisted service", metadata: ["path": "\(path)", "error": "\(error)"])
            }
        }
        for (path, object) in Self.readObjects(in: checksDir, logger: logger) {
            guard let check = object["Check"] as? [String: Any] else { continue }
            if let id = check["CheckID"] as? String, id == LocalState.nodeMaintenanceCheckID || id.hasPrefix("_service_maintenance:") {
                // Maintenance checks have no TTL to validate: restored as they were.
                var definition = CheckDefinition(id: id, name: check["Name"] as? String ?? "", kind: .ttl(milliseconds: 0))
                definition.notes = check["Notes"] as? String ?? ""
                definition.serviceID = check["ServiceID"] as? String ?? ""
                checks.append((definition, .critical, ""))
                continue
            }
            do {
                let definition = try LocalDefinitions.check(from: check, requireName: false)
                checks.append((definition, (check["Status"] as? String).flatMap(CheckStatus.init(rawValue:)), check["Output"] as? String))
            } catch {
                logger.warning("skipping persisted check", metadata: ["path": "\(path)", "error": "\(error)"])
            }
        }
        return (services, checks)
    }

    private static func readObjects(in dir: String, logger: Logger) -> [(String, [String: Any])] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: dir) else { return [] }
        var out: [(String, [String: Any])] = []
        for name in names.sorted() where name.hasSuffix(".json") {
            let path = dir + "/" + name
            guard let data = FileManager.default.contents(atPath: path),
                  let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
                logger.warning("skipping unreadable persisted definition", metadata: ["path": "\(path)"])
                continue
            }
            out.append((path, object))
        }
        return out
    }
}
