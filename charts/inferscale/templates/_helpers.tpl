{{/*
Names, labels and images shared by the templates. Every object's name starts with the fullname;
`helm install inferscale ...` gives the names of config/rbac and config/router
(inferscale-operator, inferscale-router, inferscale-router-admin, ...).
*/}}

{{- define "inferscale.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else if contains "inferscale" .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-inferscale" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "inferscale.operator.name" -}}{{ include "inferscale.fullname" . }}-operator{{- end -}}
{{- define "inferscale.router.name" -}}{{ include "inferscale.fullname" . }}-router{{- end -}}
{{- define "inferscale.routingTable.name" -}}{{ include "inferscale.fullname" . }}-routing-table{{- end -}}

{{- define "inferscale.credentials.name" -}}{{ include "inferscale.fullname" . }}-router-credentials{{- end -}}

{{- define "inferscale.leaseName" -}}
{{- .Values.operator.leaderElection.leaseName | default (include "inferscale.operator.name" .) -}}
{{- end -}}

{{/* The Secret with the routers' admin token: the user's, or the one the chart generates. */}}
{{- define "inferscale.adminSecret.name" -}}
{{- .Values.router.adminToken.existingSecret | default (printf "%s-router-admin" (include "inferscale.fullname" .)) -}}
{{- end -}}

{{- define "inferscale.operator.serviceAccountName" -}}
{{- .Values.operator.serviceAccount.name | default (include "inferscale.operator.name" .) -}}
{{- end -}}

{{- define "inferscale.router.serviceAccountName" -}}
{{- .Values.router.serviceAccount.name | default (include "inferscale.router.name" .) -}}
{{- end -}}

{{/* Labels of every object: the standard ones, nothing version-like in selectors. */}}
{{- define "inferscale.baseLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/part-of: inferscale
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Labels of the objects that belong to no one component (CRDs, the dashboard). */}}
{{- define "inferscale.labels" -}}
{{ include "inferscale.baseLabels" . }}
app.kubernetes.io/name: inferscale
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/*
Selector labels of the operator and router pods. The router's name label is the operator's
default router label (RoutingSettings.router_labels), as in config/router.
*/}}
{{- define "inferscale.operator.selectorLabels" -}}
app.kubernetes.io/name: inferscale-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "inferscale.router.selectorLabels" -}}
app.kubernetes.io/name: inferscale-router
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: router
{{- end -}}

{{- define "inferscale.operator.labels" -}}
{{ include "inferscale.baseLabels" . }}
{{ include "inferscale.operator.selectorLabels" . }}
{{- end -}}

{{- define "inferscale.router.labels" -}}
{{ include "inferscale.baseLabels" . }}
{{ include "inferscale.router.selectorLabels" . }}
{{- end -}}

{{/* image: repository:tag or repository@digest; the tag defaults to the appVersion. */}}
{{- define "inferscale.image" -}}
{{- $image := index . 0 -}}
{{- $root := index . 1 -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository ($image.tag | default $root.Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/* The restricted security contexts and the writable /tmp every pod of the chart gets. */}}
{{- define "inferscale.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- end -}}

{{/*
The operator's settings as INFERSCALE_<GROUP>__<KEY> variables (pydantic-settings, nested
delimiter "__"): maps and lists as JSON, everything else as text; null leaves the default.
*/}}
{{- define "inferscale.operator.settingsEnv" -}}
{{- range $group, $settings := .Values.operator.settings }}
{{- range $key, $value := $settings }}
{{- if not (kindIs "invalid" $value) }}
- name: {{ printf "INFERSCALE_%s__%s" (snakecase $group) (snakecase $key) | upper }}
  {{- if or (kindIs "map" $value) (kindIs "slice" $value) }}
  value: {{ toJson $value | quote }}
  {{- else }}
  value: {{ toString $value | quote }}
  {{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The bundled Redis (redis.mode bundled, or auto with several routers): names and labels. */}}
{{- define "inferscale.redis.name" -}}{{ include "inferscale.fullname" . }}-redis{{- end -}}

{{- define "inferscale.redis.selectorLabels" -}}
app.kubernetes.io/name: inferscale-redis
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: redis
{{- end -}}

{{- define "inferscale.redis.labels" -}}
{{ include "inferscale.baseLabels" . }}
{{ include "inferscale.redis.selectorLabels" . }}
{{- end -}}

{{/*
The Redis mode in effect: "bundled", "external" or "" (none). "auto" is bundled when more than
one router shares client limits (router.replicas > 1), none with a single router.
*/}}
{{- define "inferscale.redis.mode" -}}
{{- $mode := .Values.redis.mode | default "none" -}}
{{- if not .Values.router.enabled -}}
{{- else if eq $mode "auto" -}}
{{- if gt (int .Values.router.replicas) 1 }}bundled{{ end -}}
{{- else if ne $mode "none" -}}
{{- $mode -}}
{{- end -}}
{{- end -}}

{{/*
The Secret and key the routers read their Redis URL from: the user's (external), the chart's
(bundled), or nothing. An external mode without a Secret fails the render with the fix.
*/}}
{{- define "inferscale.redis.urlSecret" -}}
{{- $mode := include "inferscale.redis.mode" . -}}
{{- if eq $mode "external" -}}
{{- required "redis.mode is external: set redis.existingSecret to a Secret holding the Redis URL" .Values.redis.existingSecret -}}
{{- else if eq $mode "bundled" -}}
{{- include "inferscale.redis.name" . -}}
{{- end -}}
{{- end -}}

{{- define "inferscale.redis.urlKey" -}}
{{- if eq (include "inferscale.redis.mode" .) "external" -}}{{ .Values.redis.existingSecretKey }}{{- else -}}url{{- end -}}
{{- end -}}
