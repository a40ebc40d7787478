// The LAN member snapshot (Serf's `serf/local.snapshot`): the members this agent knew alive
// and whether it last left gracefully. On start, an agent that did not leave (or runs with
// -rejoin) joins the remembered members again, so a restart needs no -join.
import EventLoop
import Foundation

struct GossipSnapshot: Equatable {
    /// Alive members other than ourselves: name → gossip address.
    var members: [String: String] = [:]
    /// True after a graceful leave: the agent does not rejoin unless -rejoin is set.
    var left = false

    static func path(dataDir: String) -> String { dataDir + "/serf/local.snapshot" }

    static func load(dataDir: String) -> GossipSnapshot? {
        guard let data = FileManager.default.contents(atPath: path(dataDir: dataDir)),
              let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else { return nil }
        return GossipSnapshot(members: object["members"] as? [String: String] ?? [:], left: object["left"] as? Bool ?? false)
    }

    func save(dataDir: String) throws {
        let dir = dataDir + "/serf"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let data = try JSONSerialization.data(withJSONObject: ["members": members, "left": left] as [String: Any], options: [.sortedKeys])
        try data.write(to: URL(fileURLWithPath: Self.path(dataDir: dataDir)), options: .atomic)
    }
}

extension AgentGossip {
    /// Rejoins the members of the last snapshot, unless the agent last left gracefully and
    /// -rejoin is off (Consul's rejoin_after_leave). Failures are only logged: -retry-join and
    /// the other members' own probes cover the rest.
    func rejoinFromSnapshot() {
        guard let snapshot = GossipSnapshot.load(dataDir: dataDir), !snapshot.members.isEmpty else { return }
        if snapshot.left && !config.rejoinAfterLeave {
            agentLogger.info("serf: Ignoring previous leave in snapshot: not rejoining (start with -rejoin to rejoin after a leave)")
            return
        }
        for (name, address) in snapshot.members.sorted(by: { $0.key < $1.key }) {
            agentLogger.info("serf: Attempting re-join to previously known node", metadata: ["node": "\(name)", "address": "\(address)"])
        }
        join(snapshot.members.values.sorted(), wan: false) { [weak self] joined, error in
            if joined > 0 {
                self?.agentLogger.info("serf: Re-joined to previously known nodes", metadata: ["num_agents": "\(joined)"])
            } else {
                self?.agentLogger.warning("serf: Failed to re-join any previously known node", metadata: ["error": "\(error ?? "no answer")"])
            }
        }
    }

    /// Records the LAN members now alive (called after membership changes; writes at most
    /// once per `snapshotIntervalMs`, since a large pool can change often).
    func snapshotMembersSoon() {
        guard !snapshotWritePending else { return }
        snapshotWritePending = true
        let timer = LoopTimer(loop: loop)
        timer.start(afterMilliseconds: Self.snapshotIntervalMs) { [weak self] in
            timer.close()
            guard let self else { return }
            self.snapshotWritePending = false
            self.writeSnapshot(left: self.leaveStarted)
        }
    }

    func writeSnapshot(left: Bool) {
        guard let lan else { return }
        var snapshot = GossipSnapshot(left: left)
        for status in lan.members where status.serfStatus == 1 && status.member.name != config.nodeName {
            snapshot.members[status.member.name] = status.member.address
        }
        // After a leave, keep the last members (with -rejoin they are who we rejoin).
        if left, let previous = GossipSnapshot.load(dataDir: dataDir), snapshot.members.isEmpty {
            snapshot.members = previous.members
        }
        do { try snapshot.save(dataDir: dataDir) } catch {
            agentLogger.warning("serf: cannot write the member snapshot", metadata: ["error": "\(error)"])
        }
    }
}
