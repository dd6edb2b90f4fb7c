{{/* Chart name. */}}
{{- define "lastcall.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release and chart, unless the release already names the chart. */}}
{{- define "lastcall.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "lastcall.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels every pod of the release carries, whatever its component: what
the metrics Service and the Prometheus Operator monitors select. */}}
{{- define "lastcall.releaseSelectorLabels" -}}
app.kubernetes.io/name: {{ include "lastcall.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Selector labels of one component, from (dict "root" $ "component"
name): stable for the life of the release. */}}
{{- define "lastcall.componentSelectorLabels" -}}
{{ include "lastcall.releaseSelectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "lastcall.componentLabels" -}}
helm.sh/chart: {{ include "lastcall.chart" .root }}
{{ include "lastcall.componentSelectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: lastcall
{{- end }}

{{/* Selector labels and labels of the mode's own component: the agent
DaemonSet or the queue processor. */}}
{{- define "lastcall.selectorLabels" -}}
{{ include "lastcall.componentSelectorLabels" (dict "root" . "component" .Values.mode) }}
{{- end }}

{{- define "lastcall.labels" -}}
{{ include "lastcall.componentLabels" (dict "root" . "component" .Values.mode) }}
{{- end }}

{{/* The drainability process's labels. */}}
{{- define "lastcall.drainabilitySelectorLabels" -}}
{{ include "lastcall.componentSelectorLabels" (dict "root" . "component" "drainability") }}
{{- end }}

{{- define "lastcall.drainabilityLabels" -}}
{{ include "lastcall.componentLabels" (dict "root" . "component" "drainability") }}
{{- end }}

{{/* Whether the drainability process runs: agent mode only (the queue
processor keeps every node's drainability itself). */}}
{{- define "lastcall.drainabilityEnabled" -}}
{{- if and (eq .Values.mode "agent") .Values.drainability.enabled }}true{{ end }}
{{- end }}

{{- define "lastcall.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "lastcall.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "lastcall.drainabilityServiceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (printf "%s-drainability" (include "lastcall.fullname" .)) .Values.drainability.serviceAccountName }}
{{- else }}
{{- required "drainability.serviceAccountName is required when serviceAccount.create is false (or set drainability.enabled=false)" .Values.drainability.serviceAccountName }}
{{- end }}
{{- end }}

{{/* The Windows agent's image: agent.windows.image, its repository
image.repository when empty. No default tag: no Windows image is built with
lastcall's. */}}
{{- define "lastcall.windowsImage" -}}
{{- $i := .Values.agent.windows.image }}
{{- $repo := default .Values.image.repository $i.repository }}
{{- if $i.digest }}
{{- printf "%s@%s" $repo $i.digest }}
{{- else }}
{{- printf "%s:%s" $repo (required "agent.windows.image.tag (or digest) is required with agent.windows.enabled: name a Windows image holding lastcall.exe" $i.tag) }}
{{- end }}
{{- end }}

{{- define "lastcall.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Arguments every component takes (--mode apart). */}}
{{- define "lastcall.commonArgs" -}}
- --listen-address={{ include "lastcall.listenAddress" . }}
{{- if .Values.metrics.auth.enabled }}
- --metrics-auth=kubernetes
{{- end }}
- --log-format={{ .Values.logFormat }}
- --log-level={{ .Values.logLevel }}
- --fallback-deadline={{ .Values.fallbackDeadline }}
- --deadline-margin={{ .Values.deadlineMargin }}
- --eviction-concurrency={{ .Values.evictionConcurrency }}
- --kube-api-qps={{ .Values.kubeApiQPS }}
- --pdb-deadline-policy={{ .Values.pdbDeadlinePolicy }}
- --taint-effect={{ .Values.taintEffect }}
{{- if .Values.cordonOnly }}
- --cordon-only
{{- end }}
- --lb-deregistration-delay={{ .Values.lbDeregistrationDelay }}
{{- if .Values.evictDaemonSets }}
- --evict-daemonsets
{{- end }}
{{- if .Values.dryRun }}
- --dry-run
{{- end }}
{{- end }}

{{/* Arguments of the components that send notifications: the agent and
the queue processor. */}}
{{- define "lastcall.notifyArgs" -}}
{{- if .Values.clusterName }}
- --cluster-name={{ .Values.clusterName }}
{{- end }}
{{- if .Values.notifications.webhook.existingSecret }}
- --webhook-timeout={{ .Values.notifications.timeout }}
{{- if .Values.notifications.template }}
- --webhook-template-file=/etc/lastcall/notifications/webhook.tmpl
{{- else }}
- --webhook-format={{ .Values.notifications.webhook.format }}
{{- end }}
{{- end }}
{{- end }}

{{/* extraArgs, last so that they win over the chart's. */}}
{{- define "lastcall.extraArgs" -}}
{{- range .Values.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}

{{/* Every cloud's flags, from agent.clouds.<cloud>.<flag>: value, so that a
cloud lastcall adds needs no change here. A list is joined with commas, a
boolean is --flag=true|false, null leaves the flag out. */}}
{{- define "lastcall.cloudArgs" -}}
{{- range $cloud, $flags := .Values.agent.clouds }}
{{- range $flag, $v := $flags }}
{{- if kindIs "invalid" $v }}
{{- else if kindIs "slice" $v }}
- {{ printf "--%s=%s" $flag (join "," $v) | quote }}
{{- else if kindIs "map" $v }}
{{- fail (printf "agent.clouds.%s.%s: a flag's value is a string, number, boolean or list" $cloud $flag) }}
{{- else if and (kindIs "float64" $v) (eq $v (floor $v)) }}
- {{ printf "--%s=%d" $flag (int64 $v) | quote }}
{{- else }}
- {{ printf "--%s=%v" $flag $v | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* Environment every component takes: the pod's identity. */}}
{{- define "lastcall.commonEnv" -}}
{{- if .Values.metrics.bindPodIP }}
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
{{- end }}
- name: LASTCALL_POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: LASTCALL_POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- end }}

{{/* Environment of the components that send notifications: the webhook
URL. */}}
{{- define "lastcall.notifyEnv" -}}
{{- if .Values.notifications.webhook.existingSecret }}
- name: LASTCALL_WEBHOOK_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.notifications.webhook.existingSecret }}
      key: {{ .Values.notifications.webhook.secretKey }}
{{- end }}
{{- end }}

{{- define "lastcall.extraEnv" -}}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The container's port, probes and security context. */}}
{{- define "lastcall.containerCommon" -}}
image: {{ include "lastcall.image" . }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
ports:
  - name: metrics
    containerPort: {{ .Values.metrics.port }}
    protocol: TCP
{{- /* Liveness is lastcall's own loop; its dependencies are readiness
(see probes in values.yaml). */}}
livenessProbe:
  httpGet:
    path: /healthz
    port: metrics
    {{- if .Values.metrics.auth.enabled }}
    scheme: HTTPS
    {{- end }}
  {{- toYaml .Values.probes.liveness | nindent 2 }}
readinessProbe:
  httpGet:
    path: /readyz
    port: metrics
    {{- if .Values.metrics.auth.enabled }}
    scheme: HTTPS
    {{- end }}
  {{- toYaml .Values.probes.readiness | nindent 2 }}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
{{- end }}

{{/* Volumes and mounts for the notification template. */}}
{{- define "lastcall.templateVolume" -}}
{{- if and .Values.notifications.webhook.existingSecret .Values.notifications.template }}
- name: notifications
  configMap:
    name: {{ include "lastcall.fullname" . }}-notifications
{{- end }}
{{- end }}

{{- define "lastcall.templateMount" -}}
{{- if and .Values.notifications.webhook.existingSecret .Values.notifications.template }}
- name: notifications
  mountPath: /etc/lastcall/notifications
  readOnly: true
{{- end }}
{{- end }}

{{/* Whether the agent is confined to its own node by a
ValidatingAdmissionPolicy: agent mode with RBAC, and rbac.ownNodeOnly true,
or auto where the API server serves ValidatingAdmissionPolicy. */}}
{{- define "lastcall.ownNodeOnly" -}}
{{- $v := .Values.rbac.ownNodeOnly }}
{{- if and (eq .Values.mode "agent") .Values.rbac.create }}
{{- if eq (toString $v) "true" }}true
{{- else if and (eq (toString $v) "auto") (.Capabilities.APIVersions.Has "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy") }}true
{{- end }}
{{- end }}
{{- end }}

{{/* The address serving metrics and probes: every address, or with
metrics.bindPodIP the pod's IP only ($POD_IP, from the downward API;
brackets hold an IPv6 address as well as an IPv4 one). */}}
{{- define "lastcall.listenAddress" -}}
{{- if .Values.metrics.bindPodIP }}[$(POD_IP)]:{{ .Values.metrics.port }}
{{- else }}:{{ .Values.metrics.port }}
{{- end }}
{{- end }}
