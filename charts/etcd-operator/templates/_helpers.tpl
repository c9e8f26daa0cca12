{{/*
Names are fixed, not derived from the release: the operator finds its Service, webhook Secret and
webhook configurations by these names, and one operator serves a whole cluster (its CRDs and
webhooks are cluster-wide), so a second release could only collide.
*/}}

{{/* Labels on every object, besides the ones Helm itself reads. */}}
{{- define "etcd-operator.labels" -}}
app.kubernetes.io/name: etcd-operator
app.kubernetes.io/part-of: etcd-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{/* The operator's pods; the same as manifests/ select, so that either install can replace the other. */}}
{{- define "etcd-operator.selector" -}}
app.kubernetes.io/name: etcd-operator
app.kubernetes.io/component: operator
{{- end }}

{{- define "etcd-operator.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* Values the templates cannot carry out are refused, naming the value. */}}
{{- define "etcd-operator.checkValues" -}}
{{- if not (has .Values.webhook.certificate (list "operator" "helm")) }}
{{- fail (printf "webhook.certificate must be operator or helm, not %q" (toString .Values.webhook.certificate)) }}
{{- end }}
{{- range .Values.watchNamespaces }}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$" (toString .)) }}
{{- fail (printf "watchNamespaces: %q is not a namespace name" (toString .)) }}
{{- end }}
{{- end }}
{{- end }}
