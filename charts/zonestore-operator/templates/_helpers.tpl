{{/* Names and labels shared by every template. */}}

{{- define "zonestore-operator.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "zonestore-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "zonestore-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "zonestore-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "zonestore-operator.labels" -}}
{{ include "zonestore-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "zonestore-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "zonestore-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "zonestore-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The peering name is fixed in the operator's code (__main__.py, handlers.py). */}}
{{- define "zonestore-operator.peeringName" -}}zonestore-operator{{- end -}}

{{/* Labels the operator's builders put on every node pod (resources/meta.py). */}}
{{- define "zonestore-operator.nodePodSelector" -}}
app.kubernetes.io/name: zonestore
app.kubernetes.io/component: node
app.kubernetes.io/managed-by: zonestore-operator
{{- end -}}

{{- define "zonestore-operator.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.peering.enabled) -}}
{{- fail "replicaCount > 1 needs peering.enabled: true (standalone replicas would all reconcile at once)" -}}
{{- end -}}
{{- end -}}
