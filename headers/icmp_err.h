/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * ICMP errors (destination unreachable, time exceeded, parameter problem)
 * about masqueraded flows. The error quotes the packet that caused it, so
 * the quoted IP header and ports are translated along with the error's own
 * address, and every checksum that covers a changed byte is updated.
 */
#ifndef FERRY_ICMP_ERR_H
#define FERRY_ICMP_ERR_H

#include "nat_csum.h"
#include "nat_map.h"

/* The ICMP header before the quoted packet: type, code, checksum and four more bytes. */
#define ICMP_ERR_HLEN 8
#define ICMP_CSUM_OFF 2

/* The start of a TCP, UDP or ICMP header quoted in an ICMP error; 8 bytes are enough. */
union quoted_l4 {
	struct {
		__be16 sport;
		__be16 dport;
		__be16 word2;
		__be16 word3;
	} ports;
	struct icmp_echo echo;
};

/* Offsets of the fields of an ICMP error that the translation changes. */
struct icmp_err_layout {
	__u32 outer_addr_off; /* destination (ingress) or source (egress) of the error */
	__u32 icmp_csum_off;
	__u32 inner_ip_off;
	__u32 inner_addr_off; /* quoted source (ingress) or destination (egress) */
	__u32 inner_port_off; /* quoted source port or identifier (ingress), or destination port */
	__u32 inner_csum_off; /* quoted L4 checksum; zero when the quote ends before it */
};

/*
 * Find the mapping that an ICMP error is about. An error arriving at the
 * node quotes a packet that the node sent, so its quoted source is the
 * node's end of the flow. An error that leaves quotes a packet that came
 * in, whose destination is the pod's (or the node's) end. Returns the entry
 * and fills the layout and the old values, or returns NULL.
 */
static __always_inline struct nat_entry *icmp_err_lookup(struct __sk_buff *skb, struct pkt *p,
							 enum nat_dir dir,
							 struct icmp_err_layout *lay,
							 struct iphdr *inner,
							 union quoted_l4 *q, __u32 *quoted)
{
	struct nat_key key = {};
	__u32 end, inner_l4_off, inner_ihl;

	if (is_first_fragment(p->ip) || is_later_fragment(p->ip))
		return NULL;
	/* Ethernet padding is not part of the quote: the outer IP length ends it. */
	end = ETH_HLEN + bpf_ntohs(p->ip->tot_len);
	if (end > skb->len)
		end = skb->len;

	lay->icmp_csum_off = p->l4_off + ICMP_CSUM_OFF;
	lay->inner_ip_off = p->l4_off + ICMP_ERR_HLEN;
	if (lay->inner_ip_off > ETH_HLEN + 60 + ICMP_ERR_HLEN)
		return NULL;
	if (bpf_skb_load_bytes(skb, lay->inner_ip_off, inner, sizeof(*inner)) < 0)
		return NULL;
	inner_ihl = inner->ihl * 4;
	if (inner->version != 4 || inner_ihl < sizeof(*inner))
		return NULL;
	/* Only a packet with its L4 header has ports, so a quoted later fragment has none. */
	if (inner->frag_off & bpf_htons(IP_OFFSET_MASK))
		return NULL;
	inner_l4_off = lay->inner_ip_off + inner_ihl;
	if (inner_l4_off + 4 > end)
		return NULL;
	*quoted = end - inner_l4_off;
	/* Load what the quote has of the first 8 bytes: 4, 6 or all 8. */
	if (*quoted >= sizeof(*q)) {
		if (bpf_skb_load_bytes(skb, inner_l4_off, q, sizeof(*q)) < 0)
			return NULL;
	} else if (*quoted >= 6) {
		if (bpf_skb_load_bytes(skb, inner_l4_off, q, 6) < 0)
			return NULL;
	} else {
		if (bpf_skb_load_bytes(skb, inner_l4_off, q, 4) < 0)
			return NULL;
	}

	key.proto = inner->protocol;
	key.dir = dir;
	/* The key of the flow's reply (ingress) or of its original direction (egress). */
	key.saddr = inner->daddr;
	key.daddr = inner->saddr;
	lay->outer_addr_off = dir == NAT_DIR_INGRESS ? IP_DST_OFF : IP_SRC_OFF;
	lay->inner_addr_off = lay->inner_ip_off +
			      (dir == NAT_DIR_INGRESS ? __builtin_offsetof(struct iphdr, saddr) :
							__builtin_offsetof(struct iphdr, daddr));
	lay->inner_csum_off = 0;

