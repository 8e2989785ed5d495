/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Map layouts and constants shared by ferry's TC programs and mirrored in pkg/datapath. */
#ifndef FERRY_H
#define FERRY_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define FERRY_MAX_ENDPOINTS 65536
#define FERRY_MAX_NODE_ROUTES 16384
/* Room for every node IP of a cluster of FERRY_MAX_NODE_ROUTES nodes, which ferryd excludes,
 * and 4096 configured exclusions. The trie allocates entries as they are added. */
#define FERRY_MAX_EXCLUSIONS (FERRY_MAX_NODE_ROUTES + 4096)
#define FERRY_NAT_DEFAULT_ENTRIES 524288 /* two entries per flow: 256k flows */

/* node_config.flags */
#define FERRY_F_MASQUERADE (1U << 0)
/* Attach modes, read by the CNI plugin and ferryctl and not by BPF: pod programs, then
 * uplink programs, as cls_bpf filters on a clsact qdisc (flag set) or as tcx links. */
#define FERRY_F_POD_CLSACT (1U << 1)
#define FERRY_F_UPLINK_CLSACT (1U << 2)

/* Key of the LPM trie maps: prefixlen counts the leading bits of addr that match. */
struct lpm_v4_key {
	__u32 prefixlen;
	__be32 addr;
};

/* Value of node_routes: the node that owns a pod range. */
struct node_route {
	__be32 node_ip;
	__u32 flags;
};

/* Value of masq_exclude: destinations that are never masqueraded. */
struct masq_exclusion {
	__u32 flags;
};

struct endpoint_key {
	__be32 addr;
};

/* Value of endpoints: a pod on this node, reached through the host side of its veth. */
struct endpoint {
	__u32 ifindex;    /* host-side veth */
	__u8 pod_mac[6];  /* the pod's eth0 */
	__u8 host_mac[6]; /* the host-side veth, the pod's gateway MAC */
};

/* The single value of node_config: this node's settings, written by ferryd. */
struct node_settings {
	__be32 node_ip;
	__be32 pod_net;     /* this node's pod range: network address */
	__be32 pod_mask;    /* and netmask */
	__u32 uplink_ifindex;
	__u32 flags;        /* FERRY_F_* */
	__u16 nat_port_min; /* host byte order, inclusive */
	__u16 nat_port_max;
};

enum nat_dir {
	NAT_DIR_EGRESS = 0,  /* pod address and port to node address and port */
	NAT_DIR_INGRESS = 1, /* node address and port back to the pod's */
};

/*
 * Key of nat_table. For ICMP echo the identifier is sport in the egress
 * direction and dport in the ingress direction; the other port is zero.
 */
struct nat_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 dir; /* enum nat_dir */
	__u16 pad;
};

/* Value of nat_table: the address and port that replace the key's own. */
struct nat_entry {
	__be32 addr;
	__be16 port;
	__u8 tcp_flags; /* TCP flags seen in this direction, OR'ed */
	__u8 pad;
	__u64 created;   /* bpf_ktime_get_ns at creation */
	__u64 last_seen; /* bpf_ktime_get_ns of the last packet */
};

struct counter {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct lpm_v4_key);
	__type(value, struct node_route);
	__uint(max_entries, FERRY_MAX_NODE_ROUTES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} node_routes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct lpm_v4_key);
	__type(value, struct masq_exclusion);
	__uint(max_entries, FERRY_MAX_EXCLUSIONS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} masq_exclude SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct endpoint_key);
	__type(value, struct endpoint);
	__uint(max_entries, FERRY_MAX_ENDPOINTS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} endpoints SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct node_settings);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} node_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct nat_key);
	__type(value, struct nat_entry);
	__uint(max_entries, FERRY_NAT_DEFAULT_ENTRIES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nat_table SEC(".maps");

#endif /* FERRY_H */
