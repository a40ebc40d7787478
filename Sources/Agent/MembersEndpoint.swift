// /v1/agent/members, /v1/agent/join/<address>, /v1/agent/force-leave/<node>: the gossip
// pools as Consul's agent endpoints show and change them.
import Gossip
import HTTP

extension HTTPAPI {
    /// Consul's agent.Member JSON for each member of the LAN pool (`?wan`: the WAN pool).
    func handleMembers(_ responder: HTTPResponder) {
        let wan = responder.request.query.has("wan")
        guard let pool = wan ? gossip?.wan : gossip?.lan else {
            responder.respond(.json(status: 200, jsonBytes([Any]())))
            return
        }
        let members: [[String: Any]] = pool.members.map { status in
            let address = parseHostPort(status.member.address)
            return [
                "Name": status.member.name,
                "Addr": address?.host ?? status.member.address,
                "Port": address?.port ?? 0,
                "Tags": status.member.tags,
                "Status": status.serfStatus,
                // Consul's memberlist and serf protocol versions; we speak our own wire
                // format, and report Consul's defaults so clients parse the same fields.
                "ProtocolMin": 1, "ProtocolMax": 5, "ProtocolCur": 2,
                "DelegateMin": 2, "DelegateMax": 5, "DelegateCur": 4,
            ]
        }
        responder.respond(.json(status: 200, jsonBytes(members)))
    }

    func handleJoin(_ responder: HTTPResponder, address: String) {
        guard let gossip else {
            responder.respond(.text(status: 500, "gossip is not running"))
            return
        }
        let wan = responder.request.query.has("wan")
        let target = address
        guard !target.isEmpty else {
            responder.respond(.text(status: 400, "Missing address to join"))
            return
        }
        gossip.join([target], wan: wan) { joined, error in
            if joined > 0 {
                responder.respond(HTTPResponse(status: 200))
            } else {
                responder.respond(.text(status: 500, error ?? "join failed"))
            }
        }
    }

    /// Consul's force-leave: a failed member is marked left (`?prune`: and forgotten).
    func handleForceLeave(_ responder: HTTPResponder, node: String) {
        let name = node
        guard let pool = gossip?.lan, !name.isEmpty else {
            responder.respond(.text(status: 400, "Missing node name"))
            return
        }
        let prune = responder.request.query.has("prune")
        var found = pool.forceLeave(name, prune: prune)
        if let wan = gossip?.wan {
            // Consul also force-leaves the WAN member `node.dc`.
            found = wan.forceLeave(name.contains(".") ? name : "\(name).\(config.datacenter)", prune: prune) || found
        }
        if found {
            logger.info("Force leaving node", metadata: ["node": "\(name)", "prune": "\(prune)"])
            responder.respond(HTTPResponse(status: 200))
        } else {
            responder.respond(.text(status: 500, "agent: No node found with name '\(name)'"))
        }
    }
}
