//! Which cloud this VM runs on, and what its metadata service says about
//! the instance (id, type, spot or on-demand), for the agent's labels and
//! its default instance id.
//!
//! Detection asks each service a question only it answers (an IMDSv2
//! token, GCP's instance id with `Metadata-Flavor: Google`, Azure's compute
//! document with `Metadata: true`), all at once with a short time-out, so
//! a machine on no cloud starts at most that time-out later.

use super::{http, Cloud};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// What the metadata service told about this instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceFacts {
    pub instance_id: Option<String>,
    pub instance_type: Option<String>,
    /// `spot` or `on-demand`.
    pub lifecycle: Option<String>,
}

impl InstanceFacts {
    /// The labels these facts give (`cloud`, `instance_type`, `lifecycle`).
    pub fn labels(&self, cloud: Cloud) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::from([("cloud".to_owned(), cloud.name().to_owned())]);
        if let Some(t) = &self.instance_type {
            labels.insert("instance_type".into(), t.clone());
        }
        if let Some(l) = &self.lifecycle {
            labels.insert("lifecycle".into(), l.clone());
        }
        labels
    }
}

const AZURE_COMPUTE: &str = "/metadata/instance/compute?api-version=2021-02-01";

/// The cloud whose metadata service answers at `base` (each cloud's own
/// address when `None`), or `None`.
pub async fn detect(base: Option<&str>, timeout: Duration) -> Option<Cloud> {
    let probe = |cloud: Cloud| async move {
        let base = base.unwrap_or(cloud.default_base());
        let answered = match cloud {
            Cloud::Aws => aws_token(base, timeout).await.is_some(),
            Cloud::Gcp => http::request(
                base,
                "GET",
                "/computeMetadata/v1/instance/id",
                &[("Metadata-Flavor", "Google")],
                timeout,
            )
            .await
            .is_ok_and(|a| a.status == 200),
            Cloud::Azure => {
                http::request(base, "GET", AZURE_COMPUTE, &[("Metadata", "true")], timeout)
                    .await
                    .is_ok_and(|a| a.status == 200)
            }
        };
        answered.then_some(cloud)
    };
    let (aws, gcp, azure) = tokio::join!(probe(Cloud::Aws), probe(Cloud::Gcp), probe(Cloud::Azure));
    aws.or(gcp).or(azure)
}

async fn aws_token(base: &str, timeout: Duration) -> Option<String> {
    let answer = http::request(
        base,
        "PUT",
        "/latest/api/token",
        &[("X-aws-ec2-metadata-token-ttl-seconds", "300")],
        timeout,
    )
    .await
    .ok()?;
    (answer.status == 200).then(|| answer.body_text().trim().to_owned())
}

async fn text(
    base: &str,
    path: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Option<String> {
    let answer = http::request(base, "GET", path, headers, timeout)
        .await
        .ok()?;
    let value = answer.body_text().trim().to_owned();
    (answer.status == 200 && !value.is_empty() && value.len() <= 256).then_some(value)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AzureCompute {
    vm_id: Option<String>,
    vm_size: Option<String>,
    priority: Option<String>,
}

/// Asks the cloud's metadata service about this instance; what it does
/// not answer stays `None`.
pub async fn instance_facts(cloud: Cloud, base: &str, timeout: Duration) -> InstanceFacts {
    match cloud {
        Cloud::Aws => {
            let Some(token) = aws_token(base, timeout).await else {
                return InstanceFacts::default();
            };
            let headers = [("X-aws-ec2-metadata-token", token.as_str())];
            let (id, kind, lifecycle) = tokio::join!(
                text(base, "/latest/meta-data/instance-id", &headers, timeout),
                text(base, "/latest/meta-data/instance-type", &headers, timeout),
                text(
                    base,
                    "/latest/meta-data/instance-life-cycle",
                    &headers,
                    timeout
                ),
            );
            InstanceFacts {
                instance_id: id,
                instance_type: kind,
                lifecycle: lifecycle.map(|l| if l == "spot" { l } else { "on-demand".into() }),
            }
        }
        Cloud::Gcp => {
            let headers = [("Metadata-Flavor", "Google")];
            let (id, machine, model) = tokio::join!(
                text(base, "/computeMetadata/v1/instance/id", &headers, timeout),
                text(
                    base,
                    "/computeMetadata/v1/instance/machine-type",
                    &headers,
                    timeout
                ),
                text(
                    base,
                    "/computeMetadata/v1/instance/scheduling/provisioning-model",
                    &headers,
                    timeout
                ),
            );
            let preemptible = match model {
                Some(model) => Some(model),
                None => text(
                    base,
                    "/computeMetadata/v1/instance/scheduling/preemptible",
                    &headers,
                    timeout,
                )
                .await
                .map(|p| if p == "TRUE" { "SPOT".into() } else { p }),
            };
            InstanceFacts {
                instance_id: id,
                // `projects/123/machineTypes/e2-small` → `e2-small`.
                instance_type: machine.map(|m| m.rsplit('/').next().unwrap_or(&m).to_owned()),
                lifecycle: preemptible.map(|m| {
                    if m == "SPOT" || m == "PREEMPTIBLE" {
                        "spot".into()
                    } else {
                        "on-demand".into()
                    }
                }),
            }
        }
        Cloud::Azure => {
            let answer =
                http::request(base, "GET", AZURE_COMPUTE, &[("Metadata", "true")], timeout).await;
            let compute: Option<AzureCompute> = answer
                .ok()
                .filter(|a| a.status == 200)
                .and_then(|a| serde_json::from_slice(&a.body).ok());
            let Some(compute) = compute else {
                return InstanceFacts::default();
            };
            InstanceFacts {
                instance_id: compute.vm_id,
                instance_type: compute.vm_size,
                lifecycle: compute.priority.map(|p| {
                    if p.eq_ignore_ascii_case("spot") || p.eq_ignore_ascii_case("low") {
                        "spot".into()
                    } else {
                        "on-demand".into()
                    }
                }),
            }
        }
    }
}
