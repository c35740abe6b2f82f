//! The gRPC surface of the book service: parse requests into domain values (collecting every
//! field violation), call the store, convert back to messages.

use bookmesh::paging::PageRequest;
use bookmesh::proto::book::v1::{
    self as pb, GetBookRequest, GetBookResponse, ListBooksRequest, ListBooksResponse,
    RegisterBookRequest, RegisterBookResponse,
};
use bookmesh::status::FieldViolations;
use tonic::{Request, Response, Status};

use crate::domain::{
    Book, BookDetails, BookId, BookStatus, Isbn, SHORT_TEXT_CHARS, TITLE_CHARS, Text,
    parse_published_on,
};
use crate::store::BookStore;

pub struct BookApi {
    store: BookStore,
}

impl BookApi {
    pub fn new(store: BookStore) -> Self {
        Self { store }
    }
}

fn to_message(book: Book) -> pb::Book {
    let status = match book.status {
        BookStatus::Available => pb::BookStatus::Available,
        BookStatus::Unavailable => pb::BookStatus::Unavailable,
    };
    let details = book.details;
    pb::Book {
        book_id: book.id.to_string(),
        title: details.title.as_str().to_owned(),
        author: details.author.as_str().to_owned(),
        isbn: details.isbn.as_str().to_owned(),
        publisher: details.publisher.as_str().to_owned(),
        published_on: details.published_on.format("%Y-%m-%d").to_string(),
        classification: details.classification.as_str().to_owned(),
        location: details.location.as_str().to_owned(),
        status: status.into(),
        created_at: Some(bookmesh::proto::timestamp(book.created_at)),
    }
}

pub fn parse_details(
    request: &RegisterBookRequest,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<BookDetails, Status> {
    let mut v = FieldViolations::new();
    let title = v.check("title", Text::parse(&request.title, TITLE_CHARS));
    let author = v.check("author", Text::parse(&request.author, SHORT_TEXT_CHARS));
    let isbn = v.check("isbn", Isbn::parse(&request.isbn));
    let publisher = v.check(
        "publisher",
        Text::parse(&request.publisher, SHORT_TEXT_CHARS),
    );
    let published_on = v.check(
        "published_on",
        parse_published_on(&request.published_on, now.date_naive()),
    );
    let classification = v.check(
        "classification",
        Text::parse(&request.classification, SHORT_TEXT_CHARS),
    );
    let location = v.check("location", Text::parse(&request.location, SHORT_TEXT_CHARS));
    v.finish(|| {
        Some(BookDetails {
            title: title?,
            author: author?,
            isbn: isbn?,
            publisher: publisher?,
            published_on: published_on?,
            classification: classification?,
            location: location?,
        })
    })
}

#[tonic::async_trait]
impl pb::book_service_server::BookService for BookApi {
    #[tracing::instrument(skip_all)]
    async fn register_book(
        &self,
        request: Request<RegisterBookRequest>,
    ) -> Result<Response<RegisterBookResponse>, Status> {
        let now = bookmesh::db::now();
        let details = parse_details(request.get_ref(), now)?;
        let book = Book::register(details, now);
        self.store.insert(&book).await?;
        tracing::info!(book_id = %book.id, "book registered");
        Ok(Response::new(RegisterBookResponse {
            book: Some(to_message(book)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_book(
        &self,
        request: Request<GetBookRequest>,
    ) -> Result<Response<GetBookResponse>, Status> {
        let mut violations = FieldViolations::new();
        let id = violations.check("book_id", BookId::parse(&request.get_ref().book_id));
        let id = violations.finish(|| id)?;
        let book = self.store.get(id).await?;
        Ok(Response::new(GetBookResponse {
            book: Some(to_message(book)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_books(
        &self,
        request: Request<ListBooksRequest>,
    ) -> Result<Response<ListBooksResponse>, Status> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let page = PageRequest::parse(request.page_size, &request.page_token, &mut violations);
        let page = violations.finish(|| page)?;
        let (books, next_page_token) = self.store.list(&page).await?;
        Ok(Response::new(ListBooksResponse {
            books: books.into_iter().map(to_message).collect(),
            next_page_token,
        }))
    }
}
