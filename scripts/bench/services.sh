#!/usr/bin/env bash
# Benchmark the authenticated request path of the bundled services against
# two baselines, side by side in one run (not part of the test command).
#
# Usage: scripts/bench/services.sh
#   BENCH_THREADS (default 2), BENCH_CONNECTIONS (32), BENCH_DURATION (15 s)
#   and BENCH_WARMUP (3 s, untimed, before each measured run) tune wrk;
#   BENCH_LOG_LEVEL (info, the matrix's value) is the services' LOG_LEVEL;
#   BENCH_FINANCE_QUERY (empty) is appended to (2)'s URL, e.g. `?limit=1`
#   to shrink the business part of the request;
#   BENCH_PERF=1 adds a flat `perf record` profile of the server process of
#   (1), (2) and (3) during their measured runs (needs perf).
#
# What is measured, one after another, each with the same wrk settings
# (-t THREADS -c CONNECTIONS -d DURATION --latency) and the same request
# headers (Authorization: Bearer <access token>, x-org: <company id>):
#   (1) Auth      GET /auth/me/access, warm (the access context cached)
#   (2) finance   GET /v1/invoices (20 invoices in the company), authorized
#                 through Auth's /internal/access-context (JWT, x-org, module
#                 and permission checked on every request; the context kept
#                 ACCESS_CACHE_SECONDS), the list served by the module's read
#                 cache, which every write to the table invalidates (see
#                 services/module/src/record_cache.rs)
#   (3) bench-verify: one RS256 verification + one Redis GET, then 200: the
#                 irreducible work of an authenticated request (baseline)
#   (4) bench-hello: GET / -> "ok" (the floor of any axum request)
# and printed: requests/s and p99 latency of each, then the ratios
# (1)/(3) and (2)/(3) for throughput (target >= 0.7) and p99 (target <= 2.0).
#
# The services remember, per worker thread, the access tokens whose
# signature they verified (docs/services.md, "Verification"): wrk sends one
# token, so (1) and (2) pay the RSA step once per thread while (3) pays it
# on every request, as the baseline is defined. A real client also sends
# one token for its whole lifetime; read (1) and (2) as that steady state.
#
# Reading the figures: wrk is closed-loop and the services, PostgreSQL,
# Redis and wrk share the machine's CPUs, so each target runs at CPU
# saturation: its throughput is about 1 / (CPU one request costs in all
# processes), and its latency is mostly queueing (p50 ~ connections /
# throughput), so the p99 ratio largely follows the throughput ratio.
#
# Every response must be a 200 (checked before the runs, and wrk's count of
# non-2xx answers must be 0), so an error page can never pass for speed.
#
# After each run a short profile: CPU milliseconds per request by process
# (/proc), SQL statements per request by database (pg_stat_statements) and
# Redis commands per request (INFO commandstats); at the end the access
# cache counters of Auth and finance.
#
# How it runs
#   1. Outside: installs wrk with apt if it is missing, builds the release
#      binaries (kisum-auth, kisum-core, kisum-module, kisum-bench's bins).
#   2. Inside a private network, PID and mount namespace (unshare): only a
#      loopback interface exists there, so nothing can listen beyond
#      127.0.0.1 even if a binary ignores BIND_ADDRESS, and nothing can
#      reach any other host; when the script ends, the kernel kills
#      whatever is left in the namespace.
#   3. A private PostgreSQL (initdb in a temp dir as user postgres, trust on
#      127.0.0.1 and its own socket only, like kisum-testkit) and a private
#      Redis (password, no persistence), both on free loopback ports.
#   4. Migrations (`kisum-auth migrate`, `kisum-core migrate`,
#      `kisum-module migrate`), the user (`kisum-auth seed-user`), the key set
#      (`bench-setup keys`); Core, Auth, finance, bench-verify, bench-hello
#      started on loopback with the matrix's variable names, every secret as
#      a <NAME>_FILE of mode 0600 in the temp dir; then `bench-setup seed`:
#      company, role, membership and finance grant (kisum-auth's directory),
#      an active basic-plus-finance subscription through Core's API, a login
#      and 20 invoices.
#   5. A trap stops every process it started, stops PostgreSQL and removes
#      the temp dirs, however the script ends.
#
# Needs root (initdb runs as postgres through runuser; unshare), and the
# Debian packages postgresql and redis-server (scripts/peers.sh installs
# them), curl and iproute2.
set -euo pipefail

