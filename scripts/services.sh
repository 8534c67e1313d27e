#!/usr/bin/env bash
# Local dev/test services for settle, run as plain processes (no systemd, no Docker):
#
#   * PostgreSQL 15 on 127.0.0.1:54329, data under <repo>/.local/postgres
#   * RabbitMQ node settle@localhost on 127.0.0.1:56720, state under <repo>/.local/rabbitmq/settle
#   * (--chaos) RabbitMQ node settle-chaos@localhost on 127.0.0.1:56730, state under
#     <repo>/.local/rabbitmq/settle-chaos; tests stop/start its app to simulate outages.
#   * (--cluster) a three-node RabbitMQ cluster, settle-c1/c2/c3@localhost on 127.0.0.1:56740,
#     56750 and 56760 (distribution on the port after each), one Erlang cookie, joined to c1;
#     the cluster tests kill, pause and restart its nodes.
#   * an SMTP sink (scripts/smtp_sink.py, aiosmtpd) on 127.0.0.1:56725 keeping every mail under
#     <repo>/.local/mail (mail.log to read, messages.jsonl, one .eml per message).
#   * localstripe (PyPI, a Stripe emulator) on 127.0.0.1:56726: the Stripe API `make run` charges
#     and reads (the README's automatic charging walk-through); the tests start their own.
#
# Usage: scripts/services.sh start [--chaos] [--cluster] | stop | status | env
#                            broker-stop-app NODE | broker-start-app NODE
#                            purge-test-queues
#
# Must be run as root (it switches to the postgres / rabbitmq users itself).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
REPO_DIR="$(cd "$SCRIPT_DIR/.." && pwd -P)"
LOCAL_DIR="$REPO_DIR/.local"
VENV_DIR="$LOCAL_DIR/venv"
LOCALSTRIPE_VERSION=1.15.10

# ---------------------------------------------------------------- PostgreSQL
PG_BIN=/usr/lib/postgresql/15/bin
PG_HOST=127.0.0.1
PG_PORT=54329
PG_BASE="$LOCAL_DIR/postgres"
PG_DATA="$PG_BASE/data"
PG_SOCK="$PG_BASE/run"
PG_LOG="$PG_BASE/postgres.log"
PG_USER=settle
PG_PASSWORD=settle
PG_DB=settle

# ---------------------------------------------------------------- RabbitMQ
RMQ_BIN=/usr/lib/rabbitmq/bin
RMQ_BASE="$LOCAL_DIR/rabbitmq"
RMQ_HOST=localhost
EPMD_PORT=56729
MAIN_NODE=settle
CHAOS_NODE=settle-chaos
CLUSTER_NODES=(settle-c1 settle-c2 settle-c3)

DEADLINE_PG=60
DEADLINE_RMQ=90

# ---------------------------------------------------------------- SMTP sink
SMTP_PORT=56725
LOCALSTRIPE_PORT=56726
LOCALSTRIPE_PID="$LOCAL_DIR/localstripe.pid"
MAIL_DIR="$LOCAL_DIR/mail"
SMTP_PID="$LOCAL_DIR/smtp-sink.pid"
# Debian's interpreter, which has python3-aiosmtpd (a pyenv python3 on PATH would not).
SYSTEM_PYTHON=/usr/bin/python3

DATABASE_URL="postgres://$PG_USER:$PG_PASSWORD@$PG_HOST:$PG_PORT/$PG_DB"
AMQP_URL="amqp://guest:guest@127.0.0.1:56720/%2f"
CHAOS_AMQP_URL="amqp://guest:guest@127.0.0.1:56730/%2f"
# The password of the roles' users (deploy/rabbitmq-users.sh) on these loopback test nodes.
ROLE_PASSWORD=settle-local-broker-role
CLUSTER_AMQP_URLS="amqp://guest:guest@127.0.0.1:56740/%2f,amqp://guest:guest@127.0.0.1:56750/%2f,amqp://guest:guest@127.0.0.1:56760/%2f"

log() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }

require_root() {
    [ "$(id -u)" = 0 ] || die "must be run as root (it runs servers via runuser as postgres/rabbitmq)"
}

