package cni

import (
	"fmt"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
)

// PodArgs are the Kubernetes fields of CNI_ARGS that container runtimes such as containerd
// and CRI-O pass. The plugin uses them in its diagnostics.
type PodArgs struct {
	Namespace        string // K8S_POD_NAMESPACE
	Name             string // K8S_POD_NAME
	InfraContainerID string // K8S_POD_INFRA_CONTAINER_ID
	UID              string // K8S_POD_UID
}

// String returns "namespace/name", or "" when CNI_ARGS named no pod.
func (a PodArgs) String() string {
	if a.Name == "" {
		return ""
	}
	return a.Namespace + "/" + a.Name
}

// ParseArgs parses CNI_ARGS: KEY=VALUE pairs separated by semicolons. A value may contain
// '='. Keys other than the Kubernetes ones, IgnoreUnknown included, are accepted and
// ignored, since runtimes pass keys for other plugins of the chain. An empty pair or a pair
// without a key or '=' is an error with CNI code 4 (invalid environment variables).
func ParseArgs(s string) (PodArgs, error) {
	var args PodArgs
	if s == "" {
		return args, nil
	}
	for _, pair := range strings.Split(s, ";") {
		key, value, ok := strings.Cut(pair, "=")
		if !ok || key == "" {
			return PodArgs{}, withCode(types.ErrInvalidEnvironmentVariables,
				fmt.Errorf("invalid CNI_ARGS pair %q: use KEY=VALUE pairs separated by ';'",
					pair))
		}
		switch key {
		case "K8S_POD_NAMESPACE":
			args.Namespace = value
		case "K8S_POD_NAME":
			args.Name = value
		case "K8S_POD_INFRA_CONTAINER_ID":
			args.InfraContainerID = value
		case "K8S_POD_UID":
			args.UID = value
		}
	}
	return args, nil
}
