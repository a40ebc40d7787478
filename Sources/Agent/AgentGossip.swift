// The agent's gossip: the LAN pool every agent runs and the WAN pool servers run, their
// tags as Consul sets them, -join / -retry-join, member event logs, the encryption keyring,
// and the live-server set (members tagged role=consul) that Raft will bootstrap from.
import EventLoop
import Foundation
import Glibc
import Gossip
import GossipCore
import Logging

/// A server seen alive in the LAN pool (Consul's metadata.Server, the parts we carry).
public struct KnownServer: Sendable, Equatable {
    public var name: String
    public var id: String
    public var datacenter: String
    /// Gossip address "host:port".
    public var gossipAddress: String
    /// Server RPC port from the `port` tag.
    public var serverPort: Int
    /// `expect` tag: the server's -bootstrap-expect (0 when not set).
    public var bootstrapExpect: Int
    public var bootstrap: Bool
}

/// Loop-confined.
final class AgentGossip {
    let loop: Loop
    let config: AgentConfig
    private(set) var lan: GossipPool?
    private(set) var wan: GossipPool?
    private let lanLogger: Logger
    private let wanLogger: Logger
    let agentLogger = Logger(label: "agent")
    private var retryTimer: LoopTimer?
    private var knownServers: [String: KnownServer] = [:]
    private(set) var leaveStarted = false
    /// Runs on the loop thread whenever the live-server set changes.
    var onServersChanged: (([KnownServer]) -> Void)?
    /// User events received (and passing their filters), oldest first; /v1/event/list.
    private(set) var userEvents = RecentUserEvents()
    /// Runs on the loop thread after a user event was recorded (wakes blocking lists).
    var onUserEvent: (() -> Void)?
    /// This agent's services (name, tags), for user events' service and tag filters.
    var localServices: () -> [(name: String, tags: [String])] = { [] }
    private let handlers: [EventHandlerSpec]
    private let handlerRunner: EventHandlerRunner?
    private var ownTags: [String: String] = [:]
    let dataDir: String
    static let snapshotIntervalMs: UInt64 = 1_000
    var snapshotWritePending = false
    /// Keyring queries this agent asked, collecting answers until their deadline.
    var keyringQueries: [QueryID: KeyringCollection] = [:]

    /// A graceful leave of a server in the LAN pool (its node ID); the Raft leader removes it.
    var onServerLeft: ((String) -> Void)?

