//! Remote mode, client side: calls a function on another node through the
//! broker's request stream and waits for its reply key.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use crate::broker::Broker;
use crate::error::{CallError, ErrorCode};
use crate::transport::{CallContext, CallerIo, PendingCall, Transport};

/// Calls one function served on another node.
pub(crate) struct RemoteTransport {
    pub broker: Arc<Broker>,
    pub namespace: String,
    pub name: String,
}

fn deliver(response: &[u8], io: &mut dyn CallerIo) -> Result<(), CallError> {
    let dst = io.response_buffer(response.len())?;
    let n = dst.len().min(response.len());
    dst[..n].copy_from_slice(&response[..n]);
    Ok(())
}

impl Transport for RemoteTransport {
    fn call(&self, ctx: &CallContext<'_>, io: &mut dyn CallerIo) -> Result<(), CallError> {
        let limits = &ctx.runtime.limits;
        let response = self.broker.call(
            &self.namespace,
            &self.name,
            io.request(),
            limits.call_timeout,
            limits.max_payload_bytes,
        )?;
        deliver(&response, io)
    }

    fn start(
        &self,
        ctx: &CallContext<'_>,
        io: &mut dyn CallerIo,
    ) -> Result<Box<dyn PendingCall>, CallError> {
        let request = io.request().to_vec();
        let (broker, ns, name) = (
            self.broker.clone(),
            self.namespace.clone(),
            self.name.clone(),
        );
        let (timeout, max) = (
            ctx.runtime.limits.call_timeout,
            ctx.runtime.limits.max_payload_bytes,
        );
        let (tx, rx) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name(format!("cwasi-remote-{name}"))
            .spawn(move || {
                let _ = tx.send(broker.call(&ns, &name, &request, timeout, max));
            })
            .map_err(|e| {
                CallError::new(
                    ErrorCode::ResourceLimit,
                    format!("cannot start a worker thread: {e}"),
                )
            })?;
        Ok(Box::new(RemotePending { rx, timeout }))
    }
}

struct RemotePending {
    rx: mpsc::Receiver<Result<Vec<u8>, CallError>>,
    timeout: Duration,
}

impl PendingCall for RemotePending {
    fn wait(self: Box<Self>, io: &mut dyn CallerIo) -> Result<(), CallError> {
        let response = self
            .rx
            .recv_timeout(self.timeout + Duration::from_secs(5))
            .map_err(|_| CallError::new(ErrorCode::Timeout, "the remote call did not finish"))??;
        deliver(&response, io)
    }
}
