//! The control link, agent side: dial the controller with mutual TLS, say
//! hello, then persist-and-ack every desired state, send the outbox in
//! order, heartbeat, and start over with exponential backoff and jitter
//! whenever the connection ends. While the controller is unreachable the
//! runtime keeps running what it has.

use crate::enroll::{client_endpoint, describe_connection_error, resolve};
use crate::identity::Identity;
use crate::state::AgentStore;
use backoff::backoff::Backoff;
use flotilla_common::wire::messages::{AgentMessage, ControllerMessage, DesiredState, Hello};
use flotilla_common::wire::parts::{Assembler, Outcome, Piece};
use flotilla_common::wire::{codes, frame, handshake, CONTROLLER_NAME, PROTOCOL_VERSION};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch, Notify};

/// Most reports sent in one message.
const BATCH: usize = 256;
const STEP_TIMEOUT: Duration = Duration::from_secs(15);
/// A session that lasted this long resets the backoff.
const STABLE: Duration = Duration::from_secs(30);

/// Settings of the link.
#[derive(Debug, Clone)]
pub struct LinkSettings {
    pub max_frame: usize,
    pub keep_alive: Duration,
    pub idle_timeout: Duration,
    pub gso: bool,
    pub labels: BTreeMap<String, String>,
    /// Directory whose disk the facts report.
    pub data_dir: PathBuf,
    /// Longest wait between reconnect attempts.
    pub max_backoff: Duration,
}

/// Everything the link shares with the rest of the agent.
pub struct Link {
    pub identity: Identity,
    pub store: AgentStore,
    pub settings: LinkSettings,
    /// New desired states go to the runtime through this.
    pub desired: watch::Sender<Arc<DesiredState>>,
    /// Signalled when the outbox has something new.
    pub outbox: Arc<Notify>,
    /// Operator commands and log requests go to the runtime through this.
    pub commands: mpsc::Sender<crate::runtime::RuntimeCommand>,
    /// True while a session is up (the spot fallback reads it).
    pub connected: watch::Sender<bool>,
}

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("{0}")]
    Connect(String),
    #[error("connection lost: {0}")]
    Lost(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("agent store failure: {0}")]
    Store(#[from] crate::state::StateError),
}

fn backoff(max: Duration) -> backoff::ExponentialBackoff {
    backoff::ExponentialBackoff {
        current_interval: Duration::from_millis(200),
        initial_interval: Duration::from_millis(200),
        randomization_factor: 0.5,
        multiplier: 2.0,
        max_interval: max,
        max_elapsed_time: None,
        ..Default::default()
    }
}

