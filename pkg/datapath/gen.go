package datapath

// The generated files are committed; `make generate` rebuilds them with clang-19.
//go:generate go tool bpf2go -cc clang-19 -cflags "-O2 -g -Wall -Werror -I../../headers -I/usr/include/x86_64-linux-gnu" -target bpfel -no-global-types -type endpoint -type node_route -type node_settings -type lpm_v4_key -type nat_key -type nat_entry -type counter -type masq_exclusion host ../../bpf/host.c
//go:generate go tool bpf2go -cc clang-19 -cflags "-O2 -g -Wall -Werror -I../../headers -I/usr/include/x86_64-linux-gnu" -target bpfel -no-global-types pod ../../bpf/pod.c
