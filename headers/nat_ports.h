/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The ports (or ICMP echo identifier) that the masquerade translates, and their rewrite. */
#ifndef FERRY_NAT_PORTS_H
#define FERRY_NAT_PORTS_H

#include "counters.h"
#include "packet.h"

/* Offsets of the translated port (or ICMP identifier) and of the L4 checksum. */
struct l4_ports {
	__be16 sport;
	__be16 dport;
	__u32 sport_off; /* offset of the port that the egress direction rewrites */
	__u32 dport_off; /* offset of the port that the ingress direction rewrites */
	__u32 csum_off;
	__u64 csum_flags; /* BPF_F_PSEUDO_HDR and BPF_F_MARK_MANGLED_0 as the protocol needs */
	__u8 tcp_flags;
	__u8 starts_flow; /* the packet may create a mapping */
	__u8 is_icmp;
};

#define TCP_FLAGS_OFF 13
#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_RST 0x04
#define TCP_FLAG_ACK 0x10

#define ICMP_DEST_UNREACH 3
#define ICMP_TIME_EXCEEDED 11
#define ICMP_PARAMETERPROB 12

/* Report whether the packet is a fragment other than the first, which carries no L4 header. */
static __always_inline int is_later_fragment(const struct iphdr *ip)
{
	return (ip->frag_off & bpf_htons(IP_OFFSET_MASK)) != 0;
}

static __always_inline int is_first_fragment(const struct iphdr *ip)
{
	return (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET_MASK)) == bpf_htons(IP_MF);
}

static __always_inline int is_icmp_error(__u8 type)
{
	return type == ICMP_DEST_UNREACH || type == ICMP_TIME_EXCEEDED ||
	       type == ICMP_PARAMETERPROB;
}

/*
 * Read the ports of a TCP or UDP packet, or the identifier of an ICMP echo
 * request (egress) or reply (ingress). A first fragment has its L4 header and
 * counts as a packet; later fragments have none. Returns 0, or -1 for
 * anything the table does not translate.
 */
static __always_inline int read_ports(struct __sk_buff *skb, struct pkt *p, struct l4_ports *l4,
				      int egress)
{
	__u32 off = p->l4_off;

	if (is_later_fragment(p->ip))
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
		l4->is_icmp = 0;
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
		l4->is_icmp = 0;
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
		l4->is_icmp = 1;
		return 0;
	}
	default:
		return -1;
	}
}

/*
 * Rewrite one address and one port (or ICMP identifier) and fix the IP and L4
 * checksums incrementally. Unchanged values are not written. The checksum
 * helpers handle CHECKSUM_PARTIAL packets, whose L4 checksum field holds only
 * the pseudo-header sum: they update it for the address and leave it alone
 * for the port, which the final checksum covers as data.
 */
static __always_inline int rewrite_addr_port(struct __sk_buff *skb, struct l4_ports *l4,
					     __u32 addr_off, __be32 old_addr, __be32 new_addr,
					     __u32 port_off, __be16 old_port, __be16 new_port)
{
	if (old_addr != new_addr && !l4->is_icmp) {
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
	if (old_addr == new_addr)
		return 0;
	if (bpf_l3_csum_replace(skb, IP_CSUM_OFF, old_addr, new_addr, sizeof(new_addr)) < 0)
		return -1;
	return bpf_skb_store_bytes(skb, addr_off, &new_addr, sizeof(new_addr), 0);
}

/* Rewrite only the source or destination address, as for a fragment without L4 header. */
static __always_inline int rewrite_addr(struct __sk_buff *skb, __u32 addr_off, __be32 old_addr,
					__be32 new_addr)
{
	if (old_addr == new_addr)
		return 0;
	if (bpf_l3_csum_replace(skb, IP_CSUM_OFF, old_addr, new_addr, sizeof(new_addr)) < 0)
		return -1;
	return bpf_skb_store_bytes(skb, addr_off, &new_addr, sizeof(new_addr), 0);
}

#endif /* FERRY_NAT_PORTS_H */
