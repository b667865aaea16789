#!/bin/bash
# make.sh BIN DIR PORT [kill]: the fixture of TestUpgrade in DIR, made by the
# spinbroker binary BIN (an older build) through its HTTP API on 127.0.0.1:PORT:
# a database with state of every kind (spinbroker.db), what every GET answered
# (answers.json), and the secrets the test needs (secrets.json). BIN is
# stopped with SIGTERM, so that the database is one file; with "kill", with
# SIGKILL, which leaves its last commits in spinbroker.db-wal. The files are
# gzipped. Needs curl and jq.
set -eu
BIN=$1 D=$2 PORT=$3 SIG=TERM
if [ "${4:-}" = kill ]; then SIG=KILL; fi
mkdir -p "$D"
rm -f "$D"/spinbroker.db* "$D"/answers.json "$D"/secrets.json
DB=$D/spinbroker.db U=http://127.0.0.1:$PORT
tok() { "$BIN" token create --db "$DB" "$@" | awk '{print $NF}'; }
ADMIN=$(tok --role admin --name ops) CLIENT=$(tok --role client --name cl)
AGENT=$(tok --role agent --resource r3 --name ag3) VIEWER=$(tok --role viewer --name vw)
"$BIN" serve --auth --addr 127.0.0.1:$PORT --db "$DB" >/dev/null 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf $U/healthz >/dev/null && break; sleep 0.1; done
A="Authorization: Bearer $ADMIN" C="Authorization: Bearer $CLIENT" G="Authorization: Bearer $AGENT"
id() { printf '00000000-0000-4000-8000-%012d' "$1"; } # fixed ids: p1..p7 and p20 packages, 8..19 commands
j() { curl -sf -H "$A" "$@"; }
# A package in staging, and a command added to it with an Idempotency-Key.
j $U/packages -d '{"id":"'$(id 1)'","commands":[{"key":"s1","resource":"r1","action":"x","parameters":{"a":1}}]}' >/dev/null
ADD_BODY='{"resource":"r1","action":"y","dependencies":["s1"]}'
IDEM_ADD=$(curl -sf -H "$C" -H 'Idempotency-Key: add-1' $U/packages/$(id 1)/commands -d "$ADD_BODY")
# Ready (8, 11), blocked by a dependency (9) and by not_before (10).
j $U/packages -d '{"id":"'$(id 2)'","commands":[{"id":"'$(id 8)'","key":"a","resource":"r1","action":"x"},{"id":"'$(id 9)'","resource":"r1","action":"y","dependencies":["a"]},{"id":"'$(id 10)'","resource":"r2","action":"z","not_before":"2099-01-01T00:00:00Z"},{"id":"'$(id 11)'","resource":"r2","action":"w","parameters":{"k":"v"}}],"enqueue":true}' >/dev/null
# Leased for an hour (12), its package made with an Idempotency-Key.
PKG_BODY='{"id":"'$(id 3)'","commands":[{"id":"'$(id 12)'","resource":"r3","action":"run","lease_duration":"1h"}],"enqueue":true}'
IDEM_PKG=$(curl -sf -H "$C" -H 'Idempotency-Key: pkg-1' $U/packages -d "$PKG_BODY")
LEASE=$(curl -sf -X POST -H "$G" "$U/queues/r3/next?lease=1h")
# Succeeded (13), with output.
j $U/packages -d '{"id":"'$(id 4)'","commands":[{"id":"'$(id 13)'","resource":"r4","action":"ok"}],"enqueue":true}' >/dev/null
L=$(curl -sf -X POST -H "$A" $U/queues/r4/next | jq -r .lease.token)
j $U/commands/$(id 13)/complete -d '{"status":true,"output":{"made":"x"},"lease":"'$L'"}' >/dev/null
# Failed (14) with reason and output, cancelling 15 in its package and 16 in another (6).
j $U/packages -d '{"id":"'$(id 5)'","commands":[{"id":"'$(id 14)'","key":"f","resource":"r4","action":"bad"},{"id":"'$(id 15)'","resource":"r4","action":"after","dependencies":["f"]}],"enqueue":true}' >/dev/null
j $U/packages -d '{"id":"'$(id 6)'","commands":[{"id":"'$(id 16)'","resource":"r1","action":"x","dependencies":["'$(id 14)'"]}],"enqueue":true}' >/dev/null
L=$(curl -sf -X POST -H "$A" $U/queues/r4/next | jq -r .lease.token)
j $U/commands/$(id 14)/complete -d '{"status":false,"reason":"disk on fire","output":{"code":7},"lease":"'$L'"}' >/dev/null
# A cancelled package (7).
j $U/packages -d '{"id":"'$(id 7)'","commands":[{"id":"'$(id 17)'","resource":"r5","action":"x"},{"id":"'$(id 18)'","resource":"r5","action":"y","dependencies":["'$(id 17)'"]}],"enqueue":true}' >/dev/null
j -X POST $U/packages/$(id 7)/cancel >/dev/null
# Parameters of 5,000 bytes, ready (19): schema 6 keeps those past 2 KiB out of the row.
BIG=$(printf '%05000d' 0)
j $U/packages -d '{"id":"'$(id 20)'","commands":[{"id":"'$(id 19)'","resource":"r7","action":"big","parameters":{"pad":"'${BIG:8}'"}}],"enqueue":true}' >/dev/null
# Queue settings.
j -X PATCH $U/queues/r5 -d '{"concurrency":3,"paused":true}' >/dev/null
j -X PATCH $U/queues/r6 -d '{"concurrency":2}' >/dev/null
# What every GET answers, by path.
{
	for p in "/packages?limit=1000" /queues; do echo "$p"; done
	for s in staging queued running succeeded failed cancelled; do echo "/packages?state=$s"; done
	for n in 1 2 3 4 5 6 7 20; do echo "/packages/$(id $n)"; done
	for n in $(seq 8 19); do echo "/commands/$(id $n)"; done
	for r in r1 r2 r3 r4 r5 r6 r7; do echo "/queues/$r"; done
} | while read -r p; do jq -n --arg p "$p" --argjson v "$(j "$U$p")" '{($p): $v}'; done | jq -s 'add' >"$D/answers.json"
jq -n --arg admin "$ADMIN" --arg client "$CLIENT" --arg agent "$AGENT" --arg viewer "$VIEWER" \
	--argjson lease "$LEASE" --arg pkg_body "$PKG_BODY" --argjson idem_pkg "$IDEM_PKG" --arg add_body "$ADD_BODY" --argjson idem_add "$IDEM_ADD" \
	'{tokens: {admin: $admin, client: $client, agent_r3: $agent, viewer: $viewer}, lease: $lease,
	  idempotent: [{path: "/packages", key: "pkg-1", body: $pkg_body, answer: $idem_pkg},
	               {path: "/packages/00000000-0000-4000-8000-000000000001/commands", key: "add-1", body: $add_body, answer: $idem_add}]}' >"$D/secrets.json"
kill -$SIG $PID
wait $PID || true
rm -f "$DB.lock" "$DB-shm"
gzip -9n "$DB"
if [ -e "$DB-wal" ]; then gzip -9n "$DB-wal"; fi
