//! One request of a local connection as the callee sees it (an
//! [`Exchange`]): where the request comes from (the call slot, or a frame
//! on the socket) and how it is answered (in the slot, or as a frame).

use std::io;

use super::request::{Request, RequestReader};
use super::shm::{recv_payload, send_frame, SharedRegion};
use super::slot::layout::{INLINE_LEN, RESP_SEQ, SLOT_MAX_PAYLOAD};
use super::slot::{
    ControlBlock, SlotRequest, SlotResponse, RESPONSE_DECLINED, RESPONSE_ERROR, RESPONSE_INLINE,
    RESPONSE_ON_SOCKET, SERVER,
};
use super::wire::{self, Header, Kind};
use crate::error::{CallError, ErrorCode};
use crate::guest::invoke::Exchange;
use crate::transport::admission::Share;

/// Where a request came from.
#[derive(Clone, Copy)]
pub(crate) enum Incoming<'a> {
    /// A frame on the socket (its payload inline, or in the data area).
    Frame(&'a Request),
    /// The call slot's inline area.
    Slot(SlotRequest),
}

/// How a request is answered.
#[derive(Clone, Copy)]
pub(crate) enum Answer {
    /// With a frame on the socket only (a caller that did not use the
    /// slot).
    Frame,
    /// Through the slot, advancing the response sequence to this value;
    /// an answer too large for the slot is announced there and follows as
    /// a frame.
    Slot(u32),
}

/// One request's connection and shared region as an [`Exchange`]. A
/// failure of the connection itself is kept in `broken`: the connection
/// then ends, where a failed call only gets an error answer.
pub(crate) struct ConnExchange<'a> {
    pub reader: &'a mut RequestReader,
    pub shm: &'a mut SharedRegion,
    pub control: &'a ControlBlock,
    pub incoming: Incoming<'a>,
    pub answer: Answer,
    /// Whether the callee took the request.
    pub request_read: bool,
    /// Whether the answer left.
    pub answered: bool,
    /// The connection's own failure, if it broke.
    pub broken: Option<io::Error>,
    /// The request's place among payloads still arriving, until its
    /// payload is in.
    pub arrival: Option<Share<i32>>,
}

impl ConnExchange<'_> {
    fn lost(&mut self, e: io::Error) -> CallError {
        let err = CallError::new(ErrorCode::Transport, format!("connection lost: {e}"));
        self.broken = Some(e);
        err
    }

    /// Whether the request's payload is still arriving: a pipelined one,
    /// which streams into the callee while the caller sends it.
    pub fn arriving(&self) -> bool {
        matches!(self.incoming, Incoming::Frame(request) if request.header.chunked())
    }

    /// Consumes a payload the server will not use (progress counts of a
    /// pipelined one), keeping the stream in step. An inline payload is
    /// already read, and one in the region needs nothing.
    pub fn skip_request(&mut self) -> io::Result<()> {
        match self.incoming {
            Incoming::Frame(request) if request.header.chunked() => {
                let skipped = recv_payload(self.reader, self.shm, &request.header, &mut []);
                self.arrival = None;
                skipped
            }
            _ => Ok(()),
        }
    }

    /// Answers the request with error `e` (request `id` when answered as a
    /// frame).
    pub fn answer_error(&mut self, id: u64, e: &CallError) -> io::Result<()> {
        match self.answer {
            Answer::Frame => {
                wire::write_error(&mut self.reader.stream(), id, e.code.as_raw(), &e.message)
            }
            Answer::Slot(seq) => {
                let msg = e.message.as_bytes();
                let msg = &msg[..msg.len().min(INLINE_LEN)];
                self.control.write_inline(0, msg);
                // Only a request that asked not to wait is declined before
                // it ran (handle_request marks it so).
                let kind = if e.nothing_ran() {
                    RESPONSE_DECLINED
                } else {
                    RESPONSE_ERROR
                };
                self.control.put_response(&SlotResponse {
                    kind,
                    status: e.code.as_raw(),
                    len: msg.len(),
                });
                self.control.publish(SERVER, RESP_SEQ, seq);
                Ok(())
            }
        }
    }
}

impl Exchange for ConnExchange<'_> {
    fn request_len(&self) -> usize {
        match self.incoming {
            Incoming::Frame(request) => request.header.payload_len as usize,
            Incoming::Slot(slot) => slot.len,
        }
    }

    fn path(&self) -> Option<&'static str> {
        Some(match self.incoming {
            Incoming::Slot(_) => "slot",
            Incoming::Frame(request) if request.header.in_shm() => "shared-memory",
            Incoming::Frame(_) => "socket",
        })
    }

    fn read_request(&mut self, dst: &mut [u8]) -> Result<(), CallError> {
        self.request_read = true;
        match self.incoming {
            Incoming::Slot(slot) => {
                self.control
                    .read_inline(slot.target_len + slot.caller_len, dst);
                Ok(())
            }
            Incoming::Frame(request) if !request.header.in_shm() => {
                dst.copy_from_slice(self.reader.inline_payload(request));
                Ok(())
            }
            Incoming::Frame(request) => {
                let read = recv_payload(self.reader, self.shm, &request.header, dst);
                self.arrival = None;
                read.map_err(|e| self.lost(e))
            }
        }
    }

    fn write_response(&mut self, response: &[u8]) -> Result<(), CallError> {
        self.answered = true;
        let id = match (self.answer, self.incoming) {
            (Answer::Slot(seq), _) => u64::from(seq),
            (Answer::Frame, Incoming::Frame(request)) => request.header.id,
            (Answer::Frame, Incoming::Slot(_)) => 0,
        };
        if let Answer::Slot(seq) = self.answer {
            if response.len() <= SLOT_MAX_PAYLOAD {
                self.control.write_inline(0, response);
                self.control.put_response(&SlotResponse {
                    kind: RESPONSE_INLINE,
                    status: 0,
                    len: response.len(),
                });
                self.control.publish(SERVER, RESP_SEQ, seq);
                return Ok(());
            }
            self.control.put_response(&SlotResponse {
                kind: RESPONSE_ON_SOCKET,
                status: 0,
                len: 0,
            });
            self.control.publish(SERVER, RESP_SEQ, seq);
        }
        let mut out = Header::new(Kind::Response, id);
        let mut stream = self.reader.stream();
        send_frame(&mut stream, self.shm, &mut out, &[], response).map_err(|e| self.lost(e))
    }
}
