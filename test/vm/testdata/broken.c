// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//go:build ignore

/*
 * A TC program that every verifier rejects: it reads the UDP header at an
 * offset taken from the packet's IHL field without checking it against
 * data_end. Only TestBrokenProgramLoads loads it, when 'make test-vm
 * VM_BROKEN=1' shows how a rejected program fails the VM run.
 */

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

char __license[] SEC("license") = "Dual BSD/GPL";

SEC("tc")
int drop_dns_unchecked(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + sizeof(struct ethhdr);
	struct udphdr *udp;

	if ((void *)(ip + 1) > data_end)
		return TC_ACT_OK;
	if (ip->protocol != IPPROTO_UDP)
		return TC_ACT_OK;
	/* The defect: no check that the UDP header ends before data_end. */
	udp = (void *)ip + ip->ihl * 4;
	return udp->dest == bpf_htons(53) ? TC_ACT_SHOT : TC_ACT_OK;
}
