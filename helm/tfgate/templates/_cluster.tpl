{{/* Cluster mode's helpers (docs/kubernetes.md, Cluster mode; docs/cluster.md, Topologies).

Every task of the job, in `cluster.tasks` order (chief-0, worker-0, worker-1, ...), has
one loopback port, `cluster.localPortBase + k`: its address in the ClusterSpec, the same
string in every pod. In each pod an egress tfgate listens plaintext on the port of every
task the pod may call and forwards it over mTLS to that task's ingress; the pod's own TF
server binds `cluster.tfPort` (ServerDef.port) behind the pod's ingress. */}}

{{/* The job's tasks, as JSON (read back with fromJsonArray; numbers come back as
     float64, so `int` them): role, index, id (role-index), port (its loopback port),
     adminPort (its egress's admin listener), ingress (its tfgate's address). */}}
{{- define "tfgate.clusterTasks" -}}
{{- $v := .Values -}}
{{- $c := $v.cluster -}}
{{- $name := include "tfgate.fullname" . -}}
{{- $out := list -}}
{{- $k := 0 -}}
{{- range $c.tasks -}}
{{- $role := .name -}}
{{- range $i := until (int .replicas) -}}
{{- $ingress := printf "%s-%s-%d.%s-%s.%s.svc:%d" $name $role $i $name $role $.Release.Namespace (int $v.port) -}}
{{- $out = append $out (dict "role" $role "index" $i "id" (printf "%s-%d" $role $i)
    "port" (add (int $c.localPortBase) $k) "adminPort" (add (int $c.egress.adminPortBase) $k)
    "ingress" $ingress) -}}
{{- $k = add1 $k -}}
{{- end -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/* The ClusterSpec TF uses, as JSON: role -> the tasks' loopback addresses. */}}
{{- define "tfgate.clusterSpec" -}}
{{- $spec := dict -}}
{{- range (include "tfgate.clusterTasks" . | fromJsonArray) -}}
{{- $_ := set $spec .role (append (get $spec .role | default list) (printf "127.0.0.1:%d" (int .port))) -}}
{{- end -}}
{{- toJson $spec -}}
{{- end -}}

{{/* Every task's tfgate ingress, by role, as JSON (TFGATE_PEERS: not for TF, which
     cannot do TLS; for tools that hold a certificate). */}}
{{- define "tfgate.clusterPeers" -}}
{{- $peers := dict -}}
{{- range (include "tfgate.clusterTasks" . | fromJsonArray) -}}
{{- $_ := set $peers .role (append (get $peers .role | default list) .ingress) -}}
{{- end -}}
{{- toJson $peers -}}
{{- end -}}

{{/* The pod's identity: the SPIFFE ID in the tls Secret's certificate, which the egresses
     take every local caller to be (listen.local_identity). cluster.identity, else the
     first of tls.certManager.uris. */}}
{{- define "tfgate.clusterIdentity" -}}
{{- $cm := .Values.tls.certManager -}}
{{- if .Values.cluster.identity -}}
{{- .Values.cluster.identity -}}
{{- else if and $cm.enabled $cm.uris -}}
{{- first $cm.uris -}}
{{- end -}}
{{- end -}}

{{/* The config's `cluster` section, with `addresses` (what a ClusterDef may name) the
     ClusterSpec's loopback addresses unless config.cluster.addresses is given. */}}
{{- define "tfgate.clusterSection" -}}
{{- $section := get .Values.config "cluster" | default dict | deepCopy -}}
{{- if not (hasKey $section "addresses") -}}
{{- $addresses := list -}}
{{- range (include "tfgate.clusterTasks" . | fromJsonArray) -}}
{{- $addresses = append $addresses (printf "127.0.0.1:%d" (int .port)) -}}
{{- end -}}
{{- $_ := set $section "addresses" $addresses -}}
{{- end -}}
{{- toYaml $section -}}
{{- end -}}

{{/* The ConfigMap key of the egress towards a task. */}}
{{- define "tfgate.egressKey" -}}
{{- printf "egress-%s.yaml" .id -}}
{{- end -}}

