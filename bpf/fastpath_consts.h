/* fastpath_consts.h: names, capacities and indices shared by fastpath's BPF
 * programs and the Python offload drivers (fastpath.offload.maps parses it
 * through fastpath_maps.h).
 *
 * Parseable from Python: one `#define NAME value` per line (an integer, a
 * "string" or a bare identifier). Capacities sit under #ifndef so a build can
 * override them: `make -C bpf BPF_DEFINES="-DFP_DPU_MAX_RULES=64"`; loaders
 * may also resize a map before loading (libbpf set_max_entries).
 */
#ifndef FASTPATH_CONSTS_H
#define FASTPATH_CONSTS_H

/* Where `fastpath bpf load` pins the programs and maps (bpffs). */
#define FP_PIN_DIR "/sys/fs/bpf/fastpath"

/* ---- kernel splice (sockmap_splice.bpf.c) ---- */
/* Object names (kernel names are at most 15 characters). */
#define FP_MAP_SOCKS fp_socks       /* SOCKHASH + verdict: socket cookie -> socket whose bytes are redirected */
#define FP_MAP_TARGETS fp_targets   /* SOCKHASH, no program: socket cookie -> socket, where redirects go */
#define FP_MAP_PEERS fp_peers       /* HASH: socket cookie -> struct fp_peer */
#define FP_MAP_FLOWS fp_flows       /* HASH: flow id -> struct fp_flow_stats */
#define FP_MAP_ERRORS fp_errors     /* ARRAY: failure class -> count */
#define FP_PROG_SPLICE fp_splice    /* sk_skb/stream_verdict on fp_socks */

/* Capacity: two sockets per spliced flow. */
#ifndef FP_MAX_FLOWS
#define FP_MAX_FLOWS 16384
#endif
#ifndef FP_MAX_SOCKS
#define FP_MAX_SOCKS 32768
#endif

/* Index into fp_flow_stats arrays (and the DPU counters): which way the bytes went. */
#define FP_DIR_TO_BACKEND 0         /* read from the client socket / client -> backend */
#define FP_DIR_TO_CLIENT 1          /* read from the backend socket / backend -> client */

/* Index into fp_errors: one counter per failure class. */
#define FP_ERR_NO_PEER 0            /* socket in fp_socks has no fp_peers entry: bytes passed to its own queue */
#define FP_ERR_REDIRECT 1           /* peer socket not in fp_targets: bytes passed to the source's own queue */
#define FP_ERR_NO_FLOW 2            /* redirected, but the flow has no counters entry */
#define FP_ERR_COUNT 3

/* ---- sk_msg shortcut between two end sockets of one host (sockmsg_redirect.bpf.c) ---- */
#define FP_MAP_ENDS fp_ends             /* SOCKHASH: struct fp_tuple -> end socket */
#define FP_MAP_SHORTCUTS fp_shortcuts   /* HASH: struct fp_tuple (sender) -> struct fp_shortcut */
#define FP_MAP_WATCH_PORTS fp_watch     /* HASH: __u32 port -> __u32 (1): track sockets on this port */
#define FP_MAP_MSG_FLOWS fp_msg_flows   /* HASH: flow id -> struct fp_flow_stats */
#define FP_MAP_MSG_ERRORS fp_msg_errors /* ARRAY: failure class -> count */
#define FP_PROG_ENDS fp_ends_ops        /* sockops on the cgroup */
#define FP_PROG_MSG fp_msg_redirect     /* sk_msg verdict on fp_ends */
#ifndef FP_MAX_ENDS
#define FP_MAX_ENDS 32768
#endif
#ifndef FP_MAX_WATCH_PORTS
#define FP_MAX_WATCH_PORTS 1024
#endif

#define FP_MSG_ERR_REDIRECT 0           /* shortcut peer not in fp_ends (closed): sent the normal way */
#define FP_MSG_ERR_NO_FLOW 1            /* redirected, but the flow has no counters entry */
#define FP_MSG_ERR_COUNT 2

/* ---- the emulated DPU's flow table (dpu_steer.bpf.c, tc cls_bpf direct-action) ----
 * fp_dpu_uplink runs on ingress of the card's uplink (clients), fp_dpu_network
 * on ingress of the card's network port (backends). A rule steers a client's
 * new connections to a VIP:port straight to a backend (destination NAT); the
 * connection entries it creates rewrite the replies' source back (source NAT). */
#define FP_DPU_MAP_RULES fp_dpu_rules     /* HASH: struct fp_dpu_match -> struct fp_dpu_rule (the pipe's entries) */
#define FP_DPU_MAP_CONNS fp_dpu_conns     /* HASH: struct fp_dpu_tuple -> struct fp_dpu_conn (two per connection) */
#define FP_DPU_MAP_ERRORS fp_dpu_errors   /* ARRAY: failure class -> count */
#define FP_DPU_PROG_UPLINK fp_dpu_uplink  /* tc ingress of the uplink port */
#define FP_DPU_PROG_NETWORK fp_dpu_network /* tc ingress of the network port */
#ifndef FP_DPU_MAX_RULES
#define FP_DPU_MAX_RULES 1024
#endif
#ifndef FP_DPU_MAX_CONNS
#define FP_DPU_MAX_CONNS 16384
#endif

/* Index into fp_dpu_errors: one counter per failure class. */
#define FP_DPU_ERR_CONN_FULL 0      /* connection table full: the new connection went to the host (proxy) */
#define FP_DPU_ERR_REDIRECT 1       /* bpf_redirect_neigh refused the egress port: packet dropped */
#define FP_DPU_ERR_REWRITE 2        /* a checksum or store helper failed mid-rewrite: packet dropped */
#define FP_DPU_ERR_MIDSTREAM 3      /* rule hit by a connection not opened through the card: left on the host */
#define FP_DPU_ERR_TRUNCATED 4      /* IPv4/TCP headers shorter than they claim: passed to the host */
#define FP_DPU_ERR_COUNT 5

#endif
