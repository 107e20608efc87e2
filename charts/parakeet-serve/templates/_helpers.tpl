{{/* Names and labels. */}}
{{- define "parakeet.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "parakeet.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "parakeet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "parakeet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "parakeet.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "parakeet.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: parakeet-serve
{{- end -}}

{{- define "parakeet.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{- define "parakeet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (include "parakeet.fullname" .) -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{- define "parakeet.cacheClaim" -}}
{{- .Values.modelCache.existingClaim | default (printf "%s-model-cache" (include "parakeet.fullname" .)) -}}
{{- end -}}

{{- define "parakeet.tlsSecret" -}}
{{- .Values.tls.secretName | default (printf "%s-tls" (include "parakeet.fullname" .)) -}}
{{- end -}}

{{/* The port kubelet probes: plaintext health beside a TLS gRPC port, else the gRPC port. */}}
{{- define "parakeet.probePort" -}}
{{- if .Values.tls.enabled -}}{{ .Values.tls.healthPort }}{{- else -}}{{ .Values.service.grpcPort }}{{- end -}}
{{- end -}}

{{/* Regex of this release's pod names, for PromQL (Deployment pods: NAME-HASH-SUFFIX). */}}
{{- define "parakeet.podRegex" -}}
{{- printf "%s-[a-z0-9]+-[a-z0-9]+" (include "parakeet.fullname" .) -}}
{{- end -}}

{{/* Hub access: off when the cache is filled by the hook or the user says so. */}}
{{- define "parakeet.hubOffline" -}}
{{- if and .Values.modelCache.enabled (or .Values.modelCache.offline .Values.cacheFill.enabled) -}}true{{- else -}}false{{- end -}}
{{- end -}}

{{/* Settings shared by the server and the warm-up Job: the same model, loaded the same way. A key of
.Values.settings replaces the chart's default of the same name (each variable once: Helm's server-side
apply refuses a list with two entries of one name). */}}
{{- define "parakeet.modelEnv" -}}
{{- /* Hub downloads go to the cache volume, or without one to scratch space (the root is read-only). */}}
{{- $env := dict
  "PARAKEET_DECODER" .Values.model.decoder
  "PARAKEET_DEVICE" (ternary "cpu" .Values.model.device (eq (int .Values.gpu.count) 0))
  "PARAKEET_PRECISION" .Values.model.precision
  "PARAKEET_LANGUAGE_CODE" .Values.model.languageCode
  "HF_HOME" (printf "%s/huggingface" (ternary .Values.modelCache.mountPath "/tmp" .Values.modelCache.enabled))
  "PARAKEET_LOG_LEVEL" "INFO" }}
{{- with .Values.model.id }}{{ $_ := set $env "PARAKEET_MODEL_ID" . }}{{ end }}
{{- with .Values.model.aliases }}{{ $_ := set $env "PARAKEET_MODEL_ALIASES" (join "," .) }}{{ end }}
{{- range $name, $value := merge (deepCopy .Values.settings) $env }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{/* GPU (or CPU) resources of the server and the warm-up Job. */}}
{{- define "parakeet.resources" -}}
{{- $resources := deepCopy .Values.resources -}}
{{- if gt (int .Values.gpu.count) 0 -}}
{{- $limits := get $resources "limits" | default dict -}}
{{- $_ := set $limits .Values.gpu.resourceName (int .Values.gpu.count) -}}
{{- $_ := set $resources "limits" $limits -}}
{{- end -}}
{{- toYaml $resources -}}
{{- end -}}

{{/* Scheduling of GPU pods, shared by the server and the warm-up Job. */}}
{{- define "parakeet.scheduling" -}}
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
{{- with .Values.runtimeClassName }}
runtimeClassName: {{ . }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end -}}

{{/* Volumes the server and the warm-up Job share: scratch and the model cache. */}}
{{- define "parakeet.volumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- if .Values.modelCache.enabled }}
- name: model-cache
  persistentVolumeClaim:
    claimName: {{ include "parakeet.cacheClaim" . }}
{{- end }}
{{- end -}}

{{- define "parakeet.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if .Values.modelCache.enabled }}
- name: model-cache
  mountPath: {{ .Values.modelCache.mountPath }}
{{- end }}
{{- end -}}

{{/* Checks across values, which the schema cannot express. */}}
{{- define "parakeet.validate" -}}
{{- if and .Values.tls.enabled (not .Values.tls.secretName) (not .Values.tls.certManager.enabled) -}}
{{- fail "tls.enabled needs tls.secretName (a kubernetes.io/tls Secret) or tls.certManager.enabled" -}}
{{- end -}}
{{- if and .Values.tls.certManager.enabled (not .Values.tls.certManager.issuerRef.name) -}}
{{- fail "tls.certManager.enabled needs tls.certManager.issuerRef.name" -}}
{{- end -}}
{{- if and .Values.cacheFill.enabled (not .Values.modelCache.enabled) -}}
{{- fail "cacheFill.enabled needs modelCache.enabled: the hook fills the model cache" -}}
{{- end -}}
{{- if and (ne .Values.autoscaling.mode "none") (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) -}}
{{- fail "autoscaling.minReplicas is above autoscaling.maxReplicas" -}}
{{- end -}}
{{- if and .Values.tracing.otelCollectorSidecar.enabled (not .Values.tracing.otelCollectorSidecar.exporterEndpoint) -}}
{{- fail "tracing.otelCollectorSidecar.enabled needs tracing.otelCollectorSidecar.exporterEndpoint (where the sidecar sends traces)" -}}
{{- end -}}
{{- end -}}

{{/* How the autoscaler moves: out quickly; in slowly, one pod at a time, so streams can drain. */}}
{{- define "parakeet.scalingBehavior" -}}
scaleUp:
  stabilizationWindowSeconds: 0
  policies:
    - type: Pods
      value: 2
      periodSeconds: 60
scaleDown:
  stabilizationWindowSeconds: {{ .Values.autoscaling.scaleDownStabilizationSeconds }}
  policies:
    - type: Pods
      value: 1
      periodSeconds: {{ max 60 .Values.drainSeconds }}
{{- end -}}

{{/* This release's series, for PromQL. */}}
{{- define "parakeet.promSelector" -}}
{{- printf "namespace=%q,pod=~%q" .Release.Namespace (include "parakeet.podRegex" .) -}}
{{- end -}}
