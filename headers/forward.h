/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Delivery to pods on this node and forwarding to the node that owns a pod range. */
#ifndef FERRY_FORWARD_H
#define FERRY_FORWARD_H

#include "counters.h"
#include "conntrack.h"

#ifndef AF_INET
#define AF_INET 2
#endif

/*
 * Deliver an IPv4 packet to a local pod as a router would: new MACs, TTL
 * minus one, then straight into the pod's namespace. A packet whose TTL runs
 * out, or whose flow the kernel NATed, goes to the stack, which replies with
 * ICMP time exceeded or undoes its translation.
 */
static __always_inline int deliver_local(struct __sk_buff *skb, struct pkt *p,
					 const struct endpoint *ep)
{
	if (p->ip->ttl <= 1)
		return to_stack(skb);
	if (ct_is_natted(skb, p)) {
		count(skb, REASON_CT_STACK);
		return TC_ACT_OK;
	}

	set_macs(p->eth, ep->host_mac, ep->pod_mac);
	ip_decrease_ttl(p->ip);
	count(skb, REASON_FWD_LOCAL);
	return bpf_redirect_peer(ep->ifindex, 0);
}

/*
 * Send a packet out of the uplink toward the node that owns its destination.
 * The FIB lookup targets the node's IP, not the pod's, so nodes on one L2
 * segment need no routes for pod ranges. Other nodes are reached through
 * whatever gateway the kernel's routes name for the node IP.
 */
static __always_inline int forward_remote(struct __sk_buff *skb, struct pkt *p,
					  const struct node_settings *cfg,
					  const struct node_route *route)
{
	struct bpf_fib_lookup fib = {};
	struct bpf_redir_neigh nh = {};
	long rc;

	if (p->ip->ttl <= 1)
		return to_stack(skb);
	if (ct_is_natted(skb, p)) {
		count(skb, REASON_CT_STACK);
		return TC_ACT_OK;
	}

	fib.family = AF_INET;
	fib.ipv4_src = p->ip->saddr;
	fib.ipv4_dst = route->node_ip;
	/*
	 * tot_len stays zero: the helper then checks the skb against the egress
	 * device's MTU segment by segment. With the IP header's length it would
	 * compare a whole GSO packet of a TCP stream with the MTU and fail.
	 */
	fib.ifindex = cfg->uplink_ifindex;
	ip_decrease_ttl(p->ip);

	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), BPF_FIB_LOOKUP_OUTPUT);
	switch (rc) {
	case BPF_FIB_LKUP_RET_SUCCESS:
		/* The lookup does not touch the packet: p is still valid. */
		set_macs(p->eth, fib.smac, fib.dmac);
		count(skb, REASON_FWD_REMOTE);
		return bpf_redirect(fib.ifindex, 0);
	case BPF_FIB_LKUP_RET_NO_NEIGH:
		/* The neighbour subsystem resolves the next hop and queues meanwhile. */
		nh.nh_family = AF_INET;
		nh.ipv4_nh = fib.ipv4_dst;
		count(skb, REASON_FWD_REMOTE);
		return bpf_redirect_neigh(fib.ifindex, &nh, sizeof(nh), 0);
	default:
		return drop(skb, REASON_DROP_FIB);
	}
}

#endif /* FERRY_FORWARD_H */
