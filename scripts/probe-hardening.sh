#!/usr/bin/env bash
# Feeds hostile inputs and arguments to a built ckpt and counts what went
# wrong: corrupted inputs accepted, panics (exit 101), aborts and other
# deaths by signal (SIGBUS included), hangs (no exit within the time limit),
# peak memory over the bound SECURITY.md promises, images larger than
# configured. Every probe runs under a virtual-memory cap so that an
# unbounded reader dies instead of taking the machine with it.
#
#   scripts/probe-hardening.sh [path/to/ckpt]     (default target/release/ckpt)
#
# The inputs come from `cargo run --release -p ckpt-lab --example hostile`.
# The exit status is 0 when nothing went wrong; output errors (a full device,
# a closed pipe) are counted apart and do not change it.
# FLIPS=0 skips the byte-flip sweeps (most of the run: about 40 minutes on
# two cores), FLIPS=vectors runs only the vector file's; TIMEOUT sets the
# per-probe limit in seconds (default 60); HOSTILE names an already built
# generator.
set -uo pipefail
cd "$(dirname "$0")/.."
CKPT=$(realpath "${1:-target/release/ckpt}")
TIMEOUT=${TIMEOUT:-60}
FLIPS=${FLIPS:-1}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
if [ -z "${HOSTILE:-}" ]; then
  cargo build --release -q -p ckpt-lab --example hostile
  HOSTILE=$CARGO_TARGET_DIR/release/examples/hostile
fi
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
IN=$W/in
"$HOSTILE" "$IN"
VMCAP_KB=$((8 << 20)) # 8 GiB of address space per probe

# The receiver limits every probe runs with (SECURITY.md's bound is these
# plus 64 MiB, plus the guest memory a command keeps).
cat >"$W/probe.toml" <<'EOF'
[receiver]
max_chunk_bytes = 67108864
max_checkpoint_bytes = 33554432
max_checkpoint_entries = 65536
max_toolstack_chunks = 1024
max_guest_pages = 65536
EOF
if ! "$CKPT" --config "$W/probe.toml" kernels >/dev/null 2>&1; then
  echo "note: this ckpt does not know max_guest_pages; probing without it"
  sed -i '/max_guest_pages/d' "$W/probe.toml"
  if ! "$CKPT" --config "$W/probe.toml" kernels >/dev/null; then
    echo "the probes' configuration does not load" >&2
    exit 2
  fi
fi
export CKPT_CONFIG=$W/probe.toml
LIMIT_MIB=32   # max_checkpoint_bytes
SLACK_MIB=64
GUEST_MIB=256  # max_guest_pages x 4 KiB

declare -A count=([probes]=0 [accepted]=0 [panics]=0 [aborts]=0 [signals]=0 [hangs]=0 [over_memory]=0 [wrong]=0 [output]=0)
fail_lines=()

note() { fail_lines+=("$1"); echo "  !! $1"; }

# run NAME EXPECT BOUND_MIB -- command...
#   EXPECT: ok (exit 0), fail (exit 1 or 2 with a message), any
#   BOUND_MIB: peak RSS allowed, or 0 for no check
run() {
  local name=$1 expect=$2 bound=$3
  shift 4
  count[probes]=$((count[probes] + 1))
  local rc rss
  (
    ulimit -v $VMCAP_KB
    exec timeout -k 5 "$TIMEOUT" /usr/bin/time -f '%M' -o "$W/rss" "$@" >"$W/out" 2>"$W/err"
  )
  rc=$?
  rss=$(tail -1 "$W/rss" 2>/dev/null | grep -E '^[0-9]+$' || echo 0)
  local mib=$((rss / 1024))
  local msg
  msg=$(grep -v '^$' "$W/err" | tail -1 | cut -c1-150)
  # conformance reports a failing file on standard output
  [ -z "$msg" ] && msg=$(grep '^FAIL' "$W/out" | tail -1 | cut -c1-150)
  printf '%-44s exit %3d  peak %5d MiB  %s\n' "$name" "$rc" "$mib" "$msg"
  case $rc in
    101) count[panics]=$((count[panics] + 1)); note "$name: panic" ;;
    124 | 137) count[hangs]=$((count[hangs] + 1)); note "$name: no exit within ${TIMEOUT}s" ;;
    134) count[aborts]=$((count[aborts] + 1)); note "$name: abort" ;;
    0 | 1 | 2) ;;
    *) count[signals]=$((count[signals] + 1)); note "$name: died with status $rc" ;;
  esac
  if [ "$expect" = fail ] && [ "$rc" = 0 ]; then
    count[accepted]=$((count[accepted] + 1)); note "$name: accepted"
  fi
  if [ "$expect" = ok ] && [ "$rc" != 0 ]; then
    count[wrong]=$((count[wrong] + 1)); note "$name: failed ($msg)"
  fi
  if [ "$expect" = fail ] && { [ "$rc" = 1 ] || [ "$rc" = 2 ]; } && [ -z "$msg" ]; then
    count[wrong]=$((count[wrong] + 1)); note "$name: failed without a message"
  fi
  if [ "$bound" -gt 0 ] && [ "$mib" -gt "$bound" ]; then
    count[over_memory]=$((count[over_memory] + 1)); note "$name: peak $mib MiB over $bound MiB"
  fi
  return 0
}