    /// `serverPort`: the bound Raft port, advertised in the `port` tag (servers only).
    init(loop: Loop, config: AgentConfig, nodeID: String, dataDir: String, serverPort: Int = 0) throws {
        self.loop = loop
        self.config = config
        self.dataDir = dataDir
        let role = config.server ? "server" : "client"
        lanLogger = Logger(label: "agent.\(role).serf.lan")
        wanLogger = Logger(label: "agent.\(role).serf.wan")
        let keyring = try Self.loadKeyring(config: config, dataDir: dataDir, logger: agentLogger)
        let bindHost = config.bindAddr
        let advertise = Self.advertiseHost(config)
        var tags: [String: String] = [
            "role": config.server ? "consul" : "node",
            "dc": config.datacenter,
            "id": nodeID,
            "build": "\(ConclaveVersion.version):\(ConclaveVersion.revision)",
            "vsn": "2", "vsn_min": "2", "vsn_max": "3",
            "segment": "",
        ]
        if config.server {
            tags["port"] = String(serverPort)
            if config.bootstrap { tags["bootstrap"] = "1" }
            if config.bootstrapExpect > 0 { tags["expect"] = String(config.bootstrapExpect) }
        }
        handlers = try config.eventHandlers.map { spec throws(AgentConfigError) in try EventHandlerSpec.parse(spec) }
        handlerRunner = handlers.isEmpty ? nil : EventHandlerRunner()
        ownTags = tags
        let reconnectLAN = config.reconnectTimeoutMs, reconnectWAN = config.reconnectTimeoutWANMs
        if config.ports.serfLAN >= 0 {
            let name = config.nodeName
            do {
                let pool = try GossipPool(loop: loop, label: "lan", bindHost: bindHost, advertiseHost: advertise, port: config.ports.serfLAN,
                                          tags: tags, keyring: keyring, logger: lanLogger) { address in
                    var gossipConfig = GossipConfig.lan(name: name, address: address, randomSeed: UInt64.random(in: 0...UInt64.max))
                    gossipConfig.reconnectTimeoutMs = reconnectLAN
                    return gossipConfig
                }
                lan = pool
                pool.onEvent = { [weak self] event in self?.memberEvent(event, pool: "lan") }
                lanLogger.info("serf: Gossip (LAN) started", metadata: ["address": "\(pool.advertiseAddress)", "encrypt": "\(keyring != nil)"])
            } catch {
                throw AgentError.startup("\(error)")
            }
        }
        if config.server && config.ports.serfWAN >= 0 {
            let name = "\(config.nodeName).\(config.datacenter)"
            do {
                let pool = try GossipPool(loop: loop, label: "wan", bindHost: bindHost, advertiseHost: advertise, port: config.ports.serfWAN,
                                          tags: tags, keyring: keyring, logger: wanLogger) { address in
                    var gossipConfig = GossipConfig.wan(name: name, address: address, randomSeed: UInt64.random(in: 0...UInt64.max))
                    gossipConfig.reconnectTimeoutMs = reconnectWAN
                    return gossipConfig
                }
                wan = pool
                pool.onEvent = { [weak self] event in self?.memberEvent(event, pool: "wan") }
                wanLogger.info("serf: Gossip (WAN) started", metadata: ["address": "\(pool.advertiseAddress)"])
            } catch {
                lan?.close()
                throw AgentError.startup("\(error)")
            }
        }
    }

    /// The LAN pool's bound port (0 when disabled).
    var lanPort: Int { lan?.port ?? 0 }
    var wanPort: Int { wan?.port ?? 0 }

    /// Servers alive in the LAN pool, by name (ourselves included when we are one).
    var liveServers: [KnownServer] { knownServers.values.sorted { $0.name < $1.name } }

    // MARK: Joining

    /// -retry-join until one succeeds (every `retryIntervalMs`). (-join runs from
    /// `Agent.start`, which fails when it does, as in Consul.)
    func startRetryJoin() {
        rejoinFromSnapshot()
        if !config.retryJoin.isEmpty { retryJoin() }
    }

    private func retryJoin() {
        agentLogger.info("Joining cluster...", metadata: ["cluster": "LAN"])
        join(config.retryJoin, wan: false) { [weak self] joined, error in
            guard let self else { return }
            if joined > 0 {
                self.agentLogger.info("Join cluster completed. Synced with \(joined) initial agents", metadata: ["cluster": "LAN", "num_agents": "\(joined)"])
                self.retryTimer?.close()
                self.retryTimer = nil
                return
            }
            let interval = GoDurationText.format(milliseconds: self.config.retryIntervalMs)
            self.agentLogger.warning("Join cluster failed, will retry", metadata: ["cluster": "LAN", "retry_interval": "\(interval)", "error": "\(error ?? "no agents answered")"])
            if self.retryTimer == nil { self.retryTimer = LoopTimer(loop: self.loop) }
            self.retryTimer?.start(afterMilliseconds: self.config.retryIntervalMs) { [weak self] in self?.retryJoin() }
        }
    }

