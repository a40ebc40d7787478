// /v1/agent/service/*, /v1/agent/services, /v1/agent/check/*, /v1/agent/checks and the
// maintenance endpoints: the agent's local services and checks, with Consul's shapes, status
// codes and error texts.
import Foundation
import HTTP

extension HTTPAPI {
    /// Answers the local-state paths; false when `path` is not one of them.
    func handleAgentLocal(_ responder: HTTPResponder) -> Bool {
        let path = responder.request.path
        guard let local = localState else { return false }
        switch path {
        case "/v1/agent/services":
            guard allow(responder, ["GET"]) else { return true }
            var out: [String: Any] = [:]
            for (id, service) in local.services { out[id] = LocalDefinitions.agentService(service, datacenter: config.datacenter) }
            responder.respond(.json(status: 200, jsonBytes(out)))
        case "/v1/agent/checks":
            guard allow(responder, ["GET"]) else { return true }
            var out: [String: Any] = [:]
            for (id, state) in local.checks { out[id] = local.healthCheckJSON(state) }
            responder.respond(.json(status: 200, jsonBytes(out)))
        case "/v1/agent/service/register":
            guard allow(responder, ["PUT"]) else { return true }
            registerService(responder, local)
        case "/v1/agent/check/register":
            guard allow(responder, ["PUT"]) else { return true }
            registerCheck(responder, local)
        case "/v1/agent/maintenance":
            guard allow(responder, ["PUT"]) else { return true }
            guard let (enable, reason) = maintenanceParameters(responder) else { return true }
            if enable { local.enableNodeMaintenance(reason: reason) } else { local.removeCheck(LocalState.nodeMaintenanceCheckID) }
            responder.respond(HTTPResponse(status: 200))
        default:
            if let id = suffix(path, "/v1/agent/service/deregister/") {
                guard allow(responder, ["PUT"]) else { return true }
                guard local.removeService(id) else { unknownService(responder, id); return true }
                responder.respond(HTTPResponse(status: 200))
            } else if let id = suffix(path, "/v1/agent/service/maintenance/") {
                guard allow(responder, ["PUT"]) else { return true }
                guard let (enable, reason) = maintenanceParameters(responder) else { return true }
                guard local.services[id] != nil else { unknownService(responder, id); return true }
                if enable { local.enableServiceMaintenance(id, reason: reason) } else { local.removeCheck(LocalState.serviceMaintenanceCheckID(id)) }
                responder.respond(HTTPResponse(status: 200))
            } else if let id = suffix(path, "/v1/agent/service/") {
                guard allow(responder, ["GET"]) else { return true }
                guard let service = local.services[id] else {
                    responder.respond(.text(status: 404, "unknown service ID: \(id)"))
                    return true
                }
                var body = LocalDefinitions.agentService(service, datacenter: config.datacenter)
                body["ContentHash"] = contentHash(body)
                responder.respond(.json(status: 200, jsonBytes(body)))
            } else if let id = suffix(path, "/v1/agent/check/deregister/") {
                guard allow(responder, ["PUT"]) else { return true }
                guard local.removeCheck(id) else { unknownCheck(responder, id); return true }
                responder.respond(HTTPResponse(status: 200))
            } else if let (status, id) = ttlShortcut(path) {
                guard allow(responder, ["PUT"]) else { return true }
                updateTTL(responder, local, id: id, status: status, output: responder.request.query.first("note") ?? "")
            } else if let id = suffix(path, "/v1/agent/check/update/") {
                guard allow(responder, ["PUT"]) else { return true }
                guard let object = decodeObject(responder) else { return true }
                let statusText = object["Status"] as? String ?? object["status"] as? String ?? ""
                guard let status = CheckStatus(rawValue: statusText) else {
                    responder.respond(.text(status: 400, "Invalid check status: '\(statusText)'"))
                    return true
                }
                updateTTL(responder, local, id: id, status: status, output: object["Output"] as? String ?? object["output"] as? String ?? "")
            } else {
                return false
            }
        }
        return true
    }

    private func suffix(_ path: String, _ prefix: String) -> String? {
        guard path.hasPrefix(prefix), path.count > prefix.count else { return nil }
        return String(path.dropFirst(prefix.count))
    }

