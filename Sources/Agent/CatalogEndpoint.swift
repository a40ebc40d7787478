// /v1/catalog/* and /v1/health/*: Consul's catalog and health APIs on a server. Writes become
// catalog commands in the replicated log and answer once applied; reads go to the state
// store and block (?index) on the catalog table or the one service they read.
import Foundation
import HTTP
import Replication
import StateStore

extension HTTPAPI {
    func handleCatalog(_ responder: HTTPResponder) {
        let path = responder.request.path
        switch path {
        case "/v1/catalog/register":
            guard allow(responder, ["PUT"]) else { return }
            catalogRegister(responder)
        case "/v1/catalog/deregister":
            guard allow(responder, ["PUT"]) else { return }
            catalogDeregister(responder)
        case "/v1/catalog/datacenters":
            guard allow(responder, ["GET"]) else { return }
            // One datacenter until WAN federation: Consul lists the known ones by distance.
            responder.respond(.json(status: 200, jsonBytes([config.datacenter])))
        case "/v1/catalog/nodes":
            guard allow(responder, ["GET"]) else { return }
            catalogNodes(responder)
        case "/v1/catalog/services":
            guard allow(responder, ["GET"]) else { return }
            catalogServices(responder)
        default:
            if let name = suffix(path, "/v1/catalog/service/") {
                guard allow(responder, ["GET"]), present(responder, name, "service name") else { return }
                catalogService(responder, name)
            } else if let node = suffix(path, "/v1/catalog/node/") {
                guard allow(responder, ["GET"]), present(responder, node, "node name") else { return }
                catalogNode(responder, node, asList: false)
            } else if let node = suffix(path, "/v1/catalog/node-services/") {
                guard allow(responder, ["GET"]), present(responder, node, "node name") else { return }
                catalogNode(responder, node, asList: true)
            } else {
                responder.respond(.text(status: 404, "404 page not found"))
            }
        }
    }

    func handleHealth(_ responder: HTTPResponder) {
        guard allow(responder, ["GET"]) else { return }
        let path = responder.request.path
        if let node = suffix(path, "/v1/health/node/") {
            guard present(responder, node, "node name") else { return }
            healthRead(responder, scope: .catalogTables(.checks)) { store in
                let (index, checks) = try store.nodeChecks(node)
                return (index, Self.render { $0.array(checks) { out, check in CatalogJSON.check(check, &out) } })
            }
        } else if let service = suffix(path, "/v1/health/checks/") {
            guard present(responder, service, "service name"), let filter = nodeMetaFilter(responder) else { return }
            let filtered = responder.request.query.has("node-meta")
            healthRead(responder, scope: .catalogTables(.checks)) { store in
                let (index, checks) = try store.serviceChecks(service, nodeFilter: filtered ? filter : nil)
                return (index, Self.render { $0.array(checks) { out, check in CatalogJSON.check(check, &out) } })
            }
        } else if let state = suffix(path, "/v1/health/state/") {
            guard state == "any" || [CatalogCheckStatus.passing, CatalogCheckStatus.warning, CatalogCheckStatus.critical].contains(state) else {
                responder.respond(.text(status: 400, "Invalid check state"))
                return
            }
            guard let filter = nodeMetaFilter(responder) else { return }
            let filtered = responder.request.query.has("node-meta")
            healthRead(responder, scope: .catalogTables(.checks)) { store in
                let (index, checks) = try store.checks(inState: state, nodeFilter: filtered ? filter : nil)
                return (index, Self.render { $0.array(checks) { out, check in CatalogJSON.check(check, &out) } })
            }
        } else if let service = suffix(path, "/v1/health/service/") {
            guard present(responder, service, "service name") else { return }
            healthService(responder, service)
        } else {
            responder.respond(.text(status: 404, "404 page not found"))
        }
    }

    // MARK: Writes

