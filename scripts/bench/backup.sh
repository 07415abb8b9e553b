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
#   4. per round: times pg_dump -Fc, kisumctl backup, pg_restore into a
#      fresh database, and kisumctl restore (whose JSON output carries the
#      restore-step and safety-backup times), then drops what it created;
#   5. prints the figures and the ratios (target: at most 1.10 each).
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
runuser -u postgres -- "$pg_bindir/initdb" -D "$work/pg" -U kisum --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
runuser -u postgres -- "$pg_bindir/pg_ctl" -D "$work/pg" -w -l "$work/sock/pg.log" \
    -o "-p $port -c listen_addresses=127.0.0.1 -k $work/sock -c max_wal_size=4GB -c checkpoint_timeout=30min" start >/dev/null
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
sed -i "s/port: 55432/port: $port/" "$work/environments/local.yaml"
secret="$work/.kisum/local/secrets/local-postgres-superuser"
mkdir -p "$secret"
chmod 700 "$work/.kisum" "$work/.kisum/local" "$work/.kisum/local/secrets" "$secret"
printf kisum >"$secret/username"
chmod 600 "$secret/username"

now() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$2 - $1:.2f}')"; }
ratio() { python3 -c "print(f'{$1 / $2:.3f}')"; }

declare -a results
for ((round = 1; round <= ROUNDS; round++)); do
    say "round $round: pg_dump -Fc"
    t=$(now); pg_dump -Fc -d auth_db -f "$work/raw.dump"; raw_dump=$(elapsed "$t" "$(now)")

    say "round $round: kisumctl backup"
    t=$(now)
    (cd "$work" && "$kisumctl" backup local auth-db -o json >"$work/backup.json")
    ctl_dump=$(elapsed "$t" "$(now)")

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
    results+=("$round $raw_dump $ctl_dump $(ratio "$ctl_dump" "$raw_dump") $raw_restore $ctl_restore $(ratio "$ctl_restore" "$raw_restore") $ctl_safety $ctl_total $dump_size")
done

printf '\nauth_db: %s MiB, %s rows in sessions; PostgreSQL %s\n' "$((size / 1024 / 1024))" "$ROWS" \
    "$(psql -Atc 'SHOW server_version' -d postgres)"
printf '%-5s %10s %14s %6s %13s %16s %6s %12s %14s %10s\n' round pg_dump_s kisumctl_bk_s ratio pg_restore_s kisumctl_rst_s ratio safety_bk_s restore_total_s dump_MiB
for line in "${results[@]}"; do
    read -r r a b c d e f g h i <<<"$line"
    printf '%-5s %10s %14s %6s %13s %16s %6s %12s %14s %10s\n' "$r" "$a" "$b" "$c" "$d" "$e" "$f" "$g" "$h" "$((i / 1024 / 1024))"
done
echo "targets: kisumctl backup <= 1.10 x pg_dump -Fc; kisumctl restore step <= 1.10 x pg_restore"