# True if process $1 exists and is not a zombie (some container inits never reap).
alive() {
    kill -0 "$1" 2>/dev/null || return 1
    local st
    st="$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null)" || return 1
    [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

# True if some socket LISTENs on TCP port $1 (read from /proc, no connection made).
#
# Why not just try to connect: our ports lie inside Linux's ephemeral range
# (32768-60999). Repeatedly connecting to a port nobody listens on walks the
# kernel's source-port choice through that range until it picks the destination
# port itself; the socket then connects to *itself* ("TCP self-connect"): the
# probe reports the port as open and the half-dead socket keeps the port busy,
# so the broker's own listen() fails with eaddrinuse. Seen for real while
# testing this script.
port_listening() {
    local hex files=(/proc/net/tcp)
    hex="$(printf ':%04X' "$1")"
    [ -r /proc/net/tcp6 ] && files+=(/proc/net/tcp6)
    awk -v p="$hex" '$4 == "0A" && substr($2, length($2) - 4) == p { found = 1; exit }
                     END { exit !found }' "${files[@]}"
}

# True if 127.0.0.1:$1 is listening and accepts a TCP connection. The connect is
# only attempted once a listener holds the port, so it cannot self-connect.
port_open() {
    port_listening "$1" && timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# Keep the kernel from handing our fixed ports out as ephemeral source ports
# (clients reconnecting to a stopped broker would otherwise eventually
# self-connect to it and block its restart). System-wide, not persistent across
# reboots; re-applied on every `start`. Best effort.
RESERVED_PORTS="$PG_PORT,56720-56721,$SMTP_PORT,$LOCALSTRIPE_PORT,56729-56731,56740-56741,56750-56751,56760-56761,54340-54344,56790-56791,56801-56803"
reserve_ports() {
    local f=/proc/sys/net/ipv4/ip_local_reserved_ports cur new
    [ -r "$f" ] || return 0
    cur="$(cat "$f")"
    if ! printf '%s\n' "${cur:+$cur,}$RESERVED_PORTS" 2>/dev/null >"$f"; then
        log "warning: could not reserve ports $RESERVED_PORTS in $f (clients may self-connect to a stopped broker)"
        return 0
    fi
    new="$(cat "$f")"
    [ "$new" = "$cur" ] || log "reserved ports in net.ipv4.ip_local_reserved_ports: $new"
}

# ============================================================ installation
ensure_installed() { # [--pg-cluster]: also Patroni and etcd
    local pkgs=()
    if [ "${1:-}" = --pg-cluster ]; then
        command -v patroni >/dev/null || pkgs+=(patroni)
        # Patroni's etcd v2 client (scripts/pg-cluster.sh says why v2).
        /usr/bin/python3 -c 'import etcd' 2>/dev/null || pkgs+=(python3-etcd)
        command -v etcd >/dev/null || pkgs+=(etcd-server)
        command -v haproxy >/dev/null || pkgs+=(haproxy)
    fi
    [ -x "$RMQ_BIN/rabbitmq-server" ] || pkgs+=(rabbitmq-server)
    [ -x "$PG_BIN/pg_ctl" ] || pkgs+=(postgresql-15)
    "$SYSTEM_PYTHON" -c 'import aiosmtpd' 2>/dev/null || pkgs+=(python3-aiosmtpd)
    "$SYSTEM_PYTHON" -c 'import ensurepip' 2>/dev/null || pkgs+=(python3-venv)
    # The ingress benchmark's independent load: wrk posts events openssl signed.
    command -v wrk >/dev/null || pkgs+=(wrk)
    command -v openssl >/dev/null || pkgs+=(openssl)
    # The console's browser tests: headless Chromium driven over WebDriver.
    command -v chromium >/dev/null || pkgs+=(chromium)
    command -v chromedriver >/dev/null || pkgs+=(chromium-driver)
    # The books' proof: the tests check an exported journal with hledger.
    command -v hledger >/dev/null || pkgs+=(hledger)
    # The alert rules' unit tests and the metrics' lint: promtool, from Debian's Prometheus.
    command -v promtool >/dev/null || pkgs+=(prometheus)
    [ "${#pkgs[@]}" -gt 0 ] || return 0

    log "installing: ${pkgs[*]}"
    # Keep apt from starting the system services (we never use them). Only
    # add a policy-rc.d if there is none, and remove it again afterwards.
    local added_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        added_policy=1
    fi
    local rc=0
    {
        apt-get update &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y "${pkgs[@]}"
    } || rc=$?
    [ "$added_policy" = 0 ] || rm -f /usr/sbin/policy-rc.d
    [ "$rc" = 0 ] || die "apt-get install ${pkgs[*]} failed (rc=$rc)"
    [ -x "$RMQ_BIN/rabbitmq-server" ] || die "rabbitmq-server still missing after install"
    [ -x "$PG_BIN/pg_ctl" ] || die "PostgreSQL 15 still missing after install"
    "$SYSTEM_PYTHON" -c 'import aiosmtpd' || die "python3-aiosmtpd still missing after install"
}

# localstripe (PyPI), the third-party Stripe emulator the backfill tests list events from, in a
# virtualenv of ours; a test starts its own on a port of its own.
ensure_localstripe() {
    [ -x "$VENV_DIR/bin/localstripe" ] && return 0
    log "installing localstripe $LOCALSTRIPE_VERSION into $VENV_DIR"
    "$SYSTEM_PYTHON" -m venv "$VENV_DIR" || die "python3 -m venv $VENV_DIR failed"
    "$VENV_DIR/bin/pip" install -q "localstripe==$LOCALSTRIPE_VERSION" ||
        die "pip install localstripe==$LOCALSTRIPE_VERSION failed"
}

# ============================================================ SMTP sink
# Starts a small daemon of ours in the background: `daemon_start NAME PORT PIDFILE LOG CMD…`,
# waiting until it listens.
daemon_start() {
    local name="$1" port="$2" pidfile="$3" logfile="$4"
    shift 4
    if port_listening "$port"; then return 0; fi
    setsid nohup "$@" </dev/null >"$logfile" 2>&1 9>&- &
    echo $! >"$pidfile"
    local deadline=$((SECONDS + 20))
    until port_listening "$port"; do
        alive "$(cat "$pidfile")" || { cat "$logfile" >&2; die "$name exited"; }
        [ "$SECONDS" -lt "$deadline" ] || die "$name did not listen within 20 s"
        sleep 0.1
    done
}

daemon_stop() {
    [ -f "$1" ] || return 0
    local pid
    pid="$(cat "$1")"
    if alive "$pid"; then kill "$pid" 2>/dev/null || true; fi
    rm -f "$1"
}

smtp_start() {
    port_listening "$SMTP_PORT" && return 0
    mkdir -p "$MAIL_DIR"
    log "starting the SMTP sink on 127.0.0.1:$SMTP_PORT (mail in $MAIL_DIR)"
    daemon_start "the SMTP sink" "$SMTP_PORT" "$SMTP_PID" "$LOCAL_DIR/smtp-sink.log" \
        "$SYSTEM_PYTHON" "$SCRIPT_DIR/smtp_sink.py" --port "$SMTP_PORT" --dir "$MAIL_DIR"
}

# localstripe for `make run`, from scratch each start (it keeps its objects in memory).
localstripe_start() {
    port_listening "$LOCALSTRIPE_PORT" && return 0
    log "starting localstripe on 127.0.0.1:$LOCALSTRIPE_PORT"
    daemon_start localstripe "$LOCALSTRIPE_PORT" "$LOCALSTRIPE_PID" "$LOCAL_DIR/localstripe.log" \
        "$VENV_DIR/bin/localstripe" --port "$LOCALSTRIPE_PORT" --from-scratch
}

localstripe_stop() { daemon_stop "$LOCALSTRIPE_PID"; }

smtp_stop() { daemon_stop "$SMTP_PID"; }

check_traversable() {
    # postgres/rabbitmq must be able to reach <repo>/.local
    local u
    for u in postgres rabbitmq; do
        runuser -u "$u" -- test -x "$LOCAL_DIR" ||
            die "user $u cannot traverse $LOCAL_DIR; make every parent directory world-executable (chmod o+x)"
    done
}

# ============================================================ PostgreSQL
# (9>&-: don't leak the start/stop lock fd into the long-running server processes)
pg_ctl_() { runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DATA" "$@" 9>&-; }

pg_running() {
    [ -s "$PG_DATA/PG_VERSION" ] && pg_ctl_ status >/dev/null 2>&1
}

pg_ready() {
    "$PG_BIN/pg_isready" -q -h "$PG_HOST" -p "$PG_PORT" -d postgres >/dev/null 2>&1
}

pg_prepare() {
    mkdir -p "$PG_BASE"
    chown postgres:postgres "$PG_BASE"
    chmod 755 "$PG_BASE"
    # Unix socket paths are limited to 107 bytes; fall back to /tmp for deep clones.
    if [ "$(printf '%s' "$PG_SOCK/.s.PGSQL.$PG_PORT" | wc -c)" -gt 100 ]; then
        PG_SOCK="/tmp/settle-pg-$(printf '%s' "$REPO_DIR" | md5sum | cut -c1-8)"
        log "repo path too long for a unix socket; using $PG_SOCK"
    fi
    mkdir -p "$PG_SOCK"
    chown postgres:postgres "$PG_SOCK"
    chmod 755 "$PG_SOCK"
    touch "$PG_LOG"
    chown postgres:postgres "$PG_LOG"

    if [ ! -s "$PG_DATA/PG_VERSION" ]; then
        # Half-initialised leftovers (e.g. interrupted initdb) would make initdb refuse.
        rm -rf "$PG_DATA"
        log "initdb $PG_DATA"
        runuser -u postgres -- "$PG_BIN/initdb" -D "$PG_DATA" -U postgres -E UTF8 \
            --locale=C.UTF-8 --auth-local=trust --auth-host=scram-sha-256 >"$PG_BASE/initdb.log" 2>&1 ||
            { tail -n 30 "$PG_BASE/initdb.log" >&2; die "initdb failed"; }
        printf "\n# settle dev/test settings, regenerated by scripts/services.sh\ninclude = 'settle.conf'\n" \
            >>"$PG_DATA/postgresql.conf"
    fi

    # Regenerated on every start so edits to this script take effect.
    local sock_escaped=${PG_SOCK//\'/\'\'}
    cat >"$PG_DATA/settle.conf" <<EOF
# Generated by scripts/services.sh -- do not edit, edit the script instead.
listen_addresses = '$PG_HOST'
port = $PG_PORT
unix_socket_directories = '$sock_escaped'
max_connections = 300
shared_buffers = 128MB
# Test box: keep fsync on, but don't wait for WAL flush on every commit.
synchronous_commit = off
logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d '
EOF
    chown postgres:postgres "$PG_DATA/settle.conf"
}

pg_ensure_role_db() {
    local psql=("$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCK" -p "$PG_PORT" -U postgres -d postgres)
    "${psql[@]}" >/dev/null <<EOF
DO \$\$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_USER') THEN
    CREATE ROLE $PG_USER LOGIN CREATEDB PASSWORD '$PG_PASSWORD';
  ELSE
    ALTER ROLE $PG_USER LOGIN CREATEDB PASSWORD '$PG_PASSWORD';
  END IF;
END
\$\$;
SELECT 'CREATE DATABASE $PG_DB OWNER $PG_USER'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$PG_DB')\gexec
EOF
}

pg_start() {
    pg_prepare
    if pg_running; then
        log "postgres: already running"
    else
        log "postgres: starting on $PG_HOST:$PG_PORT"
        if ! pg_ctl_ -l "$PG_LOG" -w -t "$DEADLINE_PG" start >/dev/null 2>&1; then
            tail -n 30 "$PG_LOG" >&2 || true
            die "postgres failed to start (log: $PG_LOG)"
        fi
    fi
    local deadline=$((SECONDS + DEADLINE_PG))
    until pg_ready; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            tail -n 30 "$PG_LOG" >&2 || true
            die "postgres not accepting connections on $PG_HOST:$PG_PORT after ${DEADLINE_PG}s"
        fi
        sleep 0.2
    done
    pg_ensure_role_db
}

pg_stop() {
    if pg_running; then
        log "postgres: stopping"
        pg_ctl_ -m fast -w -t 60 stop >/dev/null
    else
        log "postgres: not running"
    fi
}

# ============================================================ RabbitMQ
# node_short NODE -> prints the short name (settle / settle-chaos / settle-c1…), validating it.
node_short() {
    local n="${1%@*}"
    if [ "$1" != "$n" ] && [ "${1#*@}" != "$RMQ_HOST" ]; then
        die "unknown node '$1' (expected $MAIN_NODE, $CHAOS_NODE or ${CLUSTER_NODES[*]}, @$RMQ_HOST)"
    fi
    case "$n" in
        "$MAIN_NODE" | "$CHAOS_NODE" | settle-c1 | settle-c2 | settle-c3) printf '%s\n' "$n" ;;
        *) die "unknown node '$1' (expected $MAIN_NODE, $CHAOS_NODE or ${CLUSTER_NODES[*]}, @$RMQ_HOST)" ;;
    esac
}

amqp_port() {
    case "$1" in
        "$MAIN_NODE") echo 56720 ;; "$CHAOS_NODE") echo 56730 ;;
        settle-c1) echo 56740 ;; settle-c2) echo 56750 ;; settle-c3) echo 56760 ;;
    esac
}
dist_port() { echo $(($(amqp_port "$1") + 1)); }
is_cluster_node() { case "$1" in settle-c[123]) return 0 ;; *) return 1 ;; esac; }
node_dir() { echo "$RMQ_BASE/$1"; }

