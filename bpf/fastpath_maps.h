/* fastpath_maps.h: the maps of fastpath's BPF programs, written once.
 *
 * Layout lives in two headers, as Katran keeps balancer_consts.h and
 * balancer_structs.h: fastpath_consts.h (names, capacities, indices) and
 * fastpath_structs.h (key/value structs). fastpath.offload.maps parses this
 * file and follows the two includes, so C and Python share one definition.
 *
 * The map definitions below are compiled only into BPF objects (__bpf__), and
 * each program picks the groups it uses before including this file:
 *   FP_WANT_SPLICE_MAPS  fp_socks, fp_targets, fp_peers, fp_flows, fp_errors
 *   FP_WANT_MSG_MAPS     fp_ends, fp_shortcuts, fp_watch, fp_msg_flows, fp_msg_errors
 *   FP_WANT_DPU_MAPS     fp_dpu_rules, fp_dpu_conns, fp_dpu_errors
 */
#ifndef FASTPATH_MAPS_H
#define FASTPATH_MAPS_H

#include "fastpath_consts.h"
#include "fastpath_structs.h"

#ifdef __bpf__

#ifdef FP_WANT_SPLICE_MAPS
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
#endif /* FP_WANT_SPLICE_MAPS */

#ifdef FP_WANT_MSG_MAPS
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, FP_MAX_ENDS);
	__type(key, struct fp_tuple);
	__type(value, __u64);
} FP_MAP_ENDS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FP_MAX_ENDS);
	__type(key, struct fp_tuple);
	__type(value, struct fp_shortcut);
} FP_MAP_SHORTCUTS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FP_MAX_WATCH_PORTS);
	__type(key, __u32);
	__type(value, __u32);
} FP_MAP_WATCH_PORTS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FP_MAX_FLOWS);
	__type(key, __u64);
	__type(value, struct fp_flow_stats);
} FP_MAP_MSG_FLOWS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FP_MSG_ERR_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} FP_MAP_MSG_ERRORS SEC(".maps");
#endif /* FP_WANT_MSG_MAPS */

#ifdef FP_WANT_DPU_MAPS
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FP_DPU_MAX_RULES);
	__type(key, struct fp_dpu_match);
	__type(value, struct fp_dpu_rule);
} FP_DPU_MAP_RULES SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FP_DPU_MAX_CONNS);
	__type(key, struct fp_dpu_tuple);
	__type(value, struct fp_dpu_conn);
} FP_DPU_MAP_CONNS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FP_DPU_ERR_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} FP_DPU_MAP_ERRORS SEC(".maps");
#endif /* FP_WANT_DPU_MAPS */

#endif /* __bpf__ */
#endif
