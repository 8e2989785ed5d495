//go:build tools

// Package tools pins module requirements that the code uses before it imports them.
package tools
import (
 _ "github.com/cilium/ebpf"
 _ "github.com/cilium/ebpf/cmd/bpf2go"
 _ "github.com/vishvananda/netlink"
 _ "github.com/containernetworking/cni/libcni"
 _ "github.com/containernetworking/cni/pkg/skel"
 _ "github.com/containernetworking/plugins/pkg/ns"
 _ "github.com/containernetworking/plugins/pkg/ipam"
 _ "github.com/google/gopacket"
 _ "go.yaml.in/yaml/v3"
 _ "golang.org/x/sys/unix"
)
