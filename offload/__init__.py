"""Flow-steering offload: one steering-table interface, drivers for eBPF, a DPU and none."""
