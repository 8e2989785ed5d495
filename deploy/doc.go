// Package deploy contains the files that install ferry on nodes: a systemd unit with an
// example configuration for nodes set up by hand (systemd/), and a DaemonSet with its
// ConfigMap (kubernetes/). Its test checks that the examples stay valid.
package deploy
