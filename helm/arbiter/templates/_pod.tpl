{{/* The pod template shared by the StatefulSet (embedded) and the Deployment (postgres). */}}
{{- define "arbiter.podTemplate" -}}
metadata:
  labels:
    {{- include "arbiter.labels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- $gatewayRolls := and .Values.mcpGateway.enabled (not .Values.mcpGateway.existingSecret) }}
  {{- if or .Values.policy.rollOnChange .Values.podAnnotations $gatewayRolls }}
  annotations:
    {{- if .Values.policy.rollOnChange }}
    {{- /* A changed config or bundle changes this hash, and so the pod template: pods roll. */}}
    checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}
    {{- end }}
    {{- if $gatewayRolls }}
    {{- /* Whatever rollOnChange says: the gateway reads its file only at start. */}}
    checksum/mcp-gateway: {{ include "arbiter.mcpGatewayConfig" . | sha256sum }}
    {{- end }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
spec:
  serviceAccountName: {{ include "arbiter.serviceAccountName" . }}
  # Arbiter never talks to the Kubernetes API.
  automountServiceAccountToken: false
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  securityContext:
    {{- include "arbiter.podSecurityContext" . | nindent 4 }}
  terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
  containers:
    - name: arbiter
      image: {{ include "arbiter.image" . }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      command: ["/usr/local/bin/arbiter"]
      args: ["serve"]
      env:
        - name: ARBITER_CONFIG
          value: /etc/arbiter/config/arbiter.toml
        - name: ARBITER_SERVER__LISTEN
          {{- if .Values.bootstrap.enabled }}
          # Bootstrap: loopback only, so the server starts without principals.
          value: "127.0.0.1:{{ .Values.grpc.port }}"
        # For `kubectl exec … arbiter principals create`; the server ignores it.
        - name: ARBITER_ADDR
          value: "http://127.0.0.1:{{ .Values.grpc.port }}"
          {{- else }}
          value: "0.0.0.0:{{ .Values.grpc.port }}"
          {{- end }}
        {{- include "arbiter.commonEnv" . | nindent 8 }}
        {{- if include "arbiter.hasPolicy" . }}
        - name: ARBITER_POLICY__PATH
          value: /etc/arbiter/policy/policy.yaml
        {{- end }}
        {{- if .Values.metrics.enabled }}
        - name: ARBITER_METRICS__LISTEN
          value: "0.0.0.0:{{ .Values.metrics.port }}"
        {{- end }}
        {{- if .Values.console.enabled }}
        # Loopback while bootstrapping: without principals the server refuses anything else.
        - name: ARBITER_CONSOLE__LISTEN
          value: "{{ if .Values.bootstrap.enabled }}127.0.0.1{{ else }}0.0.0.0{{ end }}:{{ .Values.console.port }}"
        {{- if and .Values.console.tls (include "arbiter.tlsOn" .) }}
        - name: ARBITER_CONSOLE__TLS
          value: "true"
        {{- end }}
        {{- with .Values.console.publicUrl }}
        - name: ARBITER_CONSOLE__PUBLIC_URL
          value: {{ . | quote }}
        {{- end }}
        {{- end }}
        {{- if .Values.mcpGateway.enabled }}
        - name: ARBITER_MCP_GATEWAY__CONFIG
          value: /etc/arbiter/mcp-gateway/gateway.yaml
        {{- end }}
        {{- range .Values.notifications.endpoints }}
        - name: {{ include "arbiter.webhookSecretEnv" .name }}
          valueFrom:
            secretKeyRef:
              name: {{ .secret.secretName }}
              key: {{ .secret.key }}
        {{- end }}
        {{- if include "arbiter.tlsOn" . }}
        - name: ARBITER_SERVER__TLS__CERT_FILE
          value: /etc/arbiter/tls/tls.crt
        - name: ARBITER_SERVER__TLS__KEY_FILE
          value: /etc/arbiter/tls/tls.key
        - name: ARBITER_SERVER__TLS__CLIENT_AUTH
          value: {{ .Values.tls.clientAuth | quote }}
        {{- if ne .Values.tls.clientAuth "none" }}
        - name: ARBITER_SERVER__TLS__CLIENT_CA_FILE
          value: /etc/arbiter/client-ca/ca.crt
        {{- end }}
        {{- end }}
        {{- if .Values.tracing.otlpEndpoint }}
        - name: OTEL_EXPORTER_OTLP_ENDPOINT
          value: {{ .Values.tracing.otlpEndpoint | quote }}
        - name: OTEL_SERVICE_NAME
          value: {{ .Values.tracing.serviceName | quote }}
        {{- end }}
        {{- with .Values.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      ports:
        - name: grpc
          containerPort: {{ .Values.grpc.port }}
          protocol: TCP
        {{- if .Values.metrics.enabled }}
        - name: http-metrics
          containerPort: {{ .Values.metrics.port }}
          protocol: TCP
        {{- end }}
        {{- if .Values.console.enabled }}
        - name: http-console
          containerPort: {{ .Values.console.port }}
          protocol: TCP
        {{- end }}
        {{- if .Values.mcpGateway.enabled }}
        - name: http-mcp
          containerPort: {{ .Values.mcpGateway.port }}
          protocol: TCP
        {{- end }}
      {{- if not .Values.bootstrap.enabled }}
      {{- /* Bootstrap listens on loopback, which the kubelet cannot reach: no probes then. */}}
      livenessProbe:
        {{- include "arbiter.probeHandler" . | trim | nindent 8 }}
        {{- toYaml .Values.probes.liveness | nindent 8 }}
      readinessProbe:
        {{- include "arbiter.probeHandler" . | trim | nindent 8 }}
        {{- toYaml .Values.probes.readiness | nindent 8 }}
      {{- end }}
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      volumeMounts:
        - name: data
          mountPath: {{ .Values.dataDir }}
        - name: tmp
          mountPath: /tmp
        - name: config
          mountPath: /etc/arbiter/config
          readOnly: true
        {{- if include "arbiter.hasPolicy" . }}
        # The directory, not a subPath: only then does the kubelet update the file in
        # place, which the server's hot reload picks up.
        - name: policy
          mountPath: /etc/arbiter/policy
          readOnly: true
        {{- end }}
        {{- if .Values.keys.existingSecret }}
        - name: keys
          mountPath: {{ .Values.dataDir }}/keys
          readOnly: true
        {{- end }}
        {{- if include "arbiter.tlsOn" . }}
        - name: tls
          mountPath: /etc/arbiter/tls
          readOnly: true
        {{- if ne .Values.tls.clientAuth "none" }}
        - name: client-ca
          mountPath: /etc/arbiter/client-ca
          readOnly: true
        {{- end }}
        {{- end }}
        {{- if .Values.mcpGateway.enabled }}
        - name: mcp-gateway
          mountPath: /etc/arbiter/mcp-gateway
          readOnly: true
        {{- if include "arbiter.tlsOn" . }}
        - name: mcp-gateway-ca
          mountPath: /etc/arbiter/mcp-gateway-ca
          readOnly: true
        {{- end }}
        {{- if include "arbiter.mcpGatewayClientCert" . }}
        - name: mcp-gateway-client
          mountPath: /etc/arbiter/mcp-gateway-client
          readOnly: true
        {{- end }}
        {{- end }}
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: {{ .Values.tmpSizeLimit }}
    {{- if eq .Values.mode "postgres" }}
    # postgres mode keeps no state on disk; the data dir only holds the mounted keys.
    - name: data
      emptyDir:
        sizeLimit: {{ .Values.tmpSizeLimit }}
    {{- end }}
    - name: config
      configMap:
        name: {{ include "arbiter.fullname" . }}-config
    {{- if include "arbiter.hasPolicy" . }}
    - name: policy
      configMap:
        name: {{ include "arbiter.policyConfigMap" . }}
        items:
          - key: policy.yaml
            path: policy.yaml
    {{- end }}
    {{- if .Values.keys.existingSecret }}
    - name: keys
      secret:
        secretName: {{ .Values.keys.existingSecret }}
        # Owner root, group fsGroup, no access for others: the server accepts key
        # files that are 0600 for its own user or at most 0640 when owned by root.
        defaultMode: 0440
    {{- end }}
    {{- if include "arbiter.tlsOn" . }}
    - name: tls
      secret:
        secretName: {{ .Values.tls.existingSecret }}
        defaultMode: 0440
        items:
          - key: tls.crt
            path: tls.crt
          - key: tls.key
            path: tls.key
    {{- if ne .Values.tls.clientAuth "none" }}
    - name: client-ca
      secret:
        secretName: {{ default .Values.tls.existingSecret .Values.tls.clientCaSecret }}
        defaultMode: 0440
        items:
          - key: ca.crt
            path: ca.crt
    {{- end }}
    {{- end }}
    {{- if .Values.mcpGateway.enabled }}
    {{- include "arbiter.mcpGatewayVolumes" . | nindent 4 }}
    {{- end }}
  {{- if .Values.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml .Values.topologySpreadConstraints | nindent 4 }}
  {{- else if eq .Values.mode "postgres" }}
  topologySpreadConstraints:
    - maxSkew: 1
      topologyKey: kubernetes.io/hostname
      whenUnsatisfiable: ScheduleAnyway
      labelSelector:
        matchLabels:
          {{- include "arbiter.selectorLabels" . | nindent 10 }}
  {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{/* Native gRPC probe against grpc.health.v1; TCP when TLS is on (the kubelet's gRPC
probe cannot speak TLS). */}}
{{- define "arbiter.probeHandler" -}}
{{- if include "arbiter.tlsOn" . }}
tcpSocket:
  port: grpc
{{- else }}
grpc:
  port: {{ .Values.grpc.port }}
  {{- with .Values.probes.service }}
  service: {{ . | quote }}
  {{- end }}
{{- end }}
{{- end }}

{{/* The in-process MCP gateway's file and the loopback TLS files it reads. */}}
{{- define "arbiter.mcpGatewayVolumes" -}}
- name: mcp-gateway
  secret:
    secretName: {{ default (printf "%s-mcp-gateway" (include "arbiter.fullname" .)) .Values.mcpGateway.existingSecret }}
    defaultMode: 0440
    items:
      - key: gateway.yaml
        path: gateway.yaml
{{- if include "arbiter.tlsOn" . }}
- name: mcp-gateway-ca
  secret:
    secretName: {{ default .Values.tls.existingSecret .Values.mcpGateway.tls.caSecret }}
    defaultMode: 0440
    items:
      - key: ca.crt
        path: ca.crt
{{- end }}
{{- if include "arbiter.mcpGatewayClientCert" . }}
- name: mcp-gateway-client
  secret:
    secretName: {{ .Values.mcpGateway.tls.clientSecret }}
    defaultMode: 0440
    items:
      - key: tls.crt
        path: tls.crt
      - key: tls.key
        path: tls.key
{{- end }}
{{- end }}