    /// Joins the LAN (or WAN) pool through `addresses` (a missing port means the pool's
    /// default). `completion(number that answered, error text)`.
    func join(_ addresses: [String], wan: Bool, completion: @escaping (Int, String?) -> Void) {
        guard let pool = wan ? self.wan : lan else {
            completion(0, wan ? "WAN gossip is not running on this agent (servers only)" : "LAN gossip is disabled (-serf-lan-port -1)")
            return
        }
        let defaultPort = wan ? 8302 : 8301
        let targets = addresses.map { Self.withPort($0, defaultPort) }
        let logger = wan ? wanLogger : lanLogger
        agentLogger.info("(\(wan ? "WAN" : "LAN")) joining", metadata: ["\(wan ? "wan" : "lan")_addresses": "\(targets)"])
        pool.join(targets) { [weak self] answered in
            if answered > 0 {
                self?.agentLogger.info("(\(wan ? "WAN" : "LAN")) joined", metadata: ["number_of_nodes": "\(answered)"])
                completion(answered, nil)
            } else {
                let error = "failed to join \(targets.joined(separator: ", ")): no agent answered"
                logger.warning("(\(wan ? "WAN" : "LAN")) couldn't join", metadata: ["number_of_nodes": "0", "error": "\(error)"])
                completion(0, error)
            }
        }
    }

    static func withPort(_ address: String, _ port: Int) -> String {
        if parseHostPort(address) != nil { return address }
        return SocketAddress(host: address, port: port).description
    }

    // MARK: Leaving

    /// Leaves both pools gracefully (bounded), then calls `completion`.
    func leave(completion: @escaping () -> Void) {
        retryTimer?.close()
        retryTimer = nil
        // The HTTP leave waits for this, then stops the agent, which asks again: once is enough.
        if leaveStarted { completion(); return }
        leaveStarted = true
        writeSnapshot(left: true)
        var pending = 0
        let pools = [lan, wan].compactMap { $0 }
        if pools.isEmpty { completion(); return }
        pending = pools.count
        for pool in pools {
            (pool.label == "lan" ? lanLogger : wanLogger).info("serf: Gossip leave: broadcasting and waiting for propagation")
            // memberlist waits up to its broadcast timeout (5 s) for the leave to go out.
            pool.leave(timeoutMs: 3_000) {
                pending -= 1
                if pending == 0 { completion() }
            }
        }
    }

    func close() {
        retryTimer?.close()
        retryTimer = nil
        lan?.close()
        wan?.close()
    }

    // MARK: Events

    private func memberEvent(_ event: MembershipEvent, pool: String) {
        let logger = pool == "lan" ? lanLogger : wanLogger
        switch event {
        case .join(let m):
            logger.info("serf: EventMemberJoin: \(m.name) \(Self.host(of: m.address))")
        case .leave(let m):
            logger.info("serf: EventMemberLeave: \(m.name) \(Self.host(of: m.address))")
            if pool == "lan", m.tags["role"] == "consul", m.tags["dc"] == config.datacenter, let id = m.tags["id"] {
                onServerLeft?(id)
            }
        case .failed(let m):
            logger.info("serf: EventMemberFailed: \(m.name) \(Self.host(of: m.address))")
        case .update(let m):
            logger.info("serf: EventMemberUpdate: \(m.name)")
        case .reap(let m):
            logger.info("serf: EventMemberReap: \(m.name)")
        case let .conflict(existing, claimedBy):
            logger.error("serf: Name conflict: both addresses claim this node name; the newcomer is refused (node names must be unique)",
                         metadata: ["node": "\(existing.name)", "holder": "\(existing.address)", "claimant": "\(claimedBy)"])
            return
        case let .user(name, payload, ltime, _):
            guard pool == "lan" else { return }
            guard let event = UserEvent(name: name, envelope: payload, ltime: ltime) else {
                logger.warning("serf: dropping a malformed user event", metadata: ["name": "\(name)"])
                return
            }
            guard event.matches(nodeName: config.nodeName, services: localServices()) else { return }
            logger.info("agent: Received user event", metadata: ["name": "\(name)", "id": "\(event.id)", "ltime": "\(ltime)"])
            userEvents.append(event)
            onUserEvent?()
            runHandlers(event: "user", name: name, stdin: event.payload,
                        extra: ["SERF_USER_EVENT": name, "SERF_USER_LTIME": String(ltime)])
            return
        case let .query(id, _, name, payload, ltime):
            guard pool == "lan" else { return }
            if KeyringOperation.isInternal(queryName: name) {
                answerKeyringQuery(id, name: name, payload: payload)
                return
            }
            runHandlers(event: "query", name: name, stdin: payload,
                        extra: ["SERF_QUERY_NAME": name, "SERF_QUERY_LTIME": String(ltime)], query: id)
            return
        case let .queryResponse(id, from, payload):
            guard let collection = keyringQueries[id] else { return }
            collection.answers[from] = KeyringAnswer(decoding: payload)
            // Every member alive when we asked has answered: no need to wait for the deadline.
            if collection.answers.count >= collection.numNodes {
                keyringQueries.removeValue(forKey: id)
                collection.completion(collection.result())
            }
            return
        case let .queryDone(id):
            if let collection = keyringQueries.removeValue(forKey: id) { collection.completion(collection.result()) }
            return
        case .queryAck:
            return
        }
        if pool == "lan" {
            runMemberHandlers(event)
            snapshotMembersSoon()
        }
        if pool == "lan" { refreshServers() }
    }

