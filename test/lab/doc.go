// Package lab builds a small cluster network out of network namespaces on one Linux host,
// so that the ferry dataplane and the hand-wired baseline it replaces can be tested end to end.
//
// Topology of one lab (every name carries the lab's random prefix, e.g. fl3a9c-vpc):
//
//	                        +--------------------- vpc ----------------------+
//	node ns "worker-0"      | br0 10.0.1.1/24 (+10.0.1.10, outside host)     |
//	  eth0 10.0.1.20 <------+-> n0                                           |
//	node ns "worker-1"      |                                                |
//	  eth0 10.0.1.21 <------+-> n1                                           |
//	node ns "worker-2"      | br1 10.0.2.1/24                                |
//	  eth0 10.0.2.20 <------+-> n2                                           |
//	                        | ext0 198.51.100.1/24 <-----> eth0 198.51.100.2 | ext ns
//	                        +------------------------------------------------+ 203.0.113.10
//
// The vpc namespace routes like a cloud VPC. It forwards between the subnets, sends no
// ICMP redirects and may contain "cloud routes" (pod CIDR via node IP). It does not count
// as a hop between two nodes of one subnet, because a mangle rule adds back the TTL that
// routing takes from packets that leave br0 through br0. The ext namespace is the
// internet. It has routes only to the node subnets, so pod traffic reaches it only after
// masquerading.
//
// Pods are named network namespaces that a CNI configuration list networks through libcni,
// with the node namespace as the host side, the way a container runtime on that node does.
//
// Every lab records its owner in StateRoot/<lab>/pid. New tears down labs whose owner has
// died, so a test killed with SIGKILL leaves nothing behind after the next run.
//
// Everything here needs root. Tests use NewTest, which skips when not root.
package lab
