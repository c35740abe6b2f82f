//! The gRPC surface of the member service: parse requests into domain values (collecting every
//! field violation), call the store, convert back to messages.

use bookmesh::paging::PageRequest;
use bookmesh::proto::member::v1::{
    self as pb, GetMemberRequest, GetMemberResponse, ListMembersRequest, ListMembersResponse,
    RegisterMemberRequest, RegisterMemberResponse,
};
use bookmesh::status::FieldViolations;
use tonic::{Request, Response, Status};

use crate::domain::{Email, Member, MemberId, MemberName};
use crate::store::MemberStore;

pub struct MemberApi {
    store: MemberStore,
}

impl MemberApi {
    pub fn new(store: MemberStore) -> Self {
        Self { store }
    }
}

fn to_message(member: Member) -> pb::Member {
    pb::Member {
        member_id: member.id.to_string(),
        name: member.name.as_str().to_owned(),
        email: member.email.as_str().to_owned(),
        points: member.points,
        created_at: Some(bookmesh::proto::timestamp(member.created_at)),
    }
}

#[tonic::async_trait]
impl pb::member_service_server::MemberService for MemberApi {
    #[tracing::instrument(skip_all)]
    async fn register_member(
        &self,
        request: Request<RegisterMemberRequest>,
    ) -> Result<Response<RegisterMemberResponse>, Status> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let name = violations.check("name", MemberName::parse(&request.name));
        let email = violations.check("email", Email::parse(&request.email));
        let (name, email) = violations.finish(|| Some((name?, email?)))?;

        let member = Member::register(name, email, bookmesh::db::now());
        self.store.insert(&member).await?;
        tracing::info!(member_id = %member.id, "member registered");
        Ok(Response::new(RegisterMemberResponse {
            member: Some(to_message(member)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_member(
        &self,
        request: Request<GetMemberRequest>,
    ) -> Result<Response<GetMemberResponse>, Status> {
        let mut violations = FieldViolations::new();
        let id = violations.check("member_id", MemberId::parse(&request.get_ref().member_id));
        let id = violations.finish(|| id)?;
        let member = self.store.get(id).await?;
        Ok(Response::new(GetMemberResponse {
            member: Some(to_message(member)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_members(
        &self,
        request: Request<ListMembersRequest>,
    ) -> Result<Response<ListMembersResponse>, Status> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let page = PageRequest::parse(request.page_size, &request.page_token, &mut violations);
        let page = violations.finish(|| page)?;
        let (members, next_page_token) = self.store.list(&page).await?;
        Ok(Response::new(ListMembersResponse {
            members: members.into_iter().map(to_message).collect(),
            next_page_token,
        }))
    }
}