die() {
    echo "services.sh: error: $*" >&2
    exit 1
}
say() { echo "services.sh: $*" >&2; }

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
script=$repo_root/scripts/bench/services.sh

threads=${BENCH_THREADS:-2}
connections=${BENCH_CONNECTIONS:-32}
duration=${BENCH_DURATION:-15}
warmup=${BENCH_WARMUP:-3}
log_level=${BENCH_LOG_LEVEL:-info}
perf=${BENCH_PERF:-0}
finance_query=${BENCH_FINANCE_QUERY:-}
[[ -z $finance_query || $finance_query =~ ^\?[A-Za-z0-9=\&_-]+$ ]] ||
    die "BENCH_FINANCE_QUERY=$finance_query: expected ?name=value[&...]"

# Bounded load: every run stops by itself.
for pair in "BENCH_THREADS:$threads:1:8" "BENCH_CONNECTIONS:$connections:1:256" \
    "BENCH_DURATION:$duration:1:60" "BENCH_WARMUP:$warmup:0:30"; do
    IFS=: read -r name value low high <<<"$pair"
    if ! [[ $value =~ ^[0-9]+$ ]] || ((value < low || value > high)); then
        die "$name=$value: expected a whole number from $low to $high"
    fi
done
((connections >= threads)) || die "BENCH_CONNECTIONS must be at least BENCH_THREADS"

