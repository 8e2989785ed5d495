package datapath

// Reason indexes the counters map, as enum ferry_reason in headers/counters.h.
type Reason uint32

// Reasons counted by the programs. Values at or above ReasonDropSpoofIP are drops.
const (
	ReasonFwdLocal          Reason = 0
	ReasonFwdRemote         Reason = 1
	ReasonToStack           Reason = 2
	ReasonARPReply          Reason = 3
	ReasonSNAT              Reason = 4
	ReasonRevSNAT           Reason = 5
	ReasonCTStack           Reason = 6
	ReasonRevSNATICMPError  Reason = 7
	ReasonSNATICMPError     Reason = 8
	ReasonSNATNodePort      Reason = 9
	ReasonNATPortRetry      Reason = 10
	ReasonSNATFragment      Reason = 11
	ReasonRevSNATFragment   Reason = 12
	ReasonDropSpoofIP       Reason = 16
	ReasonDropSpoofMAC      Reason = 17
	ReasonDropMalformed     Reason = 18
	ReasonDropUnsupportedL3 Reason = 19
	ReasonDropFIB           Reason = 20
	ReasonDropNATNoPort     Reason = 21
	ReasonDropNATTableFull  Reason = 22
	ReasonDropNoConfig      Reason = 23
	ReasonDropFragUntracked Reason = 24
	reasonMax               Reason = 32
	firstDropReason                = ReasonDropSpoofIP
)

var reasonNames = map[Reason]string{
	ReasonFwdLocal:          "forward-local",
	ReasonFwdRemote:         "forward-remote",
	ReasonToStack:           "to-stack",
	ReasonARPReply:          "arp-reply",
	ReasonSNAT:              "snat",
	ReasonRevSNAT:           "rev-snat",
	ReasonCTStack:           "kernel-nat-to-stack",
	ReasonRevSNATICMPError:  "rev-snat-icmp-error",
	ReasonSNATICMPError:     "snat-icmp-error",
	ReasonSNATNodePort:      "snat-node-port",
	ReasonNATPortRetry:      "nat-port-retry",
	ReasonSNATFragment:      "snat-fragment",
	ReasonRevSNATFragment:   "rev-snat-fragment",
	ReasonDropSpoofIP:       "drop-spoofed-ip",
	ReasonDropSpoofMAC:      "drop-spoofed-mac",
	ReasonDropMalformed:     "drop-malformed",
	ReasonDropUnsupportedL3: "drop-unsupported-l3",
	ReasonDropFIB:           "drop-fib-lookup",
	ReasonDropNATNoPort:     "drop-nat-no-port",
	ReasonDropNATTableFull:  "drop-nat-table-full",
	ReasonDropNoConfig:      "drop-no-config",
	ReasonDropFragUntracked: "drop-frag-untracked",
}

// String returns the reason's name as ferryctl and metrics show it.
func (r Reason) String() string {
	if name, ok := reasonNames[r]; ok {
		return name
	}
	return "unknown"
}

// IsDrop reports whether the reason counts dropped packets.
func (r Reason) IsDrop() bool { return r >= firstDropReason }

// Hook is a TC hook that counts packets, as enum ferry_hook in headers/counters.h.
type Hook uint32

// Hooks of ferry's programs. HookAll marks counters summed over the hooks.
const (
	HookFromPod       Hook = 0
	HookUplinkIngress Hook = 1
	HookUplinkEgress  Hook = 2
	hookMax           Hook = 3
	HookAll           Hook = 255
)

// String returns the hook's name as metrics label it.
func (h Hook) String() string {
	switch h {
	case HookFromPod:
		return "from-pod"
	case HookUplinkIngress:
		return "uplink-ingress"
	case HookUplinkEgress:
		return "uplink-egress"
	case HookAll:
		return "all"
	default:
		return "unknown"
	}
}
