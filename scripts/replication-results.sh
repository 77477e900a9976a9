#!/usr/bin/env bash
# The figures of results/replication.md: each bundled trace replicated over
# loopback at its recorded epoch, with the backup committing to memory, to
# an image file written in place, and to a journaled image file (strict and
# grouped); then the redis trace through two processes, `ckpt recv` and
# `ckpt send`. The image files go to $TMPDIR (default /tmp).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release
ckpt=target/release/ckpt
lscpu | grep -E 'Model name|^CPU\(s\)'
uptime
for t in traces/*.trace; do
  for b in memory in-place journal grouped; do
    echo; echo "== $t --backup $b"
    "$ckpt" demo --trace "$t" --backup "$b"
  done
done
echo; echo "== two processes: ckpt recv and ckpt send, redis"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$ckpt" recv --listen 127.0.0.1:0 --image "$dir/guest.img" --verbose >"$dir/recv.out" &
recv=$!
for _ in $(seq 100); do grep -q "listening on" "$dir/recv.out" 2>/dev/null && break; sleep 0.05; done
addr=$(sed -n 's/^listening on //p' "$dir/recv.out")
"$ckpt" send --to "$addr" --trace traces/redis.trace
wait "$recv"
grep -v "^committed checkpoint" "$dir/recv.out"
