#!/bin/sh
# Fail when the committed bpf2go output differs from what the committed C
# sources produce. The build is reproducible: clang-19 output does not depend
# on the checkout's path.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cp -r "$root/bpf" "$root/headers" "$root/go.mod" "$root/go.sum" "$tmp/"
mkdir -p "$tmp/pkg/datapath"
cp "$root/pkg/datapath/gen.go" "$tmp/pkg/datapath/"
(cd "$tmp/pkg/datapath" && go generate ./ >/dev/null)

stale=""
for f in "$tmp"/pkg/datapath/*_bpfel.go "$tmp"/pkg/datapath/*_bpfel.o; do
	name=$(basename "$f")
	if ! cmp -s "$f" "$root/pkg/datapath/$name"; then
		stale="$stale $name"
	fi
done
if [ -n "$stale" ]; then
	echo "generated BPF files are stale:$stale; run 'make generate' and commit them" >&2
	exit 1
fi
echo "generated BPF files match their sources"
