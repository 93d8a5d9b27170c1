// SPDX-License-Identifier: GPL-2.0
/* sockmap_splice: splice two TCP sockets of one host in the kernel.
 *
 * Every socket of a spliced flow sits in fp_socks (keyed by its cookie). The
 * stream verdict runs for each socket buffer a socket receives, looks the
 * socket's peer up in fp_peers and redirects the bytes out through the peer,
 * so the proxy process never reads or writes them. Redirects go through
 * fp_targets, a second SOCKHASH without programs: user space puts both
 * sockets there first, so when either starts redirecting its peer is already
 * a valid target (no bytes can arrive while the peer is missing). When anything is missing
 * the bytes are passed to the socket's own queue, where user space can still
 * read them, and the failure class is counted in fp_errors.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "fastpath_maps.h"

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, FP_MAX_SOCKS);
	__type(key, __u64);
	__type(value, __u64);
} FP_MAP_SOCKS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, FP_MAX_SOCKS);
	__type(key, __u64);
	__type(value, __u64);
} FP_MAP_TARGETS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FP_MAX_SOCKS);
	__type(key, __u64);
	__type(value, struct fp_peer);
} FP_MAP_PEERS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FP_MAX_FLOWS);
	__type(key, __u64);
	__type(value, struct fp_flow_stats);
} FP_MAP_FLOWS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FP_ERR_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} FP_MAP_ERRORS SEC(".maps");

static __always_inline void count_error(__u32 class)
{
	__u64 *n = bpf_map_lookup_elem(&FP_MAP_ERRORS, &class);

	if (n)
		__sync_fetch_and_add(n, 1);
}

SEC("sk_skb/stream_verdict")
int FP_PROG_SPLICE(struct __sk_buff *skb)
{
	__u64 cookie = bpf_get_socket_cookie(skb);
	struct fp_peer *peer = bpf_map_lookup_elem(&FP_MAP_PEERS, &cookie);
	struct fp_flow_stats *st;
	__u64 peer_cookie, flow_id;
	__u32 dir;

	/* A FIN arrives as an empty buffer. Redirected, it would make the peer's
	 * send fail with EPIPE once user space has shut that peer down; the
	 * watcher forwards the FIN itself, so the empty buffer is dropped. */
	if (skb->len == 0)
		return SK_DROP;
	if (!peer) {
		count_error(FP_ERR_NO_PEER);
		return SK_PASS;
	}
	peer_cookie = peer->peer_cookie;
	flow_id = peer->flow_id;
	dir = peer->dir & 1;
	if (bpf_sk_redirect_hash(skb, &FP_MAP_TARGETS, &peer_cookie, 0) != SK_PASS) {
		count_error(FP_ERR_REDIRECT);
		return SK_PASS;
	}
	st = bpf_map_lookup_elem(&FP_MAP_FLOWS, &flow_id);
	if (!st) {
		count_error(FP_ERR_NO_FLOW);
		return SK_PASS;
	}
	__sync_fetch_and_add(&st->bytes[dir], skb->len);
	__sync_fetch_and_add(&st->packets[dir], 1);
	return SK_PASS;
}

char _license[] SEC("license") = "GPL";