# expect_in_err NAME TEXT: the last probe's error names TEXT.
expect_in_err() {
  if ! grep -qF -- "$2" "$W/err"; then
    count[wrong]=$((count[wrong] + 1)); note "$1: error does not mention '$2'"
  fi
}

img() { rm -f "$W/img"; echo "$W/img"; }
B=$((LIMIT_MIB + SLACK_MIB))

echo "== streams (restore, inspect)"
run "restore huge-guest (80 bytes, 1 TiB claimed)" fail $B -- "$CKPT" restore "$IN/huge-guest.stream" --image "$(img)"
size=$(stat -c %s "$W/img" 2>/dev/null || echo 0)
if [ "$size" -gt $((GUEST_MIB << 20)) ]; then
  count[wrong]=$((count[wrong] + 1)); note "huge-guest: created an image of $size bytes"
fi
if "$CKPT" restore --help | grep -q -- --guest-pages; then
  run "restore huge-guest --guest-pages 16" fail $B -- "$CKPT" restore "$IN/huge-guest.stream" --image "$(img)" --guest-pages 16
fi
run "inspect huge-guest" fail $B -- "$CKPT" inspect "$IN/huge-guest.stream"
run "restore trailing-byte" fail $B -- "$CKPT" restore "$IN/trailing-byte.stream" --image "$(img)"
run "restore version1" fail $B -- "$CKPT" restore "$IN/version1.stream" --image "$(img)"
expect_in_err "restore version1" "version 1 is not supported"
run "restore claimed-chunk (64 MiB claimed, 3 sent)" fail $B -- "$CKPT" restore "$IN/claimed-chunk.stream" --image "$(img)"
run "inspect claimed-chunk" fail $B -- "$CKPT" inspect "$IN/claimed-chunk.stream"
run "restore toolstack-flood (100 MB)" fail $B -- "$CKPT" restore "$IN/toolstack-flood.stream" --image "$(img)"
run "inspect toolstack-flood (100 MB)" fail $B -- "$CKPT" inspect "$IN/toolstack-flood.stream"
run "restore endless toolstack flood (pipe)" fail $B -- sh -c "'$HOSTILE' flood | '$CKPT' restore /dev/stdin --image '$(img)'"
run "inspect endless toolstack flood (pipe)" fail $B -- sh -c "'$HOSTILE' flood | '$CKPT' inspect /dev/stdin"
run "inspect 1e6 empty checkpoints" ok $SLACK_MIB -- sh -c "'$CKPT' inspect '$IN/empty-checkpoints.stream' >/dev/null"
run "restore 1e6 empty checkpoints" ok $SLACK_MIB -- sh -c "'$CKPT' restore '$IN/empty-checkpoints.stream' --image '$(img)' >/dev/null"
run "restore 64 MiB checkpoints (limit 32)" fail $((B + 64)) -- "$CKPT" restore "$IN/full-checkpoints.stream" --image "$(img)"
run "inspect 64 MiB checkpoints (limit 32)" fail $((B + 64)) -- "$CKPT" inspect "$IN/full-checkpoints.stream"
run "restore --image a directory" fail $B -- "$CKPT" restore "$IN/sample.stream" --image "$W"
run "restore not a stream (/dev/zero)" fail $B -- "$CKPT" restore /dev/zero --image "$(img)"
if unshare -Urm true 2>/dev/null; then
  # A 1 MiB tmpfs: the 4 MiB checkpoint does not fit.
  run "restore onto a full disk (1 MiB tmpfs)" fail $B -- unshare -Urm sh -c \
    "mkdir -p '$W/small' && mount -t tmpfs -o size=1M tmpfs '$W/small' && exec '$CKPT' restore '$IN/four-mib.stream' --image '$W/small/img'"
  expect_in_err "restore onto a full disk" "$W/small/img"
else
  echo "(no user namespaces: the full-disk probe is skipped)"
fi

echo "== traces (bench, demo, compress)"
for t in claimed-epoch duplicates wide-epoch wide-guest; do
  run "bench --trace $t" fail $((B + GUEST_MIB + 128)) -- "$CKPT" bench --trace "$IN/$t.trace"