impl Link {
    /// Runs sessions until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut delay = backoff(self.settings.max_backoff);
        let mut endpoint: Option<quinn::Endpoint> = None;
        while !*shutdown.borrow() {
            let started = Instant::now();
            let result = tokio::select! {
                result = self.session(&mut endpoint) => result,
                _ = shutdown.wait_for(|stop| *stop) => break,
            };
            match result {
                Ok(()) => tracing::info!("controller closed the session"),
                Err(err) => tracing::warn!(error = %err, "fleet link down"),
            }
            if started.elapsed() > STABLE {
                delay.reset();
            }
            let wait = delay.next_backoff().unwrap_or(self.settings.max_backoff);
            tracing::debug!(wait_ms = wait.as_millis() as u64, "reconnecting");
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = shutdown.wait_for(|stop| *stop) => break,
            }
        }
        if let Some(endpoint) = endpoint {
            endpoint.close(codes::CLOSED, b"agent stopping");
            let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
        }
    }

    /// One session: connect, hello, then serve until the connection ends.
    async fn session(&self, endpoint: &mut Option<quinn::Endpoint>) -> Result<(), SessionError> {
        let controller = &self.identity.enrollment.controller;
        let addr = resolve(controller)
            .await
            .map_err(|err| SessionError::Connect(err.to_string()))?;
        if endpoint.is_none() {
            *endpoint =
                Some(client_endpoint(addr).map_err(|err| SessionError::Connect(err.to_string()))?);
        }
        let Some(endpoint) = endpoint.as_ref() else {
            return Err(SessionError::Connect("no endpoint".into()));
        };
        let config = crate::tls::control_config(
            &self.identity,
            self.settings.keep_alive,
            self.settings.idle_timeout,
            self.settings.gso,
        )
        .map_err(|err| SessionError::Connect(err.to_string()))?;
        let connecting = endpoint
            .connect_with(config, addr, CONTROLLER_NAME)
            .map_err(|err| SessionError::Connect(err.to_string()))?;
        let connection = tokio::time::timeout(STEP_TIMEOUT, connecting)
            .await
            .map_err(|_| SessionError::Connect(format!("{controller}: timed out")))?
            .map_err(|err| {
                SessionError::Connect(format!("{controller}: {}", describe_connection_error(&err)))
            })?;
        let result = self.serve(&connection).await;
        self.connected.send_replace(false);
        if let Some(reason) = connection.close_reason() {
            return Err(SessionError::Lost(describe_connection_error(&reason)));
        }
        connection.close(codes::CLOSED, b"session over");
        result
    }

    async fn serve(&self, connection: &quinn::Connection) -> Result<(), SessionError> {
        let lost =
            |err: quinn::ConnectionError| SessionError::Lost(describe_connection_error(&err));
        let (mut send, mut recv) = connection.open_bi().await.map_err(lost)?;
        handshake::send(&mut send, PROTOCOL_VERSION)
            .await
            .map_err(|err| SessionError::Protocol(err.to_string()))?;
        let max = self.settings.max_frame;
        let generation = self.store.desired()?.map_or(0, |d| d.generation);
        let hello = AgentMessage::Hello(Hello {
            agent_version: crate::facts::AGENT_VERSION.into(),
            labels: self.settings.labels.clone(),
            generation,
            facts: crate::facts::collect(&self.settings.data_dir),
        });
        frame::write(&mut send, &hello, max)
            .await
            .map_err(|err| SessionError::Protocol(err.to_string()))?;
        let peer = tokio::time::timeout(
            STEP_TIMEOUT,
            handshake::receive(&mut recv, PROTOCOL_VERSION),
        )
        .await
        .map_err(|_| SessionError::Protocol("no handshake from the controller".into()))?;
        if let Err(err) = peer {
            return Err(match connection.close_reason() {
                Some(reason) => lost(reason),
                None => SessionError::Protocol(err.to_string()),
            });
        }
        let welcome = match tokio::time::timeout(
            STEP_TIMEOUT,
            frame::read::<_, ControllerMessage>(&mut recv, max),
        )
        .await
        {
            Ok(Ok(Some(ControllerMessage::Welcome(welcome)))) => welcome,
            Ok(Err(err)) => return Err(SessionError::Protocol(err.to_string())),
            _ => {
                return Err(SessionError::Protocol(
                    "no welcome from the controller".into(),
                ))
            }
        };
        self.store.ack(welcome.acked_seq)?;
        self.store.ack_lifecycle(welcome.acked_lifecycle)?;
        self.store.put_api_url(welcome.api_url.as_deref())?;
        if !welcome.agent_token.is_empty() {
            let path = crate::identity::rest_token_path(&self.settings.data_dir);
            if let Err(err) = crate::identity::write_private(&path, welcome.agent_token.as_bytes())
            {
                tracing::warn!(path = %path.display(), error = %err, "cannot keep the REST token; the REST fallback will not work");
            }
        }
        self.connected.send_replace(true);
        tracing::info!(agent_id = %welcome.agent_id, generation, outbox = self.store.outbox_len(), "connected to the controller");

        // Reading is not cancel-safe, so it runs in its own task.
        let (incoming_tx, mut incoming) = mpsc::channel::<Result<ControllerMessage, String>>(16);
        let reader = tokio::spawn(async move {
            loop {
                let message = frame::read::<_, ControllerMessage>(&mut recv, max).await;
                let end = !matches!(message, Ok(Some(_)));
                let item = match message {
                    Ok(Some(message)) => Ok(message),
                    Ok(None) => Err("the controller ended the stream".to_owned()),
                    Err(err) => Err(err.to_string()),
                };
                if incoming_tx.send(item).await.is_err() || end {
                    return;
                }
            }
        });
        let logs = tokio::spawn(serve_logs(connection.clone(), self.commands.clone()));
        let result = self
            .exchange(connection, &mut send, &mut incoming, welcome.heartbeat_secs)
            .await;
        reader.abort();
        logs.abort();
        result
    }

    /// Takes one piece of a desired state; a whole generation is handed to
    /// the runtime, persisted and acked once; a refused one is said so,
    /// and the agent keeps running what it has.
    async fn assemble(
        &self,
        send: &mut quinn::SendStream,
        assembler: &mut Assembler,
        piece: Piece,
    ) -> Result<(), SessionError> {
        let max = self.settings.max_frame;
        let protocol = |err: frame::FrameError| SessionError::Protocol(err.to_string());
        match assembler.step(piece) {
            Outcome::Started {
                dropped: Some(dropped),
            } => tracing::info!(
                dropped,
                "an unfinished desired state was overtaken; dropped"
            ),
            Outcome::Started { dropped: None } | Outcome::Pending | Outcome::Ignored => {}
            Outcome::Complete(desired) => {
                let generation = desired.generation;
                let desired = Arc::new(desired);
                // The runtime may start at once; the ack waits until the
                // state is on disk.
                self.desired.send_replace(desired.clone());
                self.store.put_desired(&desired).await?;
                frame::write(send, &AgentMessage::Ack { generation }, max)
                    .await
                    .map_err(protocol)?;
                tracing::info!(
                    generation,
                    placements = desired.placements.len(),
                    "desired state applied"
                );
            }
            Outcome::Refused(error) => {
                let generation = error.generation();
                tracing::error!(generation, error = %error, "desired state refused; keeping the current one");
                let refusal = AgentMessage::DesiredRefused {
                    generation,
                    reason: error.to_string(),
                };
                frame::write(send, &refusal, max).await.map_err(protocol)?;
            }
        }
        Ok(())
    }

    async fn exchange(
        &self,
        connection: &quinn::Connection,
        send: &mut quinn::SendStream,
        incoming: &mut mpsc::Receiver<Result<ControllerMessage, String>>,
        heartbeat_secs: u32,
    ) -> Result<(), SessionError> {
        let max = self.settings.max_frame;
        let protocol = |err: frame::FrameError| SessionError::Protocol(err.to_string());
        let mut heartbeat =
            tokio::time::interval(Duration::from_secs(u64::from(heartbeat_secs.max(1))));
        heartbeat.tick().await;
        let mut sent_up_to = 0u64;
        let mut lifecycle_sent = 0u64;
        // Per session: a generation cut short by the connection is dropped.
        let mut assembler = Assembler::default();
        loop {
            // Send whatever the outbox holds beyond what is in flight.
            loop {
                let batch = self.store.pending(sent_up_to, BATCH)?;
                let Some(last) = batch.last().map(|r| r.seq) else {
                    break;
                };
                frame::write(send, &AgentMessage::Status(batch), max)
                    .await
                    .map_err(protocol)?;
                sent_up_to = last;
            }
            // Then lifecycle reports: a drain's `drained` after the
            // `terminated` reports it caused.
            for report in self.store.pending_lifecycle(lifecycle_sent)? {
                let id = report.id;
                frame::write(send, &AgentMessage::Lifecycle(report), max)
                    .await
                    .map_err(protocol)?;
                lifecycle_sent = id;
            }
            tokio::select! {
                message = incoming.recv() => {
                    let message = match message {
                        Some(Ok(message)) => message,
                        Some(Err(err)) => {
                            return Err(match connection.close_reason() {
                                Some(reason) => SessionError::Lost(describe_connection_error(&reason)),
                                None => SessionError::Protocol(err),
                            });
                        }
                        None => return Err(SessionError::Protocol("reader stopped".into())),
                    };
                    match message {
                        ControllerMessage::DesiredBegin(header) => {
                            self.assemble(send, &mut assembler, Piece::Begin(header)).await?;
                        }
                        ControllerMessage::DesiredPart(part) => {
                            self.assemble(send, &mut assembler, Piece::Part(part)).await?;
                        }
                        ControllerMessage::DesiredEnd { generation } => {
                            self.assemble(send, &mut assembler, Piece::End { generation }).await?;
                        }
                        ControllerMessage::StatusAck { seq } => {
                            let removed = self.store.ack(seq)?;
                            tracing::debug!(seq, removed, "reports acknowledged");
                        }
                        ControllerMessage::LifecycleAck { id } => {
                            let removed = self.store.ack_lifecycle(id)?;
                            tracing::debug!(id, removed, "lifecycle report acknowledged");
                        }
                        ControllerMessage::Welcome(_) => {
                            return Err(SessionError::Protocol("welcome sent twice".into()));
                        }
                        ControllerMessage::Command(command) => {
                            tracing::info!(stack_id = %command.stack_id, flag = ?command.flag, action = ?command.action, "operator command");
                            let _ = self.commands.send(crate::runtime::RuntimeCommand::Act(command)).await;
                        }
                    }
                }
                () = self.outbox.notified() => {}
                _ = heartbeat.tick() => {
                    let facts = crate::facts::collect(&self.settings.data_dir);
                    frame::write(send, &AgentMessage::Heartbeat(facts), max).await.map_err(protocol)?;
                }
            }
        }
    }
}

