/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* NAT mappings: lookup, port allocation and the pair of entries of each flow. */
#ifndef FERRY_NAT_MAP_H
#define FERRY_NAT_MAP_H

#include <linux/errno.h>
#include "counters.h"
#include "nat_ports.h"

#define NAT_PORT_TRIES 32

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

	/* The TCP lookup finds connections in any state and listening sockets. */
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

/*
 * Pick the port of a try. The first try keeps the original port, which TCP
 * and UDP never send as zero but an ICMP echo identifier may be.
 */
static __always_inline __be16 pick_port(const struct node_settings *cfg, __u32 try,
					__be16 original, int is_icmp)
{
	__u32 span = (__u32)cfg->nat_port_max - cfg->nat_port_min + 1;

	if (try == 0 && (original != 0 || is_icmp))
		return original;
	return bpf_htons(cfg->nat_port_min + bpf_get_prandom_u32() % span);
}

static __always_inline void nat_egress_key(struct nat_key *key, const struct iphdr *ip,
					   const struct l4_ports *l4)
{
	key->saddr = ip->saddr;
	key->daddr = ip->daddr;
	key->sport = l4->sport;
	key->dport = l4->dport;
	key->proto = ip->protocol;
	key->dir = NAT_DIR_EGRESS;
	key->pad = 0;
}

/*
 * Fill the ingress key of a flow from its egress key and the node's end.
 * ICMP echo replies carry the identifier as the ingress key's destination port.
 */
static __always_inline void nat_ingress_key(struct nat_key *in, const struct nat_key *out,
					    __be32 node_ip, __be16 node_port)
{
	in->saddr = out->daddr;
	in->daddr = node_ip;
	in->sport = out->proto == IPPROTO_ICMP ? 0 : out->dport;
	in->dport = node_port;
	in->proto = out->proto;
	in->dir = NAT_DIR_INGRESS;
	in->pad = 0;
}

/*
 * Create the mapping of a new flow whose egress key is out_key. The ingress
 * entry is claimed first with BPF_NOEXIST, which makes the port choice
 * atomic across CPUs. When another CPU created the egress entry of the same
 * flow meanwhile, its mapping wins and the claim is released, so a flow
 * never has two mappings. On failure *reason names the drop.
 */
static __always_inline struct nat_entry *nat_create(struct __sk_buff *skb,
						    const struct node_settings *cfg,
						    const struct nat_key *out_key, int is_icmp,
						    int *reason)
{
	struct nat_entry in_val = {}, out_val = {};
	struct nat_key in_key = {};
	struct nat_entry *entry;
	__u64 now = bpf_ktime_get_ns();
	__be16 port = 0;
	__u32 i;
	/*
	 * int, not long: on Debian 12's 6.1 kernel a failed update comes back as a
	 * 32-bit error zero-extended to 64 bits, which a long never compares equal to -E2BIG.
	 */
	int err;
	int claimed = 0;

	in_val.addr = out_key->saddr;
	in_val.port = out_key->sport;
	in_val.created = now;
	in_val.last_seen = now;

	for (i = 0; i < NAT_PORT_TRIES; i++) {
		if (i > 0)
			count(skb, REASON_NAT_PORT_RETRY);
		port = pick_port(cfg, i, out_key->sport, is_icmp);
		if (host_port_in_use(skb, out_key->proto, cfg->node_ip, out_key->daddr,
				     out_key->dport, port))
			continue;
		nat_ingress_key(&in_key, out_key, cfg->node_ip, port);
		err = bpf_map_update_elem(&nat_table, &in_key, &in_val, BPF_NOEXIST);
		if (err == 0) {
			claimed = 1;
			break;
		}
		/* A full table rejects every port, so the drop counts as table full. */
		if (err == -E2BIG || err == -ENOMEM) {
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
	if (bpf_map_update_elem(&nat_table, out_key, &out_val, BPF_NOEXIST) != 0) {
		bpf_map_delete_elem(&nat_table, &in_key);
		entry = bpf_map_lookup_elem(&nat_table, out_key);
		if (!entry)
			*reason = REASON_DROP_NAT_TABLE_FULL;
		return entry;
	}
	return bpf_map_lookup_elem(&nat_table, out_key);
}

/*
 * Record the use of an entry: its time, and the TCP flags that decide the
 * flow's timeout in ferryd. A bare SYN on the egress entry of a flow that
 * was closed or reset starts a new connection on the same tuple, so the
 * flags of both entries start over.
 */
static __always_inline void nat_touch(struct nat_entry *entry, __u8 tcp_flags)
{
	__u8 seen = tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST | TCP_FLAG_SYN);

	entry->last_seen = bpf_ktime_get_ns();
	if (seen && (entry->tcp_flags & seen) != seen)
		entry->tcp_flags |= seen;
}

static __always_inline void nat_restart_tcp(const struct nat_key *out_key,
					    struct nat_entry *out, __u8 tcp_flags)
{
	struct nat_key in_key = {};
	struct nat_entry *in;

	if ((tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) != TCP_FLAG_SYN)
		return;
	if (!(out->tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST)))
		return;
	out->tcp_flags = TCP_FLAG_SYN;
	nat_ingress_key(&in_key, out_key, out->addr, out->port);
	in = bpf_map_lookup_elem(&nat_table, &in_key);
	if (in)
		in->tcp_flags = 0;
}

#endif /* FERRY_NAT_MAP_H */
