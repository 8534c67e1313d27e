#!/usr/bin/env bash
# A PostgreSQL 15 cluster under Patroni on loopback, for issue 36 and the fault suite:
#   * etcd (the distributed configuration store) on 127.0.0.1:56790 (peer 56791)
#   * three members pg1..pg3: PostgreSQL on 127.0.0.1:54341..54343, Patroni's REST API on
#     127.0.0.1:56801..56803; synchronous replication on (an acknowledged commit is on two
#     members), pg_rewind for a member that comes back after a failover
#   * HAProxy in front: 127.0.0.1:54340 is always the primary (Patroni's `/primary` check), and
#     127.0.0.1:54344 a streaming replica (`/replica`); a member that fails its check has its
#     sessions cut, so a client never stays on a demoted or unreachable primary
# Everything lives under <repo>/.local/pg-cluster, and runs as the postgres user.
#
#   scripts/pg-cluster.sh start | stop | status | env
#   scripts/pg-cluster.sh ctl kill|restart|pause|resume MEMBER   (the fault suite's faults)
#   scripts/pg-cluster.sh ctl hold|release MEMBER   (its Patroni alone paused: a test's replica lags)
#   scripts/pg-cluster.sh ctl switchover [CANDIDATE]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BASE="$ROOT/.local/pg-cluster"
PG_BIN=/usr/lib/postgresql/15/bin
ETCD_PORT=56790
ETCD_PEER_PORT=56791
PRIMARY_PORT=54340
REPLICA_PORT=54344
MEMBERS=(pg1 pg2 pg3)
SCOPE=settle
SUPERUSER_PASSWORD=settle-cluster-superuser
REPLICATION_PASSWORD=settle-cluster-replication
REWIND_PASSWORD=settle-cluster-rewind
DEADLINE=90

log() { printf '[pg-cluster] %s\n' "$*" >&2; }
die() { printf '[pg-cluster] ERROR: %s\n' "$*" >&2; exit 1; }

member_index() { case "$1" in pg1) echo 1 ;; pg2) echo 2 ;; pg3) echo 3 ;; *) die "no member $1 (pg1, pg2, pg3)" ;; esac; }
pg_port() { echo $((54340 + $(member_index "$1"))); }
rest_port() { echo $((56800 + $(member_index "$1"))); }
as_postgres() { runuser -u postgres -- "$@"; }
# Processes are found by their command lines (runuser forks them: a pid file would hold runuser's).
patroni_of() { echo "patroni $BASE/$1/patroni.yml"; }
ETCD_CMD="etcd --name settle-etcd"
HAPROXY_CMD="haproxy -f $BASE/haproxy.cfg"
running() { pgrep -f "$1" >/dev/null; }

# `scripts/services.sh start --pg-cluster` installs Patroni and etcd (the project's one installer).
ensure_installed() {
    command -v patroni >/dev/null && command -v etcd >/dev/null && command -v haproxy >/dev/null ||
        die "patroni, etcd or haproxy missing: run scripts/services.sh start --pg-cluster (it installs them)"
}

etcd_start() {
    mkdir -p "$BASE/etcd"
    chown postgres:postgres "$BASE" "$BASE/etcd"
    if running "$ETCD_CMD"; then return 0; fi
    log "etcd: starting on 127.0.0.1:$ETCD_PORT"
    setsid nohup runuser -u postgres -- $ETCD_CMD --data-dir "$BASE/etcd/data" \
        --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
        --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
        --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-cluster "settle-etcd=http://127.0.0.1:$ETCD_PEER_PORT" \
        --enable-v2=true \
        >"$BASE/etcd.log" 2>&1 </dev/null 9>&- &
    local waited=0
    until curl -sf "http://127.0.0.1:$ETCD_PORT/health" >/dev/null 2>&1; do
        [ "$waited" -lt "$DEADLINE" ] || die "etcd not healthy after ${DEADLINE}s (see $BASE/etcd.log)"
        sleep 1; waited=$((waited + 1))
    done
}