# ===================================================== outside the namespace
if [[ ${1:-} != --inside ]]; then
    [[ $(id -u) -eq 0 ]] || die "run as root (initdb as postgres via runuser, unshare)"
    if ! command -v wrk >/dev/null 2>&1; then
        say "installing wrk with apt"
        apt-get update -q >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk >&2
    fi
    [[ $perf != 1 ]] || command -v perf >/dev/null 2>&1 || die "BENCH_PERF=1 needs perf (apt-get install linux-perf)"
    for tool in cargo curl psql redis-server redis-cli runuser unshare ip ss; do
        command -v "$tool" >/dev/null 2>&1 ||
            die "$tool not found (postgresql and redis-server: bash scripts/peers.sh; curl, iproute2: apt-get install)"
    done

    cd "$repo_root"
    say "building release binaries"
    cargo build --release --locked -p kisum-auth -p kisum-core -p kisum-module -p kisum-bench
    target_dir=${CARGO_TARGET_DIR:-target}
    [[ $target_dir == /* ]] || target_dir=$repo_root/$target_dir
    bin_dir=$target_dir/release
    for bin in kisum-auth kisum-core kisum-module bench-hello bench-verify bench-setup; do
        [[ -x $bin_dir/$bin ]] || die "release binary not found at $bin_dir/$bin"
    done

    # The temp dirs are made here so that this side can check they are gone.
    work=$(mktemp -d /tmp/kisum-bench-XXXXXX)
    pg_dir=$(mktemp -d /tmp/kisum-bench-pg-XXXXXX)
    ns_pid=""
    # shellcheck disable=SC2317  # called by the trap
    outer_cleanup() {
        if [[ -n $ns_pid ]] && kill -0 "$ns_pid" 2>/dev/null; then
            # The inner script (PID 1 of the namespace, a child of unshare)
            # stops its processes and PostgreSQL on TERM; if it has not
            # within 30 s, ending unshare makes the kernel kill them all.
            local inner
            inner=$(pgrep -P "$ns_pid" || true)
            [[ -z $inner ]] || kill -TERM "$inner" 2>/dev/null || true
            for _ in $(seq 300); do
                kill -0 "$ns_pid" 2>/dev/null || break
                sleep 0.1
            done
            kill -KILL "$ns_pid" 2>/dev/null || true
            wait "$ns_pid" 2>/dev/null || true
        fi
        rm -rf -- "$work" "$pg_dir"
    }
    trap outer_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    # In the background, so that a signal reaches the trap at once.
    unshare --net --pid --fork --kill-child --mount-proc -- \
        bash "$script" --inside "$bin_dir" "$work" "$pg_dir" &
    ns_pid=$!
    status=0
    wait "$ns_pid" || status=$?
    ns_pid=""

    # Nothing may outlive the run (the namespace's end kills what is left;
    # this only reports).
    left=$(pgrep -a -f -- "$work|$pg_dir|$bin_dir/" || true)
    [[ -z $left ]] || say "warning: processes left after the run:"$'\n'"$left"
    [[ ! -e $work && ! -e $pg_dir ]] || say "warning: temp dirs left: $work $pg_dir (removing)"
    exit "$status"
fi

# ====================================================== inside the namespace
bin_dir=$2
work=$3
pg_dir=$4
umask 077

ip link set lo up

pids=()
names=()
pg_ctl=""
cleanup() {
    local status=$? i
    trap - EXIT INT TERM
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        kill -TERM "${pids[i]}" 2>/dev/null || true
    done
    for _ in $(seq 50); do
        local alive=0 pid
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
    for ((i = 0; i < ${#pids[@]}; i++)); do
        if kill -0 "${pids[i]}" 2>/dev/null; then
            say "killing ${names[i]} (pid ${pids[i]})"
            kill -KILL "${pids[i]}" 2>/dev/null || true
        fi
    done
    if [[ -n $pg_ctl && -f $pg_dir/data/postmaster.pid ]]; then
        runuser -u postgres -- "$pg_ctl" -D "$pg_dir/data" stop -m fast -w -t 30 >/dev/null 2>&1 || true
    fi
    wait 2>/dev/null || true
    rm -rf -- "$work" "$pg_dir"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME COMMAND...: runs COMMAND in the background, its output in
# $work/NAME.log, and remembers it for the trap.
start() {
    local name=$1
    shift
    "$@" >"$work/$name.log" 2>&1 &
    pids+=("$!")
    names+=("$name")
}

log_tail() { tail -n "${2:-30}" "$work/$1.log" >&2 || true; }

# wait_ready NAME URL [any]: until URL answers 2xx, or with `any` any HTTP
# status (30 s at most).
wait_ready() {
    local name=$1 url=$2 pid=${pids[-1]} fail=-f
    [[ ${3:-} == any ]] && fail=""
    for _ in $(seq 300); do
        curl $fail -sS -o /dev/null --max-time 2 "$url" 2>/dev/null && return 0
        if ! kill -0 "$pid" 2>/dev/null; then
            log_tail "$name"
            die "$name exited before it was ready"
        fi
        sleep 0.1
    done
    log_tail "$name"
    die "$name not ready at $url after 30 s"
}

secret() { # secret NAME VALUE: a file of mode 0600 holding VALUE; prints its path
    local path=$work/secrets/$1
    printf '%s\n' "$2" >"$path"
    chmod 600 "$path"
    printf '%s\n' "$path"
}
random_hex() { od -An -N24 -tx1 /dev/urandom | tr -d ' \n'; }

mkdir -p "$work/secrets" "$work/redis"
read -r pg_port redis_port core_http core_int auth_http auth_int fin_http fin_int verify_port hello_port \
    < <("$bin_dir/bench-setup" free-ports 10)

# --- PostgreSQL --------------------------------------------------------------
pg_bindir=${KISUM_PG_BINDIR:-/usr/lib/postgresql/15/bin}
[[ -x $pg_bindir/initdb ]] || pg_bindir=$(pg_config --bindir 2>/dev/null || true)
[[ -x $pg_bindir/initdb && -x $pg_bindir/pg_ctl ]] ||
    die "initdb/pg_ctl not found (PostgreSQL 15: bash scripts/peers.sh, or set KISUM_PG_BINDIR)"
id postgres >/dev/null 2>&1 || die "no user postgres (Debian package postgresql)"
chown postgres:postgres "$pg_dir"
chmod 700 "$pg_dir"
say "PostgreSQL on 127.0.0.1:$pg_port"
runuser -u postgres -- "$pg_bindir/initdb" -D "$pg_dir/data" -U kisum --auth=trust -E UTF8 \
    --locale=C.UTF-8 --no-sync --no-instructions >"$work/initdb.log" 2>&1 ||
    { log_tail initdb; die "initdb failed"; }
pg_ctl=$pg_bindir/pg_ctl
runuser -u postgres -- mkdir "$pg_dir/sockets"
printf 'local all all trust\nhost all all 127.0.0.1/32 trust\n' >"$pg_dir/data/pg_hba.conf"
# kisum-testkit's settings (no durability: a throw-away cluster), plus
# pg_stat_statements for the per-request statement counts of the profile.
cat >>"$pg_dir/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $pg_port
unix_socket_directories = '$pg_dir/sockets'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
log_min_messages = warning
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = top
EOF
chown postgres:postgres "$pg_dir/data/pg_hba.conf" "$pg_dir/data/postgresql.conf"
runuser -u postgres -- "$pg_ctl" -D "$pg_dir/data" -l "$pg_dir/postgres.log" -w -t 30 start >/dev/null ||
    { tail -n 30 "$pg_dir/postgres.log" >&2; die "PostgreSQL did not start"; }

psql_at() { # psql_at DB SQL
    psql -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pg_port" -U kisum -d "$1" -c "$2"
}
for db in auth_db platform_core_db finance_db; do
    psql_at postgres "create database $db" >/dev/null
done
psql_at postgres "create extension pg_stat_statements" >/dev/null
pg_url() { printf 'postgres://kisum@127.0.0.1:%s/%s?sslmode=disable' "$pg_port" "$1"; }

# --- Redis -------------------------------------------------------------------
redis_pass=$(random_hex)
cat >"$work/redis/redis.conf" <<EOF
bind 127.0.0.1
port $redis_port
protected-mode yes
daemonize no
save ""
appendonly no
dir $work/redis
requirepass $redis_pass
EOF
say "Redis on 127.0.0.1:$redis_port"
start redis redis-server "$work/redis/redis.conf"
rcli() { REDISCLI_AUTH=$redis_pass redis-cli --no-auth-warning -h 127.0.0.1 -p "$redis_port" "$@"; }
for _ in $(seq 100); do
    [[ $(rcli ping 2>/dev/null) == PONG ]] && break
    sleep 0.1
done
[[ $(rcli ping 2>/dev/null) == PONG ]] || { log_tail redis; die "Redis did not start"; }

# --- secrets (every one a <NAME>_FILE of mode 0600) --------------------------
auth_db_url=$(secret auth-db-url "$(pg_url auth_db)")
core_db_url=$(secret core-db-url "$(pg_url platform_core_db)")
finance_db_url=$(secret finance-db-url "$(pg_url finance_db)")
redis_url=$(secret redis-url "redis://:$redis_pass@127.0.0.1:$redis_port/0")
cred_auth=$(secret credential-auth "$(random_hex)")
cred_admin=$(secret credential-platform-admin "$(random_hex)")
cred_finance=$(secret credential-finance "$(random_hex)")
cred_kisumctl=$(secret credential-kisumctl "$(random_hex)")
password_file=$(secret bench-password "$(random_hex)")
key_set=$work/secrets/key-set.json
kid=$("$bin_dir/bench-setup" keys "$key_set")
chmod 600 "$key_set"

issuer=https://auth.kisum.bench
audience=kisum-api
email=bench@kisum.bench

# Nothing from this shell's environment reaches the services (no proxy or
# other default can point them anywhere).
base_env=(env -i PATH=/usr/local/bin:/usr/bin:/bin KISUM_ENVIRONMENT=bench LOG_FORMAT=json
    "LOG_LEVEL=$log_level" METRICS_ENABLED=true BIND_ADDRESS=127.0.0.1
    "INTERNAL_CALLER_KISUMCTL_FILE=$cred_kisumctl")
core_env=("${base_env[@]}" SERVICE_NAME=platform-core "HTTP_PORT=$core_http"
    "INTERNAL_PORT=$core_int" "CORE_DB_URL_FILE=$core_db_url"
    "INTERNAL_ALLOWED_CALLERS=auth,platform-admin"
    "INTERNAL_CALLER_AUTH_FILE=$cred_auth" "INTERNAL_CALLER_PLATFORM_ADMIN_FILE=$cred_admin")
auth_env=("${base_env[@]}" SERVICE_NAME=auth "HTTP_PORT=$auth_http" "INTERNAL_PORT=$auth_int"
    "AUTH_DB_URL_FILE=$auth_db_url" "REDIS_URL_FILE=$redis_url"
    "JWT_ISSUER=$issuer" "JWT_AUDIENCE=$audience" "JWT_KEY_SET_FILE=$key_set"
    ACCESS_TOKEN_TTL=900 REFRESH_TOKEN_TTL=2592000
    "CORE_INTERNAL_URL=http://127.0.0.1:$core_int" "INTERNAL_CREDENTIAL_FILE=$cred_auth"
    "INTERNAL_CALLER_PLATFORM_ADMIN_FILE=$cred_admin" "INTERNAL_CALLER_FINANCE_FILE=$cred_finance"
    LOGIN_RATE_LIMIT_PER_IP=20 LOGIN_RATE_LIMIT_PER_EMAIL=5 LOGIN_RATE_LIMIT_WINDOW_SECONDS=900)
finance_env=("${base_env[@]}" SERVICE_NAME=finance MODULE_NAME=finance
    "HTTP_PORT=$fin_http" "INTERNAL_PORT=$fin_int"
    "AUTH_JWKS_URL=http://127.0.0.1:$auth_http/.well-known/jwks.json"
    "AUTH_INTERNAL_URL=http://127.0.0.1:$auth_int"
    "JWT_ISSUER=$issuer" "JWT_AUDIENCE=$audience" JWKS_CACHE_SECONDS=300
    JWKS_MIN_REFETCH_SECONDS=30 X_ORG_POLICY=required
    "DATABASE_URL_FILE=$finance_db_url" "INTERNAL_CREDENTIAL_FILE=$cred_finance")
verify_env=(env -i PATH=/usr/bin:/bin
    "AUTH_JWKS_URL=http://127.0.0.1:$auth_http/.well-known/jwks.json" "BENCH_KID=$kid"
    "JWT_ISSUER=$issuer" "JWT_AUDIENCE=$audience" "REDIS_URL_FILE=$redis_url")

# --- migrations and the user -------------------------------------------------
say "migrating auth_db, platform_core_db, finance_db"
"${auth_env[@]}" "$bin_dir/kisum-auth" migrate >"$work/migrate-auth.log" 2>&1 ||
    { log_tail migrate-auth; die "kisum-auth migrate failed"; }
"${core_env[@]}" "$bin_dir/kisum-core" migrate >"$work/migrate-core.log" 2>&1 ||
    { log_tail migrate-core; die "kisum-core migrate failed"; }
"${finance_env[@]}" "$bin_dir/kisum-module" migrate >"$work/migrate-finance.log" 2>&1 ||
    { log_tail migrate-finance; die "kisum-module migrate failed"; }
user=$("${auth_env[@]}" "$bin_dir/kisum-auth" seed-user "$email" <"$password_file" 2>"$work/seed-user.log") ||
    { log_tail seed-user; die "kisum-auth seed-user failed"; }

# --- services ----------------------------------------------------------------
say "starting Core, Auth, finance, bench-verify, bench-hello"
start core "${core_env[@]}" "$bin_dir/kisum-core" serve
wait_ready core "http://127.0.0.1:$core_http/ready"
declare -A server_pid
start auth "${auth_env[@]}" "$bin_dir/kisum-auth" serve
server_pid[access]=${pids[-1]}
wait_ready auth "http://127.0.0.1:$auth_http/ready"
start finance "${finance_env[@]}" "$bin_dir/kisum-module" serve
server_pid[invoices]=${pids[-1]}
wait_ready finance "http://127.0.0.1:$fin_http/ready"
start verify "${verify_env[@]}" "$bin_dir/bench-verify" "127.0.0.1:$verify_port"
server_pid[verify]=${pids[-1]}
wait_ready verify "http://127.0.0.1:$verify_port/" any
start hello env -i PATH=/usr/bin:/bin "$bin_dir/bench-hello" "127.0.0.1:$hello_port"
wait_ready hello "http://127.0.0.1:$hello_port/"

# Every process was told 127.0.0.1; one that listens wider anyway is still
# confined to this namespace's loopback (lo is its one interface). Say so.
wide=$(ss -ltnH | awk '$4 !~ /^(127\.[0-9.]+|\[::1\]):[0-9]+$/ { print $4 }' | sort | tr '\n' ' ')
[[ -z $wide ]] || say "listening beyond 127.0.0.1 (confined to this namespace's loopback): $wide"

# --- data: company, membership, grant, subscription, login, invoices ---------
say "seeding (bench-setup seed)"
"${base_env[@]}" "AUTH_DB_URL_FILE=$auth_db_url" "BENCH_USER=$user" "BENCH_EMAIL=$email" \
    "BENCH_PASSWORD_FILE=$password_file" "CORE_INTERNAL_URL=http://127.0.0.1:$core_int" \
    "BENCH_ADMIN_CREDENTIAL_FILE=$cred_admin" "AUTH_URL=http://127.0.0.1:$auth_http" \
    "FINANCE_URL=http://127.0.0.1:$fin_http" BENCH_INVOICES=20 \
    "$bin_dir/bench-setup" seed >"$work/secrets/seed.env" 2>"$work/seed.log" ||
    { log_tail seed; die "bench-setup seed failed"; }
cat "$work/seed.log" >&2
company=$(sed -n 's/^COMPANY=//p' "$work/secrets/seed.env")
token=$(sed -n 's/^TOKEN=//p' "$work/secrets/seed.env")
[[ -n $company && -n $token ]] || die "bench-setup seed printed no COMPANY or TOKEN"

# The same headers for every target, in a file (not on any command line).
printf 'Authorization: Bearer %s\nx-org: %s\n' "$token" "$company" >"$work/secrets/headers"
cat >"$work/secrets/wrk.lua" <<EOF
wrk.headers["Authorization"] = "Bearer $token"
wrk.headers["x-org"] = "$company"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%.0f duration_us=%.0f p50_us=%.0f p99_us=%.0f max_us=%.0f non2xx=%.0f socket_errors=%.0f\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, e.status, e.connect + e.read + e.write + e.timeout))
end
EOF

keys=(access invoices verify hello)
declare -A url label
url[access]=http://127.0.0.1:$auth_http/auth/me/access
url[invoices]=http://127.0.0.1:$fin_http/v1/invoices$finance_query
url[verify]=http://127.0.0.1:$verify_port/
url[hello]=http://127.0.0.1:$hello_port/
label[access]="(1) Auth GET /auth/me/access"
label[invoices]="(2) finance GET /v1/invoices$finance_query"
label[verify]="(3) bench-verify (RS256+GET)"
label[hello]="(4) bench-hello GET /"

for key in "${keys[@]}"; do
    code=$(curl -sS -o "$work/check-$key.out" -w '%{http_code}' --max-time 5 \
        -H @"$work/secrets/headers" "${url[$key]}")
    [[ $code == 200 ]] || { cat "$work/check-$key.out" >&2; die "${label[$key]}: HTTP $code before the run"; }
done
say "all four targets answer 200 (kid $kid, company $company)"

# --- profile probes ----------------------------------------------------------
clk_tck=$(getconf CLK_TCK)
cpu_snapshot() { # process name -> CPU ticks (user + system), all processes in the namespace
    # A process may end between the glob and the read: not an error.
    { cat /proc/[0-9]*/stat 2>/dev/null || true; } |
        awk '{ name = $2; gsub(/[()]/, "", name); t[name] += $14 + $15 } END { for (n in t) print n, t[n] }' |
        sort
}
profile_reset() {
    psql_at postgres "select pg_stat_statements_reset()" >/dev/null
    rcli config resetstat >/dev/null
}
# profile KEY REQUESTS BEFORE AFTER: what one request cost, on average.
profile() {
    local key=$1 requests=$2
    {
        echo "  profile of ${label[$key]} ($requests requests):"
        join -a 2 -e 0 -o '0,1.2,2.2' "$3" "$4" |
            awk -v n="$requests" -v hz="$clk_tck" '{ d = $3 - $2; if (d > 0) printf "    cpu  %-14s %7.3f ms/request\n", $1, d * 1000 / hz / n }'
        psql_at postgres "select d.datname, s.calls, regexp_replace(left(s.query, 90), '\s+', ' ', 'g')
                            from pg_stat_statements s join pg_database d on d.oid = s.dbid
                           where d.datname in ('auth_db', 'platform_core_db', 'finance_db')
                           order by s.calls desc limit 8" |
            awk -F'|' -v n="$requests" '$2 / n >= 0.001 { printf "    sql  %-16s %6.3f/request  %s\n", $1, $2 / n, $3 }'
        rcli info commandstats | tr -d '\r' |
            awk -F'[:=,]' -v n="$requests" '/^cmdstat_/ && $3 / n >= 0.001 { sub("cmdstat_", "", $1); printf "    redis %-15s %6.3f/request\n", $1, $3 / n }'
    } >>"$work/profile.txt"
}