/// Largest log request accepted.
const MAX_LOGS_REQUEST: usize = 16 * 1024;

/// Serves the log streams the controller opens on this connection.
async fn serve_logs(
    connection: quinn::Connection,
    commands: mpsc::Sender<crate::runtime::RuntimeCommand>,
) {
    while let Ok((send, recv)) = connection.accept_bi().await {
        tokio::spawn(log_stream(send, recv, commands.clone()));
    }
}

/// One log stream: read the request, forward the runtime's output as
/// frames until it ends or the controller resets the stream.
async fn log_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    commands: mpsc::Sender<crate::runtime::RuntimeCommand>,
) {
    use flotilla_common::wire::messages::{LogsFrame, LogsRequest};
    let request = match frame::read::<_, LogsRequest>(&mut recv, MAX_LOGS_REQUEST).await {
        Ok(Some(request)) => request,
        _ => return,
    };
    // First an empty chunk: the controller answers its caller only once
    // the agent has taken the request.
    if frame::write(&mut send, &LogsFrame::Chunk(Vec::new()), 1 << 20)
        .await
        .is_err()
    {
        return;
    }
    let (sink, mut output) = mpsc::channel(16);
    if commands
        .send(crate::runtime::RuntimeCommand::Logs { request, sink })
        .await
        .is_err()
    {
        return;
    }
    // The controller's reader going away (its request was abandoned: the
    // stream is stopped or reset) ends the stream at once, even while a
    // follow has nothing to send, so the stream is freed.
    let reader_gone = send.stopped();
    tokio::pin!(reader_gone);
    let end = loop {
        let next = tokio::select! {
            next = output.recv() => next,
            _ = &mut reader_gone => {
                tracing::debug!("log reader gone; stream freed");
                return;
            }
        };
        match next {
            Some(Ok(chunk)) => {
                if frame::write(&mut send, &LogsFrame::Chunk(chunk), 1 << 20)
                    .await
                    .is_err()
                {
                    // The controller went away: dropping `output` stops the runtime's stream.
                    return;
                }
            }
            Some(Err(error)) => break LogsFrame::End { error: Some(error) },
            None => break LogsFrame::End { error: None },
        }
    };
    let _ = frame::write(&mut send, &end, 1 << 20).await;
    let _ = send.finish();
}
