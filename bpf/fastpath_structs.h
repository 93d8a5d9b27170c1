/* fastpath_structs.h: key and value layouts of fastpath's BPF maps.
 *
 * Parseable from Python (fastpath.offload.maps): structs made only of
 * __u8/__u16/__u32/__u64 fields and fixed-size arrays of them.
 */
#ifndef FASTPATH_STRUCTS_H
#define FASTPATH_STRUCTS_H

#include "fastpath_consts.h"

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

/* Key of fp_dpu_rules: the DOCA Flow pipe's match (outer IPv4 source, IPv4
 * destination and TCP destination port). Addresses and ports in network byte
 * order, as on the wire. */
struct fp_dpu_match {
	__u32 client_ip4;
	__u32 vip_ip4;
	__u16 vip_port;
	__u16 pad;
};

/* Value of fp_dpu_rules: one pipe entry's actions, forward target and counters. */
struct fp_dpu_rule {
	__u32 backend_ip4;          /* action: set outer IPv4 destination */
	__u16 backend_port;         /* action: set TCP destination port */
	__u16 pad;
	__u32 egress_ifindex;       /* forward: card port towards the backend */
	__u32 reply_ifindex;        /* forward of the replies: card port towards the client */
	__u64 entry_id;             /* the driver's id of the entry */
	__u64 bytes[2];             /* TCP payload bytes, per FP_DIR_* */
	__u64 packets[2];
	__u64 conns;                /* connections the entry switched */
	__u64 first_ns;             /* bpf_ktime_get_ns() of the first packet switched (insertion latency) */
	__u64 last_ns;              /* bpf_ktime_get_ns() of the last packet (aging) */
};

/* Key of fp_dpu_conns: a packet's IPv4/TCP 4-tuple as it arrives at the card
 * (network byte order). */
struct fp_dpu_tuple {
	__u32 src_ip4;
	__u32 dst_ip4;
	__u16 src_port;
	__u16 dst_port;
};

/* Value of fp_dpu_conns: how to rewrite one direction of a switched connection. */
struct fp_dpu_conn {
	__u32 new_ip4;              /* to backend: new destination; to client: new source (the VIP) */
	__u16 new_port;
	__u16 dir;                  /* FP_DIR_TO_BACKEND or FP_DIR_TO_CLIENT */
	__u32 ifindex;              /* card port to send it out of */
	__u32 rule_client_ip4;      /* the fp_dpu_match of the entry that opened it */
	__u32 rule_vip_ip4;
	__u16 rule_vip_port;
	__u16 pad;
	__u32 syn_seq;              /* sequence number of the SYN that opened it (a retransmission repeats it) */
	__u32 pad2;
	__u64 bytes;                /* TCP payload bytes this direction */
	__u64 packets;
	__u64 last_ns;
};

#endif
