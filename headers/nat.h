/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Masquerade: source NAT of pod traffic leaving the node to the node's IP,
 * and the reverse translation of replies, with ferry's own NAT table.
 */
#ifndef FERRY_NAT_H
#define FERRY_NAT_H

#include <linux/errno.h>
#include "counters.h"
#include "packet.h"

#define NAT_PORT_TRIES 32

/* Where the translated port (or ICMP identifier) and the L4 checksum sit. */
struct l4_ports {
	__be16 sport;
	__be16 dport;
	__u32 sport_off; /* offset of the port that the egress direction rewrites */
	__u32 dport_off; /* offset of the port that the ingress direction rewrites */
	__u32 csum_off;
	__u64 csum_flags; /* BPF_F_PSEUDO_HDR and BPF_F_MARK_MANGLED_0 as the protocol needs */
	__u8 tcp_flags;
	__u8 starts_flow; /* the packet may create a mapping */
};

#define TCP_FLAGS_OFF 13
#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_RST 0x04
#define TCP_FLAG_ACK 0x10

/*
 * Read the ports of a TCP or UDP packet, or the identifier of an ICMP echo
 * request or reply. Returns 0, or -1 for anything the table does not translate.
 */
static __always_inline int read_ports(struct __sk_buff *skb, struct pkt *p, struct l4_ports *l4,
				      int egress)
{
	__u32 off = p->l4_off;

	if (is_fragment(p->ip))
		return -1;

	switch (p->ip->protocol) {
	case IPPROTO_TCP: {
		struct tcphdr *tcp = l4_header(skb, p, sizeof(*tcp));
		__u8 flags;

		if (!tcp)
			return -1;
		flags = ((__u8 *)tcp)[TCP_FLAGS_OFF];
		l4->sport = tcp->source;
		l4->dport = tcp->dest;
		l4->sport_off = off + __builtin_offsetof(struct tcphdr, source);
		l4->dport_off = off + __builtin_offsetof(struct tcphdr, dest);
		l4->csum_off = off + __builtin_offsetof(struct tcphdr, check);
		l4->csum_flags = BPF_F_PSEUDO_HDR;
		l4->tcp_flags = flags;
		/* A bare SYN opens a flow; replies of flows that came in never do. */
		l4->starts_flow = (flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN;
		return 0;
	}
	case IPPROTO_UDP: {
		struct udphdr *udp = l4_header(skb, p, sizeof(*udp));

		if (!udp)
			return -1;
		l4->sport = udp->source;
		l4->dport = udp->dest;
		l4->sport_off = off + __builtin_offsetof(struct udphdr, source);
		l4->dport_off = off + __builtin_offsetof(struct udphdr, dest);
		l4->csum_off = off + __builtin_offsetof(struct udphdr, check);
		/* A zero UDP checksum means none: the helper keeps it zero. */
		l4->csum_flags = BPF_F_PSEUDO_HDR | BPF_F_MARK_MANGLED_0;
		l4->tcp_flags = 0;
		l4->starts_flow = 1;
		return 0;
	}
	case IPPROTO_ICMP: {
		struct icmp_echo *icmp = l4_header(skb, p, sizeof(*icmp));
		__u32 id_off = off + __builtin_offsetof(struct icmp_echo, id);

		if (!icmp)
			return -1;
		if (egress && icmp->type != ICMP_ECHO)
			return -1;
		if (!egress && icmp->type != ICMP_ECHOREPLY)
			return -1;
		/* The identifier is the egress source port and the ingress destination port. */
		l4->sport = egress ? icmp->id : 0;
		l4->dport = egress ? 0 : icmp->id;
		l4->sport_off = id_off;
		l4->dport_off = id_off;
		l4->csum_off = off + __builtin_offsetof(struct icmp_echo, checksum);
		l4->csum_flags = 0; /* ICMP has no pseudo-header */
		l4->tcp_flags = 0;
		l4->starts_flow = 1;
		return 0;
	}
	default:
		return -1;
	}
}

/* Report whether traffic from a pod to daddr is masqueraded. */
static __always_inline int should_masquerade(const struct node_settings *cfg, const struct iphdr *ip)
{
	struct lpm_v4_key key = { .prefixlen = 32, .addr = ip->daddr };

	if (!(cfg->flags & FERRY_F_MASQUERADE))
		return 0;
	if ((ip->saddr & cfg->pod_mask) != cfg->pod_net)
		return 0;
	return bpf_map_lookup_elem(&masq_exclude, &key) == NULL;
}

/* Report whether a socket of the node already uses local port port toward the remote end. */
static __always_inline int host_port_in_use(struct __sk_buff *skb, __u8 proto, __be32 node_ip,
					    __be32 remote_ip, __be16 remote_port, __be16 port)
{
	struct bpf_sock_tuple tuple = {};
	struct bpf_sock *sk;

	/* The tuple as a reply arriving at the node would carry it. */
	tuple.ipv4.saddr = remote_ip;
	tuple.ipv4.daddr = node_ip;
	tuple.ipv4.sport = remote_port;
	tuple.ipv4.dport = port;

	if (proto == IPPROTO_TCP)
		sk = (struct bpf_sock *)bpf_skc_lookup_tcp(skb, &tuple, sizeof(tuple.ipv4),
							   BPF_F_CURRENT_NETNS, 0);
	else if (proto == IPPROTO_UDP)
		sk = bpf_sk_lookup_udp(skb, &tuple, sizeof(tuple.ipv4), BPF_F_CURRENT_NETNS, 0);
	else
		return 0;
	if (!sk)
		return 0;
	bpf_sk_release(sk);
	return 1;
}

static __always_inline __be16 pick_port(const struct node_settings *cfg, __u32 try, __be16 original)
{
	__u32 span = (__u32)cfg->nat_port_max - cfg->nat_port_min + 1;

	/* The pod's own port first, so that most flows keep it. */
	if (try == 0 && original != 0)
		return original;
	return bpf_htons(cfg->nat_port_min + bpf_get_prandom_u32() % span);
}

/*
 * Find or create the mapping of an outgoing flow. The ingress entry is
 * claimed first with BPF_NOEXIST, which makes the port choice atomic across
 * CPUs; when another CPU created the egress entry of the same flow meanwhile,
 * its mapping wins and the claim is released.
 */
static __always_inline struct nat_entry *nat_mapping(struct __sk_buff *skb,
						     const struct node_settings *cfg, struct pkt *p,
						     struct l4_ports *l4, int *reason)
{
	struct nat_key out_key = {
		.saddr = p->ip->saddr,
		.daddr = p->ip->daddr,
		.sport = l4->sport,
		.dport = l4->dport,
		.proto = p->ip->protocol,
		.dir = NAT_DIR_EGRESS,
	};
	struct nat_key in_key = {
		.saddr = p->ip->daddr,
		.daddr = cfg->node_ip,
		.proto = p->ip->protocol,
		.dir = NAT_DIR_INGRESS,
	};
	__u8 proto = p->ip->protocol;
	struct nat_entry in_val = {}, out_val = {};
	struct nat_entry *entry;
	__u64 now = bpf_ktime_get_ns();
	__be16 port = 0;
	__u32 i;
	long err;
	int claimed = 0;

	entry = bpf_map_lookup_elem(&nat_table, &out_key);
	if (entry)
		return entry;
	if (!l4->starts_flow) {
		*reason = 0;
		return NULL;
	}

	in_val.addr = out_key.saddr;
	in_val.port = out_key.sport;
	in_val.created = now;
	in_val.last_seen = now;
	/* ICMP replies carry the identifier as the ingress key's destination port. */
	in_key.sport = proto == IPPROTO_ICMP ? 0 : out_key.dport;

	for (i = 0; i < NAT_PORT_TRIES; i++) {
		port = pick_port(cfg, i, out_key.sport);
		if (host_port_in_use(skb, proto, cfg->node_ip, out_key.daddr, out_key.dport, port))
			continue;
		in_key.dport = port;
		err = bpf_map_update_elem(&nat_table, &in_key, &in_val, BPF_NOEXIST);
		if (err == 0) {
			claimed = 1;
			break;
		}
		/* A full table rejects every port, so the drop counts as table full. */
		if (err == -E2BIG) {
			*reason = REASON_DROP_NAT_TABLE_FULL;
			return NULL;
		}
	}
	if (!claimed) {
		*reason = REASON_DROP_NAT_NO_PORT;
		return NULL;
	}

	out_val.addr = cfg->node_ip;
	out_val.port = port;
	out_val.created = now;
	out_val.last_seen = now;
	if (bpf_map_update_elem(&nat_table, &out_key, &out_val, BPF_NOEXIST) != 0) {
		bpf_map_delete_elem(&nat_table, &in_key);
		entry = bpf_map_lookup_elem(&nat_table, &out_key);
		if (!entry)
			*reason = REASON_DROP_NAT_TABLE_FULL;
		return entry;
	}
	return bpf_map_lookup_elem(&nat_table, &out_key);
}

/*
 * Rewrite one address and one port (or ICMP identifier) and fix the IP and L4
 * checksums incrementally. The checksum helpers handle CHECKSUM_PARTIAL
 * packets, whose L4 checksum field holds only the pseudo-header sum.
 */
static __always_inline int rewrite_addr_port(struct __sk_buff *skb, struct l4_ports *l4,
					     __u32 addr_off, __be32 old_addr, __be32 new_addr,
					     __u32 port_off, __be16 old_port, __be16 new_port,
					     int is_icmp)
{
	if (!is_icmp) {
		if (bpf_l4_csum_replace(skb, l4->csum_off, old_addr, new_addr,
					l4->csum_flags | sizeof(new_addr)) < 0)
			return -1;
	}
	if (old_port != new_port) {
		if (bpf_l4_csum_replace(skb, l4->csum_off, old_port, new_port,
					(l4->csum_flags & BPF_F_MARK_MANGLED_0) | sizeof(new_port)) < 0)
			return -1;
		if (bpf_skb_store_bytes(skb, port_off, &new_port, sizeof(new_port), 0) < 0)
			return -1;
	}
	if (bpf_l3_csum_replace(skb, IP_CSUM_OFF, old_addr, new_addr, sizeof(new_addr)) < 0)
		return -1;
	return bpf_skb_store_bytes(skb, addr_off, &new_addr, sizeof(new_addr), 0);
}

static __always_inline void nat_touch(struct nat_entry *entry, __u8 tcp_flags)
{
	entry->last_seen = bpf_ktime_get_ns();
	if (tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST | TCP_FLAG_SYN))
		entry->tcp_flags |= tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST | TCP_FLAG_SYN);
}

