//! A connection's large sends: the content streamed into the store's sink as it arrives,
//! then made durable (by the loop's `content-sync` worker) before its message is stored and its
//! reply staged; no later request of the connection is served before that reply.

use std::io;
use std::net::SocketAddr;

use super::work::{After, Answered};
use super::{Connection, State, REQUESTS_PER_TURN};
use crate::handlers::{HandlerError, Response};
use crate::protocol::{Reason, RequestCode, RequestHeader, SendHead};
use crate::server::outbox::Awaits;
use crate::store::ContentSink;

/// A large send's request: what its message is stored and its reply answered from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LargeSend {
    pub header: RequestHeader,
    pub code: RequestCode,
    pub head: SendHead,
}

/// A large send whose content is arriving.
pub(super) struct InboundUpload {
    pub(super) send: LargeSend,
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
    pub(super) send: LargeSend,
    pub(super) padded: bool,
}

impl Connection {
    pub(super) fn write_upload(&mut self, content: &[u8], writeback_step: u64) {
        if let (Some(upload), false) = (self.upload.as_mut(), content.is_empty()) {
            upload.write(content, writeback_step, self.peer);
        }
    }

    /// Takes the content of the large send of [`super::Work::UploadStart`] into `sink`, its
    /// opened upload or why it was refused. A refusal that cannot wait for the content (no
    /// disk space) closes the connection.
    pub fn upload_opened(
        &mut self,
        send: LargeSend,
        sink: Result<ContentSink, HandlerError>,
    ) -> Answered {
        if let Err(error) = &sink {
            log::warn!(
                "{}: {}-byte upload refused: {error}",
                self.peer,
                send.head.content_len
            );
            if error.closes_connection() {
                return self.close_with_error(error.refusal());
            }
        }
        self.upload = Some(InboundUpload { send, sink });
        Answered::default()
    }

    /// The whole upload of [`super::Work::UploadComplete`] is being made durable, or could
    /// not be handed over (`started` failed), which answers 9000 at once.
    pub fn sync_started(&mut self, started: io::Result<()>) -> Answered {
        let Some(padded) = self.syncing.as_ref().map(|syncing| syncing.padded) else {
            return Answered::default();
        };
        let classified = self.count_request(padded);
        let mut opens_round = false;
        if let Err(error) = started {
            log::error!("{}: cannot start a sync thread: {error}", self.peer);
            self.syncing = None;
            opens_round = self.stage(Response::refused(Reason::Internal), padded, Awaits::Round);
        }
        Answered {
            opens_round,
            classified,
        }
    }

    /// The large send whose content is being made durable, if one is.
    pub fn syncing_send(&self) -> Option<LargeSend> {
        self.syncing.as_ref().map(|syncing| syncing.send)
    }

    /// The syncing upload's message is stored (or failed): stages its reply, and starts a
    /// pass over the requests that followed it.
    pub fn upload_stored(&mut self, response: Response) -> Answered {
        let Some(syncing) = self.syncing.take() else {
            return Answered::default();
        };
        let opens_round = self.stage(response, syncing.padded, Awaits::Round);
        if self.state == State::Open {
            self.requests_left = REQUESTS_PER_TURN;
            if self.peer_closed {
                self.on_peer_closed();
            } else {
                self.start_serving(After::Done);
            }
        }
        Answered {
            opens_round,
            classified: None,
        }
    }
}
