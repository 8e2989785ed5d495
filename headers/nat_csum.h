/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Incremental updates of Internet checksums (RFC 1624) on values held in
 * registers, for checksum fields that the kernel's csum helpers must not
 * treat as the packet's own L3 or L4 checksum, such as those quoted inside
 * an ICMP error.
 *
 * All values are raw memory words: a __be16 or __be32 as loaded from the
 * packet. The ones' complement sum does not depend on byte order, so adding
 * the words as the CPU reads them gives the right checksum in packet order.
 */
#ifndef FERRY_NAT_CSUM_H
#define FERRY_NAT_CSUM_H

#include <linux/types.h>

static __always_inline __u16 csum_fold32(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)sum;
}

/* Return checksum updated for a 16-bit word changing from one value to another. */
static __always_inline __u16 csum_update16(__u16 check, __u16 from, __u16 to)
{
	__u32 sum = (__u16)~check;

	sum += (__u16)~from;
	sum += to;
	return (__u16)~csum_fold32(sum);
}

/* Return checksum updated for a 32-bit field changing from one value to another. */
static __always_inline __u16 csum_update32(__u16 check, __u32 from, __u32 to)
{
	check = csum_update16(check, (__u16)from, (__u16)to);
	return csum_update16(check, (__u16)(from >> 16), (__u16)(to >> 16));
}

#endif /* FERRY_NAT_CSUM_H */