# Environment for both the server and the CLI tools of node $1 (short name).
rmq_env() {
    local n="$1" d erl_args="-kernel inet_dist_use_interface {127,0,0,1}"
    d="$(node_dir "$n")"
    # Five VMs share this box: the cluster's schedulers sleep when idle instead of spinning.
    if is_cluster_node "$n"; then erl_args+=" +sbwt none +sbwtdcpu none +sbwtdio none"; fi
    RMQ_ENV=(
        PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        LANG=C.UTF-8 LC_ALL=C.UTF-8
        HOME="$d"
        RABBITMQ_NODENAME="$n@$RMQ_HOST"
        RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
        RABBITMQ_NODE_PORT="$(amqp_port "$n")"
        RABBITMQ_DIST_PORT="$(dist_port "$n")"
        ERL_EPMD_PORT="$EPMD_PORT"
        ERL_EPMD_ADDRESS=127.0.0.1
        RABBITMQ_MNESIA_BASE="$d/mnesia"
        RABBITMQ_LOG_BASE="$d/log"
        RABBITMQ_PID_FILE="$d/rabbitmq.pid"
        RABBITMQ_ENABLED_PLUGINS_FILE="$d/enabled_plugins"
        RABBITMQ_PLUGINS_EXPAND_DIR="$d/plugins-expand"
        RABBITMQ_CONFIG_FILE="$d/rabbitmq.conf"
        RABBITMQ_ADVANCED_CONFIG_FILE="$d/advanced.config"
        RABBITMQ_CONF_ENV_FILE="$d/rabbitmq-env.conf"
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="$erl_args"
    )
}

