//! Exec and attach sessions, whatever the transport: the client's input goes to the shim,
//! the process's output to the client, and at the end the outcome goes on the error
//! channel.

use std::future::Future;
use std::io;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::protocol::{Outcome, TerminalSize, Version, error_channel_message};
use crate::shim::ProcessSession;
use crate::shim_api::process_input::Input;
use crate::shim_api::process_output::Output;
use crate::shim_api::{ProcessOutput, WindowSize};

/// What a client sends, once the transport has unwrapped it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientInput {
    Stdin(Bytes),
    /// The client's stdin ended.
    StdinEnd,
    Resize(TerminalSize),
}

/// Where a session's output goes: the transport's stdout, stderr and error channels.
pub trait OutputSink: Send {
    fn stdout(&mut self, data: Bytes) -> impl Future<Output = io::Result<()>> + Send;
    fn stderr(&mut self, data: Bytes) -> impl Future<Output = io::Result<()>> + Send;
    /// Ends the session: closes the outputs, writes `error` (if any) on the error channel,
    /// then closes the connection.
    fn finish(self, error: Option<Vec<u8>>) -> impl Future<Output = ()> + Send;
    /// Resolves once the client's connection is gone (closed, broken or idle too long).
    fn gone(&self) -> impl Future<Output = ()> + Send + 'static;
}

/// Input messages queued between a transport's reader and the shim.
pub const INPUT_QUEUE: usize = 8;

/// Runs a session to its end. `session` is an exec or attach the shim already started,
/// or the error that kept it from starting.
pub async fn run(
    session: Result<ProcessSession, String>,
    inputs: mpsc::Receiver<ClientInput>,
    mut sink: impl OutputSink,
    version: Version,
) {
    let session = match session {
        Ok(session) => session,
        Err(message) => {
            sink.finish(error_channel_message(version, &Outcome::Failed(message)))
                .await;
            return;
        }
    };
    let ProcessSession { input, mut output } = session;
    let forward = tokio::spawn(forward_input(inputs, input));
    // A quiet process writes nothing that would fail: watch the connection itself.
    let gone = sink.gone();
    tokio::pin!(gone);
    let outcome = loop {
        let next = tokio::select! {
            next = output.message() => next,
            () = &mut gone => {
                // The process goes on without its streams, as with the kubelet.
                forward.abort();
                return;
            }
        };
        let message = match next {
            Ok(Some(ProcessOutput {
                output: Some(message),
            })) => message,
            Ok(Some(ProcessOutput { output: None })) => continue,
            // An attach ends with the process's output.
            Ok(None) => break Outcome::Exited(0),
            Err(status) => break Outcome::Failed(status.message().to_string()),
        };
        let written = match message {
            Output::Stdout(data) => sink.stdout(data).await,
            Output::Stderr(data) => sink.stderr(data).await,
            Output::ExitCode(code) => break Outcome::Exited(code),
            Output::Started(_) => Ok(()),
        };
        if written.is_err() {
            // The client is gone; the process goes on without its streams.
            forward.abort();
            return;
        }
    };
    forward.abort();
    sink.finish(error_channel_message(version, &outcome)).await;
}

async fn forward_input(mut inputs: mpsc::Receiver<ClientInput>, shim: mpsc::Sender<Input>) {
    while let Some(input) = inputs.recv().await {
        let input = match input {
            ClientInput::Stdin(data) => Input::Stdin(data),
            ClientInput::StdinEnd => Input::CloseStdin(true),
            ClientInput::Resize(size) => Input::Resize(WindowSize {
                width: u32::from(size.width),
                height: u32::from(size.height),
            }),
        };
        if shim.send(input).await.is_err() {
            return;
        }
    }
}
