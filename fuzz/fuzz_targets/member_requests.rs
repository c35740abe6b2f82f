//! Arbitrary bytes as each member-service request, through the validation its handlers run.
#![no_main]

use bookmesh::proto::member::v1::{GetMemberRequest, ListMembersRequest, RegisterMemberRequest};
use bookmesh::status::FieldViolations;
use libfuzzer_sys::fuzz_target;
use member_service::domain::{Email, MemberId, MemberName};
use prost::Message as _;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    let mut violations = FieldViolations::new();
    match kind % 3 {
        0 => {
            if let Ok(request) = RegisterMemberRequest::decode(bytes) {
                violations.check("name", MemberName::parse(&request.name));
                violations.check("email", Email::parse(&request.email));
            }
        }
        1 => {
            if let Ok(request) = GetMemberRequest::decode(bytes) {
                violations.check("member_id", MemberId::parse(&request.member_id));
            }
        }
        _ => {
            if let Ok(request) = ListMembersRequest::decode(bytes) {
                let _ = bookmesh::paging::PageRequest::parse(
                    request.page_size,
                    &request.page_token,
                    &mut violations,
                );
            }
        }
    }
    let _ = violations.into_result();
});
