#!/usr/bin/env bash
# A built image, started as compose would: seconds from `run` to /readyz 200 (fresh volume), from `start`
# after `stop` (volume kept), and the serving process's RSS (PID 1, /proc) when ready, after three searches
# and a write, and after a document without a language. docs/deploy.md.
#
#   bench/bench_container.sh IMAGE [RUNS]        # ENGINE=podman|docker (default: podman if present)
set -euo pipefail
image=$1; runs=${2:-1}
engine=${ENGINE:-$(command -v podman >/dev/null && echo podman || echo docker)}
port=${PORT:-18500}
url=http://127.0.0.1:$port
name=bench-container-$$; volume=$name-index
cleanup() { $engine rm -f "$name" >/dev/null 2>&1 || true; $engine volume rm -f "$volume" >/dev/null 2>&1 || true; }
trap cleanup EXIT
ready() { local start=$1; until curl -sf -o /dev/null "$url/readyz"; do sleep 0.2; done; echo "$(date +%s.%N) - $start" | bc; }
rss() { $engine exec "$name" awk '/VmRSS/ { printf "%.0f", $2 * 1024 / 1e6 }' /proc/1/status; }
post() { curl -s -o /dev/null -w '%{http_code}' "$url/$1" -H 'Content-Type: application/json' -H 'Authorization: Bearer bench' -d "$2"; }
for run in $(seq "$runs"); do
  start=$(date +%s.%N)
  $engine run -d --name "$name" -p "127.0.0.1:$port:8000" -e BABELSEARCH_API_KEY=bench -v "$volume:/data/index" "$image" >/dev/null 2>&1
  cold=$(ready "$start"); at_ready=$(rss)
  for query in "Wie funktioniert Photosynthese?" "植物はどのように光を化学エネルギーに変えますか？" "hello"; do
    post search "{\"query\": \"$query\", \"k\": 3}" >/dev/null
  done
  post documents '[{"id": "bench-1", "text": "Der Rhein ist einer der längsten Flüsse Europas.", "language": "de"}]' >/dev/null
  after_use=$(rss)
  post documents '[{"id": "bench-2", "text": "Der Main fließt durch Frankfurt und mündet bei Mainz in den Rhein."}]' >/dev/null
  after_unlabelled=$(rss)
  $engine stop -t 10 "$name" >/dev/null 2>&1
  start=$(date +%s.%N); $engine start "$name" >/dev/null 2>&1; warm=$(ready "$start")
  printf '%s: cold %.1f s, warm restart %.1f s; RSS %s MB ready, %s MB after 3 searches and a write, %s MB after a document without a language\n' \
    "$image" "$cold" "$warm" "$at_ready" "$after_use" "$after_unlabelled"
  cleanup
done
