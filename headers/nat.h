/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Masquerade: source NAT of pod traffic leaving the node to the node's IP,
 * and the reverse translation of replies, with ferry's own NAT table.
 *
 * The node's own flows share the node's ports with the masqueraded ones. A
 * pod's flow never takes a port that a socket of the node uses (the socket
 * lookups in nat_map.h), and a node flow that starts on a port a mapping
 * already holds toward the same remote end is itself moved to a free port
 * here. ICMP echo identifiers have no socket lookup, so the node's echo
 * requests claim their identifier in the table like a pod's.
 */
#ifndef FERRY_NAT_H
#define FERRY_NAT_H

#include "counters.h"
#include "frag.h"
#include "icmp_err.h"
#include "nat_map.h"
#include "nat_ports.h"
#include "packet.h"

/* Report whether traffic from a pod to daddr is masqueraded. */
static __always_inline int should_masquerade(const struct node_settings *cfg, const struct iphdr *ip)
{
	struct lpm_v4_key key = { .prefixlen = 32, .addr = ip->daddr };

	if ((ip->saddr & cfg->pod_mask) != cfg->pod_net)
		return 0;
	return bpf_map_lookup_elem(&masq_exclude, &key) == NULL;
}

/* Report whether a mapping uses the node port of a node flow toward its remote end. */
static __always_inline int node_port_taken(const struct node_settings *cfg,
					   const struct nat_key *out_key)
{
	struct nat_key in_key = {};

	nat_ingress_key(&in_key, out_key, cfg->node_ip, out_key->sport);
	return bpf_map_lookup_elem(&nat_table, &in_key) != NULL;
}

/* Return the type of an ICMP packet, or -1 when its header is cut short. */
static __always_inline int icmp_type(struct __sk_buff *skb, struct pkt *p)
{
	struct icmp_echo icmp;

	if (bpf_skb_load_bytes(skb, p->l4_off, &icmp, sizeof(icmp)) < 0)
		return -1;
	return icmp.type;
}

/*
 * Translate a TCP or UDP packet or an ICMP echo request that leaves the
 * node, creating the flow's mapping when the packet may start one. A flow of
 * the node's own keeps its port unless a mapping uses it.
 */
static __always_inline int snat_flow(struct __sk_buff *skb, const struct node_settings *cfg,
				     struct pkt *p, struct l4_ports *l4, int from_node)
{
	struct frag_key frag = {};
	struct nat_key out_key = {};
	struct nat_entry *entry;
	int first_frag = is_first_fragment(p->ip);
	__be32 old_addr = p->ip->saddr;
	int reason = 0;

	if (first_frag)
		frag_key_of(&frag, p->ip, NAT_DIR_EGRESS);
	nat_egress_key(&out_key, p->ip, l4);
	entry = bpf_map_lookup_elem(&nat_table, &out_key);
	if (!entry) {
		if (!l4->starts_flow)
			return TC_ACT_OK;
		if (from_node && !l4->is_icmp && !node_port_taken(cfg, &out_key))
			return TC_ACT_OK;
		entry = nat_create(skb, cfg, &out_key, l4->is_icmp, &reason);
		if (!entry)
			return drop(skb, reason);
	} else {
		nat_restart_tcp(&out_key, entry, l4->tcp_flags);
	}
	nat_touch(entry, l4->tcp_flags);

	if (rewrite_addr_port(skb, l4, IP_SRC_OFF, old_addr, entry->addr, l4->sport_off, l4->sport,
			      entry->port) < 0)
		return drop(skb, REASON_DROP_MALFORMED);
	if (first_frag && entry->addr != old_addr)
		frag_remember(&frag, entry->addr);
	if (!from_node)
		count(skb, REASON_SNAT);
	else if (entry->port != l4->sport)
		count(skb, REASON_SNAT_NODE_PORT);
	return TC_ACT_OK;
}

/*
 * Masquerade a packet leaving through the uplink: pod traffic to outside the
 * cluster, and node traffic whose port a mapping uses. Returns TC_ACT_OK,
 * or TC_ACT_SHOT for a counted drop.
 */
