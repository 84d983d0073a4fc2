//! `arbiter.v1.ControlService`: approvals and halts. The contract is final; the
//! implementation ships with the human-control release, so every RPC answers
//! UNIMPLEMENTED with a message saying so.

use super::status::not_yet;
use arbiter_proto::v1 as pb;
use pb::control_service_server::ControlService;
use tonic::{Request, Response, Status};

pub struct ControlApi;

type WatchStream = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<pb::WatchApprovalResponse, Status>> + Send>,
>;

#[tonic::async_trait]
impl ControlService for ControlApi {
    async fn approve(
        &self,
        _r: Request<pb::ApproveRequest>,
    ) -> Result<Response<pb::ApproveResponse>, Status> {
        Err(not_yet("Approve"))
    }
    async fn get_approval(
        &self,
        _r: Request<pb::GetApprovalRequest>,
    ) -> Result<Response<pb::GetApprovalResponse>, Status> {
        Err(not_yet("GetApproval"))
    }
    async fn list_approvals(
        &self,
        _r: Request<pb::ListApprovalsRequest>,
    ) -> Result<Response<pb::ListApprovalsResponse>, Status> {
        Err(not_yet("ListApprovals"))
    }
    type WatchApprovalStream = WatchStream;
    async fn watch_approval(
        &self,
        _r: Request<pb::WatchApprovalRequest>,
    ) -> Result<Response<Self::WatchApprovalStream>, Status> {
        Err(not_yet("WatchApproval"))
    }
    async fn halt(
        &self,
        _r: Request<pb::HaltRequest>,
    ) -> Result<Response<pb::HaltResponse>, Status> {
        Err(not_yet("Halt"))
    }
    async fn resume(
        &self,
        _r: Request<pb::ResumeRequest>,
    ) -> Result<Response<pb::ResumeResponse>, Status> {
        Err(not_yet("Resume"))
    }
    async fn list_halts(
        &self,
        _r: Request<pb::ListHaltsRequest>,
    ) -> Result<Response<pb::ListHaltsResponse>, Status> {
        Err(not_yet("ListHalts"))
    }
}
