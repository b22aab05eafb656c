{{/* The webhooks of each configuration: (dict "root" $ "caBundle" <base64 PEM, or "">). */}}
{{- define "ostiary.mutatingWebhooks" -}}
{{- $fullname := include "ostiary.fullname" .root -}}
{{- $caBundle := .caBundle -}}
{{- with .root -}}
webhooks:
  - name: admit.ostiary.dev
    admissionReviewVersions: [v1]
    clientConfig:
      service:
        name: {{ $fullname }}
        namespace: {{ .Release.Namespace }}
        path: /admit
        port: {{ .Values.service.port }}
      {{- with $caBundle }}
      caBundle: {{ . }}
      {{- end }}
    failurePolicy: {{ .Values.webhook.failurePolicy }}
    sideEffects: None
    timeoutSeconds: {{ .Values.webhook.timeoutSeconds }}
    reinvocationPolicy: {{ .Values.webhook.reinvocationPolicy }}
    matchPolicy: Equivalent
    namespaceSelector:
      matchExpressions:
        - key: kubernetes.io/metadata.name
          operator: NotIn
          values:
            {{- range (uniq (append .Values.webhook.excludeNamespaces .Release.Namespace)) }}
            - {{ . | quote }}
            {{- end }}
        {{- with .Values.webhook.optOutLabel }}
        - key: {{ . | quote }}
          operator: NotIn
          values: ["true"]
        {{- end }}
        {{- with .Values.webhook.namespaceSelectorExpressions }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    {{- with .Values.webhook.objectSelector }}
    objectSelector:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    rules:
      - apiGroups: [""]
        apiVersions: [v1]
        operations: [CREATE, UPDATE]
        resources: [pods, pods/ephemeralcontainers, replicationcontrollers]
        scope: Namespaced
      - apiGroups: [apps]
        apiVersions: [v1]
        operations: [CREATE, UPDATE]
        resources: [deployments, replicasets, statefulsets, daemonsets]
        scope: Namespaced
      - apiGroups: [batch]
        apiVersions: [v1]
        operations: [CREATE, UPDATE]
        resources: [jobs, cronjobs]
        scope: Namespaced
{{- end }}
{{- end -}}

{{- define "ostiary.validatingWebhooks" -}}
{{- $fullname := include "ostiary.fullname" .root -}}
{{- $caBundle := .caBundle -}}
{{- with .root -}}
webhooks:
  - name: validate.ostiary.dev
    admissionReviewVersions: [v1]
    clientConfig:
      service:
        name: {{ $fullname }}
        namespace: {{ .Release.Namespace }}
        path: /validate
        port: {{ .Values.service.port }}
      {{- with $caBundle }}
      caBundle: {{ . }}
      {{- end }}
    failurePolicy: {{ .Values.validatingWebhook.failurePolicy }}
    sideEffects: None
    timeoutSeconds: {{ .Values.validatingWebhook.timeoutSeconds }}
    matchPolicy: Equivalent
    rules:
      {{- range $group, $version := dict "ostiary.dev" "v1" "portieris.cloud.ibm.com" "v1" "securityenforcement.admission.cloud.ibm.com" "v1beta1" }}
      - apiGroups: [{{ $group | quote }}]
        apiVersions: [{{ $version | quote }}]
        operations: [CREATE, UPDATE]
        resources: [imagepolicies]
        scope: Namespaced
      - apiGroups: [{{ $group | quote }}]
        apiVersions: [{{ $version | quote }}]
        operations: [CREATE, UPDATE]
        resources: [clusterimagepolicies]
        scope: Cluster
      {{- end }}
{{- end }}
{{- end -}}
