{{/* Names and labels shared by every template. */}}
{{- define "ostiary.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* <release>-ostiary (or the release name if it contains the chart's name); fullnameOverride
replaces it, nameOverride replaces the chart's name in it. */}}
{{- define "ostiary.fullname" -}}
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

{{- define "ostiary.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ostiary.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "ostiary.labels" -}}
{{ include "ostiary.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "ostiary.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "ostiary.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "ostiary.systemNamespace" -}}
{{- default .Release.Namespace .Values.systemNamespace -}}
{{- end -}}

{{/* The serving certificate's Secret. Each mode has its own name, so switching modes never lets
Helm delete a Secret cert-manager has just written (or the reverse). */}}
{{- define "ostiary.tlsSecretName" -}}
{{- if eq .Values.tls.mode "secret" -}}
{{- .Values.tls.existingSecret -}}
{{- else if eq .Values.tls.mode "certManager" -}}
{{- printf "%s-cm-tls" (include "ostiary.fullname" .) -}}
{{- else -}}
{{- printf "%s-tls" (include "ostiary.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* The DNS names the API server may use for the Service (the first is the one it uses). */}}
{{- define "ostiary.dnsNames" -}}
{{- $fullname := include "ostiary.fullname" . -}}
- {{ printf "%s.%s.svc" $fullname .Release.Namespace }}
- {{ printf "%s.%s.svc.cluster.local" $fullname .Release.Namespace }}
- {{ printf "%s.%s" $fullname .Release.Namespace }}
{{- end -}}

{{/* What the schema cannot say about the certificate modes: settings of one mode given with another
would be silently ignored (or, for a caBundle next to cert-manager's injector, fight it). */}}
{{- define "ostiary.checkTLS" -}}
{{- $tls := .Values.tls -}}
{{- if eq $tls.mode "secret" -}}
{{- if not $tls.existingSecret -}}
{{- fail "tls.mode=secret needs tls.existingSecret: a kubernetes.io/tls Secret (tls.crt, tls.key) in the release namespace" -}}
{{- end -}}
{{- if not (contains "-----BEGIN CERTIFICATE-----" $tls.caBundle) -}}
{{- fail "tls.mode=secret needs tls.caBundle: the PEM CA certificate that signed tls.existingSecret (the API server trusts only it)" -}}
{{- end -}}
{{- if $tls.certManager.issuerRef -}}
{{- fail "tls.certManager.issuerRef is only used with tls.mode=certManager; remove it or change tls.mode" -}}
{{- end -}}
{{- else if eq $tls.mode "certManager" -}}
{{- if or $tls.existingSecret $tls.caBundle -}}
{{- fail "tls.mode=certManager: cert-manager's CA injector fills the webhooks' caBundle; remove tls.existingSecret and tls.caBundle (they are for tls.mode=secret)" -}}
{{- end -}}
{{- else -}}
{{- if or $tls.existingSecret $tls.caBundle $tls.certManager.issuerRef -}}
{{- fail "tls.mode=generate: the chart makes its own certificate; tls.existingSecret and tls.caBundle are for tls.mode=secret, tls.certManager.issuerRef for tls.mode=certManager" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* repository:tag, or repository@digest when a digest is given. With global.imageRegistry, the
repository's registry host (a first path part with a dot or a colon, or localhost) is replaced by it,
or it is put in front of a repository without one: ghcr.io/ostiary/ostiary -> REG/ostiary/ostiary,
openpolicyagent/opa -> REG/openpolicyagent/opa. Called with (dict "image" <image values> "root" $
"defaultTag" <tag when image.tag is empty>). */}}
{{- define "ostiary.imageRef" -}}
{{- $image := .image -}}
{{- $repository := $image.repository -}}
{{- $registry := trimSuffix "/" (.root.Values.global.imageRegistry | default "") -}}
{{- if $registry -}}
{{- $parts := splitList "/" $repository -}}
{{- $first := first $parts -}}
{{- if and (gt (len $parts) 1) (or (contains "." $first) (contains ":" $first) (eq $first "localhost")) -}}
{{- $repository = join "/" (rest $parts) -}}
{{- end -}}
{{- $repository = printf "%s/%s" $registry $repository -}}
{{- end -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repository (toString (default .defaultTag $image.tag)) -}}
{{- end -}}
{{- end -}}

{{/* The images of the chart's pods. */}}
{{- define "ostiary.webhookImage" -}}
{{- include "ostiary.imageRef" (dict "image" .Values.image "root" . "defaultTag" .Chart.AppVersion) -}}
{{- end -}}

{{- define "ostiary.opaImage" -}}
{{- include "ostiary.imageRef" (dict "image" .Values.opa.image "root" . "defaultTag" "") -}}
{{- end -}}

{{/* The kubectl image of the registration and uninstall hooks (uninstallHook.image). */}}
{{- define "ostiary.kubectlImage" -}}
{{- include "ostiary.imageRef" (dict "image" .Values.uninstallHook.image "root" . "defaultTag" "") -}}
{{- end -}}

{{/* Sources of the files under --rego-dir and --policy-dir: the chart's ConfigMap (from values) in
a "values" folder, each named ConfigMap in a folder of its own name, so keys never collide. */}}
{{- define "ostiary.fileSources" -}}
{{- $fullname := include "ostiary.fullname" . -}}
{{- $sources := list -}}
{{- if .Values.customRego -}}
{{- $sources = append $sources (dict "volume" "rego-values" "configMap" (printf "%s-config" $fullname) "path" "/etc/ostiary/rego/values" "keys" (keys .Values.customRego | sortAlpha)) -}}
{{- end -}}
{{- range $i, $name := .Values.customRegoConfigMaps -}}
{{- $sources = append $sources (dict "volume" (printf "rego-cm-%d" $i) "configMap" $name "path" (printf "/etc/ostiary/rego/%s" $name)) -}}
{{- end -}}
{{- if eq .Values.policySource "directory" -}}
{{- if .Values.policies -}}
{{- $sources = append $sources (dict "volume" "policies-values" "configMap" (printf "%s-config" $fullname) "path" "/etc/ostiary/policies/values" "keys" (list "policies.yaml")) -}}
{{- end -}}
{{- range $i, $name := .Values.policyConfigMaps -}}
{{- $sources = append $sources (dict "volume" (printf "policies-cm-%d" $i) "configMap" $name "path" (printf "/etc/ostiary/policies/%s" $name)) -}}
{{- end -}}
{{- end -}}
{{- toYaml $sources -}}
{{- end -}}

{{- define "ostiary.fileMounts" -}}
{{- range (include "ostiary.fileSources" . | fromYamlArray) }}
- {name: {{ .volume }}, mountPath: {{ .path }}, readOnly: true}
{{- end }}
{{- end -}}

{{- define "ostiary.fileVolumes" -}}
{{- range (include "ostiary.fileSources" . | fromYamlArray) }}
- name: {{ .volume }}
  configMap:
    name: {{ .configMap }}
    {{- with .keys }}
    items:
      {{- range . }}
      - {key: {{ . }}, path: {{ . }}}
      {{- end }}
    {{- end }}
{{- end }}
{{- end -}}

{{/* What the schema cannot say about policy sources. */}}
{{- define "ostiary.checkSources" -}}
{{- if and (eq .Values.policySource "cluster") .Values.policyConfigMaps -}}
{{- fail "policyConfigMaps are read only with policySource=directory; with policySource=cluster, policies are ImagePolicy/ClusterImagePolicy resources (or `policies` in values)" -}}
{{- end -}}
{{- if eq .Values.policySource "directory" -}}
{{- if not (or .Values.policies .Values.policyConfigMaps) -}}
{{- fail "policySource=directory needs `policies` or `policyConfigMaps`: with no policy file Ostiary would refuse every image" -}}
{{- end -}}
{{- end -}}
{{- range (concat .Values.customRegoConfigMaps .Values.policyConfigMaps) -}}
{{- if eq . "values" -}}
{{- fail "a ConfigMap named \"values\" cannot be mounted: that folder holds the files from values; rename it" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* OPA's bearer token: the Secret's (kept across upgrades) or a new one, made once per render so
the Secret and the pods' checksum annotation agree. */}}
{{- define "ostiary.opaToken" -}}
{{- if not (hasKey .Values.opa.auth "renderedToken") -}}
{{- $token := randAlphaNum 48 -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (printf "%s-opa-token" (include "ostiary.fullname" .)) -}}
{{- if and $existing (index ($existing.data | default dict) "token") -}}
{{- $token = index $existing.data "token" | b64dec -}}
{{- end -}}
{{- $_ := set .Values.opa.auth "renderedToken" $token -}}
{{- end -}}
{{- .Values.opa.auth.renderedToken -}}
{{- end -}}

{{/* OPA's administrative policy (opa.auth.enabled). */}}
{{- define "ostiary.opaAuthzPolicy" -}}
package system.authz

default allow := false

# Ostiary, with the token from the chart's Secret: any API.
allow if input.identity == data.system.ostiary.token

# The kubelet's probes, without a token.
allow if {
	input.method == "GET"
	input.path == ["health"]
}
{{- if or .Values.opa.auth.metricsWithoutToken .Values.metrics.serviceMonitor.enabled }}

# Prometheus, without a token: request counts and durations, nothing about policies.
allow if {
	input.method == "GET"
	input.path == ["metrics"]
}
{{- end }}
{{- end -}}

{{/* Fails unless .value holds at least one PEM CERTIFICATE block and every such block is base64 of a
DER structure (a SEQUENCE: its first byte is "0"). Text outside the blocks is ignored, as OpenSSL
does (bundles often carry comments). (dict "value" <text> "what" <message start>) */}}
{{- define "ostiary.checkPEM" -}}
{{- $blocks := regexFindAll "-----BEGIN CERTIFICATE-----[^-]*-----END CERTIFICATE-----" .value -1 -}}
{{- if ne (len $blocks) (len (regexFindAll "-----BEGIN CERTIFICATE-----" .value -1)) -}}
{{- fail (printf "%s: a PEM certificate is not terminated by -----END CERTIFICATE----- (or holds other characters than base64)" .what) -}}
{{- end -}}
{{- if not $blocks -}}
{{- fail (printf "%s: no PEM certificate (-----BEGIN CERTIFICATE----- ... -----END CERTIFICATE-----) in it" .what) -}}
{{- end -}}
{{- range $i, $block := $blocks -}}
{{- $body := $block | trimPrefix "-----BEGIN CERTIFICATE-----" | trimSuffix "-----END CERTIFICATE-----" | nospace -}}
{{- if or (not (regexMatch "^[A-Za-z0-9+/]+={0,2}$" $body)) (not (hasPrefix "0" (b64dec $body))) -}}
{{- fail (printf "%s: PEM certificate %d is not base64 of a DER certificate" $.what (add1 $i)) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* What the schema cannot say about the other values; the Deployment template calls it. */}}
{{- define "ostiary.checkValues" -}}
{{- with .Values.notaryCABundle -}}
{{- include "ostiary.checkPEM" (dict "value" . "what" "notaryCABundle must be PEM CA certificates for Notary servers") -}}
{{- end -}}
{{- if and (eq .Values.policySource "cluster") (or (eq .Values.stateVolume.type "persistentVolumeClaim") .Values.stateVolume.existingClaim) -}}
{{- fail "stateVolume is for policySource=directory: with policySource=cluster the trust records are TrustRecord objects in the release namespace, shared by every replica; remove stateVolume.type/existingClaim" -}}
{{- end -}}
{{- if and (eq .Values.stateVolume.type "persistentVolumeClaim") (not .Values.stateVolume.existingClaim) -}}
{{- fail "stateVolume.type=persistentVolumeClaim needs stateVolume.existingClaim: the name of a PersistentVolumeClaim in the release namespace (ReadWriteMany when replicaCount > 1)" -}}
{{- end -}}
{{- if and .Values.stateVolume.existingClaim (ne .Values.stateVolume.type "persistentVolumeClaim") -}}
{{- fail "stateVolume.existingClaim is used only with stateVolume.type=persistentVolumeClaim" -}}
{{- end -}}
{{- if and .Values.rootPins.configMap .Values.rootPins.secret -}}
{{- fail "rootPins: give rootPins.configMap or rootPins.secret, not both (one file is passed to --root-pins)" -}}
{{- end -}}
{{- if and .Values.sigstoreTrustedRoot.configMap .Values.sigstoreTrustedRoot.secret -}}
{{- fail "sigstoreTrustedRoot: give sigstoreTrustedRoot.configMap or sigstoreTrustedRoot.secret, not both (one file is passed to --sigstore-trusted-root)" -}}
{{- end -}}
{{- if and .Values.metrics.serviceMonitor.enabled .Values.networkPolicy.enabled (not .Values.networkPolicy.metricsPeers) -}}
{{- fail "metrics.serviceMonitor.enabled with networkPolicy.enabled needs networkPolicy.metricsPeers (your Prometheus, e.g. [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}, podSelector: {matchLabels: {app.kubernetes.io/name: prometheus}}}]): without them the chart's NetworkPolicy blocks the scrapes the ServiceMonitor asks for" -}}
{{- end -}}
{{- if and .Values.metrics.prometheusRule.enabled (not .Values.metrics.serviceMonitor.enabled) -}}
{{- fail "metrics.prometheusRule.enabled needs metrics.serviceMonitor.enabled: the alerts select the series by the job and endpoint labels that ServiceMonitor gives them" -}}
{{- end -}}
{{- end -}}

{{/* Labels of the pods of the hooks and `helm test`: not the webhook pods' selector labels, so the
Service, the PodDisruptionBudget and the NetworkPolicy never count them as webhook pods.
(dict "root" $ "component" <name>) */}}
{{- define "ostiary.componentLabels" -}}
app.kubernetes.io/name: {{ printf "%s-%s" (include "ostiary.name" .root) .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end -}}
