//! Autoscaling and disruption budgets.

use serde_json::Value;

use crate::helpers::{OVERLAYS, cluster, of_kind, selector_matches, services, the_gateway};

#[test]
#[ignore = "needs the rendered manifests: make check-k8s"]
fn every_service_scales_on_cpu_between_two_and_more_replicas() {
    for overlay in OVERLAYS {
        let objects = cluster(overlay);
        let mut deployments = services(&objects);
        assert_eq!(deployments.len(), 5, "{overlay}: five service Deployments");
        // The gateway scales the same way: it is as stateless as they are.
        deployments.push(the_gateway(&objects, overlay));
        for deployment in &deployments {
            let id = format!("{overlay}: {}", deployment.id());
            assert!(
                deployment.object["spec"].get("replicas").is_none(),
                "{id} sets replicas, which would fight its autoscaler on every apply"
            );
            for container in deployment.containers() {
                assert!(
                    container["resources"]["requests"]["cpu"].is_string(),
                    "{id}: the HPA's CPU target needs CPU requests"
                );
                assert!(
                    container["resources"]["limits"]["memory"].is_string(),
                    "{id}: memory limit"
                );
            }
            let hpas: Vec<&Value> = of_kind(&objects, "HorizontalPodAutoscaler")
                .into_iter()
                .filter(|h| {
                    let target = &h["spec"]["scaleTargetRef"];
                    target["kind"] == "Deployment"
                        && target["name"] == deployment.name.as_str()
                        && target["apiVersion"] == "apps/v1"
                })
                .collect();
            assert_eq!(hpas.len(), 1, "{id}: exactly one HPA targets it");
            let hpa = hpas[0];
            assert_eq!(hpa["apiVersion"], "autoscaling/v2", "{id}");
            let min = hpa["spec"]["minReplicas"].as_u64().unwrap_or(1);
            let max = hpa["spec"]["maxReplicas"].as_u64().unwrap_or(0);
            assert!(min >= 2 && max > min, "{id}: replicas {min}..{max}");
            let metrics = hpa["spec"]["metrics"].as_array().expect("metrics");
            assert!(
                metrics.iter().any(|m| m["type"] == "Resource"
                    && m["resource"]["name"] == "cpu"
                    && m["resource"]["target"]["type"] == "Utilization"
                    && m["resource"]["target"]["averageUtilization"].is_u64()),
                "{id}: a CPU utilization target"
            );
            for direction in ["scaleUp", "scaleDown"] {
                let behavior = &hpa["spec"]["behavior"][direction];
                assert!(
                    behavior["policies"]
                        .as_array()
                        .is_some_and(|p| !p.is_empty())
                        && behavior["stabilizationWindowSeconds"].is_u64(),
                    "{id}: explicit {direction} behaviour"
                );
            }
            let budgets: Vec<&Value> = of_kind(&objects, "PodDisruptionBudget")
                .into_iter()
                .filter(|pdb| selector_matches(&pdb["spec"]["selector"], &deployment.labels))
                .collect();
            assert_eq!(budgets.len(), 1, "{id}: one PodDisruptionBudget");
            let budget = &budgets[0]["spec"];
            let allows_disruption = budget["maxUnavailable"].as_u64().is_some_and(|n| n >= 1)
                || budget["minAvailable"].as_u64().is_some_and(|n| n < min);
            assert!(
                allows_disruption,
                "{id}: the budget must let a drain proceed at min replicas"
            );
        }
    }
}
