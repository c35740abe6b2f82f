//! Arbitrary bytes as each book-service request, through the validation its handlers run.
//! Must never panic: a bad request is a status, whatever its bytes.
#![no_main]

use bookmesh::proto::book::v1::{GetBookRequest, ListBooksRequest, RegisterBookRequest};
use bookmesh::status::FieldViolations;
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    match kind % 3 {
        0 => {
            if let Ok(request) = RegisterBookRequest::decode(bytes) {
                let _ = book_service::parse_register_book(&request, chrono::Utc::now());
            }
        }
        1 => {
            if let Ok(request) = GetBookRequest::decode(bytes) {
                let _ = book_service::domain::BookId::parse(&request.book_id);
            }
        }
        _ => {
            if let Ok(request) = ListBooksRequest::decode(bytes) {
                let mut violations = FieldViolations::new();
                let _ = bookmesh::paging::PageRequest::parse(
                    request.page_size,
                    &request.page_token,
                    &mut violations,
                );
                let _ = violations.into_result();
            }
        }
    }
});
