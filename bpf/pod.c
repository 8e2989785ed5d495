// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//go:build ignore

/* The program on the host side of every pod veth: traffic that leaves a pod. */

#include "ferry.h"
#include "arp.h"
#include "counters.h"
#include "forward.h"
#include "packet.h"

char __license[] SEC("license") = "Dual BSD/GPL";

static __always_inline int handle_pod_ipv4(struct __sk_buff *skb)
{
	struct node_route *route;
	struct node_settings *cfg;
	struct lpm_v4_key key;
	struct endpoint *src, *dst;
	struct pkt p;

	if (parse_ipv4(skb, &p) < 0)
		return drop(skb, REASON_DROP_MALFORMED);

	src = lookup_endpoint(p.ip->saddr);
	if (!src || src->ifindex != skb->ifindex)
		return drop(skb, REASON_DROP_SPOOF_IP);
	if (!mac_equal(p.eth->h_source, src->pod_mac))
		return drop(skb, REASON_DROP_SPOOF_MAC);

	dst = lookup_endpoint(p.ip->daddr);
	if (dst)
		return deliver_local(skb, &p, dst);

	cfg = load_config();
	if (!cfg)
		return to_stack(skb);
	key.prefixlen = 32;
	key.addr = p.ip->daddr;
	route = bpf_map_lookup_elem(&node_routes, &key);
	if (route && route->node_ip != cfg->node_ip)
		return forward_remote(skb, &p, cfg, route);

	/* Services, the node itself and the internet: kernel routing and netfilter apply. */
	return to_stack(skb);
}

SEC("tc")
int ferry_from_pod(struct __sk_buff *skb)
{
	set_hook(HOOK_FROM_POD);
	switch (skb->protocol) {
	case bpf_htons(ETH_P_IP):
		return handle_pod_ipv4(skb);
	case bpf_htons(ETH_P_ARP):
		return handle_pod_arp(skb);
	default:
		/* ferry networks pods with IPv4 only; the plugin disables IPv6 in pods. */
		return drop(skb, REASON_DROP_UNSUPPORTED_L3);
	}
}
