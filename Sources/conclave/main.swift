// The `conclave` binary: everything lives in ConclaveCLI so tests can reach it.
import ConclaveCLI
ConclaveCLI.main()
