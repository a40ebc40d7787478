// A precondition failing inside the core kills the test process before any test can report
// its seed. This handler prints the seeds in flight (one slot per concurrently running
// simulation test) from preallocated memory, then lets the signal proceed.

#if canImport(Glibc)
import Glibc

private let slotCount = 4
private let slotCapacity = 160
nonisolated(unsafe) private let slotText = UnsafeMutablePointer<UInt8>.allocate(capacity: slotCount * slotCapacity)
nonisolated(unsafe) private let slotLength: UnsafeMutablePointer<Int> = {
    let p = UnsafeMutablePointer<Int>.allocate(capacity: slotCount)
    p.initialize(repeating: 0, count: slotCount)
    return p
}()

private let installed: Bool = {
    for sig in [SIGILL, SIGTRAP, SIGABRT, SIGSEGV] {
        signal(sig) { sig in
            for slot in 0 ..< slotCount where slotLength[slot] > 0 {
                _ = write(2, slotText + slot * slotCapacity, slotLength[slot])
            }
            signal(sig, SIG_DFL)
            raise(sig)
        }
    }
    return true
}()

/// Records that `slot` is now running `seed`, for the crash handler to print.
func noteSimulationSeed(slot: Int, seed: UInt64, nodeCount: Int) {
    _ = installed
    let text = Array("raft-sim: crashed while running seed=\(seed) nodes=\(nodeCount); replay with RAFT_SIM_SEED=\(seed) swift test --filter RaftCoreTests\n".utf8.prefix(slotCapacity))
    slotLength[slot] = 0
    for (i, b) in text.enumerated() { slotText[slot * slotCapacity + i] = b }
    slotLength[slot] = text.count
}
#else
func noteSimulationSeed(slot: Int, seed: UInt64, nodeCount: Int) {}
#endif