# rmq_as NODE CMD ARGS... : run CMD as the rabbitmq user with the node's env, from its dir.
rmq_as() {
    local n="$1"
    shift
    rmq_env "$n"
    (cd "$(node_dir "$n")" && runuser -u rabbitmq -- env -i "${RMQ_ENV[@]}" "$@")
}

# ctl NODE ARGS... : rabbitmqctl against node NODE (short name), bounded in time.
ctl() {
    local n="$1"
    shift
    # stdin from /dev/null: the Erlang CLI would otherwise eat the caller's stdin
    # (e.g. a `while read` loop feeding it).
    rmq_as "$n" timeout -k 5 "${CTL_TIMEOUT:-60}" "$RMQ_BIN/rabbitmqctl" -q -n "$n@$RMQ_HOST" "$@" </dev/null
}

rmq_pid() {
    local f
    f="$(node_dir "$1")/rabbitmq.pid"
    [ -s "$f" ] || return 1
    local pid
    pid="$(tr -dc 0-9 <"$f")"
    [ -n "$pid" ] && alive "$pid" || return 1
    # Guard against pid reuse: it must be an Erlang VM of this node.
    # (3.10 names the node at runtime, so look at the process environment.)
    tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -x "RABBITMQ_NODENAME=$1@$RMQ_HOST" >/dev/null || return 1
    echo "$pid"
}

new_cookie() { (umask 077 && od -An -N16 -tx1 /dev/urandom | tr -d ' \n' | tr a-f A-F); }

rmq_prepare() {
    local n="$1" d
    d="$(node_dir "$n")"
    mkdir -p "$RMQ_BASE" "$d/mnesia" "$d/log"
    chmod 755 "$LOCAL_DIR" "$RMQ_BASE"
    if is_cluster_node "$n"; then
        # A cluster's nodes share one cookie.
        [ -s "$RMQ_BASE/cluster.cookie" ] || new_cookie >"$RMQ_BASE/cluster.cookie"
        chmod 600 "$d/.erlang.cookie" 2>/dev/null || true
        cp "$RMQ_BASE/cluster.cookie" "$d/.erlang.cookie"
    elif [ ! -s "$d/.erlang.cookie" ]; then
        new_cookie >"$d/.erlang.cookie"
    fi
    printf '[].\n' >"$d/enabled_plugins" # no plugins at all
    : >"$d/rabbitmq-env.conf"             # shadow /etc/rabbitmq/rabbitmq-env.conf
    cat >"$d/rabbitmq.conf" <<EOF
# Generated by scripts/services.sh -- do not edit, edit the script instead.
listeners.tcp.default = 127.0.0.1:$(amqp_port "$n")
loopback_users.guest = true
log.console = false
log.file.level = info
disk_free_limit.absolute = 50MB
EOF
    if is_cluster_node "$n"; then
        # A node cut off from the others (a network pause) stops serving rather than go on as
        # a second cluster.
        echo "cluster_partition_handling = pause_minority" >>"$d/rabbitmq.conf"
    fi
    chown -R rabbitmq:rabbitmq "$d"
    chmod 750 "$d"
    chmod 400 "$d/.erlang.cookie"
}

