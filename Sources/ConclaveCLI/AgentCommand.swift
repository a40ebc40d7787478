// `conclave agent`: Consul's agent flags, a config built from file(s) then flags, and a run
// until SIGINT/SIGTERM or `/v1/agent/leave`.
import Agent
import Logging

enum AgentCommand {
    static func flags() -> FlagSet {
        let flags = FlagSet(command: "agent")
        flags.bool("dev", "Start the agent in development mode: a one-node server on 127.0.0.1 with its data in a temporary folder.")
        flags.bool("server", "Switches the agent to server mode.")
        flags.bool("bootstrap", "Sets server to bootstrap mode.")
        flags.string("data-dir", "Path to a data directory to store agent state.", placeholder: "path")
        flags.string("node", "Name of this node. Must be unique in the cluster.")
        flags.string("datacenter", "Datacenter of the agent.")
        flags.string("bind", "Sets the bind address for cluster communication.")
        flags.string("client", "Sets the address to bind for client access (HTTP, DNS).")
        flags.int("http-port", "Sets the HTTP API port to listen on (-1 disables it).")
        flags.int("dns-port", "DNS port to use (-1 disables it).")
        flags.int("server-port", "Sets the server port to listen on (-1 disables it).")
        flags.int("serf-lan-port", "Sets the Serf LAN port to listen on.")
        flags.int("serf-wan-port", "Sets the Serf WAN port to listen on.")
        flags.string("log-level", "Log level of the agent: trace, debug, info, warn, error.")
        flags.string("advertise", "Sets the advertise address to use for cluster communication.")
        flags.stringList("join", "Address of an agent to join at start time. Can be specified multiple times.")
        flags.stringList("retry-join", "Address of an agent to join at start time with retries enabled. Can be specified multiple times.")
        flags.string("retry-interval", "Time to wait between join attempts (default 30s).")
        flags.stringList("event-handler", "Script to run on events, as Serf: [type[,type]=]script with types member-join, member-leave, member-failed, member-update, member-reap, user[:name], query[:name]. Can be specified multiple times.")
        flags.bool("rejoin", "Ignores a previous leave and attempts to rejoin the cluster.")
        flags.string("encrypt", "Provides the gossip encryption key.")
        flags.int("bootstrap-expect", "Sets server to expect bootstrap mode.")
        flags.stringList("config-file", "Path to a JSON file to read configuration from. May be given more than once; later files win, flags win over files.")
        flags.stringList("config-dir", "Path to a directory to read configuration files from: every file ending in .json, in lexical order. May be given more than once.")
        flags.bool("enable-script-checks", "Enables health check scripts.")
        return flags
    }

    static func config(from arguments: [String]) throws -> AgentConfig {
        let flags = flags()
        let rest = try flags.parse(arguments)
        guard rest.isEmpty else { throw FlagError(description: "unexpected arguments: \(rest.joined(separator: " "))") }
        var config = flags.flag("dev") ? AgentConfig.development() : AgentConfig()
        for file in flags.list("config-file") { try config.apply(jsonFile: file) }
        for dir in flags.list("config-dir") { try config.apply(configDir: dir) }
        if flags.isSet("enable-script-checks") { config.enableScriptChecks = flags.flag("enable-script-checks") }
        if flags.isSet("server") { config.server = flags.flag("server") }
        if flags.isSet("bootstrap") { config.bootstrap = flags.flag("bootstrap") }
        if let v = flags.string("data-dir") { config.dataDir = v }
        if let v = flags.string("node") { config.nodeName = v }
        if let v = flags.string("datacenter") { config.datacenter = v }
        if let v = flags.string("bind") { config.bindAddr = v }
        if let v = flags.string("client") { config.clientAddr = v }
        if let v = flags.int("http-port") { config.ports.http = v }
        if let v = flags.int("dns-port") { config.ports.dns = v }
        if let v = flags.int("server-port") { config.ports.server = v }
        if let v = flags.int("serf-lan-port") { config.ports.serfLAN = v }
        if let v = flags.int("serf-wan-port") { config.ports.serfWAN = v }
        if let v = flags.string("log-level") { config.logLevel = v }
        if let v = flags.string("advertise") { config.advertiseAddr = v }
        if flags.isSet("join") { config.startJoin += flags.list("join") }
        if flags.isSet("retry-join") { config.retryJoin += flags.list("retry-join") }
        if flags.isSet("event-handler") { config.eventHandlers += flags.list("event-handler") }
        if let v = flags.string("retry-interval") {
            guard let nanos = GoDuration.nanoseconds(v), nanos >= 1_000_000 else {
                throw FlagError(description: "invalid value \"\(v)\" for flag -retry-interval: not a duration")
            }
            config.retryIntervalMs = nanos / 1_000_000
        }
        if flags.isSet("rejoin") { config.rejoinAfterLeave = flags.flag("rejoin") }
        if let v = flags.string("encrypt") { config.encryptKey = v }
        if let v = flags.int("bootstrap-expect") { config.bootstrapExpect = v }
        // Client agents (no -server) keep no Raft state: they forward server-backed requests
        // to a server of the LAN pool (Agent/RPCClient.swift).
        try config.validate()
        return config
    }

    static func run(_ arguments: [String]) -> Int32 {
        let config: AgentConfig
        do { config = try Self.config(from: arguments) } catch {
            printError("==> \(error)")
            return 1
        }
        let level = ConsulLogHandler.level(named: config.logLevel)
        LoggingSystem.bootstrap { label in ConsulLogHandler(label: label, level: level) }
        let logger = Logger(label: "agent")
        do {
            // One registry per process: whatever records through MetricsSystem lands beside
            // what the agent records, in /v1/agent/metrics.
            MetricsRegistry.bootstrapProcessWide()
            let agent = try Agent(config: config, logger: logger, metrics: .shared)
            try agent.start()
            agent.waitUntilStopped()
            return 0
        } catch {
            printError("==> Error starting agent: \(error)")
            return 1
        }
    }
}
