/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The ARP responder that plays the pod's gateway. */
#ifndef FERRY_ARP_H
#define FERRY_ARP_H

#include "counters.h"
#include "packet.h"

#define ARPHRD_ETHER 1
#define ARPOP_REQUEST 1
#define ARPOP_REPLY 2

/* An Ethernet/IPv4 ARP packet; linux/if_arp.h pulls in libc headers. */
struct arp_ipv4 {
	__be16 htype;
	__be16 ptype;
	__u8 hlen;
	__u8 plen;
	__be16 op;
	__u8 sha[ETH_ALEN];
	__be32 spa;
	__u8 tha[ETH_ALEN];
	__be32 tpa;
} __attribute__((packed));

/*
 * Answer an ARP request from a pod with the host-side veth's MAC for any
 * target but the pod itself, so that the gateway and every on-link address
 * resolve to the host. The request must come from the endpoint's own IP and
 * MAC. Other ARP packets (replies, gratuitous ARP) go to the stack.
 */
static __always_inline int handle_pod_arp(struct __sk_buff *skb)
{
	struct endpoint *ep;
	struct arp_ipv4 *arp;
	struct pkt p;
	__be32 target;

	if (parse_eth(skb, &p) < 0)
		return drop(skb, REASON_DROP_MALFORMED);
	arp = (void *)p.eth + ETH_HLEN;
	if ((void *)(arp + 1) > p.data_end)
		return drop(skb, REASON_DROP_MALFORMED);
	if (arp->htype != bpf_htons(ARPHRD_ETHER) || arp->ptype != bpf_htons(ETH_P_IP) ||
	    arp->hlen != ETH_ALEN || arp->plen != 4)
		return drop(skb, REASON_DROP_MALFORMED);

	ep = lookup_endpoint(arp->spa);
	if (!ep || ep->ifindex != skb->ifindex)
		return drop(skb, REASON_DROP_SPOOF_IP);
	if (!mac_equal(arp->sha, ep->pod_mac) || !mac_equal(p.eth->h_source, ep->pod_mac))
		return drop(skb, REASON_DROP_SPOOF_MAC);
	if (arp->op != bpf_htons(ARPOP_REQUEST) || arp->tpa == arp->spa)
		return to_stack(skb);

	target = arp->tpa;
	arp->op = bpf_htons(ARPOP_REPLY);
	__builtin_memcpy(arp->tha, arp->sha, ETH_ALEN);
	arp->tpa = arp->spa;
	__builtin_memcpy(arp->sha, ep->host_mac, ETH_ALEN);
	arp->spa = target;
	set_macs(p.eth, ep->host_mac, ep->pod_mac);

	count(skb, REASON_ARP_REPLY);
	return bpf_redirect(skb->ifindex, 0);
}

#endif /* FERRY_ARP_H */
