package cni

import (
	"errors"

	"github.com/containernetworking/cni/pkg/types"
)

// CNI error codes of ferry's own failures. The CNI specification reserves codes 0 to 99 for
// itself and leaves 100 and above to plugins.
const (
	// ErrCodeInterfaceExists means the host-side veth name of the container and interface is
	// taken: an earlier ADD of the same container was not deleted, or another interface has
	// the name.
	ErrCodeInterfaceExists uint = 100
	// ErrCodeIPAMResult means the IPAM plugin returned no IPv4 address, or an IPv6 one.
	ErrCodeIPAMResult uint = 101
	// ErrCodeNetworkSetup means creating or configuring the veth pair, addresses, routes or
	// sysctls failed.
	ErrCodeNetworkSetup uint = 102
	// ErrCodeDatapath means reading or writing a dataplane map, or attaching or detaching the
	// pod program, failed.
	ErrCodeDatapath uint = 103
	// ErrCodeCheckFailed means CHECK found the pod's network different from the ADD result.
	ErrCodeCheckFailed uint = 104
)

// codedError attaches a CNI error code to an error.
type codedError struct {
	code uint
	err  error
}

func (e *codedError) Error() string { return e.err.Error() }
func (e *codedError) Unwrap() error { return e.err }

func withCode(code uint, err error) error {
	if err == nil {
		return nil
	}
	return &codedError{code: code, err: err}
}

// toCNIError converts err into the error that the plugin prints. The code is that of the
// outermost codedError in the chain, else that of a *types.Error from a delegated plugin,
// else ErrInternal. The message is the whole chain's text.
func toCNIError(err error) error {
	if err == nil {
		return nil
	}
	code := types.ErrInternal
	var coded *codedError
	var delegated *types.Error
	switch {
	case errors.As(err, &coded):
		code = coded.code
	case errors.As(err, &delegated):
		code = delegated.Code
	}
	return types.NewError(code, err.Error(), "")
}
