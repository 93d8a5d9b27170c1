"""fastpath's BPF sources, shared headers and (in build/) compiled objects, as package data.

Nothing to import: `fastpath.offload.bpf_files` locates these files.
"""
