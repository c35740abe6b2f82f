//! The `rental_cards` and `rental_items` tables.

pub mod card {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "rental_cards")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub member_id: String,
        /// `AVAILABLE` or `UNAVAILABLE`.
        pub status: String,
        pub late_fee: i64,
        /// Points of a cleared late fee whose deduction is not confirmed yet.
        pub late_fee_in_payment: i64,
        pub late_fee_in_payment_since: Option<DateTimeUtc>,
        /// Optimistic concurrency: every save bumps it, and a save that finds another value
        /// lost a race and is retried on fresh data.
        pub version: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod item {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "rental_items")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub item_id: String,
        pub member_id: String,
        pub book_id: String,
        pub title: String,
        pub rented_at: DateTimeUtc,
        pub due_at: DateTimeUtc,
        pub overdue: bool,
        /// `PENDING`, `RENTED`, `RETURN_PENDING`, `RETURNED` or `CANCELED`.
        pub state: String,
        pub returned_at: Option<DateTimeUtc>,
        pub late_fee: i64,
        pub cancel_reason: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod saga_step {
    use sea_orm::entity::prelude::*;

    /// An event the rental service received for one of its sagas (the events it published are
    /// in its outbox).
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "saga_steps")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub member_id: String,
        pub item_id: String,
        pub event_type: String,
        pub event_id: String,
        pub producer: String,
        pub at: DateTimeUtc,
        pub detail: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