    private func ttlShortcut(_ path: String) -> (CheckStatus, String)? {
        for (verb, status) in [("pass", CheckStatus.passing), ("warn", .warning), ("fail", .critical)] {
            if let id = suffix(path, "/v1/agent/check/\(verb)/") { return (status, id) }
        }
        return nil
    }

    private func unknownService(_ responder: HTTPResponder, _ id: String) {
        responder.respond(.text(status: 404, "Unknown service ID \"\(id)\". Ensure that the service ID is passed, not the service name."))
    }

    private func unknownCheck(_ responder: HTTPResponder, _ id: String) {
        responder.respond(.text(status: 404, "Unknown check ID \"\(id)\". Ensure that the check ID is passed, not the check name."))
    }

    /// The body as a JSON object, or a 400 naming what is wrong with it.
    private func decodeObject(_ responder: HTTPResponder) -> [String: Any]? {
        let body = responder.request.body
        guard !body.isEmpty else {
            responder.respond(.text(status: 400, "Request decode failed: EOF"))
            return nil
        }
        let object: Any
        do { object = try JSONSerialization.jsonObject(with: Data(body)) } catch {
            responder.respond(.text(status: 400, "Request decode failed: invalid JSON: \(error.localizedDescription)"))
            return nil
        }
        guard let dictionary = object as? [String: Any] else {
            responder.respond(.text(status: 400, "Request decode failed: body must be a JSON object"))
            return nil
        }
        return dictionary
    }

    private func registerService(_ responder: HTTPResponder, _ local: LocalState) {
        guard let object = decodeObject(responder) else { return }
        do {
            let (service, checks) = try LocalDefinitions.service(from: object)
            try local.addService(service, checks: checks, source: .api,
                                 replaceExistingChecks: responder.request.query.first("replace-existing-checks").map { $0 != "false" } ?? false)
            responder.respond(HTTPResponse(status: 200))
        } catch {
            responder.respond(.text(status: 400, "\(error)"))
        }
    }

    private func registerCheck(_ responder: HTTPResponder, _ local: LocalState) {
        guard let object = decodeObject(responder) else { return }
        do {
            var check: CheckDefinition
            do { check = try LocalDefinitions.check(from: object, requireName: true) } catch {
                let prefixed = "\(error)".hasPrefix("Request decode failed") || "\(error)" == "Missing check name" || "\(error)".hasPrefix("Bad check status")
                throw DefinitionError(prefixed ? "\(error)" : "Invalid check: \(error)")
            }
            if check.id.isEmpty { check.id = check.name }
            try local.addCheck(check, source: .api)
            responder.respond(HTTPResponse(status: 200))
        } catch {
            responder.respond(.text(status: 400, "\(error)"))
        }
    }

    private func updateTTL(_ responder: HTTPResponder, _ local: LocalState, id: String, status: CheckStatus, output: String) {
        do {
            try local.updateTTL(id, status: status, output: output)
            responder.respond(HTTPResponse(status: 200))
        } catch LocalState.TTLUpdateError.unknown {
            responder.respond(.text(status: 404, "Unknown check ID \"\(id)\". Ensure that the check ID is passed, not the check name."))
        } catch {
            responder.respond(.text(status: 400, "CheckID \"\(id)\" does not have associated TTL"))
        }
    }

    /// `?enable=true|false` (required) and `?reason=`.
    private func maintenanceParameters(_ responder: HTTPResponder) -> (Bool, String)? {
        let query = responder.request.query
        guard let text = query.first("enable"), !text.isEmpty else {
            responder.respond(.text(status: 400, "Missing value for enable"))
            return nil
        }
        guard let enable = Bool(text.lowercased()) ?? (text == "1" ? true : text == "0" ? false : nil) else {
            responder.respond(.text(status: 400, "Invalid value for enable: \"\(text)\""))
            return nil
        }
        return (enable, query.first("reason") ?? "")
    }

    /// Consul's ContentHash lets clients notice a changed definition; any stable hash of the
    /// rendered service serves (FNV-1a of the sorted JSON, 16 hex digits).
    private func contentHash(_ object: [String: Any]) -> String {
        var hash: UInt64 = 0xcbf29ce484222325
        for byte in jsonBytes(object) { hash = (hash ^ UInt64(byte)) &* 0x100000001b3 }
        return String(hash, radix: 16).leftPadded(to: 16)
    }
}

private extension String {
    func leftPadded(to width: Int) -> String { count >= width ? self : String(repeating: "0", count: width - count) + self }
}