{{/* The config of the egress towards one task: (list root task). The values' `config`
     (limits, audit, server, ... as the ingress has them), with a plaintext loopback
     listener on the task's port whose callers are the pod's identity, one upstream (the
     task's ingress, over mTLS with the pod's certificate), cluster.egress.policy (else
     config.policy, the ingress's rules), the admin listener on the egress's own port,
     and cluster.egress.tfgateConfig deep-merged last. */}}
{{- define "tfgate.egressConfig" -}}
{{- $root := index . 0 -}}
{{- $task := index . 1 -}}
{{- $v := $root.Values -}}
{{- $egress := $v.cluster.egress -}}
{{- $c := deepCopy $v.config -}}
{{- $listen := get $c "listen" | default dict -}}
{{- $_ := unset $listen "tls" -}}
{{- $_ := set $listen "address" (printf "127.0.0.1:%d" (int $task.port)) -}}
{{- $_ := set $listen "plaintext" true -}}
{{- $_ := set $listen "local_identity" (include "tfgate.clusterIdentity" $root) -}}
{{- $_ := set $c "listen" $listen -}}
{{- $tls := dict "ca" "/etc/tfgate/client-ca/ca.crt" "cert" "/etc/tfgate/tls/tls.crt" "key" "/etc/tfgate/tls/tls.key" -}}
{{- $_ := set $c "upstreams" (dict $task.id (dict "kind" "cluster" "address" $task.ingress "tls" $tls)) -}}
{{- if not (kindIs "invalid" $egress.policy) -}}
{{- $_ := set $c "policy" (deepCopy $egress.policy) -}}
{{- end -}}
{{- $_ := set $c "cluster" (include "tfgate.clusterSection" $root | fromYaml) -}}
{{- if $v.admin.enabled -}}
{{- $admin := get $c "admin" | default dict -}}
{{- $_ := set $admin "address" (printf "0.0.0.0:%d" (int $task.adminPort)) -}}
{{- $_ := set $admin "enabled" true -}}
{{- $_ := set $admin "allow_non_loopback" true -}}
{{- $_ := set $c "admin" $admin -}}
{{- end -}}
{{- $c = mergeOverwrite $c (deepCopy $egress.tfgateConfig) -}}
{{- toYaml $c -}}
{{- end -}}

{{/* The tasks a pod of role `role` has an egress for: every task of the job, except the
     pod itself where that is known (a role of one replica). A role's pods share one
     StatefulSet template, so a pod of a larger role also has one for its own task; it
     stays idle (the pod's own TF server binds tfPort, and TF calls itself in-process).
     (list root role) -> JSON list of tasks. */}}
{{- define "tfgate.egressTasks" -}}
{{- $root := index . 0 -}}
{{- $role := index . 1 -}}
{{- $replicas := 0 -}}
{{- range $root.Values.cluster.tasks -}}
{{- if eq .name $role -}}{{- $replicas = int .replicas -}}{{- end -}}
{{- end -}}
{{- $out := list -}}
{{- range (include "tfgate.clusterTasks" $root | fromJsonArray) -}}
{{- if not (and (eq .role $role) (eq $replicas 1)) -}}
{{- $out = append $out . -}}
{{- end -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/* Cluster mode's checks: the identity, mTLS, and one port per listener in a pod. */}}
{{- define "tfgate.validateCluster" -}}
{{- $v := .Values -}}
{{- $c := $v.cluster -}}
{{- if not (include "tfgate.clusterIdentity" .) -}}
{{- fail "cluster.identity: required in cluster mode: the SPIFFE ID in the tls Secret's certificate (the egress sidecars' listen.local_identity), or set tls.certManager.uris" -}}
{{- end -}}
{{- if gt (int (default 1 $v.workers)) 1 -}}
{{- fail "workers: a cluster upstream is served by one process (handle ownership lives in its memory); leave workers null in cluster mode" -}}
{{- end -}}
{{- if eq (include "tfgate.clientAuth" .) "none" -}}
{{- fail "cluster mode needs config.listen.tls.client_auth: require (TF sends no tokens: tasks authenticate by certificate)" -}}
{{- end -}}
{{- $tasks := include "tfgate.clusterTasks" . | fromJsonArray -}}
{{- $ports := list (list (int $v.port) "port (the ingress)") (list (int $c.tfPort) "cluster.tfPort (the TF server)") -}}
{{- if $v.admin.enabled -}}
{{- $ports = append $ports (list (int $v.admin.port) "admin.port") -}}
{{- end -}}
{{- range $tasks -}}
{{- $ports = append $ports (list (int .port) (printf "cluster.localPortBase+k (task %s's ClusterSpec port)" .id)) -}}
{{- if $v.admin.enabled -}}
{{- $ports = append $ports (list (int .adminPort) (printf "cluster.egress.adminPortBase+k (the admin port of the egress to %s)" .id)) -}}
{{- end -}}
{{- end -}}
{{- $seen := dict -}}
{{- range $ports -}}
{{- $port := index . 0 | toString -}}
{{- if gt (index . 0 | int) 65535 -}}
{{- fail (printf "cluster: %s is port %s, past 65535" (index . 1) $port) -}}
{{- end -}}
{{- if hasKey $seen $port -}}
{{- fail (printf "cluster: port %s is taken twice in a task pod: %s and %s" $port (get $seen $port) (index . 1)) -}}
{{- end -}}
{{- $_ := set $seen $port (index . 1) -}}
{{- end -}}
{{- end -}}