    private func catalogRegister(_ responder: HTTPResponder) {
        guard inLocalDatacenter(responder) else { return }
        let registration: CatalogRegistration
        do throws(CatalogRequestError) {
            registration = try CatalogJSON.registration(JSONFields.parse(responder.request.body),
                                                        defaultDatacenter: config.datacenter)
        } catch {
            responder.respond(.text(status: 400, error.message))
            return
        }
        commitCatalog(responder, [.register(registration)])
    }

    private func catalogDeregister(_ responder: HTTPResponder) {
        guard inLocalDatacenter(responder) else { return }
        let commands: [CatalogCommand]
        do throws(CatalogRequestError) {
            commands = try CatalogJSON.deregistration(JSONFields.parse(responder.request.body))
        } catch {
            responder.respond(.text(status: 400, error.message))
            return
        }
        commitCatalog(responder, commands)
    }

    /// Commits the commands one after the other (a deregistration naming both a service and
    /// a check is two); answers `true` after the last, or the first failure.
    private func commitCatalog(_ responder: HTTPResponder, _ commands: [CatalogCommand]) {
        guard let log else { respondCommitError(responder, .notLeader(leaderAddress: nil)); return }
        guard let command = commands.first else {
            responder.respond(.json(status: 200, Array("true".utf8)))
            return
        }
        let encoded = command.encoded()
        holdForLeader({ done in log.append(encoded, completion: done) }) { [weak self] outcome in
            switch outcome {
            case .success(let commit):
                switch commit.result {
                case .success:
                    self?.commitCatalog(responder, Array(commands.dropFirst()))
                case .failed(let message):
                    responder.respond(.text(status: 400, message))
                }
            case .failure(let error):
                self?.respondCommitError(responder, error)
            }
        }
    }

    // MARK: Reads

    private func catalogNodes(_ responder: HTTPResponder) {
        guard let filter = nodeMetaFilter(responder) else { return }
        let datacenter = config.datacenter
        catalogRead(responder, scope: .catalogTables(.nodes)) { store in
            let (index, nodes) = try store.catalogNodes()
            return (index, Self.render { $0.array(nodes.filter(filter)) { out, node in CatalogJSON.node(node, datacenter: datacenter, &out) } })
        }
    }

    private func catalogServices(_ responder: HTTPResponder) {
        guard let filter = nodeMetaFilter(responder) else { return }
        let filtered = responder.request.query.has("node-meta")
        catalogRead(responder, scope: .catalogTables(.services)) { store in
            let (index, services) = try store.catalogServices(nodeFilter: filtered ? filter : nil)
            return (index, Self.render { out in
                out.openObject()
                for (i, service) in services.enumerated() {
                    out.key(service.name, first: i == 0)
                    out.strings(service.tags)
                }
                out.closeObject()
            })
        }
    }

    private func catalogService(_ responder: HTTPResponder, _ name: String) {
        guard let filter = nodeMetaFilter(responder) else { return }
        let tags = responder.request.query.all("tag")
        let datacenter = config.datacenter
        catalogRead(responder, scope: .service(CatalogLimits.folded(name))) { store in
            let (index, instances) = try store.catalogServiceInstances(name)
            let kept = instances.filter { filter($0.node) && Self.hasTags($0.service, tags) }
            return (index, Self.render { $0.array(kept) { out, item in
                CatalogJSON.serviceNode(item.node, item.service, datacenter: datacenter, &out)
            } })
        }
    }

