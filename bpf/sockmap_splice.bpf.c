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
#define FP_WANT_SPLICE_MAPS
#include "fastpath_maps.h"
#include "fastpath_helpers.h"

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
		fp_count_error(&FP_MAP_ERRORS, FP_ERR_NO_PEER);
		return SK_PASS;
	}
	peer_cookie = peer->peer_cookie;
	flow_id = peer->flow_id;
	dir = peer->dir & 1;
	if (bpf_sk_redirect_hash(skb, &FP_MAP_TARGETS, &peer_cookie, 0) != SK_PASS) {
		fp_count_error(&FP_MAP_ERRORS, FP_ERR_REDIRECT);
		return SK_PASS;
	}
	st = bpf_map_lookup_elem(&FP_MAP_FLOWS, &flow_id);
	if (!st) {
		fp_count_error(&FP_MAP_ERRORS, FP_ERR_NO_FLOW);
		return SK_PASS;
	}
	__sync_fetch_and_add(&st->bytes[dir], skb->len);
	__sync_fetch_and_add(&st->packets[dir], 1);
	return SK_PASS;
}

char _license[] SEC("license") = "GPL";
