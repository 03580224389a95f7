#!/usr/bin/env bash
# Your first campaign with curl, against a running `mab up`. Run it from the folder where `mab up`
# runs (it reads the admin key from var/admin.key): bash docs/examples/quickstart.sh
set -euo pipefail
API=${API:-http://127.0.0.1:8000}
KEY=${KEY:-$(cat var/admin.key)}
EXAMPLES=$(dirname "$0")

# 1. Load the customers (CSV: external_id, email, segment, then any attributes the template uses)
curl -sSf -H "X-API-Key: $KEY" -H 'Content-Type: text/csv' \
     --data-binary @"$EXAMPLES/customers.csv" "$API/customers/csv"
echo

# 2. Create the campaign from the example file; the answer holds its id and variant count
CAMPAIGN=$(curl -sSf -H "X-API-Key: $KEY" -H 'Content-Type: application/json' \
     -d @"$EXAMPLES/small-campaign.json" "$API/campaigns" |
     python3 -c 'import json, sys; c = json.load(sys.stdin); print(c["id"])')
echo "campaign $CAMPAIGN created"

# 3. Start it (draft -> active); nothing is sent yet
curl -sSf -X POST -H "X-API-Key: $KEY" "$API/campaigns/$CAMPAIGN/start" >/dev/null

# 4. Send a period now, and wait until the workers have sent it
curl -sSf -X POST -H "X-API-Key: $KEY" "$API/campaigns/$CAMPAIGN/periods" >/dev/null
for _ in $(seq 120); do
  STATUS=$(curl -sSf -H "X-API-Key: $KEY" "$API/campaigns/$CAMPAIGN/periods/1" |
           python3 -c 'import json, sys; p = json.load(sys.stdin); print(p["status"], p["sent"], p["total"])')
  echo "period 1: $STATUS"
  case $STATUS in completed*) break ;; failed*) exit 1 ;; esac
  sleep 1
done

# 5. Who got which variant, and the report (JSON; also /report.csv and /report.html)
curl -sSf -H "X-API-Key: $KEY" -o "campaign-$CAMPAIGN-period-1.csv" "$API/campaigns/$CAMPAIGN/periods/1/sends.csv"
head -5 "campaign-$CAMPAIGN-period-1.csv"
curl -sSf -H "X-API-Key: $KEY" "$API/campaigns/$CAMPAIGN/report" |
     python3 -c 'import json, sys; r = json.load(sys.stdin); print("sends:", r["overall"]["bandit"]["sends"], "bandit,", r["overall"]["control"]["sends"], "holdout")'
