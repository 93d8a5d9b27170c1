// SPDX-License-Identifier: GPL-2.0
/* dpu_steer: the emulated BlueField's flow table, as tc cls_bpf direct-action.
 *
 * fp_dpu_uplink runs on ingress of the card's uplink port (where clients'
 * packets arrive). A packet of a connection the card already switched is
 * rewritten from its fp_dpu_conns entry. Otherwise, a SYN that matches a
 * pipe entry in fp_dpu_rules (client IPv4, VIP IPv4, VIP TCP port) opens a
 * connection: two fp_dpu_conns entries are recorded (this direction, and the
 * reply's 4-tuple), the destination is rewritten to the backend and the packet
 * is redirected out of the entry's egress port. Everything else passes to the
 * host, and so to the proxy: a rule never captures a connection that was
 * opened through the proxy (its packets are not SYNs; counted as MIDSTREAM).
 *
 * fp_dpu_network runs on ingress of the card's network port (backends): a
 * reply of a switched connection gets its source rewritten back to the VIP and
 * leaves through the uplink. Counters (TCP payload bytes and packets, per
 * direction) are kept per connection and per pipe entry, with the time of the
 * last packet, which the card's aging reads.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#define FP_WANT_DPU_MAPS
#include "fastpath_maps.h"
#include "fastpath_helpers.h"

#define IP_CSUM_OFF (ETH_HLEN + offsetof(struct iphdr, check))
#define IP_SRC_OFF (ETH_HLEN + offsetof(struct iphdr, saddr))
#define IP_DST_OFF (ETH_HLEN + offsetof(struct iphdr, daddr))

/* What the parser read from one IPv4/TCP packet (network byte order). */
struct pkt {
	struct fp_dpu_tuple t;
	__u32 l4_off;
	__u32 payload;
	__u32 seq;
	__u8 syn_only;
	__u8 fin_or_rst;
};

/* 1: an IPv4 TCP packet was read into p; 0: pass it to the host (not IPv4/TCP, a fragment, or
 * headers shorter than they claim, which is counted). */
static __always_inline int parse(struct __sk_buff *skb, struct pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;
	struct tcphdr *tcp;
	__u32 ihl, doff, tot;

	if ((void *)(eth + 1) > end)
		return 0;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return 0;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end)
		return 0;
	if (ip->protocol != IPPROTO_TCP)
		return 0;
	if (ip->frag_off & bpf_htons(0x3fff))  /* fragments are the host's business */
		return 0;
	ihl = ip->ihl * 4;
	if (ihl < sizeof(*ip))
		goto truncated;
	tcp = (void *)ip + ihl;
	if ((void *)(tcp + 1) > end)
		goto truncated;
	doff = tcp->doff * 4;
	tot = bpf_ntohs(ip->tot_len);
	if (doff < sizeof(*tcp) || tot < ihl + doff)
		goto truncated;
	p->t.src_ip4 = ip->saddr;
	p->t.dst_ip4 = ip->daddr;
	p->t.src_port = tcp->source;
	p->t.dst_port = tcp->dest;
	p->l4_off = ETH_HLEN + ihl;
	p->payload = tot - ihl - doff;
	p->seq = tcp->seq;
	p->syn_only = tcp->syn && !tcp->ack;
	p->fin_or_rst = tcp->fin || tcp->rst;
	return 1;
truncated:
	fp_count_error(&FP_DPU_MAP_ERRORS, FP_DPU_ERR_TRUNCATED);
	return 0;
}

/* Rewrites one address and one port with both checksums fixed (the TCP one
 * through the pseudo-header, which also keeps CHECKSUM_PARTIAL skbs right). */
static __always_inline int rewrite(struct __sk_buff *skb, __u32 l4_off, __u32 ip_off, __u32 old_ip, __u32 new_ip,
				   __u32 port_off, __u16 old_port, __u16 new_port)
{
	__u32 csum_off = l4_off + offsetof(struct tcphdr, check);

	if (bpf_l4_csum_replace(skb, csum_off, old_ip, new_ip, BPF_F_PSEUDO_HDR | sizeof(new_ip)))
		return -1;
	if (bpf_l3_csum_replace(skb, IP_CSUM_OFF, old_ip, new_ip, sizeof(new_ip)))
		return -1;
	if (bpf_skb_store_bytes(skb, ip_off, &new_ip, sizeof(new_ip), 0))
		return -1;
	if (old_port != new_port) {
		if (bpf_l4_csum_replace(skb, csum_off, old_port, new_port, sizeof(new_port)))
			return -1;
		if (bpf_skb_store_bytes(skb, l4_off + port_off, &new_port, sizeof(new_port), 0))
			return -1;
	}
	return 0;
}

static __always_inline void count_rule(__u32 client, __u32 vip, __u16 port, __u32 dir, __u32 payload, __u64 now)
{
	struct fp_dpu_match m = { .client_ip4 = client, .vip_ip4 = vip, .vip_port = port };
	struct fp_dpu_rule *r = bpf_map_lookup_elem(&FP_DPU_MAP_RULES, &m);

	if (!r)
		return;  /* entry removed (aged, policy): its open connections still run to their end */
	__sync_fetch_and_add(&r->bytes[dir & 1], payload);
	__sync_fetch_and_add(&r->packets[dir & 1], 1);
	r->last_ns = now;
}

