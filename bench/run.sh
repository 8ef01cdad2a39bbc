#!/usr/bin/env bash
# Create-and-confirm throughput on PostgreSQL, measured against pgbench on the same server.
#
#   make bench            (or: bash bench/run.sh)
#
# 1. Creates two throwaway databases on $BENCH_PGHOST (one for Strongroom, one for pgbench),
#    migrates, makes a merchant, starts two `strongroom serve --no-worker` (payment audit events
#    off, and on) and `strongroom worker` (recovery, audit sequencer) beside them.
# 2. wrk drives POST /v1/payment_intents {confirm: true} with $BENCH_CONNECTIONS connections:
#    warm-ups; $BENCH_AUDIT_ROUNDS alternating slices against the two servers (the audit log's
#    cost); then, on the audited one, $BENCH_SECONDS with a unique Idempotency-Key per request
#    while bench/audit_lag.py samples the sequencer's lag, and the same without the header.
# 3. Stops the server and runs pgbench TPC-B with the same number of clients for as long.
# 4. Times `strongroom audit verify` over a generated log of $BENCH_AUDIT_ENTRIES entries.
# 5. bench/report.py prints payments/s, p50/p99, pgbench tps, the ratios and PASS/MISS per target.
# Raw outputs go to bench/results/<run id>/. Databases and the server are removed on exit.
#
# Settings (environment):
#   BENCH_SECONDS=20  BENCH_WARMUP=5  BENCH_WORKERS=2  BENCH_CONNECTIONS=16  BENCH_THREADS=2
#   BENCH_PGBENCH_SCALE=16  BENCH_PGHOST=127.0.0.1  BENCH_PGPORT=5432  BENCH_PGUSER=postgres
#   BENCH_AUDIT_ENTRIES=1000000  BENCH_AUDIT_ROUNDS=4  BENCH_AUDIT_SLICE=8 (seconds)
#   BENCH_REPORT_ROUNDS=3  BENCH_REPORT_RATE=4 (report requests/s during a "reports" slice)
#   BENCH_AUTHZ_ROUNDS=4  alternating slices on two fresh servers with the policy and rate limits
#                     (Redis) off and on, then on the long-running audited server
#   BENCH_REDIS_URL=redis://127.0.0.1:6379/0 (the rate-limit counters every server shares)
#   BENCH_REPORTS=0   skip bench/reports.py (1,000,000 payments: reporting store vs write store)
#   BENCH_RELAY=0     skip bench/relay.py (outbox drain rate vs create rate, into JetStream)
#   BENCH_STRICT=1    exit 1 when a target is missed (errors always exit 2)
#   BENCH_PROFILE=1   afterwards, one more with-key run of BENCH_PROFILE_SECONDS (15) under
#                     py-spy (installed into .venv if missing), summarised by bench/pyspy_summary.py;
#                     BENCH_PROFILE_RATE (100/s) and BENCH_PROFILE_ARGS (e.g. --native) tune it
#   STRONGROOM_*      passed through to the server (e.g. STRONGROOM_DB_POOL_SIZE)
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH_DIR/.." && pwd)"
BIN="$ROOT/.venv/bin"
PY="$BIN/python"

SECONDS_PER_RUN="${BENCH_SECONDS:-20}"
WARMUP="${BENCH_WARMUP:-5}"
WORKERS="${BENCH_WORKERS:-2}"
CONNECTIONS="${BENCH_CONNECTIONS:-16}"
THREADS="${BENCH_THREADS:-2}"
SCALE="${BENCH_PGBENCH_SCALE:-16}"
PGHOST_="${BENCH_PGHOST:-127.0.0.1}"
PGPORT_="${BENCH_PGPORT:-5432}"
PGUSER_="${BENCH_PGUSER:-postgres}"
PROFILE="${BENCH_PROFILE:-0}"
PROFILE_SECONDS="${BENCH_PROFILE_SECONDS:-15}"
AUDIT_ENTRIES="${BENCH_AUDIT_ENTRIES:-1000000}"
AUDIT_ROUNDS="${BENCH_AUDIT_ROUNDS:-4}"
AUDIT_SLICE="${BENCH_AUDIT_SLICE:-8}"
REPORT_ROUNDS="${BENCH_REPORT_ROUNDS:-3}"
AUTHZ_ROUNDS="${BENCH_AUTHZ_ROUNDS:-4}"
REDIS_URL="${BENCH_REDIS_URL:-redis://127.0.0.1:6379/0}"

