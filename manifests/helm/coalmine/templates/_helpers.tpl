{{/* Labels on every object. */}}
{{- define "coalmine.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: coalmine
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: coalmine
{{- end }}

{{/* Pod selector; the same as the kustomize base, so both installs select alike. */}}
{{- define "coalmine.selectorLabels" -}}
app.kubernetes.io/name: coalmine
app.kubernetes.io/component: controller
{{- end }}

{{/*
Fails the render on values that cannot work, saying what to do. The schema catches
unknown keys and wrong types; these are the cross-field rules.
*/}}
{{- define "coalmine.validate" -}}
{{- if ne .Values.meshProvider "kuma" }}
{{- fail (printf "meshProvider %q is not supported: coalmine works with Kuma and Kong Mesh only; set meshProvider: kuma" .Values.meshProvider) }}
{{- end }}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) }}
{{- fail (printf "replicaCount %d needs leaderElection.enabled: true, or two progression loops would fight over the same canaries" (int .Values.replicaCount)) }}
{{- end }}
{{- if and .Values.certs.certManager.issuerRef (ne .Values.certs.mode "cert-manager") }}
{{- fail "certs.certManager.issuerRef is set but certs.mode is self-managed: set certs.mode: cert-manager or remove the issuerRef" }}
{{- end }}
{{- if and .Values.certs.certManager.issuerRef (not .Values.certs.certManager.issuerRef.name) }}
{{- fail "certs.certManager.issuerRef needs a name" }}
{{- end }}
{{- if and .Values.podDisruptionBudget.enabled (ge (int .Values.podDisruptionBudget.minAvailable) (int .Values.replicaCount)) (not (kindIs "string" .Values.podDisruptionBudget.minAvailable)) }}
{{- fail (printf "podDisruptionBudget.minAvailable %v with replicaCount %d would block every node drain: raise replicaCount or lower minAvailable" .Values.podDisruptionBudget.minAvailable (int .Values.replicaCount)) }}
{{- end }}
{{- end }}

{{/* Directory of the serving certificate inside the pod. */}}
{{- define "coalmine.certDir" -}}/var/run/coalmine/serving-certs{{- end }}