	switch (inner->protocol) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
		key.sport = q->ports.dport;
		key.dport = q->ports.sport;
		lay->inner_port_off = inner_l4_off + (dir == NAT_DIR_INGRESS ? 0 : 2);
		if (inner->protocol == IPPROTO_UDP && *quoted >= 8)
			lay->inner_csum_off = inner_l4_off + 6;
		if (inner->protocol == IPPROTO_TCP && *quoted >= 18)
			lay->inner_csum_off = inner_l4_off + 16;
		break;
	case IPPROTO_ICMP:
		if (*quoted < 6)
			return NULL;
		/* The node sent an echo request (ingress) or the pod got an echo reply (egress). */
		if (q->echo.type != (dir == NAT_DIR_INGRESS ? ICMP_ECHO : ICMP_ECHOREPLY))
			return NULL;
		key.sport = dir == NAT_DIR_INGRESS ? 0 : q->echo.id;
		key.dport = dir == NAT_DIR_INGRESS ? q->echo.id : 0;
		lay->inner_port_off = inner_l4_off + __builtin_offsetof(struct icmp_echo, id);
		lay->inner_csum_off = inner_l4_off + ICMP_CSUM_OFF;
		break;
	default:
		return NULL;
	}
	return bpf_map_lookup_elem(&nat_table, &key);
}

/* Store a 16-bit word inside the ICMP message and fix the ICMP checksum for it. */
static __always_inline int icmp_err_store16(struct __sk_buff *skb, __u32 csum_off, __u32 off,
					    __u16 from, __u16 to)
{
	if (from == to)
		return 0;
	if (bpf_l4_csum_replace(skb, csum_off, from, to, sizeof(to)) < 0)
		return -1;
	return bpf_skb_store_bytes(skb, off, &to, sizeof(to), 0);
}

/*
 * Translate an ICMP error about a masqueraded flow: the error's own address
 * and the quoted address and port go from the node's end to the pod's
 * (ingress) or back (egress). The quoted IP checksum is updated, and so is
 * the quoted L4 checksum when the quote reaches it; the ICMP checksum follows
 * every changed word. Returns 1 when translated, 0 when the error is about
 * no mapping or too short to tell, -1 when rewriting failed.
 */
static __always_inline int icmp_err_translate(struct __sk_buff *skb, struct pkt *p,
					      enum nat_dir dir)
{
	struct icmp_err_layout lay = {};
	union quoted_l4 q = {};
	struct nat_entry *entry;
	struct iphdr inner;
	__be32 old_outer, new_addr, old_inner_addr;
	__be16 new_port, old_port;
	__u16 old_csum, new_csum, old_ipsum, new_ipsum;
	__u32 quoted = 0;
	__u8 proto;

	entry = icmp_err_lookup(skb, p, dir, &lay, &inner, &q, &quoted);
	if (!entry)
		return 0;
	new_addr = entry->addr;
	new_port = entry->port;
	proto = inner.protocol;
	old_outer = dir == NAT_DIR_INGRESS ? p->ip->daddr : p->ip->saddr;
	old_inner_addr = dir == NAT_DIR_INGRESS ? inner.saddr : inner.daddr;
	if (proto == IPPROTO_ICMP)
		old_port = q.echo.id;
	else
		old_port = dir == NAT_DIR_INGRESS ? q.ports.sport : q.ports.dport;

	/* The quoted L4 checksum; TCP and UDP ones cover the address through the pseudo-header. */
	if (lay.inner_csum_off) {
		if (proto == IPPROTO_TCP) {
			if (bpf_skb_load_bytes(skb, lay.inner_csum_off, &old_csum, 2) < 0)
				return -1;
		} else if (proto == IPPROTO_UDP) {
			old_csum = q.ports.word3;
		} else {
			old_csum = q.echo.checksum;
		}
		new_csum = csum_update16(old_csum, old_port, new_port);
		if (proto != IPPROTO_ICMP)
			new_csum = csum_update32(new_csum, old_inner_addr, new_addr);
		/* A zero UDP checksum means none, and a computed zero is sent as 0xffff. */
		if (proto == IPPROTO_UDP && old_csum == 0)
			new_csum = 0;
		else if (proto == IPPROTO_UDP && new_csum == 0)
			new_csum = 0xffff;
		if (icmp_err_store16(skb, lay.icmp_csum_off, lay.inner_csum_off, old_csum,
				     new_csum) < 0)
			return -1;
	}

	if (icmp_err_store16(skb, lay.icmp_csum_off, lay.inner_port_off, old_port, new_port) < 0)
		return -1;

	old_ipsum = inner.check;
	new_ipsum = csum_update32(old_ipsum, old_inner_addr, new_addr);
	if (icmp_err_store16(skb, lay.icmp_csum_off,
			     lay.inner_ip_off + __builtin_offsetof(struct iphdr, check), old_ipsum,
			     new_ipsum) < 0)
		return -1;

	if (old_inner_addr != new_addr) {
		if (bpf_l4_csum_replace(skb, lay.icmp_csum_off, old_inner_addr, new_addr,
					sizeof(new_addr)) < 0)
			return -1;
		if (bpf_skb_store_bytes(skb, lay.inner_addr_off, &new_addr, sizeof(new_addr), 0) < 0)
			return -1;
	}
	if (rewrite_addr(skb, lay.outer_addr_off, old_outer, new_addr) < 0)
		return -1;
	return 1;
}

#endif /* FERRY_ICMP_ERR_H */
