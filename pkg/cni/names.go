package cni

import (
	"crypto/sha256"
	"encoding/hex"
	"regexp"
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
