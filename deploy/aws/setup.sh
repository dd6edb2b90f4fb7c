#!/usr/bin/env bash
# The AWS side of lastcall's queue processor, with the AWS CLI: the SQS
# queue and its policy, the EventBridge rules that route the five kinds of
# events to it, a terminate lifecycle hook on each Auto Scaling group, and
# the IAM role the processor's ServiceAccount takes. Safe to run again: each
# step creates or updates.
#
#   CLUSTER=prod REGION=eu-west-1 ASG_NAMES="ng-a ng-b" ./deploy/aws/setup.sh
#
# Settings (environment):
#   CLUSTER        name of the cluster (names the queue, rules, hook and role)   required
#   REGION         AWS region                                                     required
#   ASG_NAMES         the Auto Scaling groups whose nodes lastcall drains           required
#   QUEUE          queue name                                  default lastcall-$CLUSTER
#   HOOK_TIMEOUT   the hook's heartbeat timeout, seconds        default 300
#   ROLE           IAM role name                               default lastcall-$CLUSTER
#   TRUST          who may take the role: pod-identity (EKS Pod Identity), or
#                  irsa:<OIDC provider ARN>:<namespace>:<service account>
#                                                               default pod-identity
#   ENDPOINT_URL   an endpoint for every call (a test double such as moto)      optional
#
# It prints what the chart needs: queue.url, and the role ARN for
# serviceAccount.annotations (IRSA) or a Pod Identity association.
set -euo pipefail

: "${CLUSTER:?set CLUSTER}" "${REGION:?set REGION}" "${ASG_NAMES:?set ASG_NAMES, the Auto Scaling groups}"
QUEUE=${QUEUE:-lastcall-$CLUSTER}
HOOK_TIMEOUT=${HOOK_TIMEOUT:-300}
ROLE=${ROLE:-lastcall-$CLUSTER}
TRUST=${TRUST:-pod-identity}
aws=(aws --region "$REGION" --output text)
if [[ -n ${ENDPOINT_URL:-} ]]; then
  aws+=(--endpoint-url "$ENDPOINT_URL")
fi

# 1. The queue: messages kept 4 days (a drain may outlive a short
# retention), encrypted by SQS.
queue_url=$("${aws[@]}" sqs create-queue --queue-name "$QUEUE" \
  --attributes MessageRetentionPeriod=345600,SqsManagedSseEnabled=true --query QueueUrl)
queue_arn=$("${aws[@]}" sqs get-queue-attributes --queue-url "$queue_url" \
  --attribute-names QueueArn --query Attributes.QueueArn)

# 2. The EventBridge rules, one per kind of event lastcall acts on.
declare -A patterns=(
  [spot]='{"source":["aws.ec2"],"detail-type":["EC2 Spot Instance Interruption Warning"]}'
  [rebalance]='{"source":["aws.ec2"],"detail-type":["EC2 Instance Rebalance Recommendation"]}'
  [state-change]='{"source":["aws.ec2"],"detail-type":["EC2 Instance State-change Notification"]}'
  [scheduled-change]='{"source":["aws.health"],"detail-type":["AWS Health Event"],"detail":{"service":["EC2"],"eventTypeCategory":["scheduledChange"]}}'
  [asg-lifecycle]='{"source":["aws.autoscaling"],"detail-type":["EC2 Instance-launch Lifecycle Action","EC2 Instance-terminate Lifecycle Action"]}'
)
rule_arns=()
for kind in spot rebalance state-change scheduled-change asg-lifecycle; do
  rule=lastcall-$CLUSTER-$kind
  rule_arns+=("$("${aws[@]}" events put-rule --name "$rule" --event-pattern "${patterns[$kind]}" --query RuleArn)")
  "${aws[@]}" events put-targets --rule "$rule" --targets "Id=lastcall,Arn=$queue_arn" >/dev/null
done

