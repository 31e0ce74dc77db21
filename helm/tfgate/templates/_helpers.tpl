{{/* Names and labels. */}}
{{- define "tfgate.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-tfgate" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tfgate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tfgate
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{ include "tfgate.selector" . }}
{{- end -}}

{{- define "tfgate.selector" -}}
app.kubernetes.io/name: tfgate
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tfgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "tfgate.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "tfgate.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* config.listen.tls.client_auth, defaulting like tfgate does. */}}
{{- define "tfgate.clientAuth" -}}
{{- dig "listen" "tls" "client_auth" "require" .Values.config -}}
{{- end -}}

{{/* config.rest.tls.client_auth; by default the gRPC listener's, so both fronts take the
     same clients (and a token-only release needs no client CA). */}}
{{- define "tfgate.restClientAuth" -}}
{{- $tls := get (get .Values.config "rest" | default dict) "tls" | default dict -}}
{{- get $tls "client_auth" | default (include "tfgate.clientAuth" .) -}}
{{- end -}}

{{/* "true" when some listener asks for client certificates, or (cluster mode) the egresses
     verify their peers' ingress with it: the client CA is mounted. */}}
{{- define "tfgate.needsClientCA" -}}
{{- if or (ne (include "tfgate.clientAuth" .) "none") (and .Values.rest.enabled (ne (include "tfgate.restClientAuth" .) "none")) (eq .Values.mode "cluster") -}}
true
{{- end -}}
{{- end -}}

{{/* "true" when REST calls go to the model server's REST API (rest.upstream: native). */}}
{{- define "tfgate.restNative" -}}
{{- if and .Values.rest.enabled (eq .Values.rest.upstream "native") -}}
true
{{- end -}}
{{- end -}}

{{/* Drain seconds: config.server.grace_s rounded up. */}}
{{- define "tfgate.graceSeconds" -}}
{{- dig "server" "grace_s" 5 .Values.config | float64 | ceil | int -}}
{{- end -}}

{{- define "tfgate.terminationGracePeriod" -}}
{{- add (int .Values.lifecycle.preStopSleepSeconds) (include "tfgate.graceSeconds" . | int) (int .Values.lifecycle.terminationMarginSeconds) -}}
{{- end -}}

{{/* The upstreams the chart writes for its mode. */}}
{{- define "tfgate.upstreams" -}}
{{- if eq .Values.mode "sidecar" -}}
modelserver:
  address: unix:/run/modelserver/grpc.sock
{{- else if eq .Values.mode "standalone" -}}
{{- $up := .Values.standalone.upstream -}}
modelserver:
  address: {{ $up.address | quote }}
  {{- if include "tfgate.restNative" . }}
  rest_address: {{ $up.restAddress | quote }}
  {{- end }}
  {{- if $up.tls.secretName }}
  tls:
    ca: /etc/tfgate/upstream-tls/ca.crt
    {{- if $up.tls.clientCert }}
    cert: /etc/tfgate/upstream-tls/tls.crt
    key: /etc/tfgate/upstream-tls/tls.key
    {{- end }}
    {{- with $up.tls.serverName }}
    server_name: {{ . | quote }}
    {{- end }}
  {{- end }}
{{- else -}}
tensorflow:
  kind: cluster
  address: {{ printf "127.0.0.1:%d" (int .Values.cluster.tfPort) | quote }}
{{- end -}}
{{- end -}}

{{/* A listener's tls section: the given keys (client_auth) plus the mounted Secrets'
     files. Takes (list <given tls dict or nil> <client_auth>). */}}
{{- define "tfgate.listenerTLS" -}}
{{- $tls := index . 0 | default dict | deepCopy -}}
{{- $_ := set $tls "cert" "/etc/tfgate/tls/tls.crt" -}}
{{- $_ := set $tls "key" "/etc/tfgate/tls/tls.key" -}}
{{- if ne (index . 1) "none" -}}
{{- $_ := set $tls "client_ca" "/etc/tfgate/client-ca/ca.crt" -}}
{{- end -}}
{{- toYaml $tls -}}
{{- end -}}

