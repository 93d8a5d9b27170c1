/* fastpath_helpers.h: small helpers every fastpath BPF program shares. */
#ifndef FASTPATH_HELPERS_H
#define FASTPATH_HELPERS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

/* Adds one to failure class `class` of an ARRAY of __u64 counters (fp_errors,
 * fp_msg_errors, fp_dpu_errors): each program passes its own error map, the
 * counting is written once. */
static __always_inline void fp_count_error(void *errors, __u32 class)
{
	__u64 *n = bpf_map_lookup_elem(errors, &class);

	if (n)
		__sync_fetch_and_add(n, 1);
}

#endif