# 3. The queue's policy: only these rules may send to it.
source_arns=$(printf '"%s",' "${rule_arns[@]}")
policy=$(cat <<JSON
{"Version":"2012-10-17","Statement":[{"Sid":"EventBridgeRules","Effect":"Allow",
 "Principal":{"Service":"events.amazonaws.com"},"Action":"sqs:SendMessage","Resource":"$queue_arn",
 "Condition":{"ArnEquals":{"aws:SourceArn":[${source_arns%,}]}}}]}
JSON
)
"${aws[@]}" sqs set-queue-attributes --queue-url "$queue_url" \
  --attributes "$(jq -cn --arg p "$policy" '{Policy: $p}' 2>/dev/null || python3 -c 'import json,sys; print(json.dumps({"Policy": sys.argv[1]}))' "$policy")"

# 4. A terminate lifecycle hook on each group: the instance waits, kept
# alive by lastcall's heartbeats, until its node is drained.
for group in $ASG_NAMES; do
  "${aws[@]}" autoscaling put-lifecycle-hook --auto-scaling-group-name "$group" \
    --lifecycle-hook-name "lastcall-$CLUSTER" --lifecycle-transition autoscaling:EC2_INSTANCE_TERMINATING \
    --heartbeat-timeout "$HOOK_TIMEOUT" --default-result CONTINUE
done

# 5. The role the processor's ServiceAccount takes, with lastcall's policy
# (README, "IAM policy").
case $TRUST in
  pod-identity)
    principal='{"Service":"pods.eks.amazonaws.com"}'
    action='["sts:AssumeRole","sts:TagSession"]'
    condition='{}' ;;
  irsa:*)
    IFS=: read -r _ provider_arn_a provider_arn_b provider_arn_c provider_arn_d provider_arn_e provider_arn_f sa_ns sa_name <<<"$TRUST"
    provider_arn="$provider_arn_a:$provider_arn_b:$provider_arn_c:$provider_arn_d:$provider_arn_e:$provider_arn_f"
    issuer=${provider_arn#*:oidc-provider/}
    principal="{\"Federated\":\"$provider_arn\"}"
    action='"sts:AssumeRoleWithWebIdentity"'
    condition="{\"StringEquals\":{\"$issuer:sub\":\"system:serviceaccount:$sa_ns:$sa_name\",\"$issuer:aud\":\"sts.amazonaws.com\"}}" ;;
  *) echo "TRUST must be pod-identity or irsa:<provider ARN>:<namespace>:<service account>; got $TRUST" >&2; exit 2 ;;
esac
trust="{\"Version\":\"2012-10-17\",\"Statement\":[{\"Effect\":\"Allow\",\"Principal\":$principal,\"Action\":$action,\"Condition\":$condition}]}"
if ! role_arn=$("${aws[@]}" iam get-role --role-name "$ROLE" --query Role.Arn 2>/dev/null); then
  role_arn=$("${aws[@]}" iam create-role --role-name "$ROLE" --assume-role-policy-document "$trust" --query Role.Arn)
else
  "${aws[@]}" iam update-assume-role-policy --role-name "$ROLE" --policy-document "$trust"
fi
group_arns=""
for group in $ASG_NAMES; do
  group_arns+="\"arn:aws:autoscaling:$REGION:*:autoScalingGroup:*:autoScalingGroupName/$group\","
done
"${aws[@]}" iam put-role-policy --role-name "$ROLE" --policy-name lastcall --policy-document "$(cat <<JSON
{"Version":"2012-10-17","Statement":[
 {"Effect":"Allow","Action":["sqs:ReceiveMessage","sqs:DeleteMessage","sqs:ChangeMessageVisibility","sqs:GetQueueAttributes","sqs:SendMessage"],"Resource":"$queue_arn"},
 {"Effect":"Allow","Action":["autoscaling:CompleteLifecycleAction","autoscaling:RecordLifecycleActionHeartbeat"],"Resource":[${group_arns%,}]},
 {"Effect":"Allow","Action":["ec2:DescribeInstances","autoscaling:DescribeLifecycleHooks"],"Resource":"*"}]}
JSON
)"

echo "QUEUE_URL=$queue_url"
echo "ROLE_ARN=$role_arn"
echo "helm install lastcall-queue charts/lastcall -n lastcall --create-namespace --set mode=queue --set queue.url=$queue_url" \
  "--set serviceAccount.annotations.\"eks\\.amazonaws\\.com/role-arn\"=$role_arn   # IRSA; with Pod Identity, associate the role instead"
