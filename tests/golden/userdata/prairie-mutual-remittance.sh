#!/bin/bash
# mayfly user-data: runs one job attempt, reports to the events queue, then shuts down.
# 1. Hard deadline, armed before anything else: max runtime + grace, whatever happens below.
( sleep 21900; shutdown -h now ) </dev/null >/dev/null 2>&1 &
# Any early exit (a failed step under `set -e`) also ends the instance.
trap 'shutdown -h now' EXIT
set -euo pipefail

# 1b. The programs this script runs, checked before anything else: an image without one of
# them (README.md, "What an image must carry") would otherwise fail later as "cannot reach
# the events queue". Each missing one is named on stderr, which cloud-init copies to the
# console (`aws ec2 get-console-output`) and /var/log/cloud-init-output.log; then the
# instance shuts down (the EXIT trap), unless `shutdown` is the one missing.
missing=()
need() {
  command -v "$1" >/dev/null 2>&1 || missing+=("$1 ($2)")
}
need aws "the AWS CLI, v1 or v2: sends the job's events and fetches its secrets"
need curl "reads the instance metadata (IMDSv2)"
need shutdown "ends the instance"
need timeout "stops the job at its max runtime"
need sed "formats the events"
need awk "formats the events"
for tool in date mktemp sleep tail head tr; do
  need "$tool" "coreutils"