# Patroni talks to etcd over its v2 API (`etcd:`), not v3 (`etcd3:`): Debian 12's Patroni 3.0.2
# renews an expired leader lease on v3 by writing the leader key unconditionally, so a primary
# that was paused past the TTL takes the lock back from the member promoted meanwhile, and that
# member's acknowledged commits are rewound away (scenario 27 lost 51 events that way; Patroni
# 3.0.3 fixed it, patroni/patroni#2689). The v2 API's compare-and-swap on the leader key refuses.
member_config() {
    local m=$1 dir="$BASE/$1"
    cat >"$dir/patroni.yml" <<EOF
scope: $SCOPE
name: $m
log:
  dir: $dir
restapi:
  listen: 127.0.0.1:$(rest_port "$m")
  connect_address: 127.0.0.1:$(rest_port "$m")
etcd:
  host: 127.0.0.1:$ETCD_PORT
bootstrap:
  dcs:
    ttl: 10
    loop_wait: 2
    retry_timeout: 5
    maximum_lag_on_failover: 1048576
    synchronous_mode: true
    synchronous_mode_strict: true
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        wal_level: replica
        hot_standby: "on"
        max_wal_senders: 10
        max_replication_slots: 10
        wal_log_hints: "on"
        synchronous_commit: "on"
        max_connections: 200
  initdb:
    - encoding: UTF8
    - locale: C.UTF-8
  pg_hba:
    - local all all trust
    - host replication replicator 127.0.0.1/32 scram-sha-256
    - host all all 127.0.0.1/32 scram-sha-256
postgresql:
  listen: 127.0.0.1:$(pg_port "$m")
  connect_address: 127.0.0.1:$(pg_port "$m")
  data_dir: $dir/data
  bin_dir: $PG_BIN
  pgpass: $dir/pgpass
  authentication:
    superuser: {username: postgres, password: $SUPERUSER_PASSWORD}
    replication: {username: replicator, password: $REPLICATION_PASSWORD}
    rewind: {username: rewinder, password: $REWIND_PASSWORD}
  parameters:
    unix_socket_directories: $dir
EOF
}

member_start() {
    local m=$1 dir="$BASE/$1"
    mkdir -p "$dir"
    chown postgres:postgres "$dir"
    chmod 700 "$dir"
    member_config "$m"
    chown postgres:postgres "$dir/patroni.yml"
    if running "$(patroni_of "$m")"; then return 0; fi
    log "$m: starting Patroni (PostgreSQL on 127.0.0.1:$(pg_port "$m"), REST on $(rest_port "$m"))"
    setsid nohup runuser -u postgres -- patroni "$dir/patroni.yml" >"$dir/patroni.out" 2>&1 </dev/null 9>&- &
}

# HAProxy's checks ask each member's Patroni every second; two failures in a row mark it down
# and cut its sessions (`on-marked-down shutdown-sessions`): a client on a primary that was
# demoted, paused or cut off is disconnected within about three seconds, and its next connection
# goes to whichever member Patroni promoted. Timeouts are long for the clients and servers: a
# pooled connection may sit idle for minutes.
haproxy_config() {
    local m servers=""
    for m in "${MEMBERS[@]}"; do
        servers+="    server $m 127.0.0.1:$(pg_port "$m") check port $(rest_port "$m")"$'\n'
    done
    cat >"$BASE/haproxy.cfg" <<EOF
global
    maxconn 2000
defaults
    mode tcp
    timeout connect 2s
    timeout client 30m
    timeout server 30m
    timeout check 1s
    default-server inter 1s fall 2 rise 1 on-marked-down shutdown-sessions
listen primary
    bind 127.0.0.1:$PRIMARY_PORT
    option httpchk OPTIONS /primary
    http-check expect status 200
${servers}listen replicas
    bind 127.0.0.1:$REPLICA_PORT
    balance roundrobin
    option httpchk OPTIONS /replica
    http-check expect status 200
${servers}
EOF
}

haproxy_start() {
    haproxy_config
    if running "$HAPROXY_CMD"; then return 0; fi
    log "haproxy: primary on 127.0.0.1:$PRIMARY_PORT, replicas on 127.0.0.1:$REPLICA_PORT"
    setsid nohup runuser -u haproxy -- $HAPROXY_CMD -db >"$BASE/haproxy.log" 2>&1 </dev/null 9>&- &
}

# Until HAProxy's primary port reaches the primary (its first checks take a second).
wait_proxied() {
    local waited=0
    until PGPASSWORD=$SUPERUSER_PASSWORD "$PG_BIN/psql" -h 127.0.0.1 -p "$PRIMARY_PORT" -U postgres \
        -d postgres -Atc 'SELECT NOT pg_is_in_recovery()' 2>/dev/null | grep -qx t; do
        [ "$waited" -lt 30 ] || die "HAProxy's primary port $PRIMARY_PORT does not reach the primary (see $BASE/haproxy.log)"
        sleep 1; waited=$((waited + 1))
    done
}