# --- the runs ----------------------------------------------------------------
# Other work on the machine skews every figure: the load average says so.
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
declare -A rps p99 p50
say "wrk -t$threads -c$connections -d${duration}s --latency (after ${warmup}s of warm-up) per target"
for key in "${keys[@]}"; do
    if ((warmup > 0)); then
        wrk -t"$threads" -c"$connections" -d"${warmup}s" -s "$work/secrets/wrk.lua" "${url[$key]}" >/dev/null
    fi
    profile_reset
    cpu_snapshot >"$work/cpu-before"
    perf_job=""
    if [[ $perf == 1 && -n ${server_pid[$key]:-} ]]; then
        perf record -q -F 499 -o "$work/perf-$key.data" -p "${server_pid[$key]}" -- \
            sleep "$duration" >/dev/null 2>&1 &
        perf_job=$!
    fi
    wrk -t"$threads" -c"$connections" -d"${duration}s" --latency -s "$work/secrets/wrk.lua" \
        "${url[$key]}" >"$work/wrk-$key.txt"
    cpu_snapshot >"$work/cpu-after"
    [[ -z $perf_job ]] || wait "$perf_job" || say "perf record of $key failed"
    line=$(grep '^BENCH ' "$work/wrk-$key.txt") || { cat "$work/wrk-$key.txt" >&2; die "no summary from wrk"; }
    declare -A got=()
    for field in ${line#BENCH }; do got[${field%%=*}]=${field#*=}; done
    if ((got[requests] == 0 || got[non2xx] > 0 || got[socket_errors] > 0)); then
        cat "$work/wrk-$key.txt" >&2
        die "${label[$key]}: ${got[requests]} requests, ${got[non2xx]} non-2xx, ${got[socket_errors]} socket errors"
    fi
    rps[$key]=$(awk -v r="${got[requests]}" -v d="${got[duration_us]}" 'BEGIN { printf "%.1f", r / (d / 1e6) }')
    p99[$key]=$(awk -v u="${got[p99_us]}" 'BEGIN { printf "%.3f", u / 1000 }')
    p50[$key]=$(awk -v u="${got[p50_us]}" 'BEGIN { printf "%.3f", u / 1000 }')
    say "$(printf '%-30s %10s req/s  p50 %7s ms  p99 %7s ms' "${label[$key]}" "${rps[$key]}" "${p50[$key]}" "${p99[$key]}")"
    profile "$key" "${got[requests]}" "$work/cpu-before" "$work/cpu-after"
    if [[ -f $work/perf-$key.data ]]; then
        {
            echo "    perf, ${label[$key]} server process: samples by object, then user-space symbols >= 0.8%"
            perf report -i "$work/perf-$key.data" --stdio --no-children --sort dso \
                --percent-limit 1 2>/dev/null | grep -v -e '^#' -e '^$' | head -8 | sed 's/^/    /'
            perf report -i "$work/perf-$key.data" --stdio --no-children --sort dso,sym \
                --percent-limit 0.8 2>/dev/null | grep -v -e '^#' -e '^$' -e '\[k\]' | head -25 | sed 's/^/    /'
        } >>"$work/profile.txt"
    fi
done

metric() { # metric PORT PATTERN: the sum of the matching samples of /metrics
    curl -fsS --max-time 5 "http://127.0.0.1:$1/metrics" |
        awk -v p="$2" 'index($0, p) == 1 { s += $NF } END { printf "%d", s }'
}
{
    echo "  caches over the whole run:"
    echo "    Auth access_cache: hit $(metric "$auth_int" 'kisum_events_total{event="access_cache",outcome="hit"}'), miss $(metric "$auth_int" 'kisum_events_total{event="access_cache",outcome="miss"}'); Redis unavailable: $(metric "$auth_int" 'kisum_events_total{event="redis",outcome="unavailable"}')"
    echo "    Auth access_snapshot (one Redis round trip): complete $(metric "$auth_int" 'kisum_events_total{event="access_snapshot",outcome="complete"}'), partial $(metric "$auth_int" 'kisum_events_total{event="access_snapshot",outcome="partial"}'), unavailable $(metric "$auth_int" 'kisum_events_total{event="access_snapshot",outcome="unavailable"}')"
    echo "    finance access_context_cache: hit $(metric "$fin_int" 'kisum_events_total{event="access_context_cache",outcome="hit"}'), miss $(metric "$fin_int" 'kisum_events_total{event="access_context_cache",outcome="miss"}')"
    echo "    finance record_cache: hit $(metric "$fin_int" 'kisum_events_total{event="record_cache",outcome="hit"}'), miss $(metric "$fin_int" 'kisum_events_total{event="record_cache",outcome="miss"}')"
} >>"$work/profile.txt"

# --- report ------------------------------------------------------------------
echo
echo "wrk -t$threads -c$connections -d${duration}s, loopback, $(nproc) CPUs; LOG_LEVEL=$log_level; load average before the runs: $load_before"
printf '%-30s %12s %10s %10s %14s %12s\n' target "req/s" "p50 ms" "p99 ms" "req/s vs (3)" "p99 vs (3)"
for key in "${keys[@]}"; do
    awk -v l="${label[$key]}" -v r="${rps[$key]}" -v a="${p50[$key]}" -v p="${p99[$key]}" \
        -v br="${rps[verify]}" -v bp="${p99[verify]}" \
        'BEGIN { printf "%-30s %12.1f %10.3f %10.3f %14.2f %12.2f\n", l, r, a, p, r / br, p / bp }'
done
echo
met=0
missed=0
ratio_line() { # ratio_line NAME VALUE OP TARGET
    local verdict
    if awk -v v="$2" -v t="$4" -v op="$3" 'BEGIN { exit !((op == ">=") ? v >= t : v <= t) }'; then
        verdict=met
        met=$((met + 1))
    else
        verdict=MISSED
        missed=$((missed + 1))
    fi
    printf '%-34s = %6.2f  (target %s %s) %s\n' "$1" "$2" "$3" "$4" "$verdict"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.4f", a / b }'; }
ratio_line "throughput (1)/(3) Auth/verify" "$(ratio "${rps[access]}" "${rps[verify]}")" ">=" 0.7
ratio_line "throughput (2)/(3) finance/verify" "$(ratio "${rps[invoices]}" "${rps[verify]}")" ">=" 0.7
ratio_line "p99 (1)/(3) Auth/verify" "$(ratio "${p99[access]}" "${p99[verify]}")" "<=" 2.0
ratio_line "p99 (2)/(3) finance/verify" "$(ratio "${p99[invoices]}" "${p99[verify]}")" "<=" 2.0
printf '%-34s = %6.2f  (hello-world beside them; verify/hello throughput %.2f)\n' \
    "p99 (3)/(4) verify/hello" "$(ratio "${p99[verify]}" "${p99[hello]}")" "$(ratio "${rps[verify]}" "${rps[hello]}")"
echo
echo "profile (CPU per request by process; SQL statements and Redis commands per request):"
cat "$work/profile.txt"
echo
echo "targets: $met met, $missed missed"
