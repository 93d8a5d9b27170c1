// SPDX-License-Identifier: GPL-2.0
/* sockmsg_redirect: a shortcut between a client's and a backend's sockets on one host.
 *
 * fp_ends_ops (sockops, attached to the cgroup the client and backend run in)
 * puts every established TCP socket that touches a watched port into fp_ends.
 * fp_msg_redirect (sk_msg on fp_ends) runs on each sendmsg of those sockets;
 * when the proxy has installed a shortcut for the sender, the bytes go
 * straight into the destination socket's receive queue. Anything without a
 * shortcut is sent the normal way, through the proxy.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#define FP_WANT_MSG_MAPS
#include "fastpath_maps.h"
#include "fastpath_helpers.h"

#define AF_INET 2

SEC("sockops")
int FP_PROG_ENDS(struct bpf_sock_ops *skops)
{
	struct fp_tuple key = {};
	__u32 lport, rport;

	if (skops->family != AF_INET)
		return 1;
	if (skops->op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB && skops->op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB)
		return 1;
	lport = skops->local_port;
	rport = bpf_ntohl(skops->remote_port);
	if (!bpf_map_lookup_elem(&FP_MAP_WATCH_PORTS, &lport) && !bpf_map_lookup_elem(&FP_MAP_WATCH_PORTS, &rport))
		return 1;
	key.local_ip4 = skops->local_ip4;
	key.remote_ip4 = skops->remote_ip4;
	key.local_port = lport;
	key.remote_port = rport;
	bpf_sock_hash_update(skops, &FP_MAP_ENDS, &key, BPF_ANY);
	return 1;
}

SEC("sk_msg")
int FP_PROG_MSG(struct sk_msg_md *msg)
{
	struct fp_tuple key = {}, dest = {};
	struct fp_shortcut *sc;
	struct fp_flow_stats *st;
	__u64 flow_id;
	__u32 dir, size = msg->size;

	key.local_ip4 = msg->local_ip4;
	key.remote_ip4 = msg->remote_ip4;
	key.local_port = msg->local_port;
	key.remote_port = bpf_ntohl(msg->remote_port);
	sc = bpf_map_lookup_elem(&FP_MAP_SHORTCUTS, &key);
	if (!sc)
		return SK_PASS;
	dest.local_ip4 = sc->local_ip4;
	dest.remote_ip4 = sc->remote_ip4;
	dest.local_port = sc->local_port;
	dest.remote_port = sc->remote_port;
	flow_id = sc->flow_id;
	dir = sc->dir & 1;
	if (bpf_msg_redirect_hash(msg, &FP_MAP_ENDS, &dest, BPF_F_INGRESS) != SK_PASS) {
		fp_count_error(&FP_MAP_MSG_ERRORS, FP_MSG_ERR_REDIRECT);
		return SK_PASS;
	}
	st = bpf_map_lookup_elem(&FP_MAP_MSG_FLOWS, &flow_id);
	if (!st) {
		fp_count_error(&FP_MAP_MSG_ERRORS, FP_MSG_ERR_NO_FLOW);
		return SK_PASS;
	}
	__sync_fetch_and_add(&st->bytes[dir], size);
	__sync_fetch_and_add(&st->packets[dir], 1);
	return SK_PASS;
}

char _license[] SEC("license") = "GPL";
