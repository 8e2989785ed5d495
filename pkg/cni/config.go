// Package cni implements ferry's CNI plugin: it connects a pod to the node with a veth pair,
// delegates address management to an IPAM plugin and registers the pod with the eBPF
// dataplane that ferryd pinned under a bpffs directory.
package cni

import (
	"encoding/json"
	"fmt"
	"path/filepath"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
)

// Defaults of the network configuration.
const (
	DefaultBPFFSDir = "/sys/fs/bpf/ferry"
	// DefaultMTU applies when the configuration sets no MTU and no interface holds the node IP.
	DefaultMTU = 1500
)

// The MTU range that the plugin accepts: IPv4 needs at least 68 bytes, and 65535 is the
// largest value that a veth takes.
const (
	minMTU = 68
	maxMTU = 65535
)

// NetConf is the configuration of the ferry plugin: one entry of a CNI configuration list.
type NetConf struct {
	types.PluginConf

	// BPFFSDir is the bpffs directory under which ferryd pinned the dataplane.
	BPFFSDir string `json:"bpffsDir,omitempty"`
	// MTU of both ends of the pod's veth pair. Zero takes the MTU of the interface that holds
	// the node IP.
	MTU int `json:"mtu,omitempty"`

	// prevResult is PrevResult converted to the current result version, or nil.
	prevResult *current.Result
}

// ParseNetConf decodes and validates the network configuration that the runtime passes on
// standard input, fills in defaults and converts a prevResult to the current version.
func ParseNetConf(stdin []byte) (*NetConf, error) {
	conf := &NetConf{}
	if err := json.Unmarshal(stdin, conf); err != nil {
		return nil, withCode(types.ErrDecodingFailure,
			fmt.Errorf("decode network configuration: %w", err))
	}
	if err := conf.validate(); err != nil {
		return nil, withCode(types.ErrInvalidNetworkConfig, err)
	}
	if conf.BPFFSDir == "" {
		conf.BPFFSDir = DefaultBPFFSDir
	}

	if conf.RawPrevResult != nil {
		if err := version.ParsePrevResult(&conf.PluginConf); err != nil {
			return nil, withCode(types.ErrDecodingFailure,
				fmt.Errorf("decode prevResult: %w", err))
		}
		prev, err := current.NewResultFromResult(conf.PrevResult)
		if err != nil {
			return nil, withCode(types.ErrDecodingFailure,
				fmt.Errorf("convert prevResult to version %s: %w", current.ImplementedSpecVersion,
					err))
		}
		conf.prevResult = prev
	}
	return conf, nil
}

func (c *NetConf) validate() error {
	if c.IPAM.Type == "" {
		return fmt.Errorf("missing ipam.type: set it to an IPAM plugin such as host-local")
	}
	if c.BPFFSDir != "" {
		if !filepath.IsAbs(c.BPFFSDir) || filepath.Clean(c.BPFFSDir) != c.BPFFSDir {
			return fmt.Errorf("invalid bpffsDir %q: use a clean absolute path such as %s",
				c.BPFFSDir, DefaultBPFFSDir)
		}
	}
	if c.MTU != 0 && (c.MTU < minMTU || c.MTU > maxMTU) {
		return fmt.Errorf("invalid mtu %d: use %d to %d, or leave it out to take the MTU of "+
			"the interface that holds the node IP", c.MTU, minMTU, maxMTU)
	}
	return nil
}