done
run "demo --trace wide-epoch" fail $((B + GUEST_MIB + 128)) -- "$CKPT" demo --trace "$IN/wide-epoch.trace"
run "compress --trace wide-guest" fail $((B + GUEST_MIB + 128)) -- "$CKPT" compress --trace "$IN/wide-guest.trace" -o "$W/out.stream"
run "bench --trace a directory" fail $B -- "$CKPT" bench --trace "$W"
expect_in_err "bench --trace a directory" "directory"

echo "== golden vectors (conformance)"
mkdir -p "$W/v1" "$W/v2"
cp "$IN/many-records.vec.zst" "$W/v1/"
cp "$IN/big-outputs.vec.zst" "$W/v2/"
run "conformance many-records (1 GiB of pages)" fail $((B + 128)) -- "$CKPT" conformance "$W/v1"
run "conformance big-outputs (64 x 64 MiB)" fail $((B + 128)) -- "$CKPT" conformance "$W/v2"

echo "== configuration"
head -c 50000000 /dev/zero | tr '\0' '#' >"$W/big.toml"
for case in "/dev/zero" "$W/big.toml"; do
  run "config $(basename "$case")" fail 64 -- "$CKPT" --config "$case" kernels
done
cfg() { printf '%s\n' "$@" >"$W/c.toml"; echo "$W/c.toml"; }
run "config cache_pages = 5000000000" fail 64 -- "$CKPT" --config "$(cfg '[engine]' 'cache_pages = 5000000000')" compress -o "$W/o"
expect_in_err "cache_pages" "cache_pages"
run "config cache_pages = 0" fail 64 -- "$CKPT" --config "$(cfg '[engine]' 'cache_pages = 0')" compress -o "$W/o"
run "config ring_pages = 4294967296000" fail 64 -- "$CKPT" --config "$(cfg '[engine]' 'ring_pages = 4294967296000')" compress -o "$W/o"
expect_in_err "ring_pages" "ring_pages"
run "config ring_pages = 0" fail 64 -- "$CKPT" --config "$(cfg '[engine]' 'ring_pages = 0')" compress -o "$W/o"
run "config threads = 100000" fail 64 -- "$CKPT" --config "$(cfg '[engine]' 'threads = 100000')" compress -o "$W/o"
expect_in_err "threads" "threads"
run "--threads 100000" fail 64 -- "$CKPT" compress -o "$W/o" --threads 100000
run "config epoch_ms = 2^64-1" fail 64 -- "$CKPT" --config "$(cfg '[record]' 'epoch_ms = 18446744073709551615')" record -o "$W/t" --epochs 1 -- sleep 5
run "config max_guest_pages = 2^40" fail 64 -- "$CKPT" --config "$(cfg '[receiver]' 'max_guest_pages = 1099511627776')" inspect "$IN/sample.stream"
run "config max_chunk_bytes = 0" fail 64 -- "$CKPT" --config "$(cfg '[receiver]' 'max_chunk_bytes = 0')" inspect "$IN/sample.stream"

echo "== arguments"
for s in NaN inf -1 0 1e300; do
  run "record --seconds $s" fail 64 -- "$CKPT" record -o "$W/t" --seconds "$s" -- sleep 1
done
run "kernels --bench --mib 65536 (64 GiB)" fail 64 -- "$CKPT" kernels --bench --mib 65536 --reps 1
run "record --epoch-ms 2^64-1" fail 64 -- "$CKPT" record -o "$W/t" --epoch-ms 18446744073709551615 --epochs 1 -- sleep 1
if unshare -Urfp --mount-proc true 2>/dev/null; then
  # In a PID namespace of their own, so that a recorder that signals pid -1
  # or its own group reaches nothing else.
  for p in 0 -1; do
    run "record --pid $p" fail 64 -- unshare -Urfp --mount-proc "$CKPT" record -o "$W/t" "--pid=$p" --epochs 2
  done
  # shellcheck disable=SC2016
  run "record --pid (itself)" fail 64 -- unshare -Urfp --mount-proc sh -c \
    'exec "$0" record -o "$1" --pid $$ --epochs 2' "$CKPT" "$W/t"
  # shellcheck disable=SC2016
  run "record --pid (its parent)" fail 64 -- unshare -Urfp --mount-proc sh -c \
    '"$0" record -o "$1" --pid $$ --epochs 2; exit $?' "$CKPT" "$W/t"
else
  echo "(no PID namespaces: the --pid probes are skipped)"
fi
for cmd in "kernels" "kernels --bench --mib 1 --reps 1" "compress -o $W/o" "restore $IN/sample.stream --image $W/img" "conformance tests/vectors" "bench" "demo"; do
  if ! grep -q neon /proc/cpuinfo; then
    # shellcheck disable=SC2086
    run "$cmd --kernel neon (not on this CPU)" fail 64 -- "$CKPT" $cmd --kernel neon
  fi
