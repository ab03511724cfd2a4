# shellcheck shell=bash
# Load and verification helpers for scripts/chaos: HTTP load driven by curl's
# parallel mode (one curl process, many connections), and checks that every
# transfer acknowledged with 202 reached exactly one final status in PostgreSQL.
# Source it after chaos-stack.sh.

CURL_PARALLEL_MAX=${CURL_PARALLEL_MAX:-16}
# A request that has no answer after this long counts as a hang (curl's code 000).
REQUEST_TIMEOUT_S=${REQUEST_TIMEOUT_S:-30}

# A seed from the kernel, so two runs never draw the same transfer ids.
random_seed() { od -An -N4 -tu4 /dev/urandom | tr -d ' \n'; }

# Writes a curl config (-K) that submits `count` transfers among owners
# 1..accounts (uniform, sender != receiver, 0.01 to 1.00 EUR), each with a
# client-chosen transfer id that also rides in the URL's query (axum ignores
# it) so `%{url}` in the write-out tells which id got which answer.
transfer_config() { # count accounts base_url
  awk -v n="$1" -v a="$2" -v url="$3" -v key="$CHAOS_API_KEY" -v seed="$(random_seed)" '
    function hex(k,   s, i) { s = ""; for (i = 0; i < k; i++) s = s sprintf("%x", int(rand() * 16)); return s }
    function uuid() { return hex(8) "-" hex(4) "-4" hex(3) "-" substr("89ab", 1 + int(rand() * 4), 1) hex(3) "-" hex(12) }
    BEGIN {
      srand(seed)
      for (i = 0; i < n; i++) {
        id = uuid(); s = 1 + int(rand() * a); do r = 1 + int(rand() * a); while (r == s)
        m = 1 + int(rand() * 100)
        if (i > 0) print "next"
        printf "url = \"%s/v1/transfers?id=%s\"\n", url, id
        printf "data = \"{\\\"transfer_id\\\":\\\"%s\\\",\\\"sender_id\\\":%d,\\\"receiver_id\\\":%d,\\\"amount\\\":\\\"%d.%02d\\\",\\\"currency\\\":\\\"EUR\\\"}\"\n", id, s, r, int(m / 100), m % 100
        print "header = \"content-type: application/json\""
        print "header = \"authorization: Bearer " key "\""
        print "output = \"/dev/null\""
        print "write-out = \"%{http_code} %{time_total} %{url}\\n\""
      }
    }'
}

# Runs a curl config in parallel; appends "code seconds url" per request to `results`.
curl_batch() { # config results [parallel]
  # In the background and waited for, so a signal reaches this shell's trap at once.
  curl -s -Z --parallel-immediate --parallel-max "${3:-$CURL_PARALLEL_MAX}" --max-time "$REQUEST_TIMEOUT_S" -K "$1" \
    >>"$2" 2>>"$SCEN_DIR/curl.err" &
  wait $! || true
}

# Submits `count` transfers as fast as `parallel` connections allow.
load_burst() { # count accounts results [parallel]
  local config="$SCEN_DIR/load-$RANDOM.curl"
  transfer_config "$1" "$2" "$API_URL" >"$config"
  curl_batch "$config" "$3" "${4:-}"
  rm -f "$config"
}

# Submits `rate` transfers per second for `seconds` seconds (one parallel
# batch per second; a batch that takes longer than a second slows the rate,
# which the report shows).
load_steady() { # rate seconds accounts results
  local rate=$1 seconds=$2 config="$SCEN_DIR/steady.curl" t started
  for ((t = 0; t < seconds; t++)); do
    started=$(date +%s%N)
    transfer_config "$rate" "$3" "$API_URL" >"$config"
    curl_batch "$config" "$4" 32
    local spent_ms=$((($(date +%s%N) - started) / 1000000))
    [ $spent_ms -ge 1000 ] || sleep "0.$(printf '%03d' $((1000 - spent_ms)))"
  done
  rm -f "$config"
}

# Transfer ids answered 202, one per line.
acknowledged_ids() { # results
  awk '$1 == 202 { sub(/.*[?]id=/, "", $3); print $3 }' "$1"
}

# "code:count ..." for a results file.
status_counts() { # results
  awk '{ n[$1]++ } END { for (c in n) printf "%s:%d ", c, n[c] }' "$1" | sed 's/ $//'
}

scen_psql() { PGOPTIONS="-c client_min_messages=warning" psql -v ON_ERROR_STOP=1 -qtA "$TRANSFER_ENGINE_DATABASE_URL" "$@"; }

# Prints "acknowledged audited lost": audited = acknowledged ids whose history
# holds exactly one final status and whose row is final; lost = the others.
verify_acknowledged() { # ids_file
  scen_psql -F ' ' <<SQL
CREATE TEMP TABLE acked (id uuid PRIMARY KEY);
\copy acked FROM '$1'
SELECT count(*),
       count(*) FILTER (WHERE ok),
       count(*) FILTER (WHERE NOT ok)
  FROM (SELECT coalesce(t.status <> 'initiated', false)
               AND (SELECT count(*) FROM transfer_status_history h WHERE h.transfer_id = a.id AND h.status <> 'initiated') = 1 AS ok
          FROM acked a LEFT JOIN transfers t ON t.transfer_id = a.id) v;
SQL
}