/*
 * Masquerade a packet leaving through the uplink. Returns TC_ACT_OK, or
 * TC_ACT_SHOT when no mapping could be made.
 */
static __always_inline int snat_egress(struct __sk_buff *skb, const struct node_settings *cfg)
{
	struct l4_ports l4 = {};
	struct nat_entry *entry;
	struct pkt p;
	__be32 old_addr;
	int reason = 0;

	if (parse_ipv4(skb, &p) < 0)
		return TC_ACT_OK;
	if (!should_masquerade(cfg, p.ip))
		return TC_ACT_OK;
	if (read_ports(skb, &p, &l4, 1) < 0)
		return TC_ACT_OK;

	old_addr = p.ip->saddr;
	entry = nat_mapping(skb, cfg, &p, &l4, &reason);
	if (!entry) {
		if (reason)
			return drop(skb, reason);
		return TC_ACT_OK;
	}
	nat_touch(entry, l4.tcp_flags);

	if (rewrite_addr_port(skb, &l4, IP_SRC_OFF, old_addr, entry->addr, l4.sport_off, l4.sport,
			      entry->port, p.ip->protocol == IPPROTO_ICMP) < 0)
		return drop(skb, REASON_DROP_MALFORMED);
	count(skb, REASON_SNAT);
	return TC_ACT_OK;
}

