// Package vm contains tests that only the test VM of scripts/vm.sh runs. The VM itself is
// described in that script and in test/vm/init.sh.
package vm