wait_amqp() { # NODE DEADLINE_S [PID]
    local n="$1" port deadline=$((SECONDS + $2)) pid="${3:-}"
    port="$(amqp_port "$n")"
    until port_open "$port"; do
        if [ -n "$pid" ] && ! alive "$pid"; then
            rmq_dump_logs "$n"
            die "rabbitmq node $n@$RMQ_HOST exited during startup"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            rmq_dump_logs "$n"
            die "rabbitmq node $n@$RMQ_HOST: AMQP port $port not open after $2s"
        fi
        sleep 0.3
    done
}

rmq_dump_logs() {
    local d
    d="$(node_dir "$1")"
    log "---- $d/log/startup.log (tail)"
    tail -n 30 "$d/log/startup.log" >&2 2>/dev/null || true
    log "---- $d/log/$1@$RMQ_HOST.log (tail)"
    tail -n 40 "$d/log/$1@$RMQ_HOST.log" >&2 2>/dev/null || true
}

# rmq_heal NODE: a quorum queue's at-least-once dead-letter workers hang off rabbit_fifo_dlx_sup.
# RabbitMQ 3.10 can lose that supervisor for good: its workers crash when queues are deleted just
# after an app restart (the chaos test's teardown), it gives up, and from then on every quorum
# queue declared with a dead-letter exchange fails with INTERNAL_ERROR. Restarting the app heals it.
# The app is restarted until the supervisor is seen alive again (a restart can lose it anew).
rmq_heal() {
    local n="$1" attempt
    dlx_sup_alive "$n" && return 0
    for attempt in 1 2 3; do
        log "rabbitmq $n@$RMQ_HOST: dead-letter supervisor lost (RabbitMQ 3.10); restarting the app ($attempt/3)"
        CTL_TIMEOUT=30 ctl "$n" stop_app >/dev/null
        CTL_TIMEOUT=$DEADLINE_RMQ ctl "$n" start_app >/dev/null
        wait_amqp "$n" "$DEADLINE_RMQ"
        local deadline=$((SECONDS + 30))
        while [ $SECONDS -lt $deadline ]; do
            dlx_sup_alive "$n" && return 0
            sleep 1
        done
    done
    die "rabbitmq $n@$RMQ_HOST: the dead-letter supervisor is still lost after 3 app restarts"
}

dlx_sup_alive() {
    [ "$(ctl "$1" eval 'is_pid(whereis(rabbit_fifo_dlx_sup)).' 2>/dev/null)" = true ]
}

# rmq_launch NODE: start NODE in the background if it isn't running. Sets
# LAUNCHED=1 if the caller must then rmq_wait_started it.
rmq_launch() {
    local n="$1" port
    LAUNCHED=0
    port="$(amqp_port "$n")"
    if rmq_pid "$n" >/dev/null; then
        if port_open "$port"; then
            log "rabbitmq $n@$RMQ_HOST: already running"
            rmq_heal "$n"
            return 0
        fi
        # VM up but app stopped (e.g. a chaos test died mid-outage): start the app.
        log "rabbitmq $n@$RMQ_HOST: VM running but app stopped; starting app"
        CTL_TIMEOUT=$DEADLINE_RMQ ctl "$n" start_app >/dev/null
        wait_amqp "$n" "$DEADLINE_RMQ"
        return 0
    fi
    if port_listening "$port"; then
        die "port $port is already in use by something else (another clone's services?)"
    fi

    rmq_prepare "$n"
    local d
    d="$(node_dir "$n")"
    rm -f "$d/rabbitmq.pid"
    log "rabbitmq $n@$RMQ_HOST: starting (AMQP 127.0.0.1:$port, dist $(dist_port "$n"), epmd $EPMD_PORT)"
    rmq_env "$n"
    (
        cd "$d"
        # Own session + no inherited fds, so the caller (a test harness, CI step) never
        # waits on us and a Ctrl-C in the calling terminal doesn't reach the broker.
        # runuser's pam_limits drops the soft fd limit to 1024 (~830 AMQP sockets);
        # raise it back to the hard limit inside the rabbitmq user's shell.
        setsid nohup runuser -u rabbitmq -- env -i "${RMQ_ENV[@]}" \
            sh -c 'ulimit -S -n 65536 2>/dev/null || ulimit -S -n "$(ulimit -H -n)" || true; exec "$@"' \
            rabbitmq-server "$RMQ_BIN/rabbitmq-server" \
            </dev/null >>"$d/log/startup.log" 2>&1 9>&- &
        echo $! >"$d/launcher.pid"
    )
    LAUNCHED=1
}

rmq_wait_started() {
    local n="$1" d launcher t0=$SECONDS
    d="$(node_dir "$n")"
    launcher="$(cat "$d/launcher.pid")"
    wait_amqp "$n" "$DEADLINE_RMQ" "$launcher"
    local t_amqp=$((SECONDS - t0))
    # Also proves the CLI (cookie, epmd port) works, which broker-*-app rely on.
    CTL_TIMEOUT=$DEADLINE_RMQ ctl "$n" await_startup --timeout "$DEADLINE_RMQ" >/dev/null ||
        { rmq_dump_logs "$n"; die "rabbitmqctl await_startup failed for $n@$RMQ_HOST"; }
    log "rabbitmq $n@$RMQ_HOST: up (AMQP open after ${t_amqp}s of waiting, await_startup ok after $((SECONDS - t0))s)"
}

# rmq_start NODE... : launch all given nodes in parallel, then wait for each.
rmq_start() {
    local n pending=()
    for n in "$@"; do
        rmq_launch "$n"
        [ "$LAUNCHED" = 0 ] || pending+=("$n")
    done
    for n in ${pending[@]+"${pending[@]}"}; do
        rmq_wait_started "$n"
    done
}

