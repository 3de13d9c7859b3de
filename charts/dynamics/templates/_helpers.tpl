{{/*
Names and labels. The label keys and values match dynamics/constants.py (a test checks it), so
`kubectl -l dynamics.io/run=NAME` and the controller's selectors see chart-made objects exactly as
they see the objects `dynamics-submit` makes.
*/}}

{{/* Chart name and version, for the helm.sh/chart label. */}}
{{- define "dynamics.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels Helm adds to every object of the release. */}}
{{- define "dynamics.helmLabels" -}}
helm.sh/chart: {{ include "dynamics.chart" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}

{{/*
Labels of the namespace objects (ServiceAccount, RBAC, defaults, test Pod).
Call with (dict "ctx" $ "component" "rbac").
*/}}
{{- define "dynamics.labels" -}}
app.kubernetes.io/name: dynamics
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: dynamics
{{ include "dynamics.helmLabels" .ctx }}
{{- end }}

{{/*
Labels of a run's objects: identical to dynamics.render.pod.labels(spec, component), so that the
controller manages a chart-made run like a submitted one. Call with (dict "run" $run "component" "run").
*/}}
{{- define "dynamics.runLabels" -}}
app.kubernetes.io/name: dynamics
app.kubernetes.io/instance: {{ .run.name }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/managed-by: dynamics
dynamics.io/run: {{ .run.name }}
dynamics.io/stage: {{ .component }}
{{- end }}

{{/* Workload labels: the run labels plus Kueue's queue label (render.pod.workload_labels). */}}
{{- define "dynamics.workloadLabels" -}}
{{ include "dynamics.runLabels" . }}
{{- with dig "kubernetes" "queueName" "" .run }}
kueue.x-k8s.io/queue-name: {{ . }}
{{- end }}
{{- end }}

{{/* Whether to create the ServiceAccount: explicit value, else only for a namespace install. */}}
{{- define "dynamics.createServiceAccount" -}}
{{- $create := .Values.serviceAccount.create }}
{{- if kindIs "invalid" $create }}{{ $create = not .Values.run }}{{ end }}
{{- if $create }}true{{ end }}
{{- end }}

{{/* Whether to create the Role and RoleBinding: explicit value, else as the ServiceAccount. */}}
{{- define "dynamics.createRbac" -}}
{{- $create := .Values.rbac.create }}
{{- if kindIs "invalid" $create }}{{ $create = include "dynamics.createServiceAccount" . }}{{ end }}
{{- if $create }}true{{ end }}
{{- end }}

{{/* A stage image reference "repository:tag" from .Values.images.<stage>. */}}
{{- define "dynamics.image" -}}
{{- printf "%s:%s" .repository .tag }}
{{- end }}

{{/* The run's namespace (the spec's default is "default"). */}}
{{- define "dynamics.runNamespace" -}}
{{- dig "namespace" "default" .Values.run }}
{{- end }}

{{/*
Run-level checks: the release namespace must be the run's, and a pytorchjob launcher needs the CRD.
*/}}
{{- define "dynamics.validateRun" -}}
{{- $run := .Values.run }}
{{- $ns := include "dynamics.runNamespace" . }}
{{- if ne $ns .Release.Namespace }}
{{- fail (printf "run %q belongs in namespace %q (run.namespace) but the release is in %q: install with `-n %s`, or change run.namespace" $run.name $ns .Release.Namespace $ns) }}
{{- end }}
{{- $launcher := dig "train" "launcher" "pytorchjob" $run }}
{{- if and .Values.checkPrerequisites (eq $launcher "pytorchjob") (not (.Capabilities.APIVersions.Has "kubeflow.org/v1/PyTorchJob")) }}
{{- fail (printf "run %q trains with launcher \"pytorchjob\" but this cluster has no kubeflow.org/v1 PyTorchJob. Ask an admin to install the Kubeflow training operator:\n  kubectl apply --server-side -k \"github.com/kubeflow/training-operator.git/manifests/overlays/standalone?ref=v1.9.0\"\nor set run.train.launcher: indexed-job (an Indexed Job + headless Service, no operator needed).\nRendering offline (helm template without a cluster) for one that has the operator? Add --api-versions kubeflow.org/v1/PyTorchJob." $run.name) }}
{{- end }}
{{- end }}

{{/*
The run spec as YAML for the ConfigMap's spec.yaml: top-level keys in the spec's order, then any
other key. Not toYaml: Helm holds every number as float64 and toYaml writes a small one as 1e-07,
which YAML 1.1 readers (PyYAML) take for a string; and it leaves the string "1e-07" unquoted, so the
two cannot be told apart afterwards. dynamics.yamlNode writes strings quoted and such floats as 1.0e-07.
*/}}
{{- define "dynamics.specYaml" -}}
{{- $run := .Values.run }}
{{- $order := list "apiVersion" "kind" "name" "namespace" "storage" "data" "images" "embed" "cluster" "sample" "train" "eval" "kubernetes" }}
{{- $keys := list }}
{{- range $order }}{{ if hasKey $run . }}{{ $keys = append $keys . }}{{ end }}{{ end }}
{{- range keys $run | sortAlpha }}{{ if not (has . $order) }}{{ $keys = append $keys . }}{{ end }}{{ end }}
{{- range $keys }}
{{ . }}:{{ include "dynamics.yamlNode" (dict "v" (get $run .) "ind" 2) }}
{{- end }}
{{- end }}

{{/*
One YAML value in block style, typed exactly. Call with (dict "v" VALUE "ind" INDENT); the output
starts with " " (a scalar or empty collection) or a newline (a block collection).
*/}}
{{- define "dynamics.yamlNode" -}}
{{- $v := .v }}
{{- $pad := repeat (int .ind) " " }}
{{- if kindIs "map" $v }}
{{- if not $v }} {}{{ end }}
{{- range $k := keys $v | sortAlpha }}
{{- $key := regexMatch "^[A-Za-z_][A-Za-z0-9_.-]*$" $k | ternary $k (toJson $k) }}
{{ $pad }}{{ $key }}:{{ include "dynamics.yamlNode" (dict "v" (get $v $k) "ind" (add $.ind 2)) }}
{{- end }}
{{- else if kindIs "slice" $v }}
{{- if not $v }} []{{ end }}
{{- range $item := $v }}
{{- $inner := include "dynamics.yamlNode" (dict "v" $item "ind" (add $.ind 2)) }}
{{ $pad }}-{{ if kindIs "map" $item }}{{ if $item }} {{ trimPrefix (printf "\n%s  " $pad) $inner }}{{ else }}{{ $inner }}{{ end }}{{ else }}{{ $inner }}{{ end }}
{{- end }}
{{- else if kindIs "float64" $v }} {{ regexReplaceAll "^(-?[0-9]+)([eE])" (toJson $v) "${1}.0${2}" }}
{{- else if kindIs "invalid" $v }} null
{{- else }} {{ toJson $v }}
{{- end }}
{{- end }}

{{/* Container security context of every container ('restricted' Pod Security Standard). */}}
{{- define "dynamics.containerSecurity" -}}
allowPrivilegeEscalation: false
capabilities:
  drop:
    - ALL
runAsNonRoot: true
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Pod security context (render.pod.pod_security). Call with the run's user id. */}}
{{- define "dynamics.podSecurity" -}}
runAsNonRoot: true
runAsUser: {{ toYaml . }}
runAsGroup: {{ toYaml . }}
fsGroup: {{ toYaml . }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
S3 environment (render.pod.env): endpoint, region, and credentials only by Secret reference.
Call with (dict "endpoint" .. "region" .. "secret" ..).
*/}}
{{- define "dynamics.s3Env" -}}
{{- with .endpoint }}
- name: AWS_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- with .region }}
- name: AWS_DEFAULT_REGION
  value: {{ . | quote }}
{{- end }}
{{- with .secret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: AWS_ACCESS_KEY_ID
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: AWS_SECRET_ACCESS_KEY
{{- end }}
{{- end }}

{{/* Tolerations without null fields (render.pod.pod_spec dumps them with exclude_none). */}}
{{- define "dynamics.tolerations" -}}
{{- $out := list }}
{{- range . }}
{{- $t := dict }}
{{- range $k, $v := . }}
{{- if not (kindIs "invalid" $v) }}{{ $_ := set $t $k $v }}{{ end }}
{{- end }}
{{- $out = append $out $t }}
{{- end }}
{{- toYaml $out }}
{{- end }}

{{/*
Placement of a pod without GPUs (render.pod.placement(spec, gpus=False)): each of kubernetes.cpuPods'
fields that is set, else the run-wide one. Call with the run's kubernetes dict; renders the pod spec's
nodeSelector/tolerations/affinity (empty ones left out), to be indented with nindent.
*/}}
{{- define "dynamics.cpuPlacement" -}}
{{- $k := . }}
{{- $cls := $k.cpuPods | default dict }}
{{- $out := dict }}
{{- range $field := list "nodeSelector" "tolerations" "affinity" }}
{{- $v := get $k $field }}
{{- if and (hasKey $cls $field) (not (kindIs "invalid" (get $cls $field))) }}{{ $v = get $cls $field }}{{ end }}
{{- if $v }}{{ $_ := set $out $field $v }}{{ end }}
{{- end }}
{{- with $out.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $out.tolerations }}
tolerations:
  {{- include "dynamics.tolerations" . | nindent 2 }}
{{- end }}
{{- with $out.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* kubernetes.env (render.pod.env_var): literal values, or Secret key references. */}}
{{- define "dynamics.specEnv" -}}
{{- range . }}
- name: {{ .name | quote }}
  {{- with .valueFrom }}
  valueFrom:
    secretKeyRef:
      name: {{ .secretKeyRef.name | quote }}
      key: {{ .secretKeyRef.key | quote }}
  {{- else }}
  value: {{ .value | quote }}
  {{- end }}
{{- end }}
{{- end }}

{{/* ephemeral-storage of the controller and the helm test Pod (render.jobs.CONTROLLER_EPHEMERAL_STORAGE). */}}
{{- define "dynamics.controllerEphemeralStorage" -}}
1Gi
{{- end }}
