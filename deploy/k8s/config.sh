#!/usr/bin/env bash
# Creates or updates the `easymo-config` ConfigMap from a checkout's routes.yaml, flows and
# runbooks (deployment.yaml lays them out again as the directories routes.yaml names).
# Every replica reloads within a few seconds of the change reaching its volume (up to a minute
# with the kubelet's default sync); a config with errors is refused and shown on /admin/config.
set -euo pipefail
cd "$(dirname "$0")/../.."
easymo lint routes.yaml --deny-warnings
args=(--from-file=routes.yaml)
# The alert rules' runbooks are checked beside routes.yaml too.
for file in flows/*.flow docs/runbooks/*.md; do args+=(--from-file="$file"); done
kubectl create configmap easymo-config "${args[@]}" --dry-run=client -o yaml | kubectl apply -f -
