#!/usr/bin/env bash
# mayfly's demo: the whole lifecycle on this machine. It starts the emulator (moto), deploys
# the infra template, applies the example payer profiles, submits a workload of three payers
# and three tiers, and runs scheduling passes while the local fleet runs each instance's
# user-data, until every job is done. Then it shows the jobs, their cost, one job explained,
# the deployment's status and the instances.
#
# Each step is one line; what the tools print on the way (cargo, pip, the emulator, the
# deploy) goes to .mayfly/demo.log, named when a step fails.
#
# Environment:
#   MAYFLY_DEMO_NAME     deployment name (default: demo)
#   MAYFLY_DEMO_BIN_DIR  use the mayfly and mayfly-fleet binaries in this directory instead
#                        of building them (default: build into $CARGO_TARGET_DIR or target/)
#   MAYFLY_VENV          the virtualenv with the emulator's tools (default: .venv)
#   MAYFLY_DEMO_ENDPOINT use the emulator already running at this URL instead of starting
#                        the project's own (scripts/emulator.sh start)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
name="${MAYFLY_DEMO_NAME:-demo}"
mkdir -p .mayfly
log=".mayfly/demo.log"
: >"$log"

step() { printf '\n==> %s\n' "$*" >&2; }
# Runs a command with its output in the log; on failure shows the log's end and stops.
quiet() {
  if ! "$@" >>"$log" 2>&1; then
    printf 'failed: %s\n' "$*" >&2
    tail -n 30 "$log" >&2
    printf '(the whole log: %s)\n' "$log" >&2
    exit 1
  fi
}

if [[ -n ${MAYFLY_DEMO_BIN_DIR:-} ]]; then
  bin="$MAYFLY_DEMO_BIN_DIR"
  step "Using the binaries in $bin"
else
  step "Building mayfly and the local fleet (details in $log)"
  # The local fleet is the mayfly-testbed package's; one command builds both.
  quiet cargo build -p mayfly -p mayfly-testbed --bin mayfly --bin mayfly-fleet
  bin="${CARGO_TARGET_DIR:-$repo/target}/debug"
fi
mayfly=("$bin/mayfly" --name "$name")
# moto launches exactly MinCount instances and ignores MaxCount: a launch group asks for all of
# its instances (on AWS, mayfly asks for at least one and takes what EC2 has).
export MAYFLY_GROUP_MIN_IS_MAX=true

if [[ -n ${MAYFLY_DEMO_ENDPOINT:-} ]]; then
  step "Deploying the infra template as \`$name\` into the emulator at $MAYFLY_DEMO_ENDPOINT"
  export AWS_ENDPOINT_URL="$MAYFLY_DEMO_ENDPOINT" AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
  export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-testing}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-testing}"
else
  step "Starting the emulator and deploying the infra template as \`$name\` (the first run installs the emulator's tools: about a minute)"
  quiet bash scripts/emulator.sh start
  # shellcheck disable=SC1091
  source .mayfly/emulator.env
fi
# moto stamps every SQS message with one constant SenderId: instance events cannot prove their
# sender on the emulator (docs/events.md), so the passes take them at their word here.
export MAYFLY_UNVERIFIED_EVENT_SENDERS=true
# The project's virtualenv (scripts/emulator.sh installs it), as the local fleet finds it too.
aws=("${MAYFLY_VENV:-$repo/.venv}/bin/aws" --endpoint-url "$AWS_ENDPOINT_URL")
if ! "${aws[@]}" cloudformation describe-stacks --stack-name "$name" >/dev/null 2>&1; then
  if [[ -n ${MAYFLY_DEMO_ENDPOINT:-} ]]; then
    quiet "${aws[@]}" cloudformation create-stack --stack-name "$name" \
      --template-body "file://$repo/infra/mayfly.yaml" --capabilities CAPABILITY_NAMED_IAM \
      --parameters "ParameterKey=DeploymentName,ParameterValue=$name"
    quiet "${aws[@]}" cloudformation wait stack-create-complete --stack-name "$name"
  else
    quiet bash scripts/emulator.sh deploy "$name"
  fi
fi

step "Applying the example payer profiles (pointed at the emulator's network)"
read -r -a subnets < <("${aws[@]}" ec2 describe-subnets --filters Name=default-for-az,Values=true \
  --query 'Subnets[0:2].SubnetId' --output text)
sg=$("${aws[@]}" ec2 describe-security-groups --filters Name=group-name,Values=default \
  --query 'SecurityGroups[0].GroupId' --output text)
