"""A simulated GPU fleet: KServe v2 gRPC sites with an LLM-like model.

Each site is a real grpc.aio server with a batching queue of finite slots,
a warm KV cache per session/prefix, a simulated distance to each client
region, a Prometheus endpoint with vLLM's metric names, and injectable
faults, so routing, telemetry and failover can be tested end to end without
GPUs.  `fastpath.sim.site.Site` runs one site in-process;
`fastpath.sim.fleet.FleetProcess` runs a config's fleet as child processes.
"""
