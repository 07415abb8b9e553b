#!/usr/bin/env bash
# Backup and restore benchmark: `kisumctl backup` against a raw
# `pg_dump -Fc`, and the restore step of `kisumctl restore` (restore into
# a new database and verify its row counts) against a raw `pg_restore` of
# the same dump, on an auth_db of at least 1 GB. The safety backup that
# `kisumctl restore` takes first is timed and reported on its own.
#
#   bash scripts/bench/backup.sh [ROUNDS]      # default 2 rounds
#
# What it does:
#   1. builds kisumctl (release);
#   2. starts a private PostgreSQL 15 (initdb in a temp dir as user
#      postgres, trust on 127.0.0.1 only, a free port);
#   3. fills auth_db with generate_series until it is over 1 GB (a table
#      of 14 million rows with a primary key, plus a small users table);
#   4. per round: times pg_dump -Fc and kisumctl backup (wall time, and the
#      CPU seconds of client and server; which goes first alternates by
#      round), pg_restore into a fresh database, and kisumctl restore (whose
#      JSON output carries the restore-step and safety-backup times), then
#      drops what it created;
#   5. prints the figures, the ratios and their medians (target: at most
#      1.10 each).
# A trap stops PostgreSQL and removes the temp dirs however it ends.
# Needs root (initdb runs as postgres through runuser) and the Debian
# package postgresql (scripts/peers.sh installs it).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
ROUNDS="${1:-2}"
ROWS="${KISUM_BENCH_ROWS:-14000000}"