    // MARK: User events and handlers

    /// Gossips a Consul user event through the LAN pool.
    func fire(_ event: UserEvent) throws {
        guard let lan else { throw AgentError.startup("gossip is disabled (-serf-lan-port -1): cannot fire events") }
        try lan.fireUserEvent(name: event.name, payload: event.envelope())
    }

    private func runMemberHandlers(_ event: MembershipEvent) {
        let kind: String
        let member: Member
        switch event {
        case .join(let m): kind = "member-join"; member = m
        case .leave(let m): kind = "member-leave"; member = m
        case .failed(let m): kind = "member-failed"; member = m
        case .update(let m): kind = "member-update"; member = m
        case .reap(let m): kind = "member-reap"; member = m
        default: return
        }
        // Serf's stdin for member events: name, address, role, tags (k=v,…), tab-separated.
        let tags = member.tags.keys.sorted().map { "\($0)=\(member.tags[$0]!)" }.joined(separator: ",")
        let line = "\(member.name)\t\(Self.host(of: member.address))\t\(member.tags["role"] ?? "")\t\(tags)\n"
        runHandlers(event: kind, name: nil, stdin: Array(line.utf8), extra: [:])
    }

    private func runHandlers(event: String, name: String?, stdin: [UInt8], extra: [String: String], query: QueryID? = nil) {
        guard let handlerRunner else { return }
        var environment = extra
        environment["SERF_EVENT"] = event
        environment["SERF_SELF_NAME"] = config.nodeName
        environment["SERF_SELF_ROLE"] = ownTags["role"] ?? ""
        for (key, value) in ownTags { environment["SERF_TAG_" + key.uppercased()] = value }
        let bound = LoopBound(self, loop: loop)
        for spec in handlers where spec.matches(event: event, name: name) {
            let invocation = HandlerInvocation(script: spec.script, environment: environment, stdin: stdin,
                                               timeoutSeconds: query == nil ? 60 : 5)
            guard let query else {
                handlerRunner.run(invocation)
                continue
            }
            // A query's answer is what the script printed (Serf: the first handler's output).
            handlerRunner.run(invocation) { output in
                guard let output, !output.isEmpty else { return }
                bound.loop.execute {
                    do { try bound.value.lan?.respond(to: query, payload: output) } catch {
                        bound.value.lanLogger.debug("serf: query answer not sent", metadata: ["error": "\(error)"])
                    }
                }
            }
        }
    }

    private func refreshServers() {
        guard let lan else { return }
        var servers: [String: KnownServer] = [:]
        for status in lan.members where status.serfStatus == 1 {
            let tags = status.member.tags
            guard tags["role"] == "consul", tags["dc"] == config.datacenter else { continue }
            servers[status.member.name] = KnownServer(
                name: status.member.name, id: tags["id"] ?? "", datacenter: tags["dc"] ?? "",
                gossipAddress: status.member.address, serverPort: Int(tags["port"] ?? "") ?? 0,
                bootstrapExpect: Int(tags["expect"] ?? "") ?? 0, bootstrap: tags["bootstrap"] == "1")
        }
        if servers != knownServers {
            knownServers = servers
            onServersChanged?(liveServers)
        }
    }

