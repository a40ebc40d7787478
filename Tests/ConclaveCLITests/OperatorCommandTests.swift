// `conclave operator raft` output and argument errors that need no agent.
@testable import ConclaveCLI
import Foundation
import Testing

@Suite("Operator raft command")
struct OperatorCommandTests {
    @Test func listPeersPrintsConsulsColumns() throws {
        let body = #"""
        {"Index":12,"Servers":[
         {"ID":"2b9e8c1f-11aa-4c3e-9d5e-0a0b0c0d0e0f","Node":"alpha","Address":"127.0.0.1:8300","Leader":true,"ProtocolVersion":"3","Voter":true},
         {"ID":"0c1d2e3f-4a5b-6c7d","Node":"(unknown)","Address":"127.0.0.2:8300","Leader":false,"ProtocolVersion":"3","Voter":false},
         {"ID":"x","Node":"c","Address":"10.0.0.3:8300","Leader":false,"ProtocolVersion":"","Voter":true}]}
        """#
        #expect(try OperatorCommand.peersTable(Array(body.utf8)) == """
            Node       ID                                    Address         State     Voter  RaftProtocol
            alpha      2b9e8c1f-11aa-4c3e-9d5e-0a0b0c0d0e0f  127.0.0.1:8300  leader    true   3
            (unknown)  0c1d2e3f-4a5b-6c7d                    127.0.0.2:8300  follower  false  3
            c          x                                     10.0.0.3:8300   follower  true   <=1

            """)
    }

    @Test func anUnexpectedBodyIsAnError() {
        #expect(throws: FlagError.self) { try OperatorCommand.peersTable(Array("[]".utf8)) }
    }

    @Test(arguments: [
        ["operator"],
        ["operator", "nope"],
        ["operator", "raft"],
        ["operator", "raft", "nope"],
        ["operator", "raft", "remove-peer"],
        ["operator", "raft", "remove-peer", "-id", "a", "-address", "b"],
        ["operator", "raft", "list-peers", "-bogus"],
    ])
    func usageAndArgumentErrorsExit1(arguments: [String]) {
        #expect(ConclaveCLI.run(arguments) == 1)
    }
}