{{/* The whole tfgate config: the values' `config`, plus the keys the chart owns
     (addresses and file paths that must agree with the pod it renders). */}}
{{- define "tfgate.config" -}}
{{- $v := .Values -}}
{{- $c := deepCopy $v.config -}}
{{- $listen := get $c "listen" | default dict -}}
{{- $_ := set $listen "address" (printf "0.0.0.0:%d" (int $v.port)) -}}
{{- $tls := include "tfgate.listenerTLS" (list (get $listen "tls") (include "tfgate.clientAuth" .)) | fromYaml -}}
{{- $_ := set $listen "tls" $tls -}}
{{- $_ := set $c "listen" $listen -}}
{{- $_ := set $c "upstreams" (include "tfgate.upstreams" . | fromYaml) -}}
{{- if $v.rest.enabled -}}
{{- /* TLS on the pod's address (the Service reaches it there): never plaintext. */ -}}
{{- $rest := get $c "rest" | default dict -}}
{{- $_ := set $rest "address" (printf "0.0.0.0:%d" (int $v.rest.port)) -}}
{{- $_ := set $rest "upstream" $v.rest.upstream -}}
{{- $restAuth := include "tfgate.restClientAuth" . -}}
{{- $restTLS := include "tfgate.listenerTLS" (list (get $rest "tls") $restAuth) | fromYaml -}}
{{- $_ := set $restTLS "client_auth" $restAuth -}}
{{- $_ := set $rest "tls" $restTLS -}}
{{- $_ := set $c "rest" $rest -}}
{{- end -}}
{{- if $v.admin.enabled -}}
{{- $admin := get $c "admin" | default dict -}}
{{- $_ := set $admin "address" (printf "0.0.0.0:%d" (int $v.admin.port)) -}}
{{- /* The kubelet probes it on the pod IP; the NetworkPolicy admits only metricsFrom. */ -}}
{{- $_ := set $admin "enabled" true -}}
{{- $_ := set $admin "allow_non_loopback" true -}}
{{- $_ := set $c "admin" $admin -}}
{{- end -}}
{{- if eq $v.mode "cluster" -}}
{{- $_ := set $c "cluster" (include "tfgate.clusterSection" . | fromYaml) -}}
{{- $c = mergeOverwrite $c (deepCopy $v.cluster.tfgateConfig) -}}
{{- end -}}
{{- toYaml $c -}}
{{- end -}}

{{/* The ConfigMap's data: the ingress's tfgate.yaml and, in cluster mode, one
     egress-<role>-<i>.yaml per task of the job (the egress towards that task). */}}
{{- define "tfgate.configData" -}}
tfgate.yaml: |
  {{- include "tfgate.config" . | nindent 2 }}
{{- if eq .Values.mode "cluster" }}
{{- range (include "tfgate.clusterTasks" . | fromJsonArray) }}
{{ include "tfgate.egressKey" . }}: |
  {{- include "tfgate.egressConfig" (list $ .) | nindent 2 }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Checks the schema cannot state plainly; each fails the render with one line. */}}
{{- define "tfgate.validate" -}}
{{- $v := .Values -}}
{{- if and (not $v.admin.enabled) (hasKey $v.config "admin") -}}
{{- fail "config.admin is set but admin.enabled is false" -}}
{{- end -}}
{{- include "tfgate.validateRest" . -}}
{{- if eq $v.mode "sidecar" -}}
{{- range $v.sidecar.modelServer.extraArgs -}}
{{- if regexMatch "^--?(port|rest_api_port|grpc_socket_path)(=|$)" . -}}
{{- fail (printf "sidecar.modelServer.extraArgs: %q is set by the chart (ModelServer listens on the unix socket only)" .) -}}
{{- end -}}
{{- end -}}
{{- if and (not $v.sidecar.modelServer.modelConfigFile) (not $v.sidecar.modelServer.modelBasePath) -}}
{{- fail "sidecar.modelServer: set modelBasePath (with modelName) or modelConfigFile" -}}
{{- end -}}
{{- else if eq $v.mode "standalone" -}}
{{- if not $v.standalone.upstream.address -}}
{{- fail "standalone.upstream.address: required in standalone mode (host:port of the ModelServer Service)" -}}
{{- end -}}
{{- if and $v.standalone.modelServer.fence (not $v.standalone.modelServer.podSelector) -}}
{{- fail "standalone.modelServer.podSelector: required (the model server pods' labels), or set fence: false" -}}
{{- end -}}
{{- else if eq $v.mode "cluster" -}}
{{- if not $v.cluster.container.image.repository -}}
{{- fail "cluster.container.image.repository: required in cluster mode (the TensorFlow task image)" -}}
{{- end -}}
{{- if eq (int $v.cluster.tfPort) (int $v.port) -}}
{{- fail "cluster.tfPort must differ from port (tfgate's ingress)" -}}
{{- end -}}
{{- include "tfgate.validateCluster" . -}}
{{- end -}}
{{- if and $v.admin.enabled (eq (int $v.admin.port) (int $v.port)) -}}
{{- fail "admin.port must differ from port" -}}
{{- end -}}
{{- if and $v.tls.certManager.enabled (not $v.tls.certManager.issuerRef.name) -}}
{{- fail "tls.certManager.issuerRef.name: required when tls.certManager.enabled" -}}
{{- end -}}
{{- end -}}

