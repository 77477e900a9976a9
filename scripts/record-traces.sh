#!/usr/bin/env bash
# Re-records the bundled traces in traces/ on a fresh Debian machine: installs
# the workloads from Debian's packages, starts their servers on loopback (or a
# Unix socket), runs the load, records the target with `ckpt record`, and
# stops everything. ONLY="redis gcc" re-records a subset. Run as root (the recorder stops and reads other
# processes). EPOCHS sets the epochs of the
# redis and PostgreSQL traces (default 40; gcc gets a fifth, python a sixth).
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${EPOCHS:-40}

need=()
command -v redis-server >/dev/null || need+=(redis-server redis-tools)
command -v pgbench >/dev/null || need+=(postgresql postgresql-contrib)
command -v gcc >/dev/null || need+=(gcc)
command -v python3 >/dev/null || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
cargo build --release
ckpt=$PWD/target/release/ckpt
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "${pgbin:-}" ] && runuser -u postgres -- "$pgbin/pg_ctl" -D "$work/pg" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p traces

ONLY=${ONLY:-redis postgres gcc python}
want() { case " $ONLY " in *" $1 "*) return 0;; esac; return 1; }

if want redis; then
echo "== redis-server under redis-benchmark"
redis-server --port 6390 --bind 127.0.0.1 --save '' --appendonly no --daemonize no >/dev/null &
redis=$!; pids+=("$redis")
sleep 1
redis-benchmark -h 127.0.0.1 -p 6390 -q -t set -n 300000 -r 300000 -d 96 >/dev/null
redis-benchmark -h 127.0.0.1 -p 6390 -q -t set,get,incr,lpush,hset -n 50000000 -r 300000 -d 96 -c 16 >/dev/null &
pids+=("$!")
sleep 1
"$ckpt" record -o traces/redis.trace --pid "$redis" --epochs "$EPOCHS" --name "redis-server under redis-benchmark (set,get,incr,lpush,hset; 300k keys)"
# Stop this workload and its load before the next one is recorded: on two
# cores anything left running takes time from the recorder.
for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; pids=()
fi

if want postgres; then
echo "== PostgreSQL under pgbench"
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
mkdir -p "$work/pg" "$work/sock"; chown postgres "$work" "$work/pg" "$work/sock"
runuser -u postgres -- "$pgbin/initdb" -D "$work/pg" >/dev/null
runuser -u postgres -- "$pgbin/pg_ctl" -D "$work/pg" -l "$work/pg.log" -w \
  -o "-c listen_addresses='' -k $work/sock -p 5439 -c shared_buffers=64MB -c fsync=off" start >/dev/null
runuser -u postgres -- pgbench -h "$work/sock" -p 5439 -i -s 4 -q postgres >/dev/null 2>&1
runuser -u postgres -- pgbench -h "$work/sock" -p 5439 -c 4 -j 2 -T 600 postgres >/dev/null 2>&1 &
pids+=("$!")
sleep 2
postmaster=$(head -n 1 "$work/pg/postmaster.pid")
"$ckpt" record -o traces/postgres.trace --pid "$postmaster" --children --epochs "$EPOCHS" --name "PostgreSQL 15 under pgbench (TPC-B-like, scale 4, 4 clients), postmaster and backends"
for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; pids=()
runuser -u postgres -- "$pgbin/pg_ctl" -D "$work/pg" -m fast -w stop >/dev/null 2>&1 || true
fi

if want gcc; then
echo "== gcc -O2 on a generated translation unit"
python3 scripts/workloads/gen_c.py 600 > "$work/big.c"
"$ckpt" record -o traces/gcc.trace --children --epochs "$((EPOCHS / 5))" --name "gcc -O2 compiling a generated 600-function C file (driver and cc1)" \
  -- gcc -O2 -c "$work/big.c" -o "$work/big.o"
fi

if want python; then
echo "== CPython walking a large object heap"
python3 scripts/workloads/interp.py 700000 600 > "$work/py.out" &
py=$!; pids+=("$py")
until grep -q "heap built" "$work/py.out"; do sleep 0.2; done
"$ckpt" record -o traces/python.trace --pid "$py" --epochs "$((EPOCHS / 6))" --name "CPython 3 walking and updating 700k objects (interpreter-heavy)"
fi

ls -la traces/