    /// Called once the pools exist, so our own server entry is in the set from the start.
    func refreshServersNow() { refreshServers() }

    static func host(of address: String) -> String { parseHostPort(address)?.host ?? address }

    // MARK: Addresses and keys

    /// The advertise address: explicit, else the bind address, else (all interfaces) the
    /// first private IPv4 address, else loopback.
    static func advertiseHost(_ config: AgentConfig) -> String {
        if let explicit = config.advertiseAddr, !explicit.isEmpty { return explicit }
        if config.bindAddr != "0.0.0.0" && config.bindAddr != "::" { return config.bindAddr }
        return privateIPv4() ?? "127.0.0.1"
    }

    private static func privateIPv4() -> String? {
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0, let first = list else { return nil }
        defer { freeifaddrs(list) }
        var cursor: UnsafeMutablePointer<ifaddrs>? = first
        while let entry = cursor {
            defer { cursor = entry.pointee.ifa_next }
            guard let address = entry.pointee.ifa_addr, address.pointee.sa_family == UInt16(AF_INET) else { continue }
            var text = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
            let ok = address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { sin -> Bool in
                var a = sin.pointee.sin_addr
                return inet_ntop(AF_INET, &a, &text, socklen_t(text.count)) != nil
            }
            guard ok else { continue }
            let ip = String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if ip.hasPrefix("10.") || ip.hasPrefix("192.168.") || (ip.hasPrefix("172.") && (16...31).contains(Int(ip.split(separator: ".")[1]) ?? 0)) {
                return ip
            }
        }
        return nil
    }

    /// Consul: `<data-dir>/serf/local.keyring` (a JSON list of base64 keys) wins once it
    /// exists; otherwise `encrypt` creates it.
    static func loadKeyring(config: AgentConfig, dataDir: String, logger: Logger) throws -> GossipKeyring? {
        let dir = dataDir + "/serf"
        let path = dir + "/local.keyring"
        if FileManager.default.fileExists(atPath: path) {
            guard let data = FileManager.default.contents(atPath: path),
                  let keys = (try? JSONSerialization.jsonObject(with: data)) as? [String] else {
                throw AgentError.startup("\(path) is not a JSON list of base64 keys")
            }
            if config.encryptKey != nil {
                logger.warning("LAN keyring exists but -encrypt given, using keyring")
            }
            do { return try GossipKeyring(base64Keys: keys) } catch {
                throw AgentError.startup("\(path): \(error)")
            }
        }
        guard let key = config.encryptKey, !key.isEmpty else { return nil }
        let keyring: GossipKeyring
        do { keyring = try GossipKeyring(base64Keys: [key]) } catch {
            throw AgentError.startup("Failed to configure keyring: \(error)")
        }
        do {
            try saveKeyring(keyring, dataDir: dataDir)
        } catch {
            throw AgentError.startup("cannot write \(path): \(error.localizedDescription)")
        }
        return keyring
    }
}

enum GoDurationText {
    /// 30000 → "30s", 1500 → "1.5s", 90000 → "1m30s" (Go's Duration.String, ms precision).
    static func format(milliseconds ms: UInt64) -> String {
        if ms < 1_000 { return "\(ms)ms" }
        let minutes = ms / 60_000
        let rest = ms % 60_000
        let seconds = rest / 1_000, millis = rest % 1_000
        var s = millis == 0 ? "\(seconds)s" : "\(seconds).\(String(String(millis + 1_000).dropFirst()).replacingOccurrences(of: "0+$", with: "", options: .regularExpression))s"
        if minutes > 0 { s = "\(minutes)m" + s }
        return s
    }
}
