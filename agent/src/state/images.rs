//! Images this agent pulled, by image id: under which references, which
//! stacks proved registry credentials for it, and whether it was ever
//! pulled without any. The runtime decides from this whether a stack
//! without credentials may use a cached image, and image prune removes
//! only what is recorded here.

use super::{AgentStore, StateError};
use std::collections::BTreeSet;

/// What the agent knows of one image it pulled.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PulledImage {
    /// The engine's image id (`sha256:...`).
    pub id: String,
    /// References (normalised, `name:tag`) the agent pulled or checked it as.
    #[serde(default)]
    pub references: BTreeSet<String>,
    /// Stacks whose registry credentials pulled or checked it.
    #[serde(default)]
    pub credentialed_stacks: BTreeSet<String>,
    /// Pulled at least once without credentials (the registry serves it to
    /// anyone).
    #[serde(default)]
    pub anonymous: bool,
    /// When a container last started from it (ms since the epoch).
    #[serde(default)]
    pub last_used_ms: i64,
}

impl PulledImage {
    /// Whether the image is here only because of some stack's credentials.
    pub fn credentialed_only(&self) -> bool {
        !self.credentialed_stacks.is_empty() && !self.anonymous
    }
}

/// How a launch used an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageUse<'a> {
    /// Pulled (or its manifest checked) as `reference`, with the credentials
    /// of `stack` when `Some`.
    Fetched {
        reference: &'a str,
        credentials_of: Option<&'a str>,
    },
    /// Started from the local copy; only refreshes a record that exists.
    Used,
}

fn decode(bytes: &[u8]) -> Result<PulledImage, StateError> {
    serde_json::from_slice(bytes).map_err(|err| StateError::Corrupt(err.to_string()))
}

impl AgentStore {
    /// The record of image `id`, if the agent pulled it.
    pub fn pulled_image(&self, id: &str) -> Result<Option<PulledImage>, StateError> {
        self.images
            .get(id.as_bytes())?
            .map(|bytes| decode(&bytes))
            .transpose()
    }

    /// Records a use of image `id` (flushed: a credentialed pull must be
    /// remembered before a container runs from it).
    pub async fn note_image(
        &self,
        id: &str,
        used: ImageUse<'_>,
        now_ms: i64,
    ) -> Result<(), StateError> {
        let mut failure = None;
        self.images.fetch_and_update(id.as_bytes(), |old| {
            failure = None;
            let existing = match old.map(decode).transpose() {
                Ok(existing) => existing,
                Err(err) => {
                    failure = Some(err);
                    return old.map(<[u8]>::to_vec);
                }
            };
            let mut record = match (&used, existing) {
                (ImageUse::Used, None) => return None,
                (_, Some(record)) => record,
                (ImageUse::Fetched { .. }, None) => PulledImage {
                    id: id.to_owned(),
                    ..Default::default()
                },
            };
            if let ImageUse::Fetched {
                reference,
                credentials_of,
            } = &used
            {
                record.references.insert((*reference).to_owned());
                match credentials_of {
                    Some(stack) => {
                        record.credentialed_stacks.insert((*stack).to_owned());
                    }
                    None => record.anonymous = true,
                }
            }
            record.last_used_ms = record.last_used_ms.max(now_ms);
            match serde_json::to_vec(&record) {
                Ok(bytes) => Some(bytes),
                Err(err) => {
                    failure = Some(StateError::Corrupt(err.to_string()));
                    old.map(<[u8]>::to_vec)
                }
            }
        })?;
        if let Some(err) = failure {
            return Err(err);
        }
        self.commit.flush().await.map_err(StateError::Flush)
    }

    /// Every image the agent pulled.
    pub fn pulled_images(&self) -> Result<Vec<PulledImage>, StateError> {
        self.images.iter().map(|entry| decode(&entry?.1)).collect()
    }

    /// Replaces the record of an image (after prune removed some of its
    /// references), or forgets it when `None`.
    pub fn put_pulled_image(
        &self,
        id: &str,
        record: Option<&PulledImage>,
    ) -> Result<(), StateError> {
        match record {
            Some(record) => {
                let bytes = serde_json::to_vec(record)
                    .map_err(|err| StateError::Corrupt(err.to_string()))?;
                self.images.insert(id.as_bytes(), bytes)?;
            }
            None => {
                self.images.remove(id.as_bytes())?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn uses_accumulate_per_image() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = AgentStore::open(dir.path()).expect("open");
        store
            .note_image("sha256:a", ImageUse::Used, 5)
            .await
            .expect("note");
        assert_eq!(
            store.pulled_image("sha256:a").expect("read"),
            None,
            "never pulled: no record"
        );
        let fetched = |stack| ImageUse::Fetched {
            reference: "reg/web:1",
            credentials_of: stack,
        };
        store
            .note_image("sha256:a", fetched(Some("s1")), 10)
            .await
            .expect("note");
        let record = store
            .pulled_image("sha256:a")
            .expect("read")
            .expect("record");
        assert!(record.credentialed_only());
        assert_eq!(record.references, BTreeSet::from(["reg/web:1".to_owned()]));
        store
            .note_image("sha256:a", ImageUse::Used, 20)
            .await
            .expect("note");
        store
            .note_image("sha256:a", fetched(None), 15)
            .await
            .expect("note");
        let record = store
            .pulled_image("sha256:a")
            .expect("read")
            .expect("record");
        assert!(!record.credentialed_only(), "pulled anonymously too");
        assert_eq!(record.last_used_ms, 20);
        assert_eq!(store.pulled_images().expect("list").len(), 1);
        store.put_pulled_image("sha256:a", None).expect("forget");
        assert!(store.pulled_images().expect("list").is_empty());
    }
}