# The member roles as Patroni's REST API reports them: "pg1 primary running", …
roles() {
    local m
    for m in "${MEMBERS[@]}"; do
        local body role state
        body=$(curl -s --max-time 2 "http://127.0.0.1:$(rest_port "$m")/patroni" 2>/dev/null || true)
        role=$(printf '%s' "$body" | python3 -c 'import json,sys
try: print(json.load(sys.stdin).get("role","?"))
except Exception: print("down")')
        state=$(printf '%s' "$body" | python3 -c 'import json,sys
try: print(json.load(sys.stdin).get("state","?"))
except Exception: print("-")')
        echo "$m $role $state"
    done
}

wait_ready() {
    local waited=0
    while :; do
        local out primaries running
        out=$(roles)
        primaries=$(printf '%s\n' "$out" | awk '$2=="primary" || $2=="master"' | wc -l)
        running=$(printf '%s\n' "$out" | awk '$3=="running" || $3=="streaming"' | wc -l)
        if [ "$primaries" = 1 ] && [ "$running" = 3 ]; then
            printf '%s\n' "$out" | sed 's/^/[pg-cluster]   /' >&2
            return 0
        fi
        [ "$waited" -lt "$DEADLINE" ] || { printf '%s\n' "$out" >&2; die "cluster not ready after ${DEADLINE}s (see $BASE/pg*/patroni.out)"; }
        sleep 1; waited=$((waited + 1))
    done
}

cmd_start() {
    [ "$(id -u)" = 0 ] || die "must be run as root (servers run as postgres)"
    ensure_installed
    mkdir -p "$BASE"
    etcd_start
    local m
    for m in "${MEMBERS[@]}"; do member_start "$m"; done
    wait_ready
    haproxy_start
    wait_proxied
}

# SIGTERM, and until the process is gone (a `start` right after must not find it still there).
stop_process() {
    pkill -f "$1" || return 0
    local waited=0
    while running "$1" && [ "$waited" -lt 20 ]; do sleep 0.5; waited=$((waited + 1)); done
    pkill -KILL -f "$1" || true
}

cmd_stop() {
    local m
    # Patroni stops its PostgreSQL on SIGINT; then etcd.
    for m in "${MEMBERS[@]}"; do pkill -INT -f "$(patroni_of "$m")" || true; done
    local waited=0
    while pgrep -f "patroni $BASE/" >/dev/null && [ "$waited" -lt 30 ]; do
        sleep 1; waited=$((waited + 1))
    done
    pkill -KILL -f "patroni $BASE/" || true
    # A PostgreSQL whose Patroni was killed (the fault suite) outlives it.
    for m in "${MEMBERS[@]}"; do
        if [ -f "$BASE/$m/data/postmaster.pid" ]; then
            as_postgres "$PG_BIN/pg_ctl" -D "$BASE/$m/data" stop -m fast >/dev/null 2>&1 || true
        fi
    done
    stop_process "$ETCD_CMD"
    stop_process "$HAPROXY_CMD"
    log "stopped"
}

cmd_env() {
    local urls=() m
    for m in "${MEMBERS[@]}"; do
        urls+=("postgres://postgres:$SUPERUSER_PASSWORD@127.0.0.1:$(pg_port "$m")/postgres")
    done
    local IFS=,
    echo "export SETTLE_TEST_PG_CLUSTER_URLS=${urls[*]}"
    echo "export SETTLE_TEST_PG_PRIMARY_URL=postgres://postgres:$SUPERUSER_PASSWORD@127.0.0.1:$PRIMARY_PORT/postgres"
    echo "export SETTLE_TEST_PG_REPLICA_URL=postgres://postgres:$SUPERUSER_PASSWORD@127.0.0.1:$REPLICA_PORT/postgres"
}

# The fault suite's faults, on MEMBER's PostgreSQL (kill) or its Patroni and PostgreSQL (pause).
cmd_ctl() {
    local action=${1:-} m=${2:-}
    case "$action" in
        kill)
            # The whole member, as a host that dies: its Patroni and every process of its
            # PostgreSQL at once (a postmaster's children outlive it for a moment: a standby's
            # WAL receiver would go on confirming commits).
            local postmaster
            postmaster=$(head -1 "$BASE/$m/data/postmaster.pid")
            pkill -KILL -f "$(patroni_of "$m")" || true
            kill -KILL "$postmaster" $(pgrep -P "$postmaster") 2>/dev/null || true
            ;;
        restart)
            member_start "$m"
            ;;
        pause|resume)
            local signal=STOP
            [ "$action" = resume ] && signal=CONT
            # Patroni, and every process of its PostgreSQL (the postmaster and its children).
            pkill -"$signal" -f "$(patroni_of "$m")" || true
            local postmaster
            postmaster=$(head -1 "$BASE/$m/data/postmaster.pid")
            kill -"$signal" "$postmaster" $(pgrep -P "$postmaster") 2>/dev/null || true
            ;;
        hold|release)
            # Patroni alone: its PostgreSQL runs on, and a replay paused by hand stays paused
            # (Patroni resumes paused replay on PostgreSQL 14+ at every loop).
            local signal=STOP
            [ "$action" = release ] && signal=CONT
            pkill -"$signal" -f "$(patroni_of "$m")" || true
            ;;
        switchover)
            local candidate=${2:-}
            as_postgres patronictl -c "$BASE/pg1/patroni.yml" switchover --force \
                ${candidate:+--candidate "$candidate"} "$SCOPE"
            ;;
        *) die "ctl kill|restart|pause|resume|hold|release MEMBER, or ctl switchover [CANDIDATE]" ;;
    esac
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) roles ;;
    env) cmd_env ;;
    ctl) shift; cmd_ctl "$@" ;;
    *) die "usage: $0 start|stop|status|env|ctl …" ;;
esac