/* Applies a connection entry: rewrite, count, redirect. */
static __always_inline int switch_conn(struct __sk_buff *skb, struct pkt *p, struct fp_dpu_conn *c, __u64 now)
{
	__u32 dir = c->dir & 1, ifindex = c->ifindex;
	__u32 new_ip = c->new_ip4, rc, rip = c->rule_client_ip4, rvip = c->rule_vip_ip4;
	__u16 new_port = c->new_port, rport = c->rule_vip_port;
	int err;

	__sync_fetch_and_add(&c->bytes, p->payload);
	__sync_fetch_and_add(&c->packets, 1);
	c->last_ns = now;
	count_rule(rip, rvip, rport, dir, p->payload, now);
	if (dir == FP_DIR_TO_BACKEND)
		err = rewrite(skb, p->l4_off, IP_DST_OFF, p->t.dst_ip4, new_ip, offsetof(struct tcphdr, dest),
			      p->t.dst_port, new_port);
	else
		err = rewrite(skb, p->l4_off, IP_SRC_OFF, p->t.src_ip4, new_ip, offsetof(struct tcphdr, source),
			      p->t.src_port, new_port);
	if (err) {
		fp_count_error(&FP_DPU_MAP_ERRORS, FP_DPU_ERR_REWRITE);
		return TC_ACT_SHOT;
	}
	rc = bpf_redirect_neigh(ifindex, NULL, 0, 0);
	if (rc != TC_ACT_REDIRECT)
		fp_count_error(&FP_DPU_MAP_ERRORS, FP_DPU_ERR_REDIRECT);
	return rc;
}

SEC("tc")
int FP_DPU_PROG_UPLINK(struct __sk_buff *skb)
{
	struct fp_dpu_match m = {};
	struct fp_dpu_conn fwd = {}, rev = {};
	struct fp_dpu_tuple rkey = {};
	struct fp_dpu_rule *r;
	struct fp_dpu_conn *c;
	struct pkt p = {};
	__u64 now;

	if (!parse(skb, &p))
		return TC_ACT_OK;
	now = bpf_ktime_get_ns();
	c = bpf_map_lookup_elem(&FP_DPU_MAP_CONNS, &p.t);
	if (c && !p.syn_only)
		return switch_conn(skb, &p, c, now);
	m.client_ip4 = p.t.src_ip4;
	m.vip_ip4 = p.t.dst_ip4;
	m.vip_port = p.t.dst_port;
	r = bpf_map_lookup_elem(&FP_DPU_MAP_RULES, &m);
	if (!r) {
		if (c)  /* a SYN reusing a switched 4-tuple whose entry is gone: the host takes it */
			bpf_map_delete_elem(&FP_DPU_MAP_CONNS, &p.t);
		return TC_ACT_OK;
	}
	if (!p.syn_only) {
		fp_count_error(&FP_DPU_MAP_ERRORS, FP_DPU_ERR_MIDSTREAM);
		return TC_ACT_OK;
	}
	/* A retransmitted SYN of a connection this entry already opened (same 4-tuple, same initial
	 * sequence number): same state, not a new connection. A new connection reusing the 4-tuple
	 * has another sequence number and is recorded afresh. */
	if (c && c->syn_seq == p.seq && c->new_ip4 == r->backend_ip4 && c->new_port == r->backend_port)
		return switch_conn(skb, &p, c, now);
	/* A new connection: the reply's entry first, so no answer can arrive unmapped. */
	rkey.src_ip4 = r->backend_ip4;
	rkey.dst_ip4 = p.t.src_ip4;
	rkey.src_port = r->backend_port;
	rkey.dst_port = p.t.src_port;
	rev.new_ip4 = p.t.dst_ip4;
	rev.new_port = p.t.dst_port;
	rev.dir = FP_DIR_TO_CLIENT;
	rev.ifindex = r->reply_ifindex;
	rev.rule_client_ip4 = m.client_ip4;
	rev.rule_vip_ip4 = m.vip_ip4;
	rev.rule_vip_port = m.vip_port;
	rev.last_ns = now;
	rev.syn_seq = p.seq;
	fwd = rev;
	fwd.new_ip4 = r->backend_ip4;
	fwd.new_port = r->backend_port;
	fwd.dir = FP_DIR_TO_BACKEND;
	fwd.ifindex = r->egress_ifindex;
	if (bpf_map_update_elem(&FP_DPU_MAP_CONNS, &rkey, &rev, BPF_ANY)) {
		fp_count_error(&FP_DPU_MAP_ERRORS, FP_DPU_ERR_CONN_FULL);
		return TC_ACT_OK;
	}
	if (bpf_map_update_elem(&FP_DPU_MAP_CONNS, &p.t, &fwd, BPF_ANY)) {
		bpf_map_delete_elem(&FP_DPU_MAP_CONNS, &rkey);
		fp_count_error(&FP_DPU_MAP_ERRORS, FP_DPU_ERR_CONN_FULL);
		return TC_ACT_OK;
	}
	__sync_fetch_and_add(&r->conns, 1);
	if (!r->first_ns)
		r->first_ns = now;
	c = bpf_map_lookup_elem(&FP_DPU_MAP_CONNS, &p.t);
	if (!c) {
		fp_count_error(&FP_DPU_MAP_ERRORS, FP_DPU_ERR_CONN_FULL);
		return TC_ACT_OK;
	}
	return switch_conn(skb, &p, c, now);
}

SEC("tc")
int FP_DPU_PROG_NETWORK(struct __sk_buff *skb)
{
	struct fp_dpu_conn *c;
	struct pkt p = {};

	if (!parse(skb, &p))
		return TC_ACT_OK;
	c = bpf_map_lookup_elem(&FP_DPU_MAP_CONNS, &p.t);
	if (!c || c->dir != FP_DIR_TO_CLIENT)
		return TC_ACT_OK;
	return switch_conn(skb, &p, c, bpf_ktime_get_ns());
}

char _license[] SEC("license") = "GPL";
