#!/usr/bin/env bash
# A cold query over a day of hourly blocks on Ceph RGW (../shared/tools/micro-ceph.sh, started
# if nothing answers on 127.0.0.1:7480): the first binary writes 24 hours × 4 services of the
# gotarget CPU profile into a fresh bucket; then each binary given is started 7 times on that
# bucket and the time of its first query of the 25-hour window is printed, sorted.
#   tools/s3coldquery/run.sh target/release/pyrite [other pyrite builds to compare]
set -euo pipefail
cd "$(dirname "$0")/../.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ENDPOINT=http://127.0.0.1:7480
curl -s -o /dev/null "$ENDPOINT" || bash ../shared/tools/micro-ceph.sh >/dev/null
BUCKET=bench-$(date +%s)
curl -s -o /dev/null -w '%{http_code}\n' --aws-sigv4 aws:amz:us-east-1:s3 --user pyrite:pyrite-secret \
  -H 'x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855' -X PUT "$ENDPOINT/$BUCKET"
cat > "$work/pyrite.yaml" <<CONF
scrape_configs: []
storage:
  backend: s3
  bucket: $BUCKET
  endpoint: $ENDPOINT
  access_key_id: pyrite
  secret_access_key: pyrite-secret
  allow_http: true
compactor: { enabled: false }
CONF
WRITER=${1:?usage: run.sh PYRITE_BINARY [MORE_BINARIES...]}
$WRITER serve --config "$work/pyrite.yaml" --listen 127.0.0.1:4555 --data-dir "$work/data" 2>/dev/null & pid=$!
sleep 1.5
for h in $(seq 1 24); do
  for svc in a b c d; do
    $WRITER push --url http://127.0.0.1:4555 --name $svc --at now-${h}h ../shared/corpus/files/gotarget__cpu_5s.pb.gz >/dev/null
  done
done
kill -TERM $pid; wait $pid || true
rm -rf "$work/data/wal"
cold() { # binary -> seconds of the first query after it started
  $1 serve --config "$work/pyrite.yaml" --listen 127.0.0.1:4555 --data-dir "$work/data" 2>/dev/null & local p=$!
  for i in $(seq 50); do curl -sf http://127.0.0.1:4555/ready >/dev/null && break; sleep 0.1; done
  local t=$(curl -s -o "$work/out.folded" -w '%{time_total}' "http://127.0.0.1:4555/api/v1/render?query=%7B%7D&from=now-25h&until=now&format=folded")
  kill -TERM $p; wait $p 2>/dev/null || true
  echo "$t"
}
for bin in "$@"; do
  times=$(for i in 1 2 3 4 5 6 7; do cold "$bin"; done | sort -n | tr '\n' ' ')
  echo "$bin cold query seconds (sorted): $times  total=$(awk '{s+=$NF} END {print s}' "$work/out.folded")"
done
