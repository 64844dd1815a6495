#!/usr/bin/env bash
# mayfly's demo: the whole lifecycle on this machine. It starts the emulator (moto), deploys
# the infra template, applies the example payer profiles, submits a workload of three payers
# and three tiers, and runs scheduling passes while the local fleet runs each instance's
# user-data, until every job is done. Then it prints the jobs.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
name="${MAYFLY_DEMO_NAME:-demo}"
step() { printf '\n==> %s\n' "$*" >&2; }

step "Building mayfly and the local fleet"
# The local fleet is the mayfly-testbed package's; one command builds both.
cargo build --quiet -p mayfly -p mayfly-testbed --bin mayfly --bin mayfly-fleet
mayfly=("$repo/target/debug/mayfly" --name "$name")

step "Starting the emulator and deploying the infra template as \`$name\`"
bash scripts/emulator.sh start >/dev/null
# shellcheck disable=SC1091
source .mayfly/emulator.env
aws=("$repo/.venv/bin/aws" --endpoint-url "$AWS_ENDPOINT_URL")
if ! "${aws[@]}" cloudformation describe-stacks --stack-name "$name" >/dev/null 2>&1; then
  bash scripts/emulator.sh deploy "$name" >/dev/null
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
"${mayfly[@]}" payers apply "$profiles"
# The secret harbor-health's claims job references, fetched on the instance at boot.
"${aws[@]}" ssm put-parameter --name /mayfly/harbor-health/warehouse-dsn --type SecureString \
  --value "demo-warehouse" --overwrite >/dev/null

step "Submitting the workload"
"${mayfly[@]}" submit --file payer-profiles/examples/demo-workload.jsonl

step "Running the local fleet and scheduling passes until every job is done"
mkdir -p .mayfly
"$repo/target/debug/mayfly-fleet" --name "$name" --job-seconds 3 --poll-ms 500 \
  --max-runtime 600 >.mayfly/fleet.log 2>&1 &
fleet=$!
trap 'kill "$fleet" 2>/dev/null || true' EXIT
for pass in $(seq 1 120); do
  "${mayfly[@]}" --output json tick >".mayfly/pass-$pass.json" || true
  active=$("${mayfly[@]}" --output json jobs list | grep -c '"state": "\(queued\|launching\|running\|failed\|blocked\)"' || true)
  printf 'pass %3d: %s job(s) still active\n' "$pass" "$active" >&2
  [ "$active" -eq 0 ] && break
  sleep 2
done

step "Jobs"
for state in succeeded dead; do
  "${mayfly[@]}" jobs list --state "$state"
done

step "What it cost (mayfly cost report; the HTML chart is in .mayfly/cost.html)"
"${mayfly[@]}" cost report --by payer
"${mayfly[@]}" cost report --format html --out .mayfly/cost.html

step "Why a job ran as it did (mayfly explain)"
"${mayfly[@]}" explain cedar-plan:2026-11:claims

step "The deployment at a glance (mayfly status)"
"${mayfly[@]}" status

step "Instances"
running=$("${aws[@]}" ec2 describe-instances \
  --filters "Name=tag:mayfly:cluster,Values=$name" Name=instance-state-name,Values=pending,running \
  --query 'length(Reservations[].Instances[])' --output text)
total=$("${aws[@]}" ec2 describe-instances --filters "Name=tag:mayfly:cluster,Values=$name" \
  --query 'length(Reservations[].Instances[])' --output text)
printf '%s instance(s) launched, %s still running (each terminated itself when its job ended)\n' "$total" "$running"
printf '\nThe emulator is still up (%s); explore with e.g.\n  %s jobs show cedar-plan:2026-11:claims\nStop it with: scripts/emulator.sh stop\n' \
  "$AWS_ENDPOINT_URL" "target/debug/mayfly --endpoint-url $AWS_ENDPOINT_URL --name $name"
