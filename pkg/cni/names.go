package cni

import (
	"crypto/sha256"
	"encoding/hex"
	"regexp"
	"strings"
)

// hostVethPrefix starts the name of every host-side veth that the plugin creates.
const hostVethPrefix = "fy"

// hostVethHexDigits is how many hex digits of the hash follow the prefix: 2 + 11 characters
// stay within the kernel's 15-character limit on interface names.
const hostVethHexDigits = 11

var hostVethPattern = regexp.MustCompile(`^` + hostVethPrefix + `[0-9a-f]{11}$`)

// HostVethName returns the name of the host side of the veth pair of a container's
// interface: "fy" and the first 11 hex digits of sha256(containerID + "/" + ifName). The name
// is stable, so DEL and CHECK find the interface without state, and a repeated ADD for the
// same container and interface finds its name taken.
func HostVethName(containerID, ifName string) string {
	sum := sha256.Sum256([]byte(containerID + "/" + ifName))
	return hostVethPrefix + hex.EncodeToString(sum[:])[:hostVethHexDigits]
}

// isHostVethName reports whether name has the form that HostVethName returns.
func isHostVethName(name string) bool { return hostVethPattern.MatchString(name) }

// attachment is a CNI attachment: a container and the name of its interface in it.
type attachment struct {
	containerID string
	ifName      string
}

// aliasPrefix starts the alias of every host veth that the plugin creates.
const aliasPrefix = "ferry:"

// maxAliasLen is the longest interface alias that the kernel stores (IFALIASZ - 1).
const maxAliasLen = 255

// attachmentAlias returns the alias of an attachment's host veth,
// "ferry:<network>:<container ID>:<interface>", which GC reads to release the address of a
// stale attachment. It returns false when the alias does not fit or a part contains ':'.
// CNI allows neither in network names and container IDs, and Linux none in interface names.
func attachmentAlias(network string, a attachment) (string, bool) {
	parts := []string{network, a.containerID, a.ifName}
	for _, p := range parts {
		if p == "" || strings.Contains(p, ":") {
			return "", false
		}
	}
	alias := aliasPrefix + strings.Join(parts, ":")
	return alias, len(alias) <= maxAliasLen
}

// parseAttachmentAlias returns the attachment that an alias of attachmentAlias names, when
// the alias belongs to network.
func parseAttachmentAlias(alias, network string) (attachment, bool) {
	rest, ok := strings.CutPrefix(alias, aliasPrefix)
	if !ok {
		return attachment{}, false
	}
	parts := strings.Split(rest, ":")
	if len(parts) != 3 || parts[0] != network || parts[1] == "" || parts[2] == "" {
		return attachment{}, false
	}
	return attachment{containerID: parts[1], ifName: parts[2]}, true
}
