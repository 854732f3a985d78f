# Benchmarks (tests/bench): built on demand by `make bench`.