done

echo "== the configured receiver limits in every command"
run "demo, max_checkpoint_bytes 1 MiB" fail 0 -- "$CKPT" --config "$(cfg '[receiver]' 'max_checkpoint_bytes = 1048576' 'max_chunk_bytes = 1048576' '[engine]' 'ring_pages = 255')" demo
run "bench, max_checkpoint_bytes 1 MiB" fail 0 -- "$CKPT" --config "$W/c.toml" bench
run "compress, max_checkpoint_bytes 1 MiB" fail 0 -- "$CKPT" --config "$W/c.toml" compress -o "$W/o"

echo "== output to a closed pipe or a full device (issue 11's error reporting)"
output() {
  count[probes]=$((count[probes] + 1))
  local rc
  bash -c "$2" >/dev/null 2>"$W/err"
  rc=$?
  printf '%-44s exit %3d  %s\n' "$1" "$rc" "$(tail -1 "$W/err" | cut -c1-100)"
  if [ "$rc" -gt 2 ]; then count[output]=$((count[output] + 1)); note "$1: exit $rc"; fi
}
output "kernels >/dev/full" "'$CKPT' kernels >/dev/full"
output "inspect >/dev/full" "'$CKPT' inspect '$IN/sample.stream' >/dev/full"
output "restore >/dev/full" "'$CKPT' restore '$IN/sample.stream' --image '$(img)' >/dev/full"
output "inspect | head -c1 (closed pipe)" "'$CKPT' inspect '$IN/empty-checkpoints.stream' | head -c1 >/dev/null; exit \${PIPESTATUS[0]}"

if [ "$FLIPS" = 1 ]; then
  echo "== every byte of a 6-checkpoint stream flipped, through restore"
  S=$IN/sample.stream
  GUEST_ARG=
  "$CKPT" restore --help | grep -q -- --guest-pages && GUEST_ARG="--guest-pages 64"
  n=$(stat -c %s "$S")
  accepted=0 crashed=0
  for ((i = 0; i < n; i++)); do
    "$HOSTILE" flip "$S" "$W/f.stream" "$i"
    rm -f "$W/img"
    # shellcheck disable=SC2086
    "$CKPT" restore "$W/f.stream" --image "$W/img" $GUEST_ARG >/dev/null 2>&1
    rc=$?
    [ $rc = 0 ] && accepted=$((accepted + 1))
    [ $rc -gt 2 ] && crashed=$((crashed + 1))
  done
  echo "$n byte flips: $accepted accepted, $crashed crashed"
  count[probes]=$((count[probes] + n))
  count[accepted]=$((count[accepted] + accepted))
  count[signals]=$((count[signals] + crashed))
fi

if [ "$FLIPS" = 1 ] || [ "$FLIPS" = vectors ]; then
  # A flip that leaves the decompressed file byte for byte the same (a bit
  # zstd's entropy coding does not use) changes nothing and may pass.
  echo "== every byte of a golden vector file flipped, through conformance"
  V=tests/vectors/empty_checkpoint.vec.zst
  n=$(stat -c %s "$V")
  passed=0 crashed=0 unchanged=0
  mkdir -p "$W/vf"
  zstd -dcq "$V" >"$W/v.raw" 2>/dev/null || echo "(no zstd tool: every pass counts as accepted)"
  for ((i = 0; i < n; i++)); do
    "$HOSTILE" flip "$V" "$W/vf/x.vec.zst" "$i"
    (ulimit -v $VMCAP_KB; timeout 60 "$CKPT" conformance "$W/vf" >/dev/null 2>&1)
    rc=$?
    if [ $rc = 0 ]; then
      if zstd -dcq "$W/vf/x.vec.zst" 2>/dev/null | cmp -s - "$W/v.raw"; then
        unchanged=$((unchanged + 1))
      else
        passed=$((passed + 1))
      fi
    fi
    [ $rc -gt 2 ] && crashed=$((crashed + 1))
  done
  echo "$n byte flips of $(basename "$V"): $passed passed with changed contents, $unchanged passed with identical contents, $crashed crashed"
  count[probes]=$((count[probes] + n))
  count[accepted]=$((count[accepted] + passed))
  count[signals]=$((count[signals] + crashed))
fi

echo
echo "== summary: ${count[probes]} probes"
for k in accepted panics aborts signals hangs over_memory wrong output; do
  printf '  %-12s %d\n' "$k" "${count[$k]}"
done
[ $((count[accepted] + count[panics] + count[aborts] + count[signals] + count[hangs] + count[over_memory] + count[wrong])) = 0 ]