# Waits until every acknowledged id is final (or the deadline passes); prints the last verification.
wait_final() { # ids_file seconds
  local deadline=$((SECONDS + $2)) line
  while :; do
    line=$(verify_acknowledged "$1" 2>/dev/null) || line="? ? ?"
    [ "${line##* }" = 0 ] && break
    [ $SECONDS -lt $deadline ] || break
    sleep 1
  done
  echo "$line"
}

# Creates this scenario's API client (transfers:write, accounts:write) with the
# admin token: the load authenticates like any client. Sets CHAOS_API_KEY.
create_api_client() {
  CHAOS_API_KEY=$("$ENGINE" clients create --name "chaos-$SCEN" --scope transfers:write,accounts:write 2>>"$SCEN_DIR/cli.log" \
    | jq -r .key) || die "could not create the scenario's API client (see ${SCEN_DIR#"$ROOT"/}/cli.log)"
  [ -n "$CHAOS_API_KEY" ] && [ "$CHAOS_API_KEY" != null ] || die "the engine answered no API key"
  export CHAOS_API_KEY
}

# Creates the scenario's API client, then opens accounts 1..n in EUR with it
# and deposits `balance` into each (admin token).
seed_accounts() { # n balance
  create_api_client
  local config="$SCEN_DIR/seed.curl" results="$SCEN_DIR/seed.txt" i
  : >"$results"
  for kind in accounts deposits; do
    : >"$config"
    for ((i = 1; i <= $1; i++)); do
      [ $i = 1 ] || echo next >>"$config"
      if [ $kind = accounts ]; then
        printf 'url = "%s/v1/accounts"\ndata = "{\\"owner_id\\":%d,\\"currency\\":\\"EUR\\"}"\n' "$API_URL" "$i" >>"$config"
        printf 'header = "authorization: Bearer %s"\n' "$CHAOS_API_KEY" >>"$config"
      else
        printf 'url = "%s/v1/deposits"\ndata = "{\\"owner_id\\":%d,\\"currency\\":\\"EUR\\",\\"amount\\":\\"%s\\",\\"reference\\":\\"chaos-seed-%d\\"}"\n' \
          "$API_URL" "$i" "$2" "$i" >>"$config"
        printf 'header = "authorization: Bearer %s"\n' "$TRANSFER_ENGINE_ADMIN_TOKEN" >>"$config"
      fi
      printf 'header = "content-type: application/json"\noutput = "/dev/null"\nwrite-out = "%%{http_code} %%{time_total} %%{url}\\n"\n' >>"$config"
    done
    curl_batch "$config" "$results" 8
  done
  rm -f "$config"
  local bad
  bad=$(awk '$1 !~ /^20[01]$/' "$results" | wc -l)
  [ "$bad" = 0 ] || { head -n 5 "$results" >&2; die "seeding accounts failed ($bad requests not 200/201: $(status_counts "$results"))"; }
}

# One submit, timed: prints "http_code seconds error_code transfer_id".
probe_submit() {
  local id body out
  id=$(awk -v seed="$(random_seed)" 'BEGIN { srand(seed); for (i = 0; i < 32; i++) s = s sprintf("%x", int(rand() * 16));
        print substr(s,1,8) "-" substr(s,9,4) "-4" substr(s,14,3) "-a" substr(s,18,3) "-" substr(s,21,12) }')
  body=$(mktemp "$SCEN_DIR/probe.XXXXXX")
  out=$(curl -s -o "$body" -w '%{http_code} %{time_total}' --max-time "$REQUEST_TIMEOUT_S" -H 'content-type: application/json' \
    -H "authorization: Bearer $CHAOS_API_KEY" -d "{\"transfer_id\":\"$id\",\"sender_id\":1,\"receiver_id\":2,\"amount\":\"0.01\",\"currency\":\"EUR\"}" \
    "$API_URL/v1/transfers") || true
  echo "$out $(jq -r '.error.code // "-"' "$body" 2>/dev/null || echo -) $id"
  rm -f "$body"
}

# One readiness probe, timed: prints "http_code seconds failing-checks".
probe_ready() { # base_url
  local body out
  body=$(mktemp "$SCEN_DIR/ready.XXXXXX")
  out=$(curl -s -o "$body" -w '%{http_code} %{time_total}' --max-time "$REQUEST_TIMEOUT_S" "$1/readyz") || true
  echo "$out $(jq -r '[.checks // {} | to_entries[] | select(.value != "ok") | .key] | join(",") | if . == "" then "-" else . end' "$body" 2>/dev/null || echo -)"
  rm -f "$body"
}

# Acknowledged ids that are not final, one per line.
unfinished_ids() { # ids_file
  scen_psql <<SQL
CREATE TEMP TABLE acked (id uuid PRIMARY KEY);
\copy acked FROM '$1'
SELECT a.id FROM acked a LEFT JOIN transfers t ON t.transfer_id = a.id
 WHERE coalesce(t.status, 'initiated') = 'initiated'
    OR (SELECT count(*) FROM transfer_status_history h WHERE h.transfer_id = a.id AND h.status <> 'initiated') <> 1;
SQL
}
