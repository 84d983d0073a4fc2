//! ControlService: human approvals and the kill switch.
//!
//! Reads are retried on `UNAVAILABLE`; approve, halt and resume are sent once.

use arbiter_proto::v1::control_service_client::ControlServiceClient;

use crate::call::ResultStream;
use crate::client::unary_rpcs;
use crate::{proto, Client, Error};

unary_rpcs! {
    ControlServiceClient;
    /// Grants or denies a pending approval; the approver is the authenticated caller. Sent once.
    approve(ApproveRequest) -> ApproveResponse, Never;
    /// Reads one approval.
    get_approval(GetApprovalRequest) -> GetApprovalResponse, OnUnavailable;
    /// Lists approvals, newest first.
    list_approvals(ListApprovalsRequest) -> ListApprovalsResponse, OnUnavailable;
    /// Engages a halt (kill switch). Sent once.
    halt(HaltRequest) -> HaltResponse, Never;
    /// Lifts a halt. Sent once.
    resume(ResumeRequest) -> ResumeResponse, Never;
    /// Lists engaged halts.
    list_halts(ListHaltsRequest) -> ListHaltsResponse, OnUnavailable;
}

impl Client {
    /// Streams an approval's state: the current state first, then every change
    /// until it is final (granted, denied, expired or consumed).
    ///
    /// The client's deadline bounds only opening the stream; bound the wait
    /// yourself, e.g. with `tokio::time::timeout`.
    pub async fn watch_approval(
        &self,
        request: proto::WatchApprovalRequest,
    ) -> Result<ResultStream<proto::Approval>, Error> {
        self.server_stream(
            request,
            |channel, request| async move {
                ControlServiceClient::new(channel)
                    .watch_approval(request)
                    .await
            },
            |message: proto::WatchApprovalResponse| message.approval,
        )
        .await
    }
}
