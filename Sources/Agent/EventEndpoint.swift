// /v1/event: fire a user event into the LAN pool, and list the recent ones this agent saw
// (with blocking queries on the list, as Consul).
import Foundation
import HTTP

extension HTTPAPI {
    /// Consul's limit on a user event's payload (the serf packet must still fit the MTU).
    static let maxEventPayloadBytes = 400

    func handleEvent(_ responder: HTTPResponder) {
        let request = responder.request
        if request.path.hasPrefix("/v1/event/fire/") {
            guard allow(responder, ["PUT"]) else { return }
            fireEvent(responder, name: String(request.path.dropFirst("/v1/event/fire/".count)))
        } else if request.path == "/v1/event/list" {
            guard allow(responder, ["GET"]) else { return }
            listEvents(responder)
        } else {
            responder.respond(.text(status: 404, "404 page not found"))
        }
    }

    private func fireEvent(_ responder: HTTPResponder, name: String) {
        let query = responder.request.query
        guard inLocalDatacenter(responder) else { return }
        guard !name.isEmpty else {
            responder.respond(.text(status: 400, "Missing name"))
            return
        }
        let body = responder.request.body
        guard body.count <= Self.maxEventPayloadBytes else {
            responder.respond(.text(status: 413, "Request body(\(body.count) bytes) too large, max size: \(Self.maxEventPayloadBytes) bytes"))
            return
        }
        let node = query.first("node") ?? "", service = query.first("service") ?? "", tag = query.first("tag") ?? ""
        if let problem = UserEvent.validateFilters(node: node, service: service, tag: tag) {
            responder.respond(.text(status: 400, problem))
            return
        }
        guard let gossip else {
            responder.respond(.text(status: 500, "gossip is not running"))
            return
        }
        let event = UserEvent(id: UUID().uuidString.lowercased(), name: name, payload: body,
                              nodeFilter: node, serviceFilter: service, tagFilter: tag)
        do {
            try gossip.fire(event)
        } catch {
            responder.respond(.text(status: 500, "\(error)"))
            return
        }
        responder.respond(.json(status: 200, jsonBytes(event.json)))
    }

    private func listEvents(_ responder: HTTPResponder) {
        guard let options = queryOptions(responder) else { return }
        let name = responder.request.query.first("name") ?? ""
        // The index is a hash of the newest event's ID: wake on any difference. Compare what
        // the client saw (an index of 0 is reported as 1), or an empty list would never park.
        blockingRead(responder, options, scope: .userEvents, changed: { max($0, 1) != $1 }) { [weak self] in
            guard let self else { return (0, HTTPResponse(status: 500)) }
            let events = (self.gossip?.userEvents.events ?? []).filter { name.isEmpty || $0.name == name }
            return (RecentUserEvents.index(of: events), .json(status: 200, self.jsonBytes(events.map(\.json))))
        }
    }
}
