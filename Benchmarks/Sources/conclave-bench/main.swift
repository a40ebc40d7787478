// conclave-bench: see Benchmarks/README.md ("Cluster load generator") and `--help`.
import ConclaveBenchKit

BenchCommand.main()
