// `conclave catalog datacenters|nodes|services` against a real agent.
import Foundation
import HTTP
import Testing

@Suite("Catalog CLI", .serialized)
struct CatalogCLITests {
    @Test func catalogCommandsListWhatWasRegistered() throws {
        let dir = temporaryDataDir("catalog-cli")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let agent = try AgentProcess(dataDir: dir)
        defer { _ = agent.terminate() }
        let addr = ["-http-addr", "127.0.0.1:\(agent.httpPort)"]
        var client = agent.client()
        let body = #"{"Node":"web-node","Address":"10.1.0.5","NodeMeta":{"rack":"r1"},"Service":{"Service":"web","Tags":["v1","edge"],"Port":80}}"#
        let register = try client.request(method: "PUT", path: "/v1/catalog/register", body: Array(body.utf8))
        #expect(register.status == 200)

        let dcs = try runCLI(["catalog", "datacenters"] + addr)
        #expect(dcs.status == 0)
        #expect(dcs.stdout == "dc1\n")

        let nodes = try runCLI(["catalog", "nodes"] + addr + ["-service=web"])
        #expect(nodes.status == 0)
        #expect(nodes.stdout == "Node      ID  Address   DC\nweb-node      10.1.0.5  dc1\n")

        let meta = try runCLI(["catalog", "nodes"] + addr + ["-node-meta", "rack=r1", "-detailed"])
        #expect(meta.stdout.contains("web-node"))
        #expect(meta.stdout.contains("rack=r1"))

        // The leader also lists itself, as Consul does: the `consul` service on its node.
        try poll("the server's own consul service", seconds: 30) {
            try runCLI(["catalog", "services"] + addr).stdout.contains("consul")
        }
        let services = try runCLI(["catalog", "services"] + addr + ["-tags"])
        #expect(services.status == 0)
        #expect(services.stdout == "consul\nweb     edge,v1\n")
        let onNode = try runCLI(["catalog", "services"] + addr + ["-node=web-node"])
        #expect(onNode.stdout == "web\n")
        let none = try runCLI(["catalog", "services"] + addr + ["-node=ghost"])
        #expect(none.status == 0)
        #expect(none.stderr.contains("No services match the given query"))
    }
}
