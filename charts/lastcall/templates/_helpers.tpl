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

{{/* Selector labels: stable for the life of the release. */}}
{{- define "lastcall.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lastcall.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: {{ .Values.mode }}
{{- end }}

{{- define "lastcall.labels" -}}
helm.sh/chart: {{ include "lastcall.chart" . }}
{{ include "lastcall.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: lastcall
{{- end }}

{{- define "lastcall.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "lastcall.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "lastcall.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Arguments both modes take. */}}
{{- define "lastcall.commonArgs" -}}
- --mode={{ .Values.mode }}
- --listen-address=:{{ .Values.metrics.port }}
- --log-format={{ .Values.logFormat }}
- --log-level={{ .Values.logLevel }}
- --fallback-deadline={{ .Values.fallbackDeadline }}
- --deadline-margin={{ .Values.deadlineMargin }}
- --eviction-concurrency={{ .Values.evictionConcurrency }}
- --kube-api-qps={{ .Values.kubeApiQPS }}
- --pdb-deadline-policy={{ .Values.pdbDeadlinePolicy }}
- --lb-deregistration-delay={{ .Values.lbDeregistrationDelay }}
{{- if .Values.evictDaemonSets }}
- --evict-daemonsets
{{- end }}
{{- if .Values.dryRun }}
- --dry-run
{{- end }}
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
{{- range .Values.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}

{{/* Environment both modes take: the pod's identity and the webhook URL. */}}
{{- define "lastcall.commonEnv" -}}
- name: LASTCALL_POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: LASTCALL_POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- if .Values.notifications.webhook.existingSecret }}
- name: LASTCALL_WEBHOOK_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.notifications.webhook.existingSecret }}
      key: {{ .Values.notifications.webhook.secretKey }}
{{- end }}
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
livenessProbe:
  httpGet:
    path: /healthz
    port: metrics
  periodSeconds: 10
  failureThreshold: 3
readinessProbe:
  httpGet:
    path: /readyz
    port: metrics
  periodSeconds: 5
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