profiles=".mayfly/demo-profiles"
mkdir -p "$profiles"
list=$(printf '"%s", ' "${subnets[@]}")
for f in payer-profiles/*.toml; do
  sed -e "s|^subnets = .*|subnets = [${list%, }]|" \
      -e "s|^security_groups = .*|security_groups = [\"$sg\"]|" \
      -e "s|^instance_profile = .*|instance_profile = \"$name-instance\"|" "$f" >"$profiles/$(basename "$f")"
done
# cedar-plan may run 36 instances at once here, for the burst below.
sed -i -e '/^\[caps\]/,/^\[/ s|^max_instances = .*|max_instances = 36|' "$profiles/cedar-plan.toml"
quiet "${mayfly[@]}" payers apply "$profiles"
# The secret harbor-health's claims job references, fetched on the instance at boot.
quiet "${aws[@]}" ssm put-parameter --name /mayfly/harbor-health/warehouse-dsn --type SecureString \
  --value "demo-warehouse" --overwrite

workload=payer-profiles/examples/demo-workload.jsonl
step "Submitting the workload: $(grep -c . "$workload") jobs of three payers across three tiers, and a burst: cedar-plan's drop of 30 eligibility files"
quiet "${mayfly[@]}" submit --file "$workload"
burst=".mayfly/demo-burst.jsonl"
for i in $(seq -w 1 30); do
  printf '{"job_id":"cedar-plan:drop-%s:eligibility","payer_id":"cedar-plan","kind":"eligibility","batch":"drop-%s","input":{"uri":"s3://example-payer-drops/cedar-plan/drop/%s.834","bytes":268435456}}\n' "$i" "$i" "$i"
done >"$burst"
quiet "${mayfly[@]}" submit --file "$burst"

step "Running the local fleet and scheduling passes until every job is done (pass reports in .mayfly/pass-*.json)"
"$bin/mayfly-fleet" --name "$name" --job-seconds 3 --poll-ms 500 \
  --max-runtime 600 >.mayfly/fleet.log 2>&1 &
fleet=$!
trap 'kill "$fleet" 2>/dev/null || true' EXIT
active=unknown
for pass in $(seq 1 120); do
  "${mayfly[@]}" --output json tick >".mayfly/pass-$pass.json" 2>>"$log" || true
  active=$("${mayfly[@]}" --output json jobs list | grep -c '"state": "\(queued\|launching\|running\|failed\|blocked\)"' || true)
  # On a terminal, one line that counts down; in a log, nothing until the end.
  if [[ -t 2 ]]; then
    printf '\rpass %3d: %s job(s) still active ' "$pass" "$active" >&2
  fi
  [ "$active" -eq 0 ] && break
  sleep 2
done
if [[ -t 2 ]]; then
  printf '\n' >&2
fi
printf '%s pass(es); %s job(s) still active\n' "$pass" "$active" >&2

step "The burst: how the first pass launched (launch groups: one RunInstances for many jobs of one payer and rung)"
groups=$(grep -o '"groups": [0-9]*' .mayfly/pass-1.json | grep -o '[0-9]*$' || echo 0)
launched=$(grep -c '"cedar-plan/cedar-plan:drop-' .mayfly/pass-1.json || true)
printf 'pass 1 launched %s of the 30 burst jobs, in %s launch group call(s) beside the workload'"'"'s single launches;\n' "$launched" "$groups"
printf 'each job on its own instance, which ran the entry of its ami-launch-index:\n'
"${mayfly[@]}" jobs show cedar-plan:drop-01:eligibility | grep -E '^(job|attempt)|^  (instance|launch group|launch index) ' || true

step "Jobs"
"${mayfly[@]}" jobs list --state succeeded --state dead

spot_note="(Spot attempts show about \$0 of compute here: the emulator's spot price history is a placeholder, \$0.00001/h. On AWS each spot attempt is priced at its type's spot price in its AZ at launch.)"

step "What it cost (mayfly cost report; the HTML chart is in .mayfly/cost.html)"
# What the report reads (and its progress) goes to the log; the report to the screen.
"${mayfly[@]}" cost report --by payer 2>>"$log"
printf '%s\n' "$spot_note"
"${mayfly[@]}" cost report --format html --out .mayfly/cost.html 2>>"$log"

step "Why a job ran as it did (mayfly explain)"
"${mayfly[@]}" explain cedar-plan:2026-11:claims

step "The deployment at a glance (mayfly status)"
"${mayfly[@]}" status
printf '%s\n' "$spot_note"

step "Instances"
running=$("${aws[@]}" ec2 describe-instances \
  --filters "Name=tag:mayfly:cluster,Values=$name" Name=instance-state-name,Values=pending,running \
  --query 'length(Reservations[].Instances[])' --output text)
total=$("${aws[@]}" ec2 describe-instances --filters "Name=tag:mayfly:cluster,Values=$name" \
  --query 'length(Reservations[].Instances[])' --output text)
printf '%s instance(s) launched, %s still running (each terminated itself when its job ended)\n' "$total" "$running"
printf '\nThe emulator is still up (%s); explore with e.g.\n  %s jobs show cedar-plan:2026-11:claims\nStop it with: scripts/emulator.sh stop\n' \
  "$AWS_ENDPOINT_URL" "$bin/mayfly --endpoint-url $AWS_ENDPOINT_URL --name $name"