rmq_stop() {
    local n="$1" pid
    if ! pid="$(rmq_pid "$n")"; then
        log "rabbitmq $n@$RMQ_HOST: not running"
        rm -f "$(node_dir "$n")/rabbitmq.pid"
        return 0
    fi
    log "rabbitmq $n@$RMQ_HOST: stopping"
    CTL_TIMEOUT=60 ctl "$n" stop >/dev/null 2>&1 || true
    local deadline=$((SECONDS + 30))
    while alive "$pid"; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "rabbitmq $n@$RMQ_HOST: did not stop in time; killing pid $pid"
            kill -TERM "$pid" 2>/dev/null || true
            sleep 3
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.2
    done
    rm -f "$(node_dir "$n")/rabbitmq.pid"
}

# Stop the epmd that our nodes started on $EPMD_PORT, once no node of ours uses it.
epmd_stop() {
    rmq_pid "$MAIN_NODE" >/dev/null && return 0
    rmq_pid "$CHAOS_NODE" >/dev/null && return 0
    local n
    for n in "${CLUSTER_NODES[@]}"; do rmq_pid "$n" >/dev/null && return 0; done
    port_listening "$EPMD_PORT" || return 0
    ERL_EPMD_PORT="$EPMD_PORT" timeout 10 epmd -kill >/dev/null 2>&1 || true
}

rmq_state() { # prints running / app-stopped / stopped
    local n="$1"
    if rmq_pid "$n" >/dev/null; then
        if port_listening "$(amqp_port "$n")"; then echo running; else echo app-stopped; fi
    else
        echo stopped
    fi
}

# cluster_join: joins c2 and c3 to c1 where they are not members yet (a node that ran alone is
# reset first), then grows every quorum queue onto every node, so a queue declared while a node
# was out of the cluster gets its replica there too. Idempotent.
cluster_join() {
    local first="${CLUSTER_NODES[0]}" n
    for n in "${CLUSTER_NODES[@]:1}"; do
        if [ "$(ctl "$first" eval "lists:member('$n@$RMQ_HOST', rabbit_nodes:all())." 2>/dev/null)" = true ]; then
            continue
        fi
        log "rabbitmq $n@$RMQ_HOST: joining the cluster of $first@$RMQ_HOST"
        CTL_TIMEOUT=30 ctl "$n" stop_app >/dev/null
        CTL_TIMEOUT=30 ctl "$n" reset >/dev/null
        CTL_TIMEOUT=60 ctl "$n" join_cluster "$first@$RMQ_HOST" >/dev/null
        CTL_TIMEOUT=$DEADLINE_RMQ ctl "$n" start_app >/dev/null
        wait_amqp "$n" "$DEADLINE_RMQ"
    done
    for n in "${CLUSTER_NODES[@]}"; do
        rmq_as "$first" timeout -k 5 60 "$RMQ_BIN/rabbitmq-queues" -q -n "$first@$RMQ_HOST" \
            grow "$n@$RMQ_HOST" all </dev/null >/dev/null ||
            log "rabbitmq: could not grow the quorum queues onto $n@$RMQ_HOST"
    done
    log "rabbitmq cluster: $(ctl "$first" eval 'length(rabbit_nodes:all_running()).') of ${#CLUSTER_NODES[@]} nodes running"
}

# rmq_users NODE: the roles' least-privilege users (deploy/rabbitmq-users.sh owns the table), for
# every prefix the tests and the fault suite use, one password for all (loopback test nodes).
rmq_users() {
    local n="$1"
    rmq_env "$n"
    (cd "$(node_dir "$n")" &&
        SETTLE_BROKER_PREFIX_RE='settle|test-[^.]+|chaos-[^.]+' \
            SETTLE_AMQP_PASSWORD_ADMIN="$ROLE_PASSWORD" SETTLE_AMQP_PASSWORD_SERVE="$ROLE_PASSWORD" \
            SETTLE_AMQP_PASSWORD_WORKER="$ROLE_PASSWORD" SETTLE_AMQP_PASSWORD_OPS="$ROLE_PASSWORD" \
            SETTLE_AMQP_PASSWORD_SUBSCRIBER="$ROLE_PASSWORD" \
            "$REPO_DIR/deploy/rabbitmq-users.sh" runuser -u rabbitmq -- env -i "${RMQ_ENV[@]}" \
            timeout -k 5 60 "$RMQ_BIN/rabbitmqctl" -q -n "$n@$RMQ_HOST") ||
        die "rabbitmq $n@$RMQ_HOST: could not set up the roles' users"
}

# ============================================================ purge
PURGE_EVAL='
IsTest = fun(N) -> is_binary(N) andalso byte_size(N) >= 6
                   andalso (binary:part(N, 0, 5) =:= <<"test-">>
                            orelse binary:part(N, 0, 6) =:= <<"chaos-">>) end,
Qs = [Q || Q <- rabbit_amqqueue:list(), IsTest(element(4, amqqueue:get_name(Q)))],
DQ = lists:foldl(fun(Q, Acc) ->
        try rabbit_amqqueue:delete(Q, false, false, <<"services.sh">>) of
            {error, _} -> Acc;
            _ -> Acc + 1
        catch _:_ -> Acc end
     end, 0, Qs),
Xs = [element(2, X) || X <- rabbit_exchange:list(), IsTest(element(4, element(2, X)))],
DX = lists:foldl(fun(XN, Acc) ->
        case catch rabbit_exchange:delete(XN, false, <<"services.sh">>) of
            ok -> Acc + 1;
            _ -> Acc
        end
     end, 0, Xs),
