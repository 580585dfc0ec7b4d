# Sourced by scripts/test: makes DATABASE_URL point at a Postgres server the tests may create
# databases on. A DATABASE_URL already set is used as it is; otherwise a private throwaway
# cluster is started with the system's initdb/pg_ctl and stopped (and deleted) on exit.

if [[ -n ${DATABASE_URL:-} ]]; then
  echo "==> Postgres: using DATABASE_URL from the environment"
  return 0
fi

pg_bin=""
for candidate in "$(pg_config --bindir 2>/dev/null)" /usr/lib/postgresql/*/bin /usr/local/pgsql/bin; do
  if [[ -n $candidate && -x $candidate/initdb && -x $candidate/pg_ctl ]]; then
    pg_bin=$candidate
    break
  fi
done
if [[ -z $pg_bin ]]; then
  cat >&2 <<'MSG'
scripts/test: the tests need PostgreSQL, and none was found.
Either set DATABASE_URL to a server where the tests may create databases, e.g.
  DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres scripts/test
or install the server so a private throwaway cluster can be started:
  apt-get install -y postgresql          (Debian/Ubuntu: provides initdb and pg_ctl)
MSG
  exit 1
fi

pg_dir=$(mktemp -d /tmp/easymo-test-pg.XXXXXX)
pg_port=${EASYMO_TEST_PG_PORT:-$((20000 + RANDOM % 20000))}
# Postgres will not run as root: run it as the postgres user when there is one.
as_pg() { if [[ $EUID -eq 0 ]] && id postgres >/dev/null 2>&1; then runuser -u postgres -- "$@"; else "$@"; fi; }
if [[ $EUID -eq 0 ]] && id postgres >/dev/null 2>&1; then chown postgres "$pg_dir"; fi
echo "==> Postgres: starting a throwaway cluster in $pg_dir on 127.0.0.1:$pg_port ($pg_bin)"
as_pg "$pg_bin/initdb" -D "$pg_dir/data" -U postgres --auth=trust -E UTF8 >"$pg_dir/initdb.log" 2>&1 \
  || { cat "$pg_dir/initdb.log" >&2; exit 1; }
cat >>"$pg_dir/data/postgresql.conf" <<CONF
port = $pg_port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$pg_dir'
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
CONF
as_pg "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/server.log" -w -t 60 start >/dev/null \
  || { cat "$pg_dir/server.log" >&2; exit 1; }
stop_test_postgres() {
  as_pg "$pg_bin/pg_ctl" -D "$pg_dir/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$pg_dir"
}
trap stop_test_postgres EXIT
export DATABASE_URL="postgres://postgres@127.0.0.1:$pg_port/postgres"
