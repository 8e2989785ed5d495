// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//go:build ignore

/* The programs on the node's uplink: delivery to local pods and the masquerade. */

#include "ferry.h"
#include "counters.h"
#include "forward.h"
#include "nat.h"
#include "packet.h"

char __license[] SEC("license") = "Dual BSD/GPL";

SEC("tc")
int ferry_uplink_ingress(struct __sk_buff *skb)
{
	struct node_settings *cfg;
	struct endpoint *ep;
	struct pkt p;
	int rc;

	set_hook(HOOK_UPLINK_INGRESS);
	if (skb->protocol != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	cfg = load_config();
	if (!cfg)
		return TC_ACT_OK;

	rc = snat_reverse(skb, cfg);
	if (rc < 0)
		return drop(skb, REASON_DROP_MALFORMED);

	/* Parse again: the translation may have moved packet data. */
	if (parse_ipv4(skb, &p) < 0)
		return TC_ACT_OK;
	ep = lookup_endpoint(p.ip->daddr);
	if (!ep)
		return TC_ACT_OK;
	return deliver_local(skb, &p, ep);
}

SEC("tc")
int ferry_uplink_egress(struct __sk_buff *skb)
{
	struct node_settings *cfg;

	set_hook(HOOK_UPLINK_EGRESS);
	if (skb->protocol != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	cfg = load_config();
	if (!cfg)
		return TC_ACT_OK;
	return snat_egress(skb, cfg);
}
