//! Which image a container may start from, and which images a clean-up
//! may remove. A configuration with registry credentials starts only after
//! those credentials worked on this agent: a pull, or a manifest check at
//! the registry when the image is cached. An image that is here only
//! because some stack pulled it with credentials is never handed to a stack
//! without them: that stack pulls it itself, which fails unless the
//! registry serves it to anyone. Prune removes only references the agent
//! pulled, once unused for the configured age.

use super::super::spec::{ContainerSpec, PullPolicy};
use super::engine;
use crate::state::images::{ImageUse, PulledImage};
use crate::state::AgentStore;
use bollard::Docker;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// One lock per image repository: deciding whether to pull, pulling and
/// recording who pulled (with whose credentials) happen under it, so a
/// stack without credentials never looks at an image between another
/// stack's credentialed pull and its record.
#[derive(Debug, Default)]
pub struct ImageLocks(std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl ImageLocks {
    /// Waits for the lock of `image`'s repository (any tag or digest).
    pub async fn lock(&self, image: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self
                .0
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            locks
                .entry(repository(image).to_owned())
                .or_default()
                .clone()
        };
        lock.lock_owned().await
    }
}

/// The repository of an image reference: without its digest or tag.
pub fn repository(image: &str) -> &str {
    let name = image.split('@').next().unwrap_or(image);
    match name.rfind(':') {
        Some(colon) if colon > name.rfind('/').unwrap_or(0) => &name[..colon],
        _ => name,
    }
}

/// What to do before creating a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageStep {
    /// Start from the local copy.
    Use,
    /// Pull (with the configuration's credentials, if any).
    Pull,
    /// Check the manifest at the registry with the configuration's
    /// credentials, then start from the local copy.
    Verify,
}

/// What the decision looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageFacts {
    /// The reference resolves to a local image.
    pub present: bool,
    /// `pull_policy: always`.
    pub pull_always: bool,
    /// The configuration gives registry credentials.
    pub has_credentials: bool,
    /// The local image is here only because some stack pulled it with
    /// credentials.
    pub credentialed_only: bool,
    /// The reference is a tag of the local image that the agent did not
    /// pull (an operator's own build or tag).
    pub tagged_outside: bool,
    /// The local image came from the reference's registry repository, but
    /// this agent has no record of who pulled it (before the agent kept
    /// records, or by hand): with whose credentials is unknown.
    pub unknown_registry_copy: bool,
}

/// See the module documentation.
pub fn image_step(facts: ImageFacts) -> ImageStep {
    if !facts.present || facts.pull_always {
        ImageStep::Pull
    } else if facts.has_credentials {
        ImageStep::Verify
    } else if facts.unknown_registry_copy || (facts.credentialed_only && !facts.tagged_outside) {
        ImageStep::Pull
    } else {
        ImageStep::Use
    }
}

/// A reference as the engine lists tags: `name` means `name:latest`.
pub fn normalize(reference: &str) -> String {
    let last = reference.rsplit('/').next().unwrap_or(reference);
    if reference.contains('@') || last.contains(':') {
        reference.to_owned()
    } else {
        format!("{reference}:latest")
    }
}

/// Makes `spec.image` usable for `stack_id` (see [`image_step`]) and
/// records what was done; the error is the container's start-failure reason.
pub async fn prepare(
    docker: &Docker,
    store: &AgentStore,
    stack_id: &str,
    spec: &ContainerSpec,
) -> Result<ImageStep, String> {
    let reference = normalize(&spec.image);
    let local = engine::image_info(docker, &spec.image).await?;
    let record = match &local {
        Some(info) => store
            .pulled_image(&info.id)
            .map_err(|err| err.to_string())?,
        None => None,
    };
    let facts = ImageFacts {
        present: local.is_some(),
        pull_always: spec.pull == PullPolicy::Always,
        has_credentials: spec.registry.is_some(),
        credentialed_only: record.as_ref().is_some_and(PulledImage::credentialed_only),
        tagged_outside: local.as_ref().is_some_and(|info| {
            info.tags.contains(&reference)
                && !record
                    .as_ref()
                    .is_some_and(|r| r.references.contains(&reference))
        }),
        unknown_registry_copy: record.is_none()
            && local.as_ref().is_some_and(|info| {
                info.digests
                    .iter()
                    .any(|digest| repository(digest) == repository(&spec.image))
            }),
    };
    let step = image_step(facts);
    match step {
        ImageStep::Pull => engine::pull(docker, spec).await?,
        ImageStep::Verify => engine::verify(docker, spec).await?,
        ImageStep::Use => {}
    }
    let id = match (step, local) {
        (ImageStep::Pull, _) | (_, None) => {
            engine::image_info(docker, &spec.image)
                .await?
                .ok_or_else(|| format!("image {} vanished after the pull", spec.image))?
                .id
        }
        (_, Some(info)) => info.id,
    };
    let used = match step {
        ImageStep::Use => ImageUse::Used,
        ImageStep::Pull | ImageStep::Verify => ImageUse::Fetched {
            reference: &reference,
            credentials_of: spec.registry.as_ref().map(|_| stack_id),
        },
    };
    store
        .note_image(&id, used, flotilla_common::time::now_ms())
        .await
        .map_err(|err| err.to_string())?;
    Ok(step)
}

/// The references of `record` a prune may remove now: unused for `age`
/// and not named by any wanted configuration.
pub fn prunable(
    record: &PulledImage,
    wanted: &HashSet<String>,
    now_ms: i64,
    age: Duration,
) -> Vec<String> {
    let age_ms = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
    let idle = now_ms.saturating_sub(record.last_used_ms) >= age_ms;
    if !idle || record.references.iter().any(|r| wanted.contains(r)) {
        return Vec::new();
    }
    record.references.iter().cloned().collect()
}

