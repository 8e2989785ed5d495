package cni

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
)

// The IPAM plugin is called by the CNI delegation convention: the same executable search
// path (CNI_PATH), the same environment with CNI_COMMAND set, and the plugin's own standard
// input passed through. The one change is the cniVersion in the version fallback below.

// ipamAdd allocates the pod's addresses with the IPAM plugin.
func ipamAdd(ctx context.Context, conf *NetConf, stdin []byte) (*current.Result, error) {
	var result *current.Result
	err := callIPAM(ctx, conf, stdin, "0.1.0", func(netconf []byte) error {
		var err error
		result, err = delegateAdd(ctx, conf.IPAM.Type, netconf)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("allocate address with IPAM plugin %s: %w", conf.IPAM.Type, err)
	}
	return result, nil
}

// ipamDel releases the addresses of the container and interface in stdin's environment.
func ipamDel(ctx context.Context, conf *NetConf, stdin []byte) error {
	err := callIPAM(ctx, conf, stdin, "0.1.0", func(netconf []byte) error {
		return delegate(ctx, conf.IPAM.Type, "DEL", netconf)
	})
	if err != nil {
		return fmt.Errorf("release address with IPAM plugin %s: %w", conf.IPAM.Type, err)
	}
	return nil
}

// ipamCheck has the IPAM plugin check the addresses of the ADD result in stdin.
func ipamCheck(ctx context.Context, conf *NetConf, stdin []byte) error {
	err := callIPAM(ctx, conf, stdin, "0.4.0", func(netconf []byte) error {
		return delegate(ctx, conf.IPAM.Type, "CHECK", netconf)
	})
	if err != nil {
		return fmt.Errorf("check address with IPAM plugin %s: %w", conf.IPAM.Type, err)
	}
	return nil
}

// ipamStatus has the IPAM plugin report whether it can allocate addresses. It returns an
// error wrapping errIPAMTooOld when the plugin predates STATUS.
func ipamStatus(ctx context.Context, conf *NetConf, stdin []byte) error {
	err := callNewIPAM(ctx, conf, stdin, func(netconf []byte) error {
		return delegate(ctx, conf.IPAM.Type, "STATUS", netconf)
	})
	if err != nil {
		return fmt.Errorf("read status of IPAM plugin %s: %w", conf.IPAM.Type, err)
	}
	return nil
}

// ipamGC has the IPAM plugin release the addresses of attachments that stdin does not list
// as valid. It returns an error wrapping errIPAMTooOld when the plugin predates GC.
func ipamGC(ctx context.Context, conf *NetConf, stdin []byte) error {
	err := callNewIPAM(ctx, conf, stdin, func(netconf []byte) error {
		return delegate(ctx, conf.IPAM.Type, "GC", netconf)
	})
	if err != nil {
		return fmt.Errorf("collect garbage with IPAM plugin %s: %w", conf.IPAM.Type, err)
	}
	return nil
}

// errIPAMTooOld means the IPAM plugin supports no CNI version that has the command.
var errIPAMTooOld = errors.New("the IPAM plugin does not support the command's CNI version")

// callIPAM runs call with stdin. When the IPAM plugin rejects the configuration's CNI version
// with error code 1, callIPAM repeats the call once with an older version. It takes the
// newest version that the plugin supports, down to minVersion, the first with the command.
// Debian 12's host-local (plugins 1.1.1) supports versions up to 1.0.0, while a runtime may
// pick 1.1.0 from the cniVersions of ferryd's configuration list. Results of 1.0.0 and 1.1.0
// have the same form, and older results convert to the current version. callIPAM returns an
// error wrapping errIPAMTooOld when no version fits.
func callIPAM(ctx context.Context, conf *NetConf, stdin []byte, minVersion string,
	call func(netconf []byte) error) error {
	if conf.CNIVersion == sameCommandsAs {
		netconf, err := setCNIVersion(stdin, conf.CNIVersion, sameCommandsVersion)
		if err != nil {
			return err
		}
		if err := call(netconf); !incompatibleVersion(err) {
			return err
		}
	}
	err := call(stdin)
	if !incompatibleVersion(err) {
		return err
	}

	older, found, verr := olderIPAMVersion(ctx, conf, minVersion)
	if verr != nil {
		return errors.Join(err, verr)
	}
	if !found {
		return fmt.Errorf("%w: %s supports no version from %s to %s: %w", errIPAMTooOld,
			conf.IPAM.Type, minVersion, conf.CNIVersion, err)
	}
	netconf, rerr := setCNIVersion(stdin, conf.CNIVersion, older)
	if rerr != nil {
		return errors.Join(err, rerr)
	}
	return call(netconf)
}

// CNI 1.1.0 added STATUS and GC and left ADD, DEL and CHECK and their results as they were in
// 1.0.0. For those three commands callIPAM first sends a 1.1.0 configuration as 1.0.0, which
// IPAM plugins released before 1.1.0 accept too: each ADD then runs the IPAM plugin once
// instead of three times (the rejected call, VERSION and the repeated call).
const (
	sameCommandsAs      = "1.1.0"
	sameCommandsVersion = "1.0.0"
)

func incompatibleVersion(err error) bool {
	var cniErr *types.Error
	return errors.As(err, &cniErr) && cniErr.Code == types.ErrIncompatibleCNIVersion
}

// callNewIPAM runs call, a command that CNI 1.1.0 introduced, when the IPAM plugin supports
// version 1.1.0. Plugins that predate it fail such commands in their own ways (Debian 12's
// host-local fails STATUS with "missing containerID"), so their versions are read first.
func callNewIPAM(ctx context.Context, conf *NetConf, stdin []byte,
	call func(netconf []byte) error) error {
	info, err := ipamVersionInfo(ctx, conf)
	if err != nil {
		return err
	}
	for _, v := range info.SupportedVersions() {
		if newEnough, err := version.GreaterThanOrEqualTo(v, "1.1.0"); err == nil && newEnough {
			return call(stdin)
		}
	}
	return fmt.Errorf("%w: %s supports versions %v, and the command needs 1.1.0",
		errIPAMTooOld, conf.IPAM.Type, info.SupportedVersions())
}

func ipamVersionInfo(ctx context.Context, conf *NetConf) (version.PluginInfo, error) {
	return pluginVersions(ctx, conf.IPAM.Type)
}

// olderIPAMVersion returns the newest CNI version that the IPAM plugin supports below the
// configuration's version and at or above minVersion.
func olderIPAMVersion(ctx context.Context, conf *NetConf, minVersion string) (string, bool,
	error) {
	info, err := ipamVersionInfo(ctx, conf)
	if err != nil {
		return "", false, err
	}

	best := ""
	for _, v := range info.SupportedVersions() {
		below, err := version.GreaterThan(conf.CNIVersion, v)
		if err != nil || !below {
			continue
		}
		if atLeastMin, err := version.GreaterThanOrEqualTo(v, minVersion); err != nil ||
			!atLeastMin {
			continue
		}
		if best == "" {
			best = v
			continue
		}
		if newer, err := version.GreaterThan(v, best); err == nil && newer {
			best = v
		}
	}
	return best, best != "", nil
}

// setCNIVersion returns the network configuration with its cniVersion changed from "from" to
// "to", and its prevResult, if any, converted to version "to".
func setCNIVersion(stdin []byte, from, to string) ([]byte, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(stdin, &fields); err != nil {
		return nil, fmt.Errorf("decode network configuration: %w", err)
	}
	encoded, err := json.Marshal(to)
	if err != nil {
		return nil, fmt.Errorf("encode cniVersion: %w", err)
	}
	fields["cniVersion"] = encoded

	if raw, ok := fields["prevResult"]; ok {
		prev, err := version.NewResult(from, raw)
		if err != nil {
			return nil, fmt.Errorf("decode prevResult of version %s: %w", from, err)
		}
		converted, err := prev.GetAsVersion(to)
		if err != nil {
			return nil, fmt.Errorf("convert prevResult to version %s: %w", to, err)
		}
		if fields["prevResult"], err = json.Marshal(converted); err != nil {
			return nil, fmt.Errorf("encode prevResult: %w", err)
		}
	}

	out, err := json.Marshal(fields)
	if err != nil {
		return nil, fmt.Errorf("encode network configuration: %w", err)
	}
	return out, nil
}