io_lib:format("deleted ~b/~b queue(s), ~b/~b exchange(s)", [DQ, length(Qs), DX, length(Xs)]).
'

purge_node() {
    local n="$1" out
    if out="$(ctl "$n" eval "$PURGE_EVAL" 2>&1)" && [[ "$out" == *deleted* ]]; then
        # eval prints the iolist as an Erlang term; make it readable
        log "purge $n@$RMQ_HOST: $(printf '%s' "$out" | tr -d '"[]\n' | sed 's/,/ /g; s/  */ /g')"
        return 0
    fi
    log "purge $n@$RMQ_HOST: eval failed ($out); falling back to list_queues/delete_queue"
    local q count=0
    while IFS= read -r q; do
        [[ "$q" == test-* || "$q" == chaos-* ]] || continue
        ctl "$n" delete_queue "$q" >/dev/null && count=$((count + 1)) || true
    done < <(ctl "$n" list_queues --no-table-headers name)
    log "purge $n@$RMQ_HOST: deleted $count queue(s) in vhost /"
}

# ============================================================ commands
print_env() {
    echo "export DATABASE_URL=$DATABASE_URL"
    echo "export AMQP_URL=$AMQP_URL"
    echo "export SETTLE_TEST_CHAOS_AMQP_URL=$CHAOS_AMQP_URL"
    echo "export SETTLE_TEST_CLUSTER_AMQP_URLS=$CLUSTER_AMQP_URLS"
    echo "export SMTP_URL=smtp://127.0.0.1:$SMTP_PORT"
    echo "export SETTLE_TEST_AMQP_ROLE_PASSWORD=$ROLE_PASSWORD"
    if pg_cluster_exists; then "$PG_CLUSTER" env; fi
}

# Serialise start/stop (e.g. several test processes calling `start` at once).
take_lock() {
    mkdir -p "$LOCAL_DIR"
    exec 9>"$LOCAL_DIR/.services.lock"
    flock -w 300 9 || die "timed out waiting for another services.sh start/stop"
}

# The PostgreSQL cluster under Patroni (issue 36): its own script.
PG_CLUSTER="$REPO_DIR/scripts/pg-cluster.sh"
pg_cluster_exists() { [ -d "$LOCAL_DIR/pg-cluster" ]; }

cmd_start() {
    local chaos=0 cluster=0 pg_cluster=0
    for a in "$@"; do
        case "$a" in
            --chaos) chaos=1 ;;
            --cluster) cluster=1 ;;
            --pg-cluster) pg_cluster=1 ;;
            *) die "start: unknown option $a" ;;
        esac
    done
    require_root
    take_lock
    if [ "$pg_cluster" = 1 ]; then ensure_installed --pg-cluster; else ensure_installed; fi
    ensure_localstripe
    reserve_ports
    chmod 755 "$LOCAL_DIR"
    check_traversable
    pg_start
    [ "$pg_cluster" = 0 ] || "$PG_CLUSTER" start
    smtp_start
    localstripe_start
    local nodes=("$MAIN_NODE")
    [ "$chaos" = 0 ] || nodes+=("$CHAOS_NODE")
    [ "$cluster" = 0 ] || nodes+=("${CLUSTER_NODES[@]}")
    # In parallel: a clustered node that restarts waits for its peers before it boots.
    rmq_start "${nodes[@]}"
    [ "$cluster" = 0 ] || cluster_join
    # The main node's serve the broker-roles tests; the cluster's, the fault suite's deployments.
    local users=()
    rmq_users "$MAIN_NODE" &
    users+=($!)
    if [ "$cluster" = 1 ]; then
        rmq_users "${CLUSTER_NODES[0]}" &
        users+=($!)
    fi
    for pid in "${users[@]}"; do wait "$pid" || die "the roles' broker users are not set up"; done
    print_env
}

cmd_stop() {
    require_root
    take_lock
    if [ -x "$RMQ_BIN/rabbitmqctl" ]; then
        local n
        # The cluster's nodes together: one left running would wait for the others on its
        # next boot.
        for n in "${CLUSTER_NODES[@]}"; do rmq_stop "$n" & done
        wait
        rmq_stop "$CHAOS_NODE"
        rmq_stop "$MAIN_NODE"
        epmd_stop
    fi
    if [ -x "$PG_BIN/pg_ctl" ]; then pg_stop; fi
    if pg_cluster_exists; then "$PG_CLUSTER" stop; fi
    smtp_stop
    localstripe_stop
}

cmd_status() {
    local rc=0
    if [ -x "$PG_BIN/pg_ctl" ] && pg_running; then
        if pg_ready; then echo "postgres: running ($PG_HOST:$PG_PORT, data $PG_DATA)"; else
            echo "postgres: process up but not accepting connections"; rc=1; fi
    else
        echo "postgres: stopped"; rc=1
    fi
    if port_listening "$SMTP_PORT"; then echo "smtp sink: running (127.0.0.1:$SMTP_PORT, mail in $MAIL_DIR)"; else
        echo "smtp sink: stopped"; rc=1; fi
    if port_listening "$LOCALSTRIPE_PORT"; then echo "localstripe: running (127.0.0.1:$LOCALSTRIPE_PORT)"; else
        echo "localstripe: stopped"; rc=1; fi
    local n s
    for n in "$MAIN_NODE" "$CHAOS_NODE" "${CLUSTER_NODES[@]}"; do
        s="$(rmq_state "$n")"
        echo "rabbitmq $n@$RMQ_HOST: $s (AMQP 127.0.0.1:$(amqp_port "$n"))"
        [ "$n" != "$MAIN_NODE" ] || [ "$s" = running ] || rc=1
    done
    if pg_cluster_exists; then
        "$PG_CLUSTER" status | sed 's/^/postgres cluster member /'
    fi
    return "$rc"
}

