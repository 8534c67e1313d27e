#!/bin/sh
# One RabbitMQ user per settle role, each with the least it needs (vhost /). The one owner of
# the broker's permission table: compose.scale.yaml runs it against its cluster, and
# scripts/services.sh against its test nodes.
#
# usage: rabbitmq-users.sh RABBITMQCTL [ARGS...]
#   e.g. rabbitmq-users.sh rabbitmqctl -n rabbit@rabbit-1
# environment:
#   SETTLE_BROKER_PREFIX_RE   the queue prefix(es) as a regular expression (default: settle,
#                             settle's default `amqp.prefix`)
#   SETTLE_AMQP_PASSWORD_ADMIN, _SERVE, _WORKER, _OPS, _SUBSCRIBER   each user's password
#
# The users, and why each may do what it may (configure / write / read, RabbitMQ's terms):
#   settle-admin       declares the topology (`settle broker declare`): configure, write and read
#                      every P.* name, and write amq.default (RabbitMQ asks it of whoever declares
#                      a queue that dead-letters through it). No role process runs with it.
#   settle-serve       the receiver: publishes to P.webhooks, nothing more. It can neither read a
#                      queue nor reach the reconciliation events.
#   settle-worker      consumes P.reconcile and P.dead; publishes retries and dead letters (the
#                      default exchange, amq.default), the sweeper's backfill (P.webhooks) and
#                      the relay's reconciliation events (P.reconciliation).
#   settle-ops         operators' commands: `dlq replay` and `events replay` put an event back on
#                      the work queue (amq.default), `backfill` publishes to P.webhooks. Reads
#                      nothing: dead letters are listed from PostgreSQL.
#   settle-subscriber  an internal service: declares, binds and reads its own sub.* queues, and
#                      reads the two reconciliation exchanges; it can publish to none of settle's.
# Passive declarations (the roles' check that the topology is in place) need no permission.
# Every event on the work queue is also sealed (settle-seal), so even a user that may publish
# there cannot make the worker apply an event without the keyring.
set -eu

[ $# -ge 1 ] || { echo "usage: $0 RABBITMQCTL [ARGS...]" >&2; exit 2; }

P="${SETTLE_BROKER_PREFIX_RE:-settle}"
NONE='^$'

# user <TAB> configure <TAB> write <TAB> read
permissions() {
    printf '%s\t%s\t%s\t%s\n' \
        settle-admin "^($P)\\." "^(amq\\.default\$|($P)\\.)" "^($P)\\." \
        settle-serve "$NONE" "^($P)\\.webhooks\$" "$NONE" \
        settle-worker "$NONE" "^(amq\\.default|($P)\\.webhooks|($P)\\.reconciliation)\$" \
        "^($P)\\.(reconcile|dead)\$" \
        settle-ops "$NONE" "^(amq\\.default|($P)\\.webhooks)\$" "$NONE" \
        settle-subscriber '^sub\.' '^sub\.' "^(sub\\..*|($P)\\.reconciliation(\\.by-account)?)\$"
}

password_of() {
    case "$1" in
        settle-admin) printf '%s' "${SETTLE_AMQP_PASSWORD_ADMIN:?set SETTLE_AMQP_PASSWORD_ADMIN}" ;;
        settle-serve) printf '%s' "${SETTLE_AMQP_PASSWORD_SERVE:?set SETTLE_AMQP_PASSWORD_SERVE}" ;;
        settle-worker) printf '%s' "${SETTLE_AMQP_PASSWORD_WORKER:?set SETTLE_AMQP_PASSWORD_WORKER}" ;;
        settle-ops) printf '%s' "${SETTLE_AMQP_PASSWORD_OPS:?set SETTLE_AMQP_PASSWORD_OPS}" ;;
        settle-subscriber)
            printf '%s' "${SETTLE_AMQP_PASSWORD_SUBSCRIBER:?set SETTLE_AMQP_PASSWORD_SUBSCRIBER}" ;;
    esac
}

# rabbitmqctl takes about a second a call: users whose permissions are already as listed are
# left alone, so a restart of a node that has them costs one call.
current="$("$@" list_permissions -p / --no-table-headers </dev/null)"
tab="$(printf '\t')"
permissions | while IFS="$tab" read -r user configure write read; do
    if printf '%s\n' "$current" | grep -Fxq "$user$tab$configure$tab$write$tab$read"; then
        continue
    fi
    password="$(password_of "$user")"
    "$@" add_user "$user" "$password" </dev/null >/dev/null 2>&1 ||
        "$@" change_password "$user" "$password" </dev/null >/dev/null
    "$@" set_permissions -p / "$user" "$configure" "$write" "$read" </dev/null >/dev/null
    echo "rabbitmq-users: $user set"
done