case "$PGHOST_" in
  127.* | localhost | ::1) ;;
  *) echo "bench: BENCH_PGHOST must be a loopback address, not $PGHOST_" >&2; exit 2 ;;
esac

log() { printf '\n[bench %s] %s\n' "$(date +%T)" "$*"; }
die() { printf '\n[bench] ERROR: %s\n' "$*" >&2; exit 2; }

[[ -x "$BIN/strongroom" ]] || die "$BIN/strongroom is missing; run 'make test' or 'make run' first"

# --- tools --------------------------------------------------------------------------------------
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v pgbench >/dev/null || missing+=(postgresql-contrib)
command -v psql >/dev/null || missing+=(postgresql-client)
if ((${#missing[@]})); then
  SUDO=""
  [[ "$(id -u)" == 0 ]] || SUDO="sudo"
  log "installing ${missing[*]} with apt-get"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
for tool in wrk pgbench psql curl; do
  command -v "$tool" >/dev/null || die "$tool is not installed"
done

# For psql and pgbench, and for bench/cpustat.py's own psql.
export PGHOST="$PGHOST_" PGPORT="$PGPORT_" PGUSER="$PGUSER_"
PSQL=(psql -h "$PGHOST_" -p "$PGPORT_" -U "$PGUSER_" -X -q -v ON_ERROR_STOP=1 -At)
pg_isready -h "$PGHOST_" -p "$PGPORT_" -q || die "PostgreSQL is not answering on $PGHOST_:$PGPORT_"

# --- run state and cleanup ----------------------------------------------------------------------
RUN_ID="$(date +%Y%m%d-%H%M%S)-$$"
SUFFIX="$(date +%s)_$$"
APP_DB="strongroom_bench_$SUFFIX"
PGB_DB="pgbench_bench_$SUFFIX"
OUT="$BENCH_DIR/results/$RUN_ID"
mkdir -p "$OUT"
SERVER_PID=""
BG_WORKER_PID=""
# The servers started so far, by name (see remember_server and use_server).
declare -A SERVER_PORTS=() SERVER_PIDS=() SERVER_WORKERS=()
DBS_CREATED=()

stop_server() {
  [[ -n "$SERVER_PID" ]] || return 0
  # The server was started with setsid, so its pid is its process group: the supervisor and
  # every worker. TERM lets uvicorn shut down cleanly; KILL whatever is left after 15 s.
  kill -TERM -- "-$SERVER_PID" 2>/dev/null || kill -TERM "$SERVER_PID" 2>/dev/null || true
  for _ in $(seq 150); do
    kill -0 -- "-$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL -- "-$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}

cleanup() {
  local rc=$?
  trap - EXIT
  stop_server
  for name in "${!SERVER_PIDS[@]}"; do # every other server still up
    SERVER_PID="${SERVER_PIDS[$name]}"
    stop_server
  done
  if [[ -n "$BG_WORKER_PID" ]]; then
    kill -TERM -- "-$BG_WORKER_PID" 2>/dev/null || true
    wait "$BG_WORKER_PID" 2>/dev/null || true
  fi
  # Whatever else this script started and is still running (wrk, cpustat, top, py-spy).
  for pid in $(jobs -p); do
    kill "$pid" 2>/dev/null || true
  done
  if [[ -n "${STRONGROOM_RATELIMIT_PREFIX:-}" ]]; then # this run's rate-limit counters
    "$PY" -c 'import asyncio, sys; from strongroom.adapters.ratelimit import storage_from_url
asyncio.run(storage_from_url(sys.argv[1], key_prefix=sys.argv[2]).reset())' \
      "$REDIS_URL" "$STRONGROOM_RATELIMIT_PREFIX" || echo "bench: could not clear Redis keys" >&2
  fi
  for db in "${DBS_CREATED[@]}"; do
    "${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" ||
      echo "bench: could not drop database $db" >&2
  done
  [[ $rc == 0 ]] || echo "bench: exit status $rc; raw outputs in $OUT" >&2
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- databases, schema, merchant ----------------------------------------------------------------
log "databases $APP_DB and $PGB_DB on $PGHOST_:$PGPORT_"
for db in "$APP_DB" "$PGB_DB"; do
  "${PSQL[@]}" -d postgres -c "CREATE DATABASE \"$db\""
  DBS_CREATED+=("$db")
done

export STRONGROOM_DATABASE_URL="postgresql+asyncpg://$PGUSER_@$PGHOST_:$PGPORT_/$APP_DB"
export STRONGROOM_LOG_LEVEL="${STRONGROOM_LOG_LEVEL:-warning}"
export STRONGROOM_ENV="${STRONGROOM_ENV:-development}"
export STRONGROOM_KMS_URL="${STRONGROOM_KMS_URL:-local:///$OUT/keyring}" # $OUT is absolute
export STRONGROOM_REPORTING_URL="${STRONGROOM_REPORTING_URL:-duckdb:///$OUT/reporting.duckdb}"

"$BIN/strongroom" db upgrade >"$OUT/migrate.txt" 2>&1 || {
  cat "$OUT/migrate.txt" >&2
  die "db upgrade failed"
}
"$BIN/strongroom" merchants create --name Bench --json >"$OUT/merchant.json" 2>"$OUT/merchant.err" ||
  die "merchants create failed: $(cat "$OUT/merchant.err")"
SK="$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["secret_key"])' "$OUT/merchant.json")"
[[ "$SK" == sk_test_* ]] || die "no secret key in merchants create output"

# Rate limiting as in production: counters in Redis, shared by every server process. The
# limits are set far above the load, so every request is counted and none refused: the
# benchmark measures what counting costs (issue 7), not the limits themselves.
export STRONGROOM_RATELIMIT_URL="$REDIS_URL"
export STRONGROOM_RATELIMIT_PREFIX="strongroom_bench_$SUFFIX"
export STRONGROOM_RATELIMIT_PER_ADDRESS='{"reads":"100000/second","writes":"100000/second","login":"10/second","webhooks":"100000/second"}'
"$PY" -c 'import asyncio, sys; from strongroom.adapters.ratelimit import storage_from_url
sys.exit(0 if asyncio.run(storage_from_url(sys.argv[1]).check()) else 1)' "$REDIS_URL" ||
  die "Redis is not answering at $REDIS_URL (BENCH_REDIS_URL)"
MERCHANT="$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["id"])' "$OUT/merchant.json")"
"$BIN/strongroom" merchants rate-limits "$MERCHANT" --reads 100000/second \
  --writes 100000/second >/dev/null || die "merchants rate-limits failed"

# --- server and worker --------------------------------------------------------------------------
free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
AUDIT_PORT="$(free_port)"
BASE_PORT="$(free_port)"
NOAUTHZ_PORT="$(free_port)"
AUTHZ_PORT="$(free_port)"
PORT="$AUDIT_PORT"
URL="http://127.0.0.1:$PORT"

# start_server LOG: `strongroom serve` with the current STRONGROOM_* settings, waits for /healthz.
start_server() {
  local logfile=$1
  log "starting strongroom serve --workers $WORKERS on $URL"
  setsid "$BIN/strongroom" serve --no-worker --host 127.0.0.1 --port "$PORT" --workers "$WORKERS" \
    >"$logfile" 2>&1 &
  SERVER_PID=$!
  local deadline=$((SECONDS + 60))
  until [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$URL/healthz" || true)" == 200 ]]; do
    kill -0 "$SERVER_PID" 2>/dev/null || {
      cat "$logfile" >&2
      die "the server exited during start-up"
    }
    ((SECONDS < deadline)) || {
      cat "$logfile" >&2
      die "GET /healthz did not return 200 within 60 s"
    }
    sleep 0.2
  done
  # Give every worker a moment to finish start-up (the first to answer /healthz may be alone).
  sleep 1
  # uvicorn's workers are multiprocessing children (spawn_main); skip its resource tracker.
  WORKER_PIDS=""
  for pid in $(pgrep -P "$SERVER_PID" || true); do
    if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q spawn_main; then
      WORKER_PIDS+="$pid "
    fi
  done
  [[ -n "$WORKER_PIDS" ]] || WORKER_PIDS="$SERVER_PID" # --workers 1 serves in-process
  log "server pid $SERVER_PID, worker pids: $WORKER_PIDS"
}

# Two servers on the same database: the baseline with payment audit events off, and the one
# measured throughout. The audit log's cost is measured by alternating short runs between them,
# so a machine whose speed drifts during the run (this one does) weighs on both alike.
# remember_server NAME: the server start_server just started, under NAME.
remember_server() {
  SERVER_PORTS[$1]="$PORT" SERVER_PIDS[$1]="$SERVER_PID" SERVER_WORKERS[$1]="$WORKER_PIDS"
}
# use_server NAME: point run_wrk (and cpustat) at a remembered server.
use_server() {
  PORT="${SERVER_PORTS[$1]}" SERVER_PID="${SERVER_PIDS[$1]}" WORKER_PIDS="${SERVER_WORKERS[$1]}"
  URL="http://127.0.0.1:$PORT"
}
# retire_server NAME: stop it and forget it.
retire_server() {
  use_server "$1"
  stop_server
  unset "SERVER_PORTS[$1]" "SERVER_PIDS[$1]" "SERVER_WORKERS[$1]"
}
PORT="$BASE_PORT" URL="http://127.0.0.1:$BASE_PORT"
STRONGROOM_AUDIT_PAYMENT_EVENTS=false start_server "$OUT/server-noaudit.log"
remember_server base
PORT="$AUDIT_PORT" URL="http://127.0.0.1:$AUDIT_PORT"
start_server "$OUT/server.log"
remember_server audit
# The background loops (gateway recovery, the audit sequencer) in their own process, as in
# production; it runs through every load run, so each pays for it alike.
setsid "$BIN/strongroom" worker >"$OUT/worker.log" 2>&1 &
BG_WORKER_PID=$!

# One request by hand, so a broken endpoint fails here with its body instead of as a wall of
# non-200s in wrk.
status="$(curl -s -o "$OUT/smoke.json" -w '%{http_code}' --max-time 10 "$URL/v1/payment_intents" \
  -H "Authorization: Bearer $SK" -H "Content-Type: application/json" \
  -H "Idempotency-Key: smoke-$RUN_ID" \
  -d '{"amount":2000,"currency":"usd","payment_method":"tok_visa","confirm":true}')"
[[ "$status" == 200 ]] || die "smoke request got HTTP $status: $(cat "$OUT/smoke.json")"
grep -q '"status":"succeeded"' "$OUT/smoke.json" ||
  die "smoke payment did not succeed: $(cat "$OUT/smoke.json")"

cat >"$OUT/meta.txt" <<EOF
run_id=$RUN_ID
workers=$WORKERS
connections=$CONNECTIONS
threads=$THREADS
seconds=$SECONDS_PER_RUN
scale=$SCALE
git=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD -- src 2>/dev/null || echo "+dirty src")
postgres=$("${PSQL[@]}" -d postgres -c "SELECT version()" | cut -d, -f1)
db_pool_size=${STRONGROOM_DB_POOL_SIZE:-default}
EOF

# --- load ---------------------------------------------------------------------------------------
NONCE="$(date +%s%N)-$$"

# run_wrk NAME key|nokey DURATION: wrk's output to wrk-NAME.txt, CPU split to cpu-NAME.json,
# and a `top` snapshot half-way through to top-NAME.txt.
run_wrk() {
  local name=$1 mode=$2 duration=$3
  "${PSQL[@]}" -d postgres -c "CHECKPOINT"
  "$PY" "$BENCH_DIR/cpustat.py" "$SERVER_PID" "$duration" "$OUT/cpu-$name.json" "$APP_DB" &
  local cpu_pid=$!
  (sleep "$((duration / 2))" && top -b -n1 -w 200 | head -30 >"$OUT/top-$name.txt" &&
    ss -tnpH state established "( sport = :$PORT )" | grep -o 'pid=[0-9]*' | sort | uniq -c |
    awk '{printf "%s:%s ", substr($2, 5), $1} END {print ""}' >"$OUT/conns-$name.txt") &
  local top_pid=$!
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"${duration}s" --latency -s "$BENCH_DIR/payments.lua" \
    "$URL" -- "$SK" "$mode" "$NONCE-$name" "$name" >"$OUT/wrk-$name.txt" 2>"$OUT/wrk-$name.err" || {
    cat "$OUT/wrk-$name.txt" "$OUT/wrk-$name.err" >&2
    die "wrk failed ($name)"
  }
  wait "$cpu_pid" "$top_pid" || true
  if [[ -s "$OUT/wrk-$name.err" ]]; then
    echo "bench: wrk $name wrote to stderr (first non-200 bodies):" >&2
    head -5 "$OUT/wrk-$name.err" >&2
  fi
  echo "    connections per server process (pid:count): $(cat "$OUT/conns-$name.txt" 2>/dev/null)"
  grep -E '^\s+(Latency|Req/Sec)|Requests/sec|Non-2xx|Socket errors|^BENCH_RESULT' \
    "$OUT/wrk-$name.txt" || true
}

# run_slice SERVER NAME: one alternating slice of $AUDIT_SLICE seconds on a remembered server.
run_slice() {
  use_server "$1"
  run_wrk "$2" key "$AUDIT_SLICE" | grep -E 'connections per|Requests/sec'
}

log "warm-up: ${WARMUP}s on each server"
use_server base
run_wrk warmup-noaudit key "$WARMUP" >/dev/null
use_server audit
run_wrk warmup key "$WARMUP" >/dev/null

log "audit cost: $AUDIT_ROUNDS rounds of ${AUDIT_SLICE}s with payment audit events off, then on"
for round in $(seq "$AUDIT_ROUNDS"); do
  run_slice base "noaudit-$round"
  run_slice audit "audit-$round"
done
retire_server base # the rest of the load goes to the audited one
use_server audit

# The policy's and the rate limits' cost (issue 7): two servers started now, alike but for the
# policy and the counters (in Redis), alternating; and, as a third slice each round, the audited
# server that has been serving since the start, to show whether a server that has run longer is
# slower (it must not be).
PORT="$NOAUTHZ_PORT" URL="http://127.0.0.1:$NOAUTHZ_PORT"
STRONGROOM_POLICY_ENFORCED=false STRONGROOM_RATELIMIT_ENABLED=false \
  start_server "$OUT/server-noauthz.log"
remember_server noauthz
PORT="$AUTHZ_PORT" URL="http://127.0.0.1:$AUTHZ_PORT"
start_server "$OUT/server-authz.log"
remember_server authz
use_server noauthz
run_wrk warmup-noauthz key "$WARMUP" >/dev/null
use_server authz
run_wrk warmup-authz key "$WARMUP" >/dev/null
log "authorization cost: $AUTHZ_ROUNDS rounds of ${AUDIT_SLICE}s with policy and rate limits off, on, and on in the long-running server"
for round in $(seq "$AUTHZ_ROUNDS"); do
  run_slice noauthz "noauthz-$round"
  run_slice authz "authz-$round"
  run_slice audit "longrun-$round"
done
retire_server noauthz
retire_server authz
use_server audit

# Reports are served from the reporting store, never the write store: the payment rate should
# barely notice a dashboard asking for them (bench/report_load.py, BENCH_REPORT_RATE per second).
log "reports: $REPORT_ROUNDS rounds of ${AUDIT_SLICE}s without, then with a reporting dashboard"
for round in $(seq "$REPORT_ROUNDS"); do
  run_wrk "noreports-$round" key "$AUDIT_SLICE" | grep -E 'connections per|Requests/sec'
  "$PY" "$BENCH_DIR/report_load.py" "$URL" "$SK" "$AUDIT_SLICE" "$OUT/report-load-$round.json" &
  load_pid=$!
  run_wrk "reports-$round" key "$AUDIT_SLICE" | grep -E 'connections per|Requests/sec'
  wait "$load_pid" || die "report_load.py failed"
done
log "create-and-confirm WITH Idempotency-Key: ${SECONDS_PER_RUN}s, $CONNECTIONS connections"
"$PY" "$BENCH_DIR/audit_lag.py" "$APP_DB" "$SECONDS_PER_RUN" "$OUT/audit-lag.json" &
lag_pid=$!
run_wrk key key "$SECONDS_PER_RUN"
wait "$lag_pid" || die "audit_lag.py failed"
log "create-and-confirm WITHOUT Idempotency-Key: ${SECONDS_PER_RUN}s, $CONNECTIONS connections"
run_wrk nokey nokey "$SECONDS_PER_RUN"

# Inbound gateway webhooks (issue 5): signed Stripe deliveries to a Stripe gateway account,
# verified, stored and deduplicated by the same server, 10% of them repeats of earlier ones.
WEBHOOK_SECRET="whsec_bench$("$PY" -c 'import secrets; print(secrets.token_hex(16))')"
status="$(curl -s -o "$OUT/gateway-account.json" -w '%{http_code}' --max-time 10 \
  "$URL/v1/gateway_accounts" -H "Authorization: Bearer $SK" -H "Content-Type: application/json" \
  -d "{\"provider\":\"stripe\",\"credentials\":{\"secret_key\":\"sk_test_bench\",\"publishable_key\":\"pk_test_bench\",\"webhook_secrets\":[\"$WEBHOOK_SECRET\"]}}")"
[[ "$status" == 200 ]] || die "gateway account: HTTP $status: $(cat "$OUT/gateway-account.json")"
ACCOUNT="$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["id"])' "$OUT/gateway-account.json")"
# Enough for 5,000 deliveries/s; the file is deleted afterwards (it is only signed test events).
"$PY" "$BENCH_DIR/webhook_requests.py" "$ACCOUNT" "$WEBHOOK_SECRET" \
  "$(((SECONDS_PER_RUN + WARMUP) * 5000))" "$OUT/webhook-requests.tsv" ||
  die "webhook_requests.py failed"
log "inbound webhooks: ${SECONDS_PER_RUN}s of signed Stripe deliveries, $CONNECTIONS connections"
run_webhooks() {
  local name=$1 duration=$2
  "${PSQL[@]}" -d postgres -c "CHECKPOINT"
  "$PY" "$BENCH_DIR/cpustat.py" "$SERVER_PID" "$duration" "$OUT/cpu-$name.json" "$APP_DB" &
  local cpu_pid=$!
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"${duration}s" --latency -s "$BENCH_DIR/webhooks.lua" \
    "$URL" -- "$OUT/webhook-requests-$name.tsv" "$THREADS" "$name" \
    >"$OUT/wrk-$name.txt" 2>"$OUT/wrk-$name.err" || {
    cat "$OUT/wrk-$name.txt" "$OUT/wrk-$name.err" >&2
    die "wrk failed ($name)"
  }
  wait "$cpu_pid" || true
  grep -E 'Requests/sec|Non-2xx|Socket errors' "$OUT/wrk-$name.txt" || true
}
# The warm-up and the measured run each get their own lines, so no delivery is sent twice
# except the generator's deliberate repeats.
head -n "$((WARMUP * 5000))" "$OUT/webhook-requests.tsv" >"$OUT/webhook-requests-webhooks-warmup.tsv"
tail -n "+$((WARMUP * 5000 + 1))" "$OUT/webhook-requests.tsv" >"$OUT/webhook-requests-webhooks.tsv"
rm -f "$OUT/webhook-requests.tsv"
run_webhooks webhooks-warmup "$WARMUP" >/dev/null
run_webhooks webhooks "$SECONDS_PER_RUN"
"${PSQL[@]}" -d "$APP_DB" -c "SELECT count(*) FROM inbound_webhooks" >"$OUT/webhooks-stored.txt"
rm -f "$OUT"/webhook-requests-*.tsv

if [[ "$PROFILE" == 1 ]]; then
  [[ -x "$BIN/py-spy" ]] || "$BIN/pip" install -q py-spy
  log "profiling: ${PROFILE_SECONDS}s with Idempotency-Key under py-spy (workers $WORKER_PIDS)"
  spies=()
  for pid in $WORKER_PIDS; do
    # shellcheck disable=SC2086 # BENCH_PROFILE_ARGS is a list of flags, e.g. "--native"
    "$BIN/py-spy" record --rate "${BENCH_PROFILE_RATE:-100}" --format raw -d "$PROFILE_SECONDS" \
      ${BENCH_PROFILE_ARGS:-} -p "$pid" -o "$OUT/pyspy-$pid.raw" >"$OUT/pyspy-$pid.log" 2>&1 &
    spies+=($!)
  done
  run_wrk profile key "$PROFILE_SECONDS"
  wait "${spies[@]}" || true
  "$PY" "$BENCH_DIR/pyspy_summary.py" "$OUT"/pyspy-*.raw | tee "$OUT/profile-summary.txt"
fi

log "stopping the server"
retire_server audit
kill -TERM -- "-$BG_WORKER_PID" 2>/dev/null || true
wait "$BG_WORKER_PID" 2>/dev/null || true
BG_WORKER_PID=""

# --- pgbench ------------------------------------------------------------------------------------
PGB=(pgbench -h "$PGHOST_" -p "$PGPORT_" -U "$PGUSER_")
log "pgbench -i -s $SCALE"
"${PGB[@]}" -i -q -s "$SCALE" "$PGB_DB" >"$OUT/pgbench-init.txt" 2>&1 || {
  cat "$OUT/pgbench-init.txt" >&2
  die "pgbench -i failed"
}
"${PSQL[@]}" -d postgres -c "CHECKPOINT"
log "pgbench TPC-B: $CONNECTIONS clients, $THREADS threads, ${SECONDS_PER_RUN}s"
"$PY" "$BENCH_DIR/cpustat.py" 0 "$SECONDS_PER_RUN" "$OUT/cpu-pgbench.json" "$PGB_DB" &
cpu_pid=$!
"${PGB[@]}" -c "$CONNECTIONS" -j "$THREADS" -T "$SECONDS_PER_RUN" "$PGB_DB" \
  >"$OUT/pgbench.txt" 2>&1 || {
  cat "$OUT/pgbench.txt" >&2
  die "pgbench failed"
}
wait "$cpu_pid" || true
grep -E '^(tps|latency average|number of failed)' "$OUT/pgbench.txt" || true

# The webhook-ingest baseline: one INSERT per transaction (bench/insert_one.sql) into a table
# shaped like inbound_webhooks' hot path, same clients, same length.
"${PSQL[@]}" -d "$PGB_DB" -c "CREATE TABLE ingest (id bigserial PRIMARY KEY,
  event_id text NOT NULL UNIQUE, payload text NOT NULL, received_at timestamptz NOT NULL DEFAULT now())"
"${PSQL[@]}" -d postgres -c "CHECKPOINT"
log "pgbench one-row inserts: $CONNECTIONS clients, $THREADS threads, ${SECONDS_PER_RUN}s"
"$PY" "$BENCH_DIR/cpustat.py" 0 "$SECONDS_PER_RUN" "$OUT/cpu-pgbench-insert.json" "$PGB_DB" &
cpu_pid=$!
"${PGB[@]}" -n -f "$BENCH_DIR/insert_one.sql" -c "$CONNECTIONS" -j "$THREADS" \
  -T "$SECONDS_PER_RUN" "$PGB_DB" >"$OUT/pgbench-insert.txt" 2>&1 || {
  cat "$OUT/pgbench-insert.txt" >&2
  die "pgbench (one-row inserts) failed"
}
wait "$cpu_pid" || true
grep -E '^(tps|latency average|number of failed)' "$OUT/pgbench-insert.txt" || true

# --- audit verify over a big log -----------------------------------------------------------------
AUDIT_DB="strongroom_bench_audit_$SUFFIX"
log "audit verify: a log of $AUDIT_ENTRIES entries in $AUDIT_DB"
"${PSQL[@]}" -d postgres -c "CREATE DATABASE \"$AUDIT_DB\""
DBS_CREATED+=("$AUDIT_DB")
(
  export STRONGROOM_DATABASE_URL="postgresql+asyncpg://$PGUSER_@$PGHOST_:$PGPORT_/$AUDIT_DB"
  "$BIN/strongroom" db upgrade >/dev/null
  "$PY" "$BENCH_DIR/audit_fill.py" "$AUDIT_ENTRIES" | tail -1
  "$BIN/strongroom" audit verify --json >"$OUT/audit-verify.json"
) || die "audit verify failed on the generated log: $(cat "$OUT/audit-verify.json" 2>/dev/null)"

# --- events and reporting (issue 4) ---------------------------------------------------------------
log "policy evaluation (bench/policy.py)"
"$PY" "$BENCH_DIR/policy.py" "$OUT/policy.json" || die "bench/policy.py failed"

if [[ "${BENCH_RELAY:-1}" == 1 ]]; then
  log "outbox relay: drain rate vs create rate (bench/relay.py)"
  BENCH_PG_DSN="postgresql://$PGUSER_@$PGHOST_:$PGPORT_" "$PY" "$BENCH_DIR/relay.py" |
    tee "$OUT/relay.txt" || die "bench/relay.py failed"
fi
if [[ "${BENCH_REPORTS:-1}" == 1 ]]; then
  log "reports: 1,000,000 payments, reporting stores vs the write store (bench/reports.py)"
  BENCH_PG_DSN="postgresql://$PGUSER_@$PGHOST_:$PGPORT_" "$PY" "$BENCH_DIR/reports.py" |
    tee "$OUT/reports.txt" || die "bench/reports.py failed"
fi

# --- report -------------------------------------------------------------------------------------
set +e
"$PY" "$BENCH_DIR/report.py" "$OUT" | tee "$OUT/report.txt"
rc=${PIPESTATUS[0]}
set -e
ln -sfn "$RUN_ID" "$BENCH_DIR/results/latest"
exit "$rc"
