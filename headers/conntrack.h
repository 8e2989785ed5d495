/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Lookups in netfilter's connection table through the nf_conntrack kfuncs. */
#ifndef FERRY_CONNTRACK_H
#define FERRY_CONNTRACK_H

#include <linux/netfilter/nf_conntrack_common.h>
#include "packet.h"

#ifndef __ksym
#define __ksym __attribute__((section(".ksyms")))
#endif

/*
 * Options of bpf_skb_ct_lookup in the 12-byte layout that kernels since 6.0
 * accept; later kernels added zone fields and still take this size.
 */
struct bpf_ct_opts {
	__s32 netns_id;
	__s32 error;
	__u8 l4proto;
	__u8 dir;
	__u8 reserved[2];
};

/* Only the status field is read; CO-RE relocates it against the running kernel. */
struct nf_conn {
	unsigned long status;
} __attribute__((preserve_access_index));

extern struct nf_conn *bpf_skb_ct_lookup(struct __sk_buff *skb, struct bpf_sock_tuple *tuple,
					 __u32 tuple__sz, struct bpf_ct_opts *opts,
					 __u32 opts__sz) __ksym;
extern void bpf_ct_release(struct nf_conn *ct) __ksym;

/*
 * Report whether the kernel translated the flow of this TCP or UDP packet
 * (kube-proxy's Service DNAT, for one). Such a packet must pass the stack so
 * that netfilter can undo the translation, instead of being redirected past it.
 */
static __always_inline int ct_is_natted(struct __sk_buff *skb, struct pkt *p)
{
	struct bpf_ct_opts opts = { .netns_id = -1 };
	struct bpf_sock_tuple tuple = {};
	struct nf_conn *ct;
	struct udphdr *ports;
	int natted;

	if (p->ip->protocol != IPPROTO_TCP && p->ip->protocol != IPPROTO_UDP)
		return 0;
	if (is_fragment(p->ip))
		return 0;
	/* TCP and UDP headers both start with the two ports. */
	ports = l4_header(skb, p, sizeof(__be16) * 2);
	if (!ports)
		return 0;

	tuple.ipv4.saddr = p->ip->saddr;
	tuple.ipv4.daddr = p->ip->daddr;
	tuple.ipv4.sport = ports->source;
	tuple.ipv4.dport = ports->dest;
	opts.l4proto = p->ip->protocol;

	ct = bpf_skb_ct_lookup(skb, &tuple, sizeof(tuple.ipv4), &opts, sizeof(opts));
	if (!ct)
		return 0;
	natted = (ct->status & IPS_NAT_MASK) != 0;
	bpf_ct_release(ct);
	return natted;
}

#endif /* FERRY_CONNTRACK_H */
