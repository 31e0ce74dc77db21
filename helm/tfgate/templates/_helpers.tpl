{{- define "tfgate.fullname" -}}
{{- printf "%s-tfgate" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tfgate.labels" -}}
app.kubernetes.io/name: tfgate
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{- define "tfgate.selector" -}}
app.kubernetes.io/name: tfgate
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
