{{/* Names, labels and the pieces the workload, the migration Job and NOTES share. */}}

{{- define "arbiter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "arbiter.fullname" -}}
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

{{- define "arbiter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "arbiter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end }}

{{- define "arbiter.commonLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "arbiter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The server's labels; the migration Job's pods carry component=migration instead, so
the Service, the PDB and the spread constraints never select them. */}}
{{- define "arbiter.labels" -}}
{{ include "arbiter.commonLabels" . }}
app.kubernetes.io/component: server
{{- end }}

{{- define "arbiter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "arbiter.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "arbiter.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "arbiter.policyConfigMap" -}}
{{- default (printf "%s-policy" (include "arbiter.fullname" .)) .Values.policy.existingConfigMap }}
{{- end }}

{{- define "arbiter.hasPolicy" -}}
{{- if or .Values.policy.bundle .Values.policy.existingConfigMap }}true{{ end }}
{{- end }}

{{- define "arbiter.databaseSecret" -}}
{{- default (printf "%s-database" (include "arbiter.fullname" .)) .Values.database.existingSecret }}
{{- end }}

{{- define "arbiter.databaseSecretKey" -}}
{{- if .Values.database.existingSecret }}{{ .Values.database.existingSecretKey }}{{ else }}url{{ end }}
{{- end }}

{{/* Values the schema cannot express across keys; failing here beats a crash loop. */}}
{{- define "arbiter.validate" -}}
{{- if eq .Values.mode "postgres" }}
{{- if not (or .Values.database.url .Values.database.existingSecret) }}
{{- fail "mode=postgres needs database.existingSecret (or database.url)" }}
{{- end }}
{{- if not .Values.keys.existingSecret }}
{{- fail "mode=postgres needs keys.existingSecret: every replica must chain and sign the audit log with the same keys (docs/operations.md, Keys)" }}
{{- end }}
{{- end }}
{{- if and .Values.tls.enabled (not .Values.tls.existingSecret) }}
{{- fail "tls.enabled needs tls.existingSecret (a kubernetes.io/tls Secret)" }}
{{- end }}
{{- if and (ne .Values.tls.clientAuth "none") (not .Values.tls.enabled) }}
{{- fail "tls.clientAuth other than none needs tls.enabled (mTLS runs over TLS)" }}
{{- end }}
{{- if and .Values.metrics.enabled (eq (int .Values.metrics.port) (int .Values.grpc.port)) }}
{{- fail "metrics.port and grpc.port must differ" }}
{{- end }}
{{- if and .Values.console.tls (not .Values.tls.enabled) }}
{{- fail "console.tls needs tls.enabled (the console serves the gRPC certificate)" }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.enabled) }}
{{- fail "metrics.serviceMonitor.enabled needs metrics.enabled" }}
{{- end }}
{{- if and .Values.notifications.endpoints (hasKey (.Values.config.notifications | default dict) "endpoints") }}
{{- fail "set webhook endpoints in notifications.endpoints or in config.notifications.endpoints, not both" }}
{{- end }}
{{- if .Values.mcpGateway.enabled }}
{{- include "arbiter.validateMcpGateway" . }}
{{- end }}
{{- $names := dict }}
{{- range .Values.notifications.endpoints }}
{{- if hasKey $names .name }}
{{- fail (printf "notifications.endpoints: the name %q is used twice" .name) }}
{{- end }}
{{- $_ := set $names .name true }}
{{- end }}
{{- end }}

{{/* Helm reads every number in values as a float, and toToml writes 512 as 512.0,
which the server refuses for an integer setting: turns whole floats in a settings
tree (nested maps, in place) back into integers. */}}
{{- define "arbiter.wholeNumbers" -}}
{{- range $k, $v := . }}
{{- if kindIs "float64" $v }}
{{- if eq (float64 (int64 $v)) $v }}{{ $_ := set $ $k (int64 $v) }}{{ end }}
{{- else if kindIs "map" $v }}
{{- include "arbiter.wholeNumbers" $v }}
{{- end }}
{{- end }}
{{- end }}

{{/* The environment variable holding a webhook endpoint's signing secret. */}}
{{- define "arbiter.webhookSecretEnv" -}}
ARBITER_WEBHOOK_SECRET_{{ . | upper | replace "-" "_" }}
{{- end }}


{{/* TLS is off during bootstrap: the server is reachable only from inside the pod, and
the CLI run there with `kubectl exec` has no CA file or client certificate. */}}
{{- define "arbiter.tlsOn" -}}
{{- if and .Values.tls.enabled (not .Values.bootstrap.enabled) }}true{{ end }}
{{- end }}

{{/* How many pods run: one in embedded mode and during bootstrap. */}}
{{- define "arbiter.replicas" -}}
{{- if or (eq .Values.mode "embedded") .Values.bootstrap.enabled }}1{{ else }}{{ .Values.replicaCount }}{{ end }}
{{- end }}

{{/* Environment shared by the server and the migration Job. */}}
{{- define "arbiter.commonEnv" -}}
- name: ARBITER_STORAGE__DATA_DIR
  value: {{ .Values.dataDir | quote }}
{{- if eq .Values.mode "postgres" }}
- name: ARBITER_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "arbiter.databaseSecret" . }}
      key: {{ include "arbiter.databaseSecretKey" . }}
{{- end }}
{{- end }}

