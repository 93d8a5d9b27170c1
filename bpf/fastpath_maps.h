/* fastpath_maps.h: the map layouts and constants shared by fastpath's BPF
 * programs and the Python offload driver (fastpath.offload.maps parses this
 * file, so a layout is written down once, here).
 *
 * Rules that keep it parseable from Python: one `#define NAME value` per line
 * (an integer, a "string" or a bare identifier), structs made only of
 * __u8/__u16/__u32/__u64 fields and fixed-size arrays of them.
 */
#ifndef FASTPATH_MAPS_H
#define FASTPATH_MAPS_H

/* Where `fastpath bpf load` pins the programs and maps (bpffs). */
#define FP_PIN_DIR "/sys/fs/bpf/fastpath"

/* Object names (kernel names are at most 15 characters). */
#define FP_MAP_SOCKS fp_socks       /* SOCKHASH + verdict: socket cookie -> socket whose bytes are redirected */
#define FP_MAP_TARGETS fp_targets   /* SOCKHASH, no program: socket cookie -> socket, where redirects go */
#define FP_MAP_PEERS fp_peers       /* HASH: socket cookie -> struct fp_peer */
#define FP_MAP_FLOWS fp_flows       /* HASH: flow id -> struct fp_flow_stats */
#define FP_MAP_ERRORS fp_errors     /* ARRAY: failure class -> count */
#define FP_PROG_SPLICE fp_splice    /* sk_skb/stream_verdict on fp_socks */

/* Capacity: two sockets per spliced flow. */
#define FP_MAX_FLOWS 16384
#define FP_MAX_SOCKS 32768

/* Index into fp_flow_stats arrays: which way the bytes went. */
#define FP_DIR_TO_BACKEND 0         /* read from the client socket */
#define FP_DIR_TO_CLIENT 1          /* read from the backend socket */

/* Index into fp_errors: one counter per failure class. */
#define FP_ERR_NO_PEER 0            /* socket in fp_socks has no fp_peers entry: bytes passed to its own queue */
#define FP_ERR_REDIRECT 1           /* peer socket not in fp_targets: bytes passed to the source's own queue */
#define FP_ERR_NO_FLOW 2            /* redirected, but the flow has no counters entry */
#define FP_ERR_COUNT 3

/* Value of fp_peers, keyed by the socket's cookie (__u64, SO_COOKIE). */
struct fp_peer {
	__u64 peer_cookie;          /* where this socket's incoming bytes go */
	__u64 flow_id;              /* key of the flow's fp_flows entry */
	__u32 dir;                  /* FP_DIR_TO_BACKEND or FP_DIR_TO_CLIENT */
	__u32 pad;
};

/* Value of fp_flows: what the kernel moved for one flow, per direction. */
struct fp_flow_stats {
	__u64 bytes[2];
	__u64 packets[2];           /* socket buffers handed to the verdict */
};

/* ---- sk_msg shortcut between two end sockets of one host (sockmsg_redirect.bpf.c) ----
 * A sock_ops program on a cgroup puts established TCP sockets touching a
 * watched port into fp_ends; the sk_msg program then moves a sender's bytes
 * straight into its shortcut peer's receive queue, skipping both TCP stacks
 * and the proxy. Keys are connection tuples: bpf_get_socket_cookie is refused
 * in sk_msg programs. */
#define FP_MAP_ENDS fp_ends             /* SOCKHASH: struct fp_tuple -> end socket */
#define FP_MAP_SHORTCUTS fp_shortcuts   /* HASH: struct fp_tuple (sender) -> struct fp_shortcut */
#define FP_MAP_WATCH_PORTS fp_watch     /* HASH: __u32 port -> __u32 (1): track sockets on this port */
#define FP_MAP_MSG_FLOWS fp_msg_flows   /* HASH: flow id -> struct fp_flow_stats */
#define FP_MAP_MSG_ERRORS fp_msg_errors /* ARRAY: failure class -> count */
#define FP_PROG_ENDS fp_ends_ops        /* sockops on the cgroup */
#define FP_PROG_MSG fp_msg_redirect     /* sk_msg verdict on fp_ends */
#define FP_MAX_ENDS 32768

#define FP_MSG_ERR_REDIRECT 0           /* shortcut peer not in fp_ends (closed): sent the normal way */
#define FP_MSG_ERR_NO_FLOW 1            /* redirected, but the flow has no counters entry */
#define FP_MSG_ERR_COUNT 2

/* A TCP connection as seen from one of its sockets (IPv4). Addresses in
 * network byte order, ports in host byte order. */
struct fp_tuple {
	__u32 local_ip4;
	__u32 remote_ip4;
	__u32 local_port;
	__u32 remote_port;
};

/* Value of fp_shortcuts: where a sender's bytes go instead of its TCP peer. */
struct fp_shortcut {
	__u32 local_ip4;                /* the destination end socket's fp_tuple */
	__u32 remote_ip4;
	__u32 local_port;
	__u32 remote_port;
	__u64 flow_id;
	__u32 dir;
	__u32 pad;
};

#endif
