/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Header parsing and in-place rewrites of Ethernet and IPv4 headers. */
#ifndef FERRY_PACKET_H
#define FERRY_PACKET_H

#include <linux/tcp.h>
#include <linux/udp.h>
#include "ferry.h"

#define IP_OFF ETH_HLEN
#define IP_CSUM_OFF (IP_OFF + __builtin_offsetof(struct iphdr, check))
#define IP_SRC_OFF (IP_OFF + __builtin_offsetof(struct iphdr, saddr))
#define IP_DST_OFF (IP_OFF + __builtin_offsetof(struct iphdr, daddr))
#define IP_MF 0x2000
#define IP_OFFSET_MASK 0x1fff

/* The ICMP header of echo messages; linux/icmp.h pulls in libc headers. */
struct icmp_echo {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be16 id;
	__be16 sequence;
};

#define ICMP_ECHOREPLY 0
#define ICMP_ECHO 8

/*
 * Pointers into the packet, valid until the next helper that may change the
 * packet (csum and store helpers): parse again after those.
 */
struct pkt {
	struct ethhdr *eth;
	struct iphdr *ip;
	void *data_end;
	__u32 l4_off; /* offset of the L4 header from the start of the frame */
};

/* Parse the Ethernet header; returns 0 or a negative drop reason. */
static __always_inline int parse_eth(struct __sk_buff *skb, struct pkt *p)
{
	void *data = (void *)(long)skb->data;

	p->data_end = (void *)(long)skb->data_end;
	p->eth = data;
	if (data + ETH_HLEN > p->data_end)
		return -1;
	return 0;
}

/* Parse Ethernet and IPv4 headers of an IPv4 frame; returns 0 or -1 when malformed. */
static __always_inline int parse_ipv4(struct __sk_buff *skb, struct pkt *p)
{
	struct iphdr *ip;
	__u32 ihl_len;

	if (parse_eth(skb, p) < 0)
		return -1;
	ip = (void *)p->eth + ETH_HLEN;
	if ((void *)(ip + 1) > p->data_end)
		return -1;
	ihl_len = ip->ihl * 4;
	if (ip->version != 4 || ihl_len < sizeof(*ip))
		return -1;
	/* Reject a header whose IHL reaches past the end of the data. */
	if ((void *)ip + ihl_len > p->data_end)
		return -1;
	p->ip = ip;
	p->l4_off = ETH_HLEN + ihl_len;
	return 0;
}

static __always_inline int is_fragment(const struct iphdr *ip)
{
	return (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET_MASK)) != 0;
}

/* Return a pointer to len bytes at the L4 header, or NULL when the packet is shorter. */
static __always_inline void *l4_header(struct __sk_buff *skb, struct pkt *p, __u32 len)
{
	void *data = (void *)(long)skb->data;
	__u32 off = p->l4_off;

	/* Bounds the offset for the verifier: IPv4 headers end within 60 bytes. */
	if (off > ETH_HLEN + 60)
		return NULL;
	if (data + off + len > p->data_end)
		return NULL;
	return data + off;
}

/* Decrement the TTL and patch the header checksum incrementally (RFC 1624). */
static __always_inline void ip_decrease_ttl(struct iphdr *ip)
{
	__u32 sum = ip->check;

	sum += bpf_htons(0x0100);
	ip->check = (__sum16)(sum + (sum >= 0xffff));
	ip->ttl--;
}

static __always_inline void set_macs(struct ethhdr *eth, const __u8 *src, const __u8 *dst)
{
	__builtin_memcpy(eth->h_source, src, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, dst, ETH_ALEN);
}

static __always_inline int mac_equal(const __u8 *a, const __u8 *b)
{
	return __builtin_memcmp(a, b, ETH_ALEN) == 0;
}

static __always_inline struct node_settings *load_config(void)
{
	__u32 zero = 0;
	struct node_settings *cfg = bpf_map_lookup_elem(&node_config, &zero);

	if (!cfg || cfg->node_ip == 0)
		return NULL;
	return cfg;
}

static __always_inline struct endpoint *lookup_endpoint(__be32 addr)
{
	struct endpoint_key key = { .addr = addr };

	return bpf_map_lookup_elem(&endpoints, &key);
}

#endif /* FERRY_PACKET_H */