    /// /v1/catalog/node/<node> answers {"Node":…,"Services":{id:…}} (null for an unknown
    /// node); /v1/catalog/node-services/<node> answers {"Node":…,"Services":[…]}.
    private func catalogNode(_ responder: HTTPResponder, _ name: String, asList: Bool) {
        let datacenter = config.datacenter
        catalogRead(responder, scope: .catalogTables([.nodes, .services])) { store in
            let (index, node, services) = try store.catalogNode(name)
            guard let node else {
                return (index, Array((asList ? #"{"Node":null,"Services":[]}"# : "null").utf8))
            }
            return (index, Self.render { out in
                out.raw(#"{"Node":"#)
                CatalogJSON.node(node, datacenter: datacenter, &out)
                out.raw(#","Services":"#)
                if asList {
                    out.array(services) { out, service in CatalogJSON.service(service, datacenter: datacenter, &out) }
                } else {
                    out.openObject()
                    for (i, service) in services.enumerated() {
                        out.key(service.id, first: i == 0)
                        CatalogJSON.service(service, datacenter: datacenter, &out)
                    }
                    out.closeObject()
                }
                out.closeObject()
            })
        }
    }

    private func healthService(_ responder: HTTPResponder, _ name: String) {
        guard let filter = nodeMetaFilter(responder) else { return }
        let query = responder.request.query
        let tags = query.all("tag")
        // Consul treats a bare ?passing as true, and accepts Go's boolean spellings.
        var passingOnly = false
        if let value = query.first("passing") {
            switch value.lowercased() {
            case "", "1", "t", "true": passingOnly = true
            case "0", "f", "false": passingOnly = false
            default:
                responder.respond(.text(status: 400, "Invalid value for ?passing"))
                return
            }
        }
        let datacenter = config.datacenter
        healthRead(responder, scope: .service(CatalogLimits.folded(name))) { store in
            let (index, entries) = try store.healthService(name)
            let kept = entries.filter { entry in
                filter(entry.node) && Self.hasTags(entry.service, tags)
                    && (!passingOnly || entry.checks.allSatisfy { $0.status == CatalogCheckStatus.passing })
            }
            return (index, Self.render { $0.array(kept) { out, entry in
                CatalogJSON.healthEntry(entry, datacenter: datacenter, &out)
            } })
        }
    }

    // MARK: Helpers

    private func catalogRead(_ responder: HTTPResponder, scope: WatchScope,
                             _ read: @escaping (StateStore) throws -> (UInt64, [UInt8])) {
        guard let options = queryOptions(responder) else { return }
        guard let store = log?.reader else { respondCommitError(responder, .notLeader(leaderAddress: nil)); return }
        blockingRead(responder, options, scope: scope, replicatedState: true) {
            do {
                let (index, body) = try read(store)
                return (index, .json(status: 200, body))
            } catch {
                return (0, .text(status: 500, "\(error)"))
            }
        }
    }

    private func healthRead(_ responder: HTTPResponder, scope: WatchScope,
                            _ read: @escaping (StateStore) throws -> (UInt64, [UInt8])) {
        catalogRead(responder, scope: scope, read)
    }

    /// `?node-meta=key:value`, repeatable; a node must carry every pair. Answers 400 and
    /// returns nil on a malformed pair.
    private func nodeMetaFilter(_ responder: HTTPResponder) -> ((CatalogNode) -> Bool)? {
        var pairs: [(String, String)] = []
        for raw in responder.request.query.all("node-meta") {
            guard let colon = raw.firstIndex(of: ":") else {
                // Consul takes a pair without a colon as a key with an empty value.
                pairs.append((raw, ""))
                continue
            }
            pairs.append((String(raw[..<colon]), String(raw[raw.index(after: colon)...])))
        }
        return { node in pairs.allSatisfy { node.meta[$0.0] == $0.1 } }
    }

    /// Consul's tag filter: every requested tag present, compared case-insensitively.
    static func hasTags(_ service: CatalogService, _ tags: [String]) -> Bool {
        guard !tags.isEmpty else { return true }
        let present = Set(service.tags.map { $0.lowercased() })
        return tags.allSatisfy { present.contains($0.lowercased()) }
    }

    static func render(_ body: (inout JSONWriter) -> Void) -> [UInt8] {
        var writer = JSONWriter()
        body(&writer)
        return writer.bytes
    }

    private func suffix(_ path: String, _ prefix: String) -> String? {
        guard path.hasPrefix(prefix) else { return nil }
        return String(path.dropFirst(prefix.count))
    }

    /// Consul's 400s for a path missing its last segment ("Missing service name", …).
    private func present(_ responder: HTTPResponder, _ value: String, _ what: String) -> Bool {
        if !value.isEmpty { return true }
        responder.respond(.text(status: 400, "Missing \(what)"))
        return false
    }
}
