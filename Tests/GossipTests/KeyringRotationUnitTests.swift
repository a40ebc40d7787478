// The keyring operations behind `conclave keyring`: install, use, remove, and their errors.
import Gossip
import Testing

@Suite("Keyring rotation operations")
struct KeyringRotationUnitTests {
    let a = GossipKeyring.generateBase64Key(), b = GossipKeyring.generateBase64Key()

    @Test func installUseRemoveRotatesThePrimary() throws {
        let start = try GossipKeyring(base64Keys: [a])
        let installed = try start.installing(base64Key: b)
        #expect(installed.base64Keys == [a, b])
        #expect(try installed.installing(base64Key: b).base64Keys == [a, b], "installing twice changes nothing")
        let used = try installed.using(base64Key: b)
        #expect(used.base64Keys == [b, a])
        #expect(try used.removing(base64Key: a).base64Keys == [b])
    }

    @Test func oldAndNewKeysBothDecryptDuringRotation() throws {
        let old = try GossipKeyring(base64Keys: [a])
        let rotating = try old.installing(base64Key: b).using(base64Key: b)
        let sealedByOld = old.seal([1, 2, 3])
        #expect(rotating.open(sealedByOld) == [1, 2, 3])
        let sealedByNew = rotating.seal([4])
        #expect(old.open(sealedByNew) == nil)
        #expect(try GossipKeyring(base64Keys: [b]).open(sealedByNew) == [4])
    }

    @Test func refusalsNameTheReason() throws {
        let ring = try GossipKeyring(base64Keys: [a])
        #expect(throws: GossipKeyringError.removingPrimary) { try ring.removing(base64Key: a) }
        #expect(throws: GossipKeyringError.keyNotInstalled) { try ring.using(base64Key: b) }
        #expect(throws: GossipKeyringError.keyNotInstalled) { try ring.removing(base64Key: b) }
        #expect(throws: GossipKeyringError.self) { try ring.installing(base64Key: "not base64!") }
        #expect(throws: GossipKeyringError.invalidKeyLength(3)) { try ring.installing(base64Key: "AQID") }
    }
}
