//! Persistence of members: the only module that sees sea-orm.

pub mod entity;
pub mod migration;

use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, SqlErr,
};

use crate::domain::{Email, Member, MemberId, MemberName};
use crate::error::MemberError;
use bookmesh::paging::PageRequest;

#[derive(Clone)]
pub struct MemberStore {
    db: DatabaseConnection,
}

impl MemberStore {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    /// Inserts a new member; the unique index on email decides races between two registrations.
    pub async fn insert(&self, member: &Member) -> Result<(), MemberError> {
        let row = entity::ActiveModel {
            id: Set(member.id.to_string()),
            name: Set(member.name.as_str().to_owned()),
            email: Set(member.email.as_str().to_owned()),
            points: Set(member.points),
            created_at: Set(member.created_at),
        };
        match entity::Entity::insert(row).exec(&self.db).await {
            Ok(_) => Ok(()),
            Err(error) => match error.sql_err() {
                Some(SqlErr::UniqueConstraintViolation(_)) => {
                    Err(MemberError::EmailTaken(member.email.as_str().to_owned()))
                }
                _ => Err(error.into()),
            },
        }
    }

    pub async fn get(&self, id: MemberId) -> Result<Member, MemberError> {
        entity::Entity::find_by_id(id.to_string())
            .one(&self.db)
            .await?
            .map(into_domain)
            .transpose()?
            .ok_or_else(|| MemberError::NotFound(id.to_string()))
    }

    /// One page in identifier (= registration) order and the next page token.
    pub async fn list(&self, page: &PageRequest) -> Result<(Vec<Member>, String), MemberError> {
        let mut query = entity::Entity::find().order_by_asc(entity::Column::Id);
        if let Some(after) = &page.after {
            query = query.filter(entity::Column::Id.gt(after.as_str()));
        }
        let mut rows = query.limit(page.fetch_limit()).all(&self.db).await?;
        let next_page_token = page.finish(&mut rows, |row| row.id.as_str());
        let members = rows
            .into_iter()
            .map(into_domain)
            .collect::<Result<_, _>>()?;
        Ok((members, next_page_token))
    }
}

/// Adds `delta` points (negative to take them back) inside the caller's transaction, in one
/// UPDATE so concurrent changes add up. `false` if the member does not exist.
pub async fn add_points(
    db: &impl sea_orm::ConnectionTrait,
    member_id: &str,
    delta: i64,
) -> Result<bool, MemberError> {
    let updated = entity::Entity::update_many()
        .col_expr(
            entity::Column::Points,
            sea_orm::sea_query::ExprTrait::add(
                sea_orm::sea_query::Expr::col(entity::Column::Points),
                delta,
            ),
        )
        .filter(entity::Column::Id.eq(member_id))
        .exec(db)
        .await?;
    Ok(updated.rows_affected == 1)
}

/// Outcome of deducting points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deduction {
    Deducted { balance: i64 },
    TooFewPoints { balance: i64 },
    NoSuchMember,
}

/// Deducts `points` if the member has that many, in one conditional UPDATE (concurrent
/// deductions cannot overdraw), inside the caller's transaction.
pub async fn deduct_points(
    db: &impl sea_orm::ConnectionTrait,
    member_id: &str,
    points: i64,
) -> Result<Deduction, MemberError> {
    let updated = entity::Entity::update_many()
        .col_expr(
            entity::Column::Points,
            sea_orm::sea_query::ExprTrait::sub(
                sea_orm::sea_query::Expr::col(entity::Column::Points),
                points,
            ),
        )
        .filter(entity::Column::Id.eq(member_id))
        .filter(entity::Column::Points.gte(points))
        .exec(db)
        .await?;
    let balance = entity::Entity::find_by_id(member_id.to_owned())
        .one(db)
        .await?
        .map(|row| row.points);
    Ok(match (updated.rows_affected, balance) {
        (_, None) => Deduction::NoSuchMember,
        (1, Some(balance)) => Deduction::Deducted { balance },
        (_, Some(balance)) => Deduction::TooFewPoints { balance },
    })
}

/// Rows were validated on the way in; a row that no longer parses is corruption, reported as
/// an error rather than a panic.
fn into_domain(row: entity::Model) -> Result<Member, MemberError> {
    let corrupt = |field: &str, reason: String| {
        sea_orm::DbErr::Custom(format!(
            "member {} has an invalid {field}: {reason}",
            row.id
        ))
    };
    Ok(Member {
        id: MemberId::parse(&row.id).map_err(|e| corrupt("id", e))?,
        name: MemberName::parse(&row.name).map_err(|e| corrupt("name", e))?,
        email: Email::parse(&row.email).map_err(|e| corrupt("email", e))?,
        points: row.points,
        created_at: row.created_at,
    })
}