say() { printf 'bench: %s\n' "$*" >&2; }
die() { printf 'bench: ERROR: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root (initdb runs as postgres via runuser)"
pg_bindir="${KISUM_PG_BINDIR:-/usr/lib/postgresql/15/bin}"
[[ -x $pg_bindir/initdb ]] || die "initdb not found in $pg_bindir (bash scripts/peers.sh)"
for tool in pg_dump pg_restore psql createdb python3; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found"
done

say "building kisumctl (release)"
(cd "$ROOT" && cargo build --release --quiet --bin kisumctl)
kisumctl="$ROOT/target/release/kisumctl"

work=$(mktemp -d /tmp/kisum-bench-backup-XXXXXX)
chmod 755 "$work"
pg_started=0
cleanup() {
    if [[ $pg_started -eq 1 ]]; then
        runuser -u postgres -- "$pg_bindir/pg_ctl" -D "$work/pg" stop -m fast -w -t 60 >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$work/pg" "$work/sock"
chown postgres "$work/pg" "$work/sock"
say "initdb and start on 127.0.0.1:$port"
# max_wal_size 1GB: the WAL of the fill and of the restores stays small on
# a shared disk (the run needs about 8 GB free: the cluster, two dumps, and
# the restored and previous copies of auth_db).
runuser -u postgres -- "$pg_bindir/initdb" -D "$work/pg" -U kisum --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
runuser -u postgres -- "$pg_bindir/pg_ctl" -D "$work/pg" -w -l "$work/sock/pg.log" \
    -o "-p $port -c listen_addresses=127.0.0.1 -k $work/sock -c max_wal_size=1GB -c checkpoint_timeout=30min" start >/dev/null
pg_started=1
export PGHOST=127.0.0.1 PGPORT=$port PGUSER=kisum

say "filling auth_db with $ROWS rows"
createdb auth_db
t0=$SECONDS
psql -q -v ON_ERROR_STOP=1 -d auth_db <<SQL
CREATE TABLE users (id uuid PRIMARY KEY, email text NOT NULL UNIQUE, status text NOT NULL DEFAULT 'active');
INSERT INTO users SELECT gen_random_uuid(), 'user' || g || '@kisum.test' FROM generate_series(1, 100000) g;
CREATE TABLE sessions (id bigint PRIMARY KEY, user_email text NOT NULL, token_hash text NOT NULL, created_at timestamptz NOT NULL);
INSERT INTO sessions SELECT g, 'user' || (g % 100000) || '@kisum.test', md5(g::text), timestamptz '2026-01-01' + g * interval '1 second'
  FROM generate_series(1, $ROWS) g;
VACUUM ANALYZE;
SQL
size=$(psql -Atc "SELECT pg_database_size('auth_db')" -d auth_db)
say "auth_db is $((size / 1024 / 1024)) MiB (filled in $((SECONDS - t0)) s)"
(( size >= 1000000000 )) || die "auth_db is below 1 GB; raise KISUM_BENCH_ROWS"

# A matrix copy whose local environment points at this server.
cp -r "$ROOT/environments" "$work/environments"
sed -i "s/port: 25432/port: $port/" "$work/environments/local.yaml"
grep -q "port: $port" "$work/environments/local.yaml" || die "could not point the local environment at port $port"
secret="$work/.kisum/local/secrets/local-postgres-superuser"
mkdir -p "$secret"
chmod 700 "$work/.kisum" "$work/.kisum/local" "$work/.kisum/local/secrets" "$secret"
printf kisum >"$secret/username"
chmod 600 "$secret/username"

now() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$2 - $1:.2f}')"; }
ratio() { python3 -c "print(f'{$1 / $2:.3f}')"; }

# CPU seconds as well as wall time: on a shared machine the wall time of
# one run depends on what else runs, the CPU a command costs much less.
# Server CPU is what the postmaster's finished children (the backends and
# parallel workers) used: field 16 + 17 of its /proc stat.
postmaster=$(head -1 "$work/pg/postmaster.pid")
server_cpu() { awk -v t="$(getconf CLK_TCK)" '{print ($16 + $17) / t}' "/proc/$postmaster/stat"; }
# timed NAME COMMAND...: sets NAME_wall and NAME_cpu (client with its
# children, plus server).
timed() {
    local name=$1; shift
    local s0 w0 w1 s1 client
    s0=$(server_cpu); w0=$(now)
    /usr/bin/time -f "%U %S" -o "$work/time.out" "$@"
    w1=$(now)
    sleep 1 # the backend's exit, so the postmaster has reaped it
    s1=$(server_cpu)
    client=$(awk '{print $1 + $2}' "$work/time.out")
    printf -v "${name}_wall" '%s' "$(elapsed "$w0" "$w1")"
    printf -v "${name}_cpu" '%s' "$(python3 -c "print(f'{$client + $s1 - $s0:.1f}')")"
}
raw_backup() { timed raw pg_dump -Fc -d auth_db -f "$work/raw.dump"; }
ctl_backup() {
    cd "$work"
    timed ctl "$kisumctl" backup local auth-db -o json --matrix "$work/environments" >"$work/backup.json"
    cd - >/dev/null
}

declare -a results
for ((round = 1; round <= ROUNDS; round++)); do
    # Alternate which goes first, so that neither always meets a warmer
    # cache or a quieter machine.
    if ((round % 2)); then
        say "round $round: pg_dump -Fc, then kisumctl backup"
        raw_backup; ctl_backup
    else
        say "round $round: kisumctl backup, then pg_dump -Fc"
        ctl_backup; raw_backup
    fi

    say "round $round: pg_restore into a new database"
    t=$(now)
    createdb -T template0 auth_db_raw
    pg_restore --exit-on-error -d auth_db_raw "$work/raw.dump"
    raw_restore=$(elapsed "$t" "$(now)")
    dropdb auth_db_raw

    say "round $round: kisumctl restore"
    t=$(now)
    (cd "$work" && "$kisumctl" restore local auth-db --yes -o json >"$work/restore.json")
    ctl_total=$(elapsed "$t" "$(now)")
    read -r ctl_restore ctl_safety < <(python3 -c "
import json; r = json.load(open('$work/restore.json'))['restores'][0]
print(f\"{r['restore_seconds']:.2f} {r['safety_backup_seconds']:.2f}\")")
    (cd "$work" && "$kisumctl" restore local auth-db --cleanup >/dev/null)
    # Keep the disk bounded: only this round's backups were needed.
    rm -rf "$work/.kisum/local/backups" "$work/raw.dump"

    dump_size=$(python3 -c "import json; print(json.load(open('$work/backup.json'))['backups'][0]['manifest']['files'][0]['size'])")
    results+=("$round $raw_wall $ctl_wall $(ratio "$ctl_wall" "$raw_wall") $raw_cpu $ctl_cpu $(ratio "$ctl_cpu" "$raw_cpu") $raw_restore $ctl_restore $(ratio "$ctl_restore" "$raw_restore") $ctl_safety $ctl_total $dump_size")
    # Each round's figures at once, so that a run cut short still has them.
    say "round $round: ${results[-1]}"
done

printf '\nauth_db: %s MiB, %s rows in sessions; PostgreSQL %s\n' "$((size / 1024 / 1024))" "$ROWS" \
    "$(psql -Atc 'SHOW server_version' -d postgres)"
format='%-5s %9s %9s %6s %8s %8s %6s %10s %10s %6s %9s %9s %8s\n'
# shellcheck disable=SC2059
printf "$format" round dump_s ctl_bk_s ratio dump_cpu ctl_cpu ratio restore_s ctl_rst_s ratio safety_s rst_all_s dump_MiB
for line in "${results[@]}"; do
    read -r r a b c d e f g h i j k l <<<"$line"
    # shellcheck disable=SC2059
    printf "$format" "$r" "$a" "$b" "$c" "$d" "$e" "$f" "$g" "$h" "$i" "$j" "$k" "$((l / 1024 / 1024))"
done
medians=$(printf '%s\n' "${results[@]}" | python3 -c "
import statistics, sys
rows = [line.split() for line in sys.stdin if line.strip()]
m = lambda n: statistics.median(float(r[n]) for r in rows)
print(f'backup wall {m(3):.3f}, backup CPU {m(6):.3f}, restore step wall {m(9):.3f}')")
echo "median ratios: $medians"
echo "targets: kisumctl backup <= 1.10 x pg_dump -Fc; kisumctl restore step <= 1.10 x pg_restore"
