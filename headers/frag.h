/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Fragments of masqueraded datagrams. Only the first fragment carries the
 * ports that select a NAT mapping, so the translation of a first fragment
 * is remembered under the datagram's identity (addresses, protocol and IP
 * ID), and later fragments of the same datagram get the same address.
 */
#ifndef FERRY_FRAG_H
#define FERRY_FRAG_H

#include "ferry.h"
#include "nat_ports.h"

/* Datagrams in flight whose first fragment was translated; older ones are evicted. */
#define FERRY_FRAG_ENTRIES 8192

struct frag_key {
	__be32 saddr;
	__be32 daddr;
	__be16 id;
	__u8 proto;
	__u8 dir; /* enum nat_dir */
};

/* Value of frag_table: the address that replaces the key's source (egress) or destination. */
struct frag_entry {
	__be32 addr;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct frag_key);
	__type(value, struct frag_entry);
	__uint(max_entries, FERRY_FRAG_ENTRIES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} frag_table SEC(".maps");

static __always_inline void frag_key_of(struct frag_key *key, const struct iphdr *ip,
					enum nat_dir dir)
{
	key->saddr = ip->saddr;
	key->daddr = ip->daddr;
	key->id = ip->id;
	key->proto = ip->protocol;
	key->dir = dir;
}

/*
 * Remember the address that the first fragment described by key got. The
 * key contains the fragment's header as it was before the translation, which
 * is how the later fragments arrive.
 */
static __always_inline void frag_remember(const struct frag_key *key, __be32 addr)
{
	struct frag_entry entry = { .addr = addr };

	bpf_map_update_elem(&frag_table, key, &entry, BPF_ANY);
}

/*
 * Translate a fragment other than the first with what its first fragment
 * got. Returns 1 when translated, 0 when the datagram is unknown, -1 when
 * rewriting failed.
 */
static __always_inline int frag_translate(struct __sk_buff *skb, struct pkt *p, enum nat_dir dir)
{
	struct frag_entry *entry;
	struct frag_key key = {};
	__be32 old_addr;
	__u32 addr_off;

	frag_key_of(&key, p->ip, dir);
	entry = bpf_map_lookup_elem(&frag_table, &key);
	if (!entry)
		return 0;
	old_addr = dir == NAT_DIR_EGRESS ? key.saddr : key.daddr;
	addr_off = dir == NAT_DIR_EGRESS ? IP_SRC_OFF : IP_DST_OFF;
	if (rewrite_addr(skb, addr_off, old_addr, entry->addr) < 0)
		return -1;
	return 1;
}

#endif /* FERRY_FRAG_H */