{{- define "arbiter.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext }}
{{- end }}

{{/* The in-process MCP gateway: whether it presents a client certificate on loopback
(TLS on, and a Secret for it given). */}}
{{- define "arbiter.mcpGatewayClientCert" -}}
{{- if and (include "arbiter.tlsOn" .) (ne .Values.tls.clientAuth "none") .Values.mcpGateway.tls.clientSecret }}true{{ end }}
{{- end }}

{{/* gateway.yaml: mcpGateway.config plus what the chart owns (the listen address, the
accepted hosts and origins, the loopback TLS files it mounts). */}}
{{- define "arbiter.mcpGatewayConfig" -}}
{{- $gw := deepCopy .Values.mcpGateway.config }}
{{- $listen := $gw.listen | default dict }}
{{- $host := ternary "127.0.0.1" "0.0.0.0" .Values.bootstrap.enabled }}
{{- $_ := set $listen "addr" (printf "%s:%d" $host (int .Values.mcpGateway.port)) }}
{{- $name := include "arbiter.fullname" . }}
{{- $ns := .Release.Namespace }}
{{- $hosts := list "localhost" "127.0.0.1" "::1" $name (printf "%s.%s" $name $ns) (printf "%s.%s.svc" $name $ns) (printf "%s.%s.svc.cluster.local" $name $ns) }}
{{- $_ := set $listen "allowed_hosts" (concat $hosts .Values.mcpGateway.allowedHosts) }}
{{- with .Values.mcpGateway.allowedOrigins }}{{ $_ := set $listen "allowed_origins" . }}{{ end }}
{{- $_ := set $gw "listen" $listen }}
{{- if include "arbiter.tlsOn" . }}
{{- $arbiter := $gw.arbiter | default dict }}
{{- $_ := set $arbiter "tls_ca" "/etc/arbiter/mcp-gateway-ca/ca.crt" }}
{{- if include "arbiter.mcpGatewayClientCert" . }}
{{- $_ := set $arbiter "tls_cert" "/etc/arbiter/mcp-gateway-client/tls.crt" }}
{{- $_ := set $arbiter "tls_key" "/etc/arbiter/mcp-gateway-client/tls.key" }}
{{- end }}
{{- $_ := set $gw "arbiter" $arbiter }}
{{- end }}
{{- toYaml $gw }}
{{- end }}

{{/* What the schema cannot say about mcpGateway: the keys the chart owns, and its port. */}}
{{- define "arbiter.validateMcpGateway" -}}
{{- $m := .Values.mcpGateway }}
{{- if and $m.existingSecret $m.config }}
{{- fail "set mcpGateway.config or mcpGateway.existingSecret, not both" }}
{{- end }}
{{- if not (or $m.existingSecret $m.config.upstreams) }}
{{- fail "mcpGateway.enabled needs mcpGateway.config.upstreams (or mcpGateway.existingSecret)" }}
{{- end }}
{{- if hasKey ($m.config.arbiter | default dict) "endpoint" }}
{{- fail "mcpGateway.config.arbiter.endpoint: leave it out; the in-process gateway calls this server's own gRPC port" }}
{{- end }}
{{- range list "tls_ca" "tls_cert" "tls_key" }}
{{- if hasKey ($m.config.arbiter | default dict) . }}
{{- fail (printf "mcpGateway.config.arbiter.%s: the chart sets it from tls and mcpGateway.tls" .) }}
{{- end }}
{{- end }}
{{- range $key, $value := dict "addr" "mcpGateway.port" "allowed_hosts" "mcpGateway.allowedHosts" "allowed_origins" "mcpGateway.allowedOrigins" }}
{{- if hasKey ($m.config.listen | default dict) $key }}
{{- fail (printf "mcpGateway.config.listen.%s: set %s instead" $key $value) }}
{{- end }}
{{- end }}
{{- $port := int $m.port }}
{{- if or (eq $port (int .Values.grpc.port)) (and .Values.metrics.enabled (eq $port (int .Values.metrics.port))) (and .Values.console.enabled (eq $port (int .Values.console.port))) }}
{{- fail "mcpGateway.port must differ from grpc.port, metrics.port and console.port" }}
{{- end }}
{{- if and .Values.tls.enabled (eq .Values.tls.clientAuth "required") (not $m.tls.clientSecret) }}
{{- fail "mcpGateway with tls.clientAuth=required needs mcpGateway.tls.clientSecret: the certificate the gateway presents to the server on loopback" }}
{{- end }}
{{- end }}
