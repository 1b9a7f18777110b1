//! A connection's large sends: the content streamed into the store's sink as it arrives,
//! then made durable by the `content-sync` worker before its message is stored and its reply
//! staged; no later request of the connection is served before that reply.

use std::net::SocketAddr;

use super::{Connection, State, REQUESTS_PER_TURN};
use crate::handlers::{HandlerError, Response};
use crate::metrics::ErrorCause;
use crate::protocol::{RequestCode, RequestHeader, SendHead};
use crate::server::env::Env;
use crate::server::sync::Synced;
use crate::store::ContentSink;

/// A large send whose content is arriving.
pub(super) struct InboundUpload {
    pub(super) header: RequestHeader,
    pub(super) code: RequestCode,
    pub(super) head: SendHead,
    /// Where the content goes: the store's sink, or nowhere for a refused request, which is
    /// answered with 9000 once its content has passed, keeping the stream in step.
    pub(super) sink: Result<ContentSink, HandlerError>,
}

impl InboundUpload {
    /// Writes content bytes to the sink. Each `writeback_step` bytes, what has arrived starts
    /// going to the disk while the rest arrives.
    pub(super) fn write(&mut self, bytes: &[u8], writeback_step: u64, peer: SocketAddr) {
        if let Ok(sink) = &mut self.sink {
            match sink.write(bytes) {
                Ok(()) => sink.write_back_early(writeback_step),
                Err(error) => {
                    log::warn!("{peer}: cannot write an uploaded content: {error}");
                    self.sink = Err(HandlerError::Upload(error));
                }
            }
        }
    }
}

/// A whole uploaded content being made durable; no later request of the connection is
/// served before its reply.
pub(super) struct Syncing {
    pub(super) header: RequestHeader,
    pub(super) code: RequestCode,
    pub(super) head: SendHead,
    pub(super) padded: bool,
}

impl Connection {
    pub(super) fn write_upload(&mut self, content: &[u8], env: &mut Env<'_>) {
        if let (Some(upload), false) = (self.upload.as_mut(), content.is_empty()) {
            let writeback_step = env.core.pacer.writeback_step(env.now);
            upload.write(content, writeback_step, self.peer);
        }
    }

    /// Checks a large send from its head and begins its content in the store. A refusal that
    /// cannot wait for the content (no space) closes the connection.
    pub(super) fn start_upload(
        &mut self,
        header: RequestHeader,
        code: RequestCode,
        head: SendHead,
        env: &mut Env<'_>,
    ) {
        let sink = env.start_upload(code, &header, &head);
        if let Err(error) = &sink {
            log::warn!(
                "{}: {}-byte upload refused: {error}",
                self.peer,
                head.content_len
            );
            if error.closes_connection() {
                self.close_with_error(env);
                return;
            }
        }
        self.upload = Some(InboundUpload {
            header,
            code,
            head,
            sink,
        });
    }

    /// Hands a whole upload's content to the sync worker; its reply is staged when the
    /// content is durable.
    pub(super) fn sync_upload(&mut self, sink: ContentSink, syncing: Syncing, env: &mut Env<'_>) {
        match env.core.syncer.sync(self.key, self.serial, sink) {
            Ok(()) => self.syncing = Some(syncing),
            Err(error) => {
                log::error!("{}: cannot start a sync thread: {error}", self.peer);
                self.stage(Response::error(), syncing.padded, env);
            }
        }
    }

    /// An upload's content is durable (or failed to become so): stores its message, stages
    /// the reply, and goes on with the requests that followed it.
    pub fn on_synced(&mut self, synced: Synced, env: &mut Env<'_>) {
        let Some(syncing) = self.syncing.take() else {
            return;
        };
        let response = match synced.content {
            Ok(content) => env.finish_upload(
                syncing.code,
                &syncing.header,
                &syncing.head,
                content,
                self.peer,
            ),
            Err(error) => {
                log::error!("{}: cannot make an upload durable: {error}", self.peer);
                env.count_error(ErrorCause::Upload);
                Response::error()
            }
        };
        self.stage(response, syncing.padded, env);
        if self.state == State::Open {
            self.requests_left = REQUESTS_PER_TURN;
            if self.peer_closed {
                self.on_peer_closed(env);
            } else {
                self.process(env);
            }
        }
    }
}
