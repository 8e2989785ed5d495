/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Per-CPU packet counters by hook and reason. The names live in
 * pkg/datapath/reasons.go.
 */
#ifndef FERRY_COUNTERS_H
#define FERRY_COUNTERS_H

#include "ferry.h"

enum ferry_reason {
	REASON_FWD_LOCAL = 0,   /* delivered to a pod on this node */
	REASON_FWD_REMOTE = 1,  /* sent to the node that owns the destination */
	REASON_TO_STACK = 2,    /* handed to the kernel stack */
	REASON_ARP_REPLY = 3,   /* ARP request of a pod replied to */
	REASON_SNAT = 4,        /* masqueraded on the way out */
	REASON_REV_SNAT = 5,    /* reply translated back to the pod */
	REASON_CT_STACK = 6,    /* kernel-NATed flow sent through the stack */
	REASON_REV_SNAT_ICMP_ERROR = 7, /* ICMP error about a masqueraded flow translated back */
	REASON_SNAT_ICMP_ERROR = 8,     /* ICMP error about a masqueraded flow sent out */
	REASON_SNAT_NODE_PORT = 9,      /* node flow moved off a port that a mapping uses */
	REASON_NAT_PORT_RETRY = 10,     /* a port after the first tried for a new mapping */
	REASON_SNAT_FRAGMENT = 11,      /* later fragment masqueraded like its first fragment */
	REASON_REV_SNAT_FRAGMENT = 12,  /* later fragment translated back like its first */
	REASON_DROP_SPOOF_IP = 16,
	REASON_DROP_SPOOF_MAC = 17,
	REASON_DROP_MALFORMED = 18,
	REASON_DROP_UNSUPPORTED_L3 = 19,
	REASON_DROP_FIB = 20,
	REASON_DROP_NAT_NO_PORT = 21,
	REASON_DROP_NAT_TABLE_FULL = 22,
	REASON_DROP_NO_CONFIG = 23,
	REASON_DROP_FRAG_UNTRACKED = 24, /* later fragment of a pod whose first one was not seen */
	REASON_MAX = 32,
};

/* The TC hooks that count, in the order of the counters map's blocks. */
enum ferry_hook {
	HOOK_FROM_POD = 0,
	HOOK_UPLINK_INGRESS = 1,
	HOOK_UPLINK_EGRESS = 2,
	HOOK_MAX = 3,
};

/* Key hook * REASON_MAX + reason: one block of reasons per hook. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct counter);
	__uint(max_entries, HOOK_MAX * REASON_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} counters SEC(".maps");

/*
 * The hook of the program running on this CPU, set by each entry program. A
 * TC program runs to its end without another TC program starting on the same
 * CPU, so the value stays valid for the whole run.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 1);
} current_hook SEC(".maps");

static __always_inline void set_hook(enum ferry_hook hook)
{
	__u32 zero = 0;
	__u32 *slot = bpf_map_lookup_elem(&current_hook, &zero);

	if (slot)
		*slot = hook;
}

static __always_inline void count(struct __sk_buff *skb, enum ferry_reason reason)
{
	__u32 zero = 0;
	__u32 *hook = bpf_map_lookup_elem(&current_hook, &zero);
	__u32 key = reason;
	struct counter *c;

	if (hook && *hook < HOOK_MAX)
		key += *hook * REASON_MAX;
	c = bpf_map_lookup_elem(&counters, &key);

	if (c) {
		c->packets++;
		c->bytes += skb->len;
	}
}

/* Count a drop and return the verdict that drops the packet. */
static __always_inline int drop(struct __sk_buff *skb, enum ferry_reason reason)
{
	count(skb, reason);
	return TC_ACT_SHOT;
}

static __always_inline int to_stack(struct __sk_buff *skb)
{
	count(skb, REASON_TO_STACK);
	return TC_ACT_OK;
}

#endif /* FERRY_COUNTERS_H */
