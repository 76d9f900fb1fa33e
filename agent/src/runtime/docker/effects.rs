//! What a slot asks of the container engine, as a trait: [`Bollard`] (the
//! Docker engine, through the calls in [`super::engine`]) when the agent
//! runs, an in-memory fake in the slot's unit tests, so the executor's
//! steps are tested without Docker.

use super::engine::{self, Inspected};
use super::images::{self, ImageStep};
use crate::runtime::spec::ContainerSpec;
use crate::state::AgentStore;
use bollard::models::ContainerCreateBody;
use bollard::Docker;
use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

/// The engine calls a slot makes. Errors are sentences for status reasons.
pub trait Engine: Send + Sync + 'static {
    /// A container; `Ok(None)` when it does not exist.
    fn inspect(&self, id: &str) -> impl Future<Output = Result<Option<Inspected>, String>> + Send;
    /// Creates a container; `Ok(None)` when the name is taken.
    fn create(
        &self,
        name: &str,
        body: ContainerCreateBody,
    ) -> impl Future<Output = Result<Option<String>, String>> + Send;
    fn start(&self, id: &str) -> impl Future<Output = Result<(), String>> + Send;
    /// SIGTERM, then SIGKILL after `grace`; a container gone or stopped
    /// already is fine.
    fn stop(&self, id: &str, grace: Duration) -> impl Future<Output = Result<(), String>> + Send;
    /// Removes a container, by force.
    fn remove(&self, id: &str) -> impl Future<Output = Result<(), String>> + Send;
    /// Runs `argv` in the container and waits; its exit code.
    fn exec(&self, id: &str, argv: &[String]) -> impl Future<Output = Result<i64, String>> + Send;
    /// The bridge network `name` (created with `labels` when missing): its id.
    fn ensure_network(
        &self,
        name: &str,
        labels: HashMap<String, String>,
    ) -> impl Future<Output = Result<String, String>> + Send;
    /// Names of the stack's volumes that exist.
    fn stack_volumes(
        &self,
        stack_id: &str,
    ) -> impl Future<Output = Result<Vec<String>, String>> + Send;
    /// A label of a local image.
    fn image_label(&self, image: &str, label: &str) -> impl Future<Output = Option<String>> + Send;
    /// Makes the spec's image usable (pull, registry check or use) and
    /// records it in `store`.
    fn prepare_image(
        &self,
        store: &AgentStore,
        stack_id: &str,
        spec: &ContainerSpec,
    ) -> impl Future<Output = Result<ImageStep, String>> + Send;
}

/// The Docker engine.
#[derive(Clone)]
pub struct Bollard {
    pub docker: Docker,
    /// The shared network whose address an adopted container is found at
    /// first ([`engine::inspect`]).
    pub network: String,
}

impl Engine for Bollard {
    async fn inspect(&self, id: &str) -> Result<Option<Inspected>, String> {
        engine::inspect(&self.docker, id, &self.network).await
    }

    async fn create(
        &self,
        name: &str,
        body: ContainerCreateBody,
    ) -> Result<Option<String>, String> {
        engine::create(&self.docker, name, body).await
    }

    async fn start(&self, id: &str) -> Result<(), String> {
        engine::start(&self.docker, id).await
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<(), String> {
        engine::stop(&self.docker, id, grace).await
    }

    async fn remove(&self, id: &str) -> Result<(), String> {
        engine::remove(&self.docker, id).await
    }

    async fn exec(&self, id: &str, argv: &[String]) -> Result<i64, String> {
        super::probe::exec(&self.docker, id, argv).await
    }

    async fn ensure_network(
        &self,
        name: &str,
        labels: HashMap<String, String>,
    ) -> Result<String, String> {
        engine::ensure_network(&self.docker, name, labels).await
    }

    async fn stack_volumes(&self, stack_id: &str) -> Result<Vec<String>, String> {
        engine::stack_volumes(&self.docker, stack_id).await
    }

    async fn image_label(&self, image: &str, label: &str) -> Option<String> {
        engine::image_label(&self.docker, image, label).await
    }

    async fn prepare_image(
        &self,
        store: &AgentStore,
        stack_id: &str,
        spec: &ContainerSpec,
    ) -> Result<ImageStep, String> {
        images::prepare(&self.docker, store, stack_id, spec).await
    }
}
