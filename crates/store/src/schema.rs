//! OpenAPI schemas for the domain types the views carry. The domain crate knows
//! nothing of HTTP documents, so the views name these stand-ins with
//! `#[schema(value_type = ...)]`; each is built from the domain type itself (the
//! statuses from their `ALL` lists) so the document cannot drift from the code.

use std::borrow::Cow;

use releasedesk_domain::{NumberStatus, RequestStatus};
use utoipa::{
    PartialSchema, ToSchema,
    openapi::{
        ObjectBuilder, RefOr, Type,
        schema::{KnownFormat, Schema, SchemaFormat},
    },
};

fn string_enum<'a>(description: &str, values: impl Iterator<Item = &'a str>) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .enum_values(Some(values))
        .into()
}

/// [`NumberStatus`] in the document.
pub struct NumberStatusSchema;

impl PartialSchema for NumberStatusSchema {
    fn schema() -> RefOr<Schema> {
        string_enum(
            "Where a phone number is in its lifecycle.",
            NumberStatus::ALL.iter().map(|s| s.as_str()),
        )
    }
}

impl ToSchema for NumberStatusSchema {
    fn name() -> Cow<'static, str> {
        "NumberStatus".into()
    }
}

/// [`RequestStatus`] in the document.
pub struct RequestStatusSchema;

impl PartialSchema for RequestStatusSchema {
    fn schema() -> RefOr<Schema> {
        string_enum(
            "Where a release request is in its lifecycle.",
            RequestStatus::ALL.iter().map(|s| s.as_str()),
        )
    }
}

impl ToSchema for RequestStatusSchema {
    fn name() -> Cow<'static, str> {
        "RequestStatus".into()
    }
}

/// [`releasedesk_domain::Money`] in the document: a decimal string.
pub struct MoneySchema;

impl PartialSchema for MoneySchema {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "An amount as a decimal string with two fraction digits; the currency is a sibling field.",
            ))
            .pattern(Some(r"^-?[0-9]+\.[0-9]{2}$"))
            .examples(["25.00"])
            .into()
    }
}

impl ToSchema for MoneySchema {
    fn name() -> Cow<'static, str> {
        "Money".into()
    }
}

/// [`releasedesk_domain::InUseAgent`] in the document.
pub struct InUseAgentSchema;

impl PartialSchema for InUseAgentSchema {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .description(Some("An active agent that still uses the phone number."))
            .property(
                "id",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid))),
            )
            .required("id")
            .property("name", ObjectBuilder::new().schema_type(Type::String))
            .required("name")
            .into()
    }
}

impl ToSchema for InUseAgentSchema {
    fn name() -> Cow<'static, str> {
        "InUseAgent".into()
    }
}