/// Removes the unused images the agent pulled (by the references it
/// pulled them as, so an operator's own tag of the same image stays).
/// Images in use by any container, running or not, stay.
pub async fn prune(docker: &Docker, store: &AgentStore, wanted: &HashSet<String>, age: Duration) {
    let records = match store.pulled_images() {
        Ok(records) => records,
        Err(err) => {
            tracing::warn!(error = %err, "reading pulled images failed");
            return;
        }
    };
    let now = flotilla_common::time::now_ms();
    let mut removed = 0usize;
    for mut record in records {
        for reference in prunable(&record, wanted, now, age) {
            match engine::remove_image_reference(docker, &reference, &record.id).await {
                Ok(engine::Removal::Removed) => {
                    removed += 1;
                    record.references.remove(&reference);
                }
                Ok(engine::Removal::Gone) => {
                    record.references.remove(&reference);
                }
                Ok(engine::Removal::InUse) => {}
                Err(err) => {
                    tracing::warn!(image = %reference, error = %err, "image removal failed")
                }
            }
        }
        let keep = (!record.references.is_empty()).then_some(&record);
        if let Err(err) = store.put_pulled_image(&record.id, keep) {
            tracing::warn!(error = %err, "recording pruned images failed");
        }
    }
    tracing::info!(removed, "unused pulled images pruned");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_of_references() {
        for (image, repo) in [
            ("localhost:5000/web:1", "localhost:5000/web"),
            ("localhost:5000/web@sha256:abc", "localhost:5000/web"),
            ("web", "web"),
            ("web:1", "web"),
            ("reg.example/team/app:v2", "reg.example/team/app"),
        ] {
            assert_eq!(repository(image), repo, "{image}");
        }
    }
    use std::collections::BTreeSet;

    #[test]
    fn the_image_step_follows_credentials_and_provenance() {
        let base = ImageFacts {
            present: true,
            pull_always: false,
            has_credentials: false,
            credentialed_only: false,
            tagged_outside: false,
            unknown_registry_copy: false,
        };
        let table = [
            // A registry copy nobody recorded pulling (from before the
            // agent kept records): pulled again without credentials, so a
            // private image cannot be borrowed.
            (
                ImageFacts {
                    unknown_registry_copy: true,
                    ..base
                },
                ImageStep::Pull,
            ),
            (
                ImageFacts {
                    unknown_registry_copy: true,
                    tagged_outside: true,
                    ..base
                },
                ImageStep::Pull,
            ),
            (
                ImageFacts {
                    unknown_registry_copy: true,
                    has_credentials: true,
                    ..base
                },
                ImageStep::Verify,
            ),
            (
                ImageFacts {
                    present: false,
                    ..base
                },
                ImageStep::Pull,
            ),
            (
                ImageFacts {
                    pull_always: true,
                    ..base
                },
                ImageStep::Pull,
            ),
            (
                ImageFacts {
                    has_credentials: true,
                    ..base
                },
                ImageStep::Verify,
            ),
            (
                ImageFacts {
                    has_credentials: true,
                    present: false,
                    ..base
                },
                ImageStep::Pull,
            ),
            (
                ImageFacts {
                    has_credentials: true,
                    credentialed_only: true,
                    ..base
                },
                ImageStep::Verify,
            ),
            // Another stack's credentials brought it here: pull it yourself.
            (
                ImageFacts {
                    credentialed_only: true,
                    ..base
                },
                ImageStep::Pull,
            ),
            // ...unless it is an operator's own tag of it.
            (
                ImageFacts {
                    credentialed_only: true,
                    tagged_outside: true,
                    ..base
                },
                ImageStep::Use,
            ),
            // A local image nobody pulled with credentials.
            (base, ImageStep::Use),
            (
                ImageFacts {
                    tagged_outside: true,
                    ..base
                },
                ImageStep::Use,
            ),
        ];
        for (facts, expected) in table {
            assert_eq!(image_step(facts), expected, "{facts:?}");
        }
    }

    #[test]
    fn references_are_normalised_like_engine_tags() {
        let table = [
            ("nginx", "nginx:latest"),
            ("nginx:1", "nginx:1"),
            (
                "127.0.0.1:5000/private/web",
                "127.0.0.1:5000/private/web:latest",
            ),
            (
                "127.0.0.1:5000/private/web:1",
                "127.0.0.1:5000/private/web:1",
            ),
            ("web@sha256:abc", "web@sha256:abc"),
        ];
        for (reference, expected) in table {
            assert_eq!(normalize(reference), expected);
        }
    }

    #[test]
    fn prune_takes_only_idle_unwanted_pulled_references() {
        let record = PulledImage {
            id: "sha256:a".into(),
            references: BTreeSet::from(["reg/web:1".to_owned(), "reg/web:2".to_owned()]),
            credentialed_stacks: BTreeSet::new(),
            anonymous: true,
            last_used_ms: 1_000,
        };
        let none = HashSet::new();
        let wanted = HashSet::from(["reg/web:2".to_owned()]);
        let hour = Duration::from_secs(3600);
        let table: [(&HashSet<String>, i64, Duration, Vec<&str>); 4] = [
            (
                &none,
                1_000 + 3_600_000,
                hour,
                vec!["reg/web:1", "reg/web:2"],
            ),
            (&none, 1_000 + 3_599_999, hour, vec![]),
            (&wanted, 1_000 + 3_600_000, hour, vec![]),
            (&none, 1_000, Duration::ZERO, vec!["reg/web:1", "reg/web:2"]),
        ];
        for (wanted, now, age, expected) in table {
            assert_eq!(
                prunable(&record, wanted, now, age),
                expected,
                "{now} {age:?}"
            );
        }
    }
}
