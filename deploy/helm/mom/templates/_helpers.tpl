{{/* Names and labels shared by every template. */}}

{{- define "mom.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "mom.labels" -}}
app.kubernetes.io/part-of: mom
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one service; call with (dict "root" $ "name" "execution"). */}}
{{- define "mom.selectorLabels" -}}
app.kubernetes.io/name: mom-{{ .name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{- define "mom.serviceName" -}}
{{- printf "%s-%s" (include "mom.fullname" .root) .name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mom.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "mom.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "mom.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Kafka credentials of one service: its own Secret when kafka.sasl.perService names one. */}}
{{- define "mom.kafkaEnv" -}}
{{- $root := .root -}}
{{- $kafka := $root.Values.kafka -}}
- name: MOM_KAFKA_SECURITY_PROTOCOL
  value: {{ $kafka.securityProtocol | quote }}
{{- if hasPrefix "SASL_" $kafka.securityProtocol }}
{{- $secret := default $kafka.sasl.existingSecret (get $kafka.sasl.perService .name) }}
- name: MOM_KAFKA_SASL_MECHANISM
  value: {{ $kafka.saslMechanism | quote }}
- name: MOM_KAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ required "kafka.sasl.existingSecret is required with a SASL_ protocol" $secret | quote }}
      key: {{ $kafka.sasl.usernameKey | quote }}
- name: MOM_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $secret | quote }}
      key: {{ $kafka.sasl.passwordKey | quote }}
{{- end }}
{{- if $kafka.tls.caSecret }}
- name: MOM_KAFKA_SSL_CA_LOCATION
  value: /etc/mom/kafka-ca/{{ $kafka.tls.caKey }}
{{- end }}
{{- end -}}

{{- define "mom.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "mom.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}
