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
#define FP_MAP_SOCKS fp_socks       /* SOCKHASH: socket cookie -> socket */
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
#define FP_ERR_REDIRECT 1           /* peer socket not in fp_socks: bytes passed to the source's own queue */
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

#endif
