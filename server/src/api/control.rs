//! `arbiter.v1.ControlService`: approvals and halts. The contract is final; the
//! implementation ships with the human-control release, so every RPC answers
//! UNIMPLEMENTED with a message saying so.

use super::status::not_yet;
use super::{OPERATORS, READERS};
use crate::auth::Access;
use arbiter_proto::v1 as pb;
use pb::control_service_server::ControlService;
use tonic::{Request, Response, Status};

pub struct ControlApi {
    pub engine: std::sync::Arc<crate::engine::Engine>,
}

type WatchStream = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<pb::WatchApprovalResponse, Status>> + Send>,
>;

#[tonic::async_trait]
impl ControlService for ControlApi {
    async fn approve(
        &self,
        r: Request<pb::ApproveRequest>,
    ) -> Result<Response<pb::ApproveResponse>, Status> {
        super::authorize(&self.engine, &r, "Approve", Access::Roles(OPERATORS)).await?;
        Err(not_yet("Approve"))
    }
    async fn get_approval(
        &self,
        r: Request<pb::GetApprovalRequest>,
    ) -> Result<Response<pb::GetApprovalResponse>, Status> {
        super::authorize(&self.engine, &r, "GetApproval", Access::Roles(READERS)).await?;
        Err(not_yet("GetApproval"))
    }
    async fn list_approvals(
        &self,
        r: Request<pb::ListApprovalsRequest>,
    ) -> Result<Response<pb::ListApprovalsResponse>, Status> {
        super::authorize(&self.engine, &r, "ListApprovals", Access::Roles(READERS)).await?;
        Err(not_yet("ListApprovals"))
    }
    type WatchApprovalStream = WatchStream;
    async fn watch_approval(
        &self,
        r: Request<pb::WatchApprovalRequest>,
    ) -> Result<Response<Self::WatchApprovalStream>, Status> {
        super::authorize(&self.engine, &r, "WatchApproval", Access::Roles(READERS)).await?;
        Err(not_yet("WatchApproval"))
    }
    async fn halt(
        &self,
        r: Request<pb::HaltRequest>,
    ) -> Result<Response<pb::HaltResponse>, Status> {
        super::authorize(&self.engine, &r, "Halt", Access::Roles(OPERATORS)).await?;
        Err(not_yet("Halt"))
    }
    async fn resume(
        &self,
        r: Request<pb::ResumeRequest>,
    ) -> Result<Response<pb::ResumeResponse>, Status> {
        super::authorize(&self.engine, &r, "Resume", Access::Roles(OPERATORS)).await?;
        Err(not_yet("Resume"))
    }
    async fn list_halts(
        &self,
        r: Request<pb::ListHaltsRequest>,
    ) -> Result<Response<pb::ListHaltsResponse>, Status> {
        super::authorize(&self.engine, &r, "ListHalts", Access::Roles(READERS)).await?;
        Err(not_yet("ListHalts"))
    }
}
