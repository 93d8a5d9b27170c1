"""fastpath benchmarks: switching latency, CPU per message, router cost, fleet scenarios."""