static __always_inline int snat_egress(struct __sk_buff *skb, const struct node_settings *cfg)
{
	struct l4_ports l4 = {};
	struct pkt p;
	int from_node, rc;

	if (parse_ipv4(skb, &p) < 0)
		return TC_ACT_OK;
	if (!(cfg->flags & FERRY_F_MASQUERADE))
		return TC_ACT_OK;
	from_node = p.ip->saddr == cfg->node_ip;
	if (!from_node && !should_masquerade(cfg, p.ip))
		return TC_ACT_OK;

	if (is_later_fragment(p.ip)) {
		/* The node's datagrams keep the node's address in every fragment. */
		if (from_node)
			return TC_ACT_OK;
		rc = frag_translate(skb, &p, NAT_DIR_EGRESS);
		if (rc < 0)
			return drop(skb, REASON_DROP_MALFORMED);
		/* Sent as it is, the fragment would leak the pod's address. */
		if (rc == 0)
			return drop(skb, REASON_DROP_FRAG_UNTRACKED);
		count(skb, REASON_SNAT_FRAGMENT);
		return TC_ACT_OK;
	}
	if (p.ip->protocol == IPPROTO_ICMP && is_icmp_error(icmp_type(skb, &p))) {
		rc = icmp_err_translate(skb, &p, NAT_DIR_EGRESS);
		if (rc < 0)
			return drop(skb, REASON_DROP_MALFORMED);
		if (rc > 0)
			count(skb, REASON_SNAT_ICMP_ERROR);
		return TC_ACT_OK;
	}
	if (read_ports(skb, &p, &l4, 1) < 0)
		return TC_ACT_OK;
	return snat_flow(skb, cfg, &p, &l4, from_node);
}

/*
 * Translate a reply to a masqueraded flow back to the pod, or to the node's
 * own port for a node flow that was moved. Returns 1 when the packet was
 * translated, 0 when it belongs to no mapping, -1 on failure.
 */
static __always_inline int snat_reverse(struct __sk_buff *skb, const struct node_settings *cfg)
{
	struct frag_key frag = {};
	struct l4_ports l4 = {};
	struct nat_entry *entry;
	struct nat_key key = {};
	struct pkt p;
	int first_frag, rc;

	if (parse_ipv4(skb, &p) < 0)
		return 0;
	if (p.ip->daddr != cfg->node_ip)
		return 0;

	if (is_later_fragment(p.ip)) {
		/* An unknown datagram may be the node's own: the stack reassembles it. */
		rc = frag_translate(skb, &p, NAT_DIR_INGRESS);
		if (rc > 0)
			count(skb, REASON_REV_SNAT_FRAGMENT);
		return rc;
	}
	if (p.ip->protocol == IPPROTO_ICMP && is_icmp_error(icmp_type(skb, &p))) {
		rc = icmp_err_translate(skb, &p, NAT_DIR_INGRESS);
		if (rc > 0)
			count(skb, REASON_REV_SNAT_ICMP_ERROR);
		return rc;
	}
	if (read_ports(skb, &p, &l4, 0) < 0)
		return 0;

	first_frag = is_first_fragment(p.ip);
	if (first_frag)
		frag_key_of(&frag, p.ip, NAT_DIR_INGRESS);
	key.saddr = p.ip->saddr;
	key.daddr = p.ip->daddr;
	key.sport = l4.sport;
	key.dport = l4.dport;
	key.proto = p.ip->protocol;
	key.dir = NAT_DIR_INGRESS;
	entry = bpf_map_lookup_elem(&nat_table, &key);
	if (!entry)
		return 0;
	nat_touch(entry, l4.tcp_flags);
	if (entry->addr == key.daddr && entry->port == key.dport)
		return 0;

	if (rewrite_addr_port(skb, &l4, IP_DST_OFF, key.daddr, entry->addr, l4.dport_off, l4.dport,
			      entry->port) < 0)
		return -1;
	if (first_frag && entry->addr != key.daddr)
		frag_remember(&frag, entry->addr);
	count(skb, REASON_REV_SNAT);
	return 1;
}

#endif /* FERRY_NAT_H */
