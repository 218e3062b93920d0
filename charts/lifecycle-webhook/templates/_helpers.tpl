{{/*
The annotation and label prefix of the product (webhook.core.model.PREFIX). A test checks they agree.
*/}}
{{- define "lifecycle-webhook.prefix" -}}lifecycle-webhook.io/{{- end -}}

{{- define "lifecycle-webhook.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "lifecycle-webhook.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "lifecycle-webhook.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "lifecycle-webhook.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lifecycle-webhook.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "lifecycle-webhook.labels" -}}
helm.sh/chart: {{ include "lifecycle-webhook.chart" . }}
{{ include "lifecycle-webhook.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "lifecycle-webhook.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "lifecycle-webhook.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "lifecycle-webhook.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- $tag := .Values.image.tag -}}
{{- if kindIs "invalid" $tag -}}{{- /* tag: null */ -}}
{{- $tag = "" -}}
{{- end -}}
{{- if kindIs "float64" $tag -}}{{- /* a whole number (the schema's integer) read from YAML */ -}}
{{- $tag = int64 $tag -}}
{{- end -}}
{{- printf "%s:%s" .Values.image.repository (toString $tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/* Cluster-scoped, so it carries the release name. */}}
{{- define "lifecycle-webhook.webhookConfigName" -}}
{{- include "lifecycle-webhook.fullname" . -}}
{{- end -}}

{{/* The Secret the server reads its serving pair from. */}}
{{- define "lifecycle-webhook.tlsSecretName" -}}
{{- if eq .Values.certs.source "provided" -}}
{{- .Values.certs.provided.secretName -}}
{{- else -}}
{{- printf "%s-tls" (include "lifecycle-webhook.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/*
Every namespace never mutated, as a JSON list (use with fromJsonArray): the system namespaces
and the release namespace always, plus excludedNamespaces. Helm replaces lists rather than
merging them, so the fixed ones must not live in values.yaml, where an override would drop them.
*/}}
{{- define "lifecycle-webhook.excludedNamespaces" -}}
{{- $system := list "kube-system" "kube-public" "kube-node-lease" -}}
{{- concat $system (.Values.excludedNamespaces | default list) (list .Release.Namespace) | uniq | toJson -}}
{{- end -}}

{{/* terminationGracePeriodSeconds: preStop sleep + server drain + margin, or the explicit value. */}}
{{- define "lifecycle-webhook.terminationGracePeriodSeconds" -}}
{{- $required := add .Values.lifecycle.preStopSleepSeconds .Values.server.drainSeconds -}}
{{- $explicit := .Values.lifecycle.terminationGracePeriodSeconds -}}
{{- if kindIs "invalid" $explicit -}}
{{- add $required .Values.lifecycle.graceMarginSeconds -}}
{{- else if lt (int $explicit) (int $required) -}}
{{- fail (printf "lifecycle.terminationGracePeriodSeconds (%d) must be at least lifecycle.preStopSleepSeconds + server.drainSeconds (%d)" (int $explicit) (int $required)) -}}
{{- else -}}
{{- int $explicit -}}
{{- end -}}
{{- end -}}

{{/* Restricted Pod Security for every container. */}}
{{- define "lifecycle-webhook.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Arguments shared by the one-shot and the watching `certs bootstrap`. */}}
{{- define "lifecycle-webhook.bootstrapArgs" -}}
{{- if lt (int .Values.certs.self.caDays) (mul 6 (int .Values.certs.self.leafDays)) -}}
{{- fail (printf "certs.self.caDays (%d) must be at least 6 * certs.self.leafDays (%d)" (int .Values.certs.self.caDays) (int .Values.certs.self.leafDays)) -}}
{{- end -}}
- --secret={{ include "lifecycle-webhook.tlsSecretName" . }}
- --namespace=$(POD_NAMESPACE)
- --service={{ include "lifecycle-webhook.fullname" . }}
- --webhook-config={{ include "lifecycle-webhook.webhookConfigName" . }}
- --out=/etc/lifecycle-webhook/tls
- --ca-days={{ .Values.certs.self.caDays }}
- --leaf-days={{ .Values.certs.self.leafDays }}
{{- end -}}

{{- define "lifecycle-webhook.podNamespaceEnv" -}}
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- end -}}

{{/*
Checks across values that values.schema.json cannot express. Rendered once, by configmap.yaml.
The server exits on a configuration file it refuses, so everything it would refuse fails here.
*/}}
{{- define "lifecycle-webhook.validate" -}}
{{- $config := .Values.config | default dict -}}
{{- $max := int64 3600 -}}
{{- if hasKey $config "maxSeconds" -}}
{{- $max = int64 $config.maxSeconds -}}
{{- end -}}
{{- include "lifecycle-webhook.checkSeconds" (dict "settings" $config "where" "config" "max" $max) -}}
{{- $names := dict -}}
{{- range $index, $profile := $config.profiles | default list -}}
{{- $where := printf "config.profiles[%d]" $index -}}
{{- if hasKey $names (toString $profile.name) -}}
{{- fail (printf "%s.name: %q is used by an earlier profile" $where (toString $profile.name)) -}}
{{- end -}}
{{- $_ := set $names (toString $profile.name) true -}}
{{- include "lifecycle-webhook.checkSeconds" (dict "settings" ($profile.settings | default dict) "where" (printf "%s.settings" $where) "max" $max) -}}
{{- $match := $profile.match | default dict -}}
{{- range $selector := list "podSelector" "namespaceSelector" -}}
{{- $chosen := get $match $selector | default dict -}}
{{- $keys := keys ($chosen.matchLabels | default dict) -}}
{{- range $expression := $chosen.matchExpressions | default list -}}
{{- $keys = append $keys (toString $expression.key) -}}
{{- end -}}
{{- range $key := $keys -}}
{{- if and (contains "/" $key) (gt (len (regexReplaceAll "/[^/]*$" $key "")) 253) -}}
{{- fail (printf "%s.match.%s: the prefix of label key %q is longer than 253 characters" $where $selector $key) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if eq (int64 .Values.server.port) (int64 .Values.metrics.port) -}}
{{- fail (printf "server.port and metrics.port must differ (both %d)" (int64 .Values.server.port)) -}}
{{- end -}}
{{- if and (eq .Values.certs.source "provided") (not (toString .Values.certs.provided.caBundle | trim)) -}}
{{- fail "certs.provided.caBundle is empty: give the PEM (or base64 of the PEM) of the CA that signed certs.provided.secretName" -}}
{{- end -}}
{{- end -}}

{{/*
Seconds values of the config file (or of a profile's settings) above maxSeconds, which the
server refuses; "fromLoadBalancer or N" is checked by its N.
*/}}
{{- define "lifecycle-webhook.checkSeconds" -}}
{{- $settings := .settings -}}
{{- range $key := list "prestopSeconds" "shutdownSeconds" "sidecarShutdownSeconds" "maxGracePeriodSeconds" -}}
{{- if hasKey $settings $key -}}
{{- $value := get $settings $key -}}
{{- $seconds := kindIs "string" $value | ternary (regexFind "[0-9]+$" (toString $value) | default "0" | atoi | int64) (int64 $value) -}}
{{- if gt $seconds $.max -}}
{{- fail (printf "%s.%s (%d) must be at most config.maxSeconds (%d)" $.where $key $seconds $.max) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Where the API server calls the webhook, per mode, as a JSON list (use with fromJsonArray) of
{name, namespaceSelector, objectSelector}: the MutatingWebhookConfiguration's entries, and the
ValidatingAdmissionPolicyBindings that warn about pods those entries missed, use the same.
  namespace mode: every pod in a namespace labelled inject=enabled, unless the pod opts out;
    plus single pods labelled inject=true elsewhere. Namespaces labelled enabled are left to
    the first entry, so no pod is sent twice; namespaces labelled disabled are never called.
  cluster mode: every pod in every namespace not labelled inject=disabled, unless it opts out.
*/}}
{{- define "lifecycle-webhook.webhookEntries" -}}
{{- $inject := printf "%sinject" (include "lifecycle-webhook.prefix" .) -}}
{{- $excluded := include "lifecycle-webhook.excludedNamespaces" . | fromJsonArray -}}
{{- $notExcluded := dict "key" "kubernetes.io/metadata.name" "operator" "NotIn" "values" $excluded -}}
{{- $podNotOptedOut := dict "matchExpressions" (list (dict "key" $inject "operator" "NotIn" "values" (list "false"))) -}}
{{- if eq .Values.mode "namespace" -}}
{{- list
  (dict "name" "namespace-opt-in.pods.lifecycle-webhook.io"
    "namespaceSelector" (dict "matchExpressions" (list (dict "key" $inject "operator" "In" "values" (list "enabled")) $notExcluded))
    "objectSelector" $podNotOptedOut)
  (dict "name" "pod-opt-in.pods.lifecycle-webhook.io"
    "namespaceSelector" (dict "matchExpressions" (list (dict "key" $inject "operator" "NotIn" "values" (list "enabled" "disabled")) $notExcluded))
    "objectSelector" (dict "matchExpressions" (list (dict "key" $inject "operator" "In" "values" (list "true")))))
  | toJson -}}
{{- else -}}
{{- list
  (dict "name" "all-namespaces.pods.lifecycle-webhook.io"
    "namespaceSelector" (dict "matchExpressions" (list (dict "key" $inject "operator" "NotIn" "values" (list "disabled")) $notExcluded))
    "objectSelector" $podNotOptedOut)
  | toJson -}}
{{- end -}}
{{- end -}}