{{/* The REST front's checks: where it may run, where it forwards, its port. */}}
{{- define "tfgate.validateRest" -}}
{{- $v := .Values -}}
{{- $r := $v.rest -}}
{{- if and (not $r.enabled) (hasKey $v.config "rest") -}}
{{- fail "config.rest is set but rest.enabled is false (the chart writes the rest section, with its address and TLS, when rest.enabled)" -}}
{{- end -}}
{{- if $r.enabled -}}
{{- if eq $v.mode "cluster" -}}
{{- fail "rest.enabled: the REST front serves ModelServer's HTTP/JSON API; cluster mode has no ModelServer (use sidecar or standalone mode)" -}}
{{- end -}}
{{- if and (eq $v.mode "sidecar") (eq $r.upstream "native") -}}
{{- fail "rest.upstream: native is refused in sidecar mode: ModelServer's REST API listens on TCP only, and the sidecar's ModelServer has no TCP port; use rest.upstream: translate (REST to gRPC over the unix socket)" -}}
{{- end -}}
{{- if and (eq $v.mode "standalone") (eq $r.upstream "native") (not $v.standalone.upstream.restAddress) -}}
{{- fail "standalone.upstream.restAddress: required when rest.upstream is native (http://host:port or https://host:port of the model server's REST Service)" -}}
{{- end -}}
{{- if eq (int $r.port) (int $v.port) -}}
{{- fail "rest.port must differ from port" -}}
{{- end -}}
{{- if and $v.admin.enabled (eq (int $r.port) (int $v.admin.port)) -}}
{{- fail "rest.port must differ from admin.port" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Pod annotations: the config checksum (reload: roll), Prometheus, the user's. */}}
{{- define "tfgate.podAnnotations" -}}
{{- if eq .Values.reload "roll" }}
checksum/config: {{ include "tfgate.configData" . | sha256sum }}
{{- end }}
{{- if and .Values.admin.enabled .Values.metrics.podAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .Values.admin.port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- with .Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Every container: non-root (from the pod), read-only root, no privilege, no caps. */}}
{{- define "tfgate.containerSecurity" -}}
securityContext:
  allowPrivilegeEscalation: false
  privileged: false
  readOnlyRootFilesystem: true
  runAsNonRoot: true
  capabilities:
    drop: ["ALL"]
{{- end -}}

{{/* Pod-level settings shared by every mode. */}}
{{- define "tfgate.podSpecCommon" -}}
serviceAccountName: {{ include "tfgate.serviceAccountName" . }}
automountServiceAccountToken: false
enableServiceLinks: false
terminationGracePeriodSeconds: {{ include "tfgate.terminationGracePeriod" . }}
securityContext:
  runAsNonRoot: true
  runAsUser: 10001
  runAsGroup: 10001
  fsGroup: 10001
  seccompProfile:
    type: RuntimeDefault
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end -}}

{{- define "tfgate.topologySpread" -}}
{{- if .Values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml .Values.topologySpreadConstraints | nindent 2 }}
{{- else if .Values.topologySpread.enabled }}
topologySpreadConstraints:
  {{- range list "topology.kubernetes.io/zone" "kubernetes.io/hostname" }}
  - maxSkew: {{ $.Values.topologySpread.maxSkew }}
    topologyKey: {{ . }}
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "tfgate.selector" $ | nindent 8 }}
  {{- end }}
{{- end }}
{{- end -}}

