//! A connection that receives pushes (protocol §E5) between its replies: every frame is read
//! whole and sorted by its code, pushes kept in arrival order, replies returned to the call
//! that waits for them.

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::time::Duration;

use messageu::protocol::push::{acknowledge_payload, parse_count};
use messageu::protocol::{ClientId, MessageId, Receipt};

use crate::common::{parse_pull, Client, Pulled, Reply, IO_TIMEOUT};

pub const SUBSCRIBE: u16 = 1504;
pub const ACKNOWLEDGE: u16 = 1505;
pub const PUSHED_MESSAGE: u16 = 2600;
pub const PUSHED_RECEIPT: u16 = 2601;

fn is_push(reply: &Reply) -> bool {
    (2600..2700).contains(&reply.code)
}

pub struct Live {
    pub client: Client,
    pushes: VecDeque<Reply>,
}

impl Live {
    pub fn new(client: Client) -> Live {
        Live {
            client,
            pushes: VecDeque::new(),
        }
    }

    /// Sends a request and reads frames until its reply, keeping the pushes met on the way.
    pub fn call(&mut self, caller: ClientId, code: u16, body: &[u8]) -> Reply {
        self.client.send_raw(&crate::common::request_bytes(
            caller,
            code,
            body.len() as u32,
            body,
        ));
        loop {
            let frame = self.client.read_reply();
            if !is_push(&frame) {
                return frame;
            }
            self.pushes.push_back(frame);
        }
    }

    /// Subscribes as `id`; returns how many messages the server says wait.
    pub fn subscribe(&mut self, id: ClientId) -> u32 {
        let reply = self.call(id, SUBSCRIBE, &[]);
        assert_eq!(reply.code, 2504, "subscribe: {reply:?}");
        parse_count(&reply.payload).expect("a count")
    }

    /// Acknowledges `ids` as `id`; returns how many the server deleted.
    pub fn acknowledge(&mut self, id: ClientId, ids: &[u32]) -> u32 {
        let ids: Vec<MessageId> = ids.iter().map(|&id| MessageId(id)).collect();
        let reply = self.call(id, ACKNOWLEDGE, &acknowledge_payload(&ids));
        assert_eq!(reply.code, 2505, "acknowledge: {reply:?}");
        parse_count(&reply.payload).expect("a count")
    }

    /// The next push, waiting for it up to `within`; `None` if none came.
    pub fn next_push(&mut self, within: Duration) -> Option<Reply> {
        if let Some(push) = self.pushes.pop_front() {
            return Some(push);
        }
        let stream = &self.client.stream;
        stream.set_read_timeout(Some(within)).expect("timeout");
        let peeked = stream.peek(&mut [0; 1]);
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        match peeked {
            Ok(0) => panic!("the server closed the connection"),
            Ok(_) => {
                let frame = self.client.read_reply();
                assert!(is_push(&frame), "a reply with no request: {frame:?}");
                Some(frame)
            }
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                None
            }
            Err(error) => panic!("reading a push: {error}"),
        }
    }

    /// The next pushed message, which must come within `within`.
    pub fn pushed_message(&mut self, within: Duration) -> Pulled {
        let push = self.next_push(within).expect("a pushed message");
        assert_eq!(push.code, PUSHED_MESSAGE, "{push:?}");
        let mut messages = parse_pull(&push.payload);
        assert_eq!(messages.len(), 1, "one message per push");
        messages.remove(0)
    }

    /// The next receipt, which must come within `within`.
    pub fn receipt(&mut self, within: Duration) -> Receipt {
        let push = self.next_push(within).expect("a receipt");
        assert_eq!(push.code, PUSHED_RECEIPT, "{push:?}");
        Receipt::parse(&push.payload).expect("a receipt's payload")
    }

    /// Asserts that nothing is pushed for `period`.
    pub fn assert_no_push(&mut self, period: Duration) {
        if let Some(push) = self.next_push(period) {
            panic!("expected no push, got {push:?}");
        }
    }
}