cmd_broker_app() { # stop|start NODE
    local action="$1" node="${2:-}"
    [ -n "$node" ] || die "usage: $0 broker-$action-app NODE (e.g. $CHAOS_NODE@$RMQ_HOST)"
    require_root
    local n
    n="$(node_short "$node")"
    rmq_pid "$n" >/dev/null || die "rabbitmq node $n@$RMQ_HOST is not running (start it with: $0 start --chaos)"
    if [ "$action" = stop ]; then
        CTL_TIMEOUT=30 ctl "$n" stop_app >/dev/null
        local deadline=$((SECONDS + 10))
        while port_listening "$(amqp_port "$n")"; do
            [ "$SECONDS" -lt "$deadline" ] || die "AMQP port still open after stop_app"
            sleep 0.1
        done
    else
        # start_app is synchronous (returns once the app has booted); then make sure the
        # listener accepts connections instead of paying for a second CLI round trip.
        CTL_TIMEOUT=60 ctl "$n" start_app >/dev/null
        wait_amqp "$n" 30
    fi
}

cmd_broker_ctl() { # NODE ARGS...: rabbitmqctl on NODE, as the node's own user and environment
    local node="${1:-}"
    [ -n "$node" ] && [ $# -ge 2 ] || die "usage: $0 broker-ctl NODE ARGS... (e.g. $CHAOS_NODE@$RMQ_HOST list_queues)"
    shift
    require_root
    local n
    n="$(node_short "$node")"
    rmq_pid "$n" >/dev/null || die "rabbitmq node $n@$RMQ_HOST is not running"
    CTL_TIMEOUT=30 ctl "$n" "$@"
}

cmd_broker_signal() { # KILL|STOP|CONT NODE: the node's Erlang VM, for the fault suite
    local sig="$1" node="${2:-}"
    [ -n "$node" ] || die "usage: $0 broker-$(echo "$sig" | tr 'A-Z' 'a-z') NODE"
    require_root
    local n pid
    n="$(node_short "$node")"
    pid="$(rmq_pid "$n")" || die "rabbitmq node $n@$RMQ_HOST is not running"
    kill "-$sig" "$pid"
    if [ "$sig" = KILL ]; then
        while alive "$pid"; do sleep 0.1; done
    fi
}

cmd_db() { # stop|start: the fault suite's PostgreSQL outage
    require_root
    take_lock
    if [ "$1" = stop ]; then pg_stop; else pg_start; fi
}

cmd_purge() {
    require_root
    rmq_pid "$MAIN_NODE" >/dev/null || die "rabbitmq node $MAIN_NODE@$RMQ_HOST is not running"
    purge_node "$MAIN_NODE"
    # Tests also declare test-* topology on the chaos node; clean it too when it's up.
    if [ "$(rmq_state "$CHAOS_NODE")" = running ]; then purge_node "$CHAOS_NODE"; fi
    # The cluster's queues are the cluster's: one node's purge covers them.
    local n
    for n in "${CLUSTER_NODES[@]}"; do
        if [ "$(rmq_state "$n")" = running ]; then purge_node "$n" && break; fi
    done
}

usage() {
    cat >&2 <<EOF
usage: $0 <command>
  start [--chaos] [--cluster] [--pg-cluster]
                           start postgres, the SMTP sink, rabbitmq ($MAIN_NODE@$RMQ_HOST) [+ $CHAOS_NODE@$RMQ_HOST]
                           [+ the three-node cluster ${CLUSTER_NODES[*]}, joined]
                           [+ three PostgreSQL 15 members under Patroni with etcd, synchronous
                           replication on (scripts/pg-cluster.sh)]
  stop                     stop everything started by this script
  status                   show what is running
  env                      print export lines for the test environment
  broker-stop-app NODE     rabbitmqctl stop_app on NODE (e.g. $CHAOS_NODE@$RMQ_HOST)
  broker-start-app NODE    rabbitmqctl start_app on NODE and wait for AMQP
  broker-ctl NODE ARGS...  rabbitmqctl ARGS on NODE (tests raise memory alarms and read queue counts)
  broker-kill NODE         kill -9 the node's VM (start --chaos brings it back)
  broker-pause NODE        SIGSTOP the node's VM; broker-resume NODE sends SIGCONT
  db-stop | db-start       stop (fast) or start PostgreSQL
  pg-ctl kill|restart|pause|resume MEMBER, pg-ctl switchover [CANDIDATE]
                           the Patroni cluster's faults (members pg1, pg2, pg3)
  purge-test-queues        delete test-* and chaos-* queues and exchanges on the broker(s)
EOF
    exit 2
}

main() {
    [ $# -ge 1 ] || usage
    local cmd="$1"
    shift
    case "$cmd" in
        start) cmd_start "$@" ;;
        stop) cmd_stop ;;
        status) cmd_status ;;
        env) print_env ;;
        broker-stop-app) cmd_broker_app stop "$@" ;;
        broker-start-app) cmd_broker_app start "$@" ;;
        broker-ctl) cmd_broker_ctl "$@" ;;
        broker-kill) cmd_broker_signal KILL "$@" ;;
        broker-pause) cmd_broker_signal STOP "$@" ;;
        broker-resume) cmd_broker_signal CONT "$@" ;;
        db-stop) cmd_db stop ;;
        db-start) cmd_db start ;;
        pg-ctl) "$PG_CLUSTER" ctl "$@" ;;
        purge-test-queues) cmd_purge ;;
        -h | --help | help) usage ;;
        *) log "unknown command: $cmd"; usage ;;
    esac
}

main "$@"
