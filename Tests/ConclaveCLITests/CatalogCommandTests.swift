// `conclave catalog` output: Consul's columns for nodes and services.
@testable import ConclaveCLI
import Testing

@Suite struct CatalogCommandTests {
    static var nodes: [[String: Any]] { [
        ["Node": "web-2", "ID": "8f6b0d2a-1111-2222-3333-444455556666", "Address": "10.0.0.2", "Datacenter": "dc1",
         "TaggedAddresses": ["wan": "1.2.3.4", "lan": "10.0.0.2"], "Meta": ["rack": "b"]],
        ["Node": "db", "ID": "", "Address": "10.0.0.9", "Datacenter": "dc1", "TaggedAddresses": [String: String](),
         "Meta": [String: String]()],
    ] }

    @Test func nodesTableHasConsulsColumnsSortedByNameWithShortIDs() {
        #expect(CatalogCommands.nodesTable(Self.nodes, detailed: false) == """
        Node   ID        Address   DC
        db               10.0.0.9  dc1
        web-2  8f6b0d2a  10.0.0.2  dc1

        """)
    }

    @Test func detailedNodesTableShowsFullIDsAddressesAndMeta() {
        #expect(CatalogCommands.nodesTable(Self.nodes, detailed: true) == """
        Node   ID                                    Address   DC   TaggedAddresses           Meta
        db                                           10.0.0.9  dc1
        web-2  8f6b0d2a-1111-2222-3333-444455556666  10.0.0.2  dc1  lan=10.0.0.2,wan=1.2.3.4  rack=b

        """)
    }

    @Test func servicesAreSortedAndTagsJoined() {
        let services = ["web": ["v2", "v1", "v1"], "consul": [], "db": ["primary"]]
        #expect(CatalogCommands.servicesTable(services, tags: false) == "consul\ndb\nweb\n")
        #expect(CatalogCommands.servicesTable(services, tags: true) == """
        consul
        db      primary
        web     v1,v2

        """)
    }

    @Test func unknownSubcommandFails() {
        #expect(CatalogCommands.run(["frob"]) == 1)
        #expect(CatalogCommands.run([]) == 1)
    }
}