done
if ((${#missing[@]} > 0)); then
  for tool in "${missing[@]}"; do
    printf 'mayfly: this image lacks %s\n' "$tool" >&2
  done
  printf 'mayfly: job %s attempt %s cannot run or report without them; shutting down\n' \
    'prairie-mutual/prairie-mutual:2026-11-01:remittance' 1 >&2
  exit 1
fi

job_id='prairie-mutual/prairie-mutual:2026-11-01:remittance'
attempt=1
region='us-east-1'
queue_url='https://sqs.us-east-1.amazonaws.com/123456789012/mayfly-events'
# On disk, not a RAM-backed /tmp: the log holds all of the job's output.
work="$(mktemp -d "${TMPDIR:-/var/tmp}/mayfly.XXXXXX")"
log="$work/output.log"
: >"$log"

say() { printf 'mayfly: %s\n' "$*" >&2; }
die() {
  say "$*; shutting down"
  exit 1
}

mayfly_aws() {
  aws --cli-connect-timeout 5 --cli-read-timeout 30 "$@"
}

# stdin as text SQS accepts in a message, on stdout: valid UTF-8 of the characters #x9, #xA,
# #xD, #x20-#xD7FF, #xE000-#xFFFD and #x10000-#x10FFFF. Every other byte is dropped: invalid
# and overlong sequences, surrogates, U+FFFE and U+FFFF (which iconv would keep, and SQS
# refuses), and code points past U+10FFFF. Each alternative below is one allowed character,
# byte by byte; POSIX's leftmost-longest match makes sed take a whole character where one
# starts, and `.` (one byte, in the C locale) drops what is not one.
sqs_clean() {
  LC_ALL=C sed -E -e $'s/([\t\r\x20-\x7f]|[\xc2-\xdf][\x80-\xbf]|\xe0[\xa0-\xbf][\x80-\xbf]|[\xe1-\xec\xee][\x80-\xbf][\x80-\xbf]|\xed[\x80-\x9f][\x80-\xbf]|\xef[\x80-\xbe][\x80-\xbf]|\xef\xbf[\x80-\xbd]|\xf0[\x90-\xbf][\x80-\xbf][\x80-\xbf]|[\xf1-\xf3][\x80-\xbf][\x80-\xbf][\x80-\xbf]|\xf4[\x80-\x8f][\x80-\xbf][\x80-\xbf])|./\\1/g'
}

ascii_only() { LC_ALL=C tr -cd '\11\12\15\40-\176'; }

# stdin as a JSON string literal, through the cleaning filter $1. Control characters other
# than tab, newline and carriage return are dropped; those three and \ and " are escaped.
json_string() {
  local text
  text="$(LC_ALL=C tr -d '\000-\010\013\014\016-\037\177' | "$1" |
    LC_ALL=C sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/\t/\\t/g' -e 's/\r/\\r/g' |
    LC_ALL=C awk 'NR > 1 { printf "\\n" } { printf "%s", $0 }')"
  printf '"%s"' "$text"
}

# One event body (schema v1, docs/events.md); $2 holds the type's extra members.
event_body() {
  printf '{"v":1,"type":"%s","job_id":"%s","attempt":%s,"instance_id":"%s","at":"%s"%s}' \
    "$1" "$job_id" "$attempt" "$instance_id" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "${2:-}"
}

# Sends one event ($1: type) until SQS takes it or $2 seconds have passed, pausing 1, 2, 4 …
# up to 30 s between tries; $3 holds the type's extra members, and $4, if given, the members
# to use from the second try on. Returns 1 if it never got through.
send_event() {
  local body pause=1 until=$((SECONDS + $2))
  body="$(event_body "$1" "${3:-}")"
  while true; do
    if mayfly_aws --region "$region" sqs send-message --queue-url "$queue_url" \
      --message-body "$body" >/dev/null; then
      return 0
    fi
    if ((SECONDS + pause > until)); then
      break
    fi
    say "the $1 event did not get through; trying again in ${pause}s"
    sleep "$pause"
    pause=$((pause * 2 > 30 ? 30 : pause * 2))
    if [[ -n "${4:-}" ]]; then
      body="$(event_body "$1" "$4")"
    fi
  done
  say "could not send the $1 event"
  return 1
}

finished_members() {
  printf ',"exit_code":%s,"duration_secs":%s,"output_tail":%s' "$1" "$2" \
    "$(tail -c 4096 "$log" | json_string "$3")"
}

# 2. Identity from IMDSv2. MAYFLY_IMDS_ENDPOINT lets a local fleet serve it on loopback.
imds="${MAYFLY_IMDS_ENDPOINT:-http://169.254.169.254}"
imds_get() {
  local token
  token="$(curl -sf --connect-timeout 2 --max-time 5 -X PUT \
    -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' "$imds/latest/api/token")" || return 1
  curl -sf --connect-timeout 2 --max-time 5 -H "X-aws-ec2-metadata-token: $token" \
    "$imds/latest/$1"
}
instance_id=""
for try in 1 2 3 4 5 6 7 8 9 10; do
  instance_id="$(imds_get meta-data/instance-id)" && break
  sleep "$try"
done
[[ $instance_id =~ ^i-[0-9a-f]{8,17}$ ]] || die "no valid instance id from $imds"

say "job $job_id attempt $attempt on $instance_id"

# 3. Report `started`, trying for a minute. Without the events queue the job cannot report,
# so it does not run: the scheduler sees the instance gone without `finished` and retries.
send_event started 60 || die "cannot reach the events queue"

# 4. Heartbeats while the job runs.
(
  while sleep 60 >/dev/null 2>&1; do
    send_event heartbeat 5 || true
  done
) </dev/null &
heartbeat_pid=$!

# 5. Spot interruption notice: reported once, as received.
(
  while sleep 5 >/dev/null 2>&1; do
    if notice="$(imds_get meta-data/spot/instance-action)"; then
      send_event interrupted 30 ",\"notice\":$(printf '%s' "$notice" | head -c 1024 | json_string sqs_clean)" || true
      break
    fi
  done
) </dev/null &
spot_pid=$!

# 6. Secrets, fetched by reference now; their values never appear in user-data.
rc=0

# 7. The job's command, its variables exported only in this subshell (never to the agent's
# own aws calls), its output to the log. It stops at max runtime (exit 124); the deadline
# above is the backstop.
# Values are single-quoted literals: a `$(…)` or backquote in one is text, not code.
# shellcheck disable=SC2016,SC1003
run_job() (
  export MAYFLY_JOB_ID='prairie-mutual/prairie-mutual:2026-11-01:remittance'
  export MAYFLY_ATTEMPT='1'
  export MAYFLY_PAYER='prairie-mutual'
  export MAYFLY_KIND='remittance'
  export MAYFLY_BATCH='2026-11-01'
  export MAYFLY_INPUT_URI='s3://mayfly-example-drops/prairie-mutual/2026-11-01/remittance.dat'
  export RUN_MODE='full'
  export MAYFLY_INSTANCE_ID="$instance_id"
  exec timeout --kill-after=30 21600 "$@"
)
start="$(date +%s)"
if [[ $rc -eq 0 ]]; then
  run_job 'payer-etl' 'post-remittance' </dev/null >>"$log" 2>&1 || rc=$?
fi
duration=$(($(date +%s) - start))
kill "$heartbeat_pid" "$spot_pid" 2>/dev/null || true

# 8. Report `finished` with the exit code, duration and the output's last bytes, trying for
# minutes (within the deadline): a `finished` that never arrives runs the job again. The tail
# keeps only characters SQS accepts, so its first send can get through; from the second try
# on it is ASCII only, in case its text was what SQS refused all the same.
say "job exited with $rc after ${duration}s"
send_event finished 240 \
  "$(finished_members "$rc" "$duration" sqs_clean)" \
  "$(finished_members "$rc" "$duration" ascii_only)" ||
  say "could not report finished"

# 9. Shut down; the instance's shutdown behaviour is terminate.
trap - EXIT
shutdown -h now
