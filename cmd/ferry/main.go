// Command ferry is the CNI plugin of the ferry dataplane. The container runtime runs it in the
// node's network namespace with CNI_COMMAND set. It prints only the CNI result or error on
// standard output and its diagnostics on standard error.
package main

import (
	"log/slog"
	"os"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/ferrynet/ferry/pkg/cni"
)

func main() {
	plugin := &cni.Plugin{
		Stdout: os.Stdout,
		Log:    slog.New(slog.NewTextHandler(os.Stderr, nil)),
	}
	skel.PluginMainFuncs(skel.CNIFuncs{
		Add:    plugin.Add,
		Del:    plugin.Del,
		Check:  plugin.Check,
		Status: plugin.Status,
		GC:     plugin.GC,
	}, cni.SupportedVersions, "ferry: CNI plugin of the ferry eBPF pod network")
}