/*
 * Translate a reply to a masqueraded flow back to the pod. Returns 1 when the
 * packet was translated, 0 when it belongs to no mapping, -1 on failure.
 */
static __always_inline int snat_reverse(struct __sk_buff *skb, const struct node_settings *cfg)
{
	struct l4_ports l4 = {};
	struct nat_entry *entry;
	struct nat_key key = {};
	struct pkt p;
	__u8 proto;

	if (parse_ipv4(skb, &p) < 0)
		return 0;
	if (p.ip->daddr != cfg->node_ip)
		return 0;
	if (read_ports(skb, &p, &l4, 0) < 0)
		return 0;

	proto = p.ip->protocol;
	key.saddr = p.ip->saddr;
	key.daddr = p.ip->daddr;
	key.sport = l4.sport;
	key.dport = l4.dport;
	key.proto = proto;
	key.dir = NAT_DIR_INGRESS;
	entry = bpf_map_lookup_elem(&nat_table, &key);
	if (!entry)
		return 0;
	nat_touch(entry, l4.tcp_flags);

	if (rewrite_addr_port(skb, &l4, IP_DST_OFF, key.daddr, entry->addr, l4.dport_off, l4.dport,
			      entry->port, proto == IPPROTO_ICMP) < 0)
		return -1;
	count(skb, REASON_REV_SNAT);
	return 1;
}

#endif /* FERRY_NAT_H */