{{/* Probes: the admin endpoints when enabled, else TCP on the gRPC port. */}}
{{- define "tfgate.probe" -}}
{{- $root := index . 0 -}}{{- $path := index . 1 -}}{{- $timing := index . 2 -}}
{{- if $root.Values.admin.enabled }}
httpGet:
  path: {{ $path }}
  port: admin
{{- else }}
tcpSocket:
  port: grpc
{{- end }}
{{ toYaml $timing }}
{{- end -}}

{{/* The tfgate container, the same in every mode: the ingress (tfgate.yaml). */}}
{{- define "tfgate.container" -}}
{{- include "tfgate.containerOf" (dict "root" . "name" "tfgate" "key" "tfgate.yaml"
    "ingress" true "resources" .Values.resources) -}}
{{- end -}}

{{/* A tfgate container: (dict root name key ingress resources [adminPort]). The ingress
     declares its ports and probes them (tfgate.probe); an egress (ingress false) listens
     on loopback only, where no probe reaches, so it declares and is probed on its own
     admin port when admin.enabled, and is not probed otherwise. Everything else (image,
     args, env, security, mounts) is the same for both. */}}
{{- define "tfgate.containerOf" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
- name: {{ .name }}
  image: {{ include "tfgate.image" $root | quote }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  args:
    - serve
    - --config
    - {{ printf "/etc/tfgate/config/%s" .key }}
    {{- with $v.workers }}
    - --workers
    - {{ . | quote }}
    {{- end }}
    {{- range $v.extraArgs }}
    - {{ . | quote }}
    {{- end }}
  {{- if .ingress }}
  ports:
    - name: grpc
      containerPort: {{ $v.port }}
      protocol: TCP
    {{- if $v.rest.enabled }}
    - name: rest
      containerPort: {{ $v.rest.port }}
      protocol: TCP
    {{- end }}
    {{- if $v.admin.enabled }}
    - name: admin
      containerPort: {{ $v.admin.port }}
      protocol: TCP
    {{- end }}
  {{- else if .adminPort }}
  ports:
    - containerPort: {{ .adminPort }}
      protocol: TCP
  {{- end }}
  env:
    - name: PYTHONDONTWRITEBYTECODE
      value: "1"
    {{- with $v.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- if .ingress }}
  startupProbe:
    {{- include "tfgate.probe" (list $root "/healthz" $v.probes.startup) | trim | nindent 4 }}
  readinessProbe:
    {{- include "tfgate.probe" (list $root "/readyz" $v.probes.readiness) | trim | nindent 4 }}
  livenessProbe:
    {{- include "tfgate.probe" (list $root "/healthz" $v.probes.liveness) | trim | nindent 4 }}
  {{- else if .adminPort }}
  {{- /* /healthz only: /readyz would make the pod unready while a peer is down. */}}
  startupProbe:
    httpGet: {path: /healthz, port: {{ .adminPort }}}
    {{- toYaml $v.probes.startup | nindent 4 }}
  livenessProbe:
    httpGet: {path: /healthz, port: {{ .adminPort }}}
    {{- toYaml $v.probes.liveness | nindent 4 }}
  {{- end }}
  lifecycle:
    preStop:
      exec:
        command: ["sleep", {{ $v.lifecycle.preStopSleepSeconds | quote }}]
  {{- include "tfgate.containerSecurity" $root | nindent 2 }}
  resources:
    {{- toYaml .resources | nindent 4 }}
  volumeMounts:
    - {name: config, mountPath: /etc/tfgate/config, readOnly: true}
    - {name: tls, mountPath: /etc/tfgate/tls, readOnly: true}
    {{- if include "tfgate.needsClientCA" $root }}
    - {name: client-ca, mountPath: /etc/tfgate/client-ca, readOnly: true}
    {{- end }}
    {{- if $v.jwks.secretName }}
    - {name: jwks, mountPath: /etc/tfgate/jwks, readOnly: true}
    {{- end }}
    {{- if and (eq $v.mode "standalone") $v.standalone.upstream.tls.secretName }}
    - {name: upstream-tls, mountPath: /etc/tfgate/upstream-tls, readOnly: true}
    {{- end }}
    {{- range $v.extraSecretMounts }}
    - {name: {{ printf "extra-%s" .name }}, mountPath: {{ printf "/etc/tfgate/extra/%s" .name }}, readOnly: true}
    {{- end }}
    - {name: tfgate-tmp, mountPath: /tmp}
    {{- if eq $v.mode "sidecar" }}
    - {name: modelserver-socket, mountPath: /run/modelserver}
    {{- end }}
    {{- with $v.extraVolumeMounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end -}}

{{/* The volumes the tfgate container mounts. */}}
{{- define "tfgate.volumes" -}}
{{- $v := .Values -}}
- name: config
  configMap:
    name: {{ include "tfgate.fullname" . }}
- name: tls
  secret:
    secretName: {{ $v.tls.secretName }}
    items:
      - {key: tls.crt, path: tls.crt}
      - {key: tls.key, path: tls.key}
{{- if include "tfgate.needsClientCA" . }}
- name: client-ca
  secret:
    secretName: {{ default $v.tls.secretName $v.tls.clientCA.secretName }}
    items:
      - {key: {{ $v.tls.clientCA.key }}, path: ca.crt}
{{- end }}
{{- if $v.jwks.secretName }}
- name: jwks
  secret:
    secretName: {{ $v.jwks.secretName }}
{{- end }}
{{- if and (eq $v.mode "standalone") $v.standalone.upstream.tls.secretName }}
- name: upstream-tls
  secret:
    secretName: {{ $v.standalone.upstream.tls.secretName }}
{{- end }}
{{- range $v.extraSecretMounts }}
- name: {{ printf "extra-%s" .name }}
  secret:
    secretName: {{ .secretName }}
{{- end }}
- name: tfgate-tmp
  emptyDir:
    sizeLimit: 64Mi
{{- with $v.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The model server's pod ports tfgate may reach (standalone): its gRPC ports, and its
     REST ports when REST calls go there natively. NetworkPolicyPorts, one a line. */}}
{{- define "tfgate.modelServerPorts" -}}
{{- $ms := .Values.standalone.modelServer -}}
{{- $ports := $ms.ports -}}
{{- if include "tfgate.restNative" . -}}
{{- $ports = concat $ports $ms.restPorts | uniq -}}
{{- end -}}
{{- range $ports }}
- {protocol: TCP, port: {{ . }}}
{{- end -}}
{{- end -}}

{{/* The egress rules of tfgate's pods (may be empty). */}}
{{- define "tfgate.egressRules" -}}
{{- $v := .Values -}}
{{- $np := .Values.networkPolicy -}}
{{- $ns := .Release.Namespace -}}
{{- $extra := concat $np.extraEgress (ternary $v.sidecar.modelServer.egress list (eq $v.mode "sidecar")) -}}
{{- $dns := or (ne $v.mode "sidecar") (gt (len $extra) 0) -}}
{{- if $dns }}
- to:
    - namespaceSelector:
        {{- toYaml $np.dns.namespaceSelector | nindent 8 }}
      podSelector:
        {{- toYaml $np.dns.podSelector | nindent 8 }}
  ports:
    - {protocol: UDP, port: 53}
    - {protocol: TCP, port: 53}
{{- end }}
{{- if eq $v.mode "standalone" }}
{{- $ms := $v.standalone.modelServer }}
- ports:
    {{- include "tfgate.modelServerPorts" . | trim | nindent 4 }}
  {{- if $ms.podSelector }}
  to:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: {{ default $ns $ms.namespace }}
      podSelector:
        matchLabels:
          {{- toYaml $ms.podSelector | nindent 10 }}
  {{- end }}
{{- else if eq $v.mode "cluster" }}
- ports:
    - {protocol: TCP, port: {{ $v.port }}}
  to:
    - podSelector:
        matchLabels:
          {{- include "tfgate.selector" . | nindent 10 }}
{{- end }}
{{- with $extra }}
{{ toYaml . }}
{{- end }}
{{- end -}}
