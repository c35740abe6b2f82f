//! Pod security: every pod meets the restricted standard.

use crate::helpers::{NAMESPACE, OVERLAYS, cluster, find, kind, name, workloads};

#[test]
#[ignore = "needs the rendered manifests: make check-k8s"]
fn every_pod_meets_the_restricted_pod_security_standard() {
    for overlay in OVERLAYS {
        let objects = cluster(overlay);
        let namespace = find(&objects, "Namespace", NAMESPACE).expect("the namespace");
        assert_eq!(
            namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "restricted",
            "{overlay}: PSA enforces restricted"
        );
        for object in &objects {
            if kind(object) != "Namespace" {
                let ns = object["metadata"]["namespace"].as_str();
                assert_eq!(
                    ns,
                    Some(NAMESPACE),
                    "{overlay}: {}/{}",
                    kind(object),
                    name(object)
                );
            }
        }
        for workload in workloads(&objects) {
            let id = format!("{overlay}: {}", workload.id());
            let pod = &workload.spec["securityContext"];
            assert_eq!(pod["runAsNonRoot"], true, "{id}: runAsNonRoot");
            assert!(
                pod["runAsUser"].as_u64().is_some_and(|uid| uid > 0),
                "{id}: a non-zero runAsUser"
            );
            assert_eq!(pod["seccompProfile"]["type"], "RuntimeDefault", "{id}");
            assert!(
                workload.spec["hostNetwork"].is_null() && workload.spec["hostPID"].is_null(),
                "{id}: no host namespaces"
            );
            // The volume types the restricted profile allows.
            let allowed = [
                "name",
                "configMap",
                "emptyDir",
                "persistentVolumeClaim",
                "secret",
                "projected",
                "downwardAPI",
                "csi",
                "ephemeral",
            ];
            for volume in workload.spec["volumes"]
                .as_array()
                .cloned()
                .unwrap_or_default()
            {
                for key in volume.as_object().map(|v| v.keys()).into_iter().flatten() {
                    assert!(allowed.contains(&key.as_str()), "{id}: a {key} volume");
                }
            }
            for container in workload.containers() {
                let security = &container["securityContext"];
                assert_eq!(security["allowPrivilegeEscalation"], false, "{id}");
                assert_eq!(security["readOnlyRootFilesystem"], true, "{id}");
                assert_eq!(
                    security["capabilities"]["drop"],
                    serde_json::json!(["ALL"]),
                    "{id}"
                );
                assert!(
                    security["capabilities"]["add"].is_null(),
                    "{id}: no capability added"
                );
                assert!(security["privileged"] != true, "{id}: not privileged");
                assert!(
                    security["runAsUser"] != 0 && security["runAsNonRoot"] != false,
                    "{id}: a container must not switch back to root"
                );
            }
        }
    }
}
