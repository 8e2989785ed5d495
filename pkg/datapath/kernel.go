package datapath

import (
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

// ErrMissingKernelFeature is returned by Load when the running kernel lacks
// something that ferry's programs need.
var ErrMissingKernelFeature = errors.New("missing kernel feature")

// conntrackKfuncs explains where the nf_conntrack kfuncs come from.
const conntrackKfuncs = "ferry's programs need nf_conntrack's BPF kfuncs " +
	"(Linux 6.0 or later, CONFIG_NF_CONNTRACK); where nf_conntrack is a module, " +
	"load it with 'modprobe nf_conntrack'"

// kfuncProviders maps the kfuncs that ferry's programs call to what provides
// them. Kfuncs of a module exist only while the module is loaded.
var kfuncProviders = map[string]string{
	"bpf_skb_ct_lookup": conntrackKfuncs,
	"bpf_ct_release":    conntrackKfuncs,
}

// checkKernel looks up the kernel BTF and every kfunc that the programs of
// specs call in vmlinux and in the loaded modules. It names what is missing,
// which the load itself would report only as "not supported".
func checkKernel(cache *btf.Cache, specs ...*ebpf.CollectionSpec) error {
	vmlinux, err := cache.Kernel()
	if err != nil {
		return fmt.Errorf("%w: BTF of the running kernel (/sys/kernel/btf/vmlinux, "+
			"CONFIG_DEBUG_INFO_BTF): %w", ErrMissingKernelFeature, err)
	}

	var missing, hints []string
	for _, name := range calledKfuncs(specs) {
		found, err := kernelHasFunc(cache, vmlinux, name)
		if err != nil {
			return fmt.Errorf("look up kfunc %s: %w", name, err)
		}
		if found {
			continue
		}
		missing = append(missing, name)
		if hint, ok := kfuncProviders[name]; ok && !slices.Contains(hints, hint) {
			hints = append(hints, hint)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	noun := "kfunc"
	if len(missing) > 1 {
		noun = "kfuncs"
	}
	msg := fmt.Sprintf("%s %s not found in the kernel's BTF", noun, strings.Join(missing, ", "))
	if len(hints) > 0 {
		msg += ": " + strings.Join(hints, "; ")
	}
	return fmt.Errorf("%w: %s", ErrMissingKernelFeature, msg)
}

// calledKfuncs returns the sorted names of the kfuncs that the programs call.
func calledKfuncs(specs []*ebpf.CollectionSpec) []string {
	var names []string
	for _, spec := range specs {
		for _, prog := range spec.Programs {
			for _, ins := range prog.Instructions {
				if ins.IsKfuncCall() && ins.Reference() != "" {
					names = append(names, ins.Reference())
				}
			}
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// kernelHasFunc reports whether vmlinux or a loaded module has a BTF
// function called name.
func kernelHasFunc(cache *btf.Cache, vmlinux *btf.Spec, name string) (bool, error) {
	var fn *btf.Func
	err := vmlinux.TypeByName(name, &fn)
	if err == nil {
		return true, nil
	}
	if !errors.Is(err, btf.ErrNotFound) {
		return false, err
	}

	modules, err := cache.Modules()
	if errors.Is(err, fs.ErrNotExist) {
		// Kernels without CONFIG_DEBUG_INFO_BTF_MODULES have no module BTF.
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("list kernel modules with BTF: %w", err)
	}
	for _, module := range modules {
		spec, err := cache.Module(module)
		if err != nil {
			return false, fmt.Errorf("load BTF of module %s: %w", module, err)
		}
		err = spec.TypeByName(name, &fn)
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, btf.ErrNotFound) {
			return false, fmt.Errorf("look up %s in module %s: %w", name, module, err)
		}
	}
	return false, nil
}
