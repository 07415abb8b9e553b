//! The business records each module keeps: one resource per module here,
//! each record owned by exactly one company.
//!
//! A client sends only a record's own fields (`deny_unknown_fields`): the
//! id, the company and the creation time are never taken from a request.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A stored record: who owns it, its id, when it was created, its fields.
#[derive(Debug, Clone, Serialize)]
pub struct Record<F> {
    pub id: Uuid,
    pub company: Uuid,
    /// RFC 3339, UTC.
    pub created_at: String,
    #[serde(flatten)]
    pub fields: F,
}

/// Why a request body is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct Invalid(pub String);

/// The fields of one kind of record.
pub trait Fields: Serialize + DeserializeOwned + Clone + Send + Sync + Unpin + 'static {
    /// The singular name, for messages (`invoice not found`).
    const NOUN: &'static str;
    /// What a client sends to create one.
    type Input: DeserializeOwned + Send + 'static;
    /// The fields of a new record, or why the input is refused.
    fn accept(input: Self::Input) -> Result<Self, Invalid>;
}

/// How many records a listing returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(u32);

impl Limit {
    pub const DEFAULT: Limit = Limit(50);
    pub const MAX: u32 = 200;

    pub fn new(requested: Option<u32>) -> Result<Limit, Invalid> {
        match requested {
            None => Ok(Limit::DEFAULT),
            Some(n) if (1..=Self::MAX).contains(&n) => Ok(Limit(n)),
            Some(_) => Err(Invalid(format!(
                "limit must be between 1 and {}",
                Self::MAX
            ))),
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

/// Basic: a company's contacts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contact {
    pub name: String,
    pub email: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
}

impl Fields for Contact {
    const NOUN: &'static str = "contact";
    type Input = Contact;

    fn accept(input: Contact) -> Result<Contact, Invalid> {
        let email = text("email", &input.email, 254)?;
        if !email.contains('@') {
            return Err(Invalid("email must contain @".into()));
        }
        Ok(Contact {
            name: text("name", &input.name, 200)?,
            email,
            phone: input.phone.map(|p| text("phone", &p, 40)).transpose()?,
        })
    }
}

/// Finance: invoices, amounts in minor units of their currency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Invoice {
    pub number: String,
    pub customer: String,
    pub amount_cents: i64,
    pub currency: String,
    pub status: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewInvoice {
    pub number: String,
    pub customer: String,
    pub amount_cents: i64,
    pub currency: String,
}

impl Fields for Invoice {
    const NOUN: &'static str = "invoice";
    type Input = NewInvoice;

    fn accept(input: NewInvoice) -> Result<Invoice, Invalid> {
        Ok(Invoice {
            number: text("number", &input.number, 64)?,
            customer: text("customer", &input.customer, 200)?,
            amount_cents: non_negative("amount_cents", input.amount_cents)?,
            currency: currency(&input.currency)?,
            status: "draft".into(),
        })
    }
}

/// Market: listings offered by a company.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listing {
    pub title: String,
    pub price_cents: i64,
    pub currency: String,
}

impl Fields for Listing {
    const NOUN: &'static str = "listing";
    type Input = Listing;

    fn accept(input: Listing) -> Result<Listing, Invalid> {
        Ok(Listing {
            title: text("title", &input.title, 200)?,
            price_cents: non_negative("price_cents", input.price_cents)?,
            currency: currency(&input.currency)?,
        })
    }
}

/// Touring: tours of an artist, starting on a calendar date.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tour {
    pub name: String,
    pub artist: String,
    /// `YYYY-MM-DD`.
    pub starts_on: String,
}

impl Fields for Tour {
    const NOUN: &'static str = "tour";
    type Input = Tour;

    fn accept(input: Tour) -> Result<Tour, Invalid> {
        Ok(Tour {
            name: text("name", &input.name, 200)?,
            artist: text("artist", &input.artist, 200)?,
            starts_on: date("starts_on", &input.starts_on)?,
        })
    }
}

/// Venue: the venues a company runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Venue {
    pub name: String,
    pub city: String,
    pub capacity: i32,
}

impl Fields for Venue {
    const NOUN: &'static str = "venue";
    type Input = Venue;

    fn accept(input: Venue) -> Result<Venue, Invalid> {
        if input.capacity < 1 {
            return Err(Invalid("capacity must be at least 1".into()));
        }
        Ok(Venue {
            name: text("name", &input.name, 200)?,
            city: text("city", &input.city, 100)?,
            capacity: input.capacity,
        })
    }
}

/// AI: a prompt and the answer it got. No model provider is called: the
/// answer is a canned one, so the backend never reaches the internet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prompt {
    pub prompt: String,
    pub response: String,
    pub model: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPrompt {
    pub prompt: String,
}

/// The name stored as the model of a canned answer.
pub const CANNED_MODEL: &str = "canned";

impl Fields for Prompt {
    const NOUN: &'static str = "prompt";
    type Input = NewPrompt;

    fn accept(input: NewPrompt) -> Result<Prompt, Invalid> {
        let prompt = text("prompt", &input.prompt, 10_000)?;
        Ok(Prompt {
            response: canned_response(&prompt),
            prompt,
            model: CANNED_MODEL.into(),
        })
    }
}

fn canned_response(prompt: &str) -> String {
    let words = prompt.split_whitespace().count();
    format!(
        "No model provider is configured; this is a canned response to a prompt of {words} words."
    )
}

/// Trimmed, non-empty, at most `max` characters, no control characters.
fn text(field: &str, value: &str, max: usize) -> Result<String, Invalid> {
    let value = value.trim();
    if value.is_empty() {
        return Err(Invalid(format!("{field} must not be empty")));
    }
    if value.chars().count() > max {
        return Err(Invalid(format!("{field} must be at most {max} characters")));
    }
    if value.chars().any(|c| c.is_control() && c != '\n') {
        return Err(Invalid(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(value.to_string())
}

fn non_negative(field: &str, value: i64) -> Result<i64, Invalid> {
    if value < 0 {
        return Err(Invalid(format!("{field} must not be negative")));
    }
    Ok(value)
}

/// An ISO 4217 style code: three capital letters.
fn currency(value: &str) -> Result<String, Invalid> {
    if value.len() == 3 && value.chars().all(|c| c.is_ascii_uppercase()) {
        return Ok(value.to_string());
    }
    Err(Invalid(
        "currency must be three capital letters, like EUR".into(),
    ))
}

/// `YYYY-MM-DD` with a month of 1-12 and a day of 1-31.
fn date(field: &str, value: &str) -> Result<String, Invalid> {
    let parts: Vec<&str> = value.split('-').collect();
    let number = |s: &str, len: usize| {
        (s.len() == len && s.chars().all(|c| c.is_ascii_digit()))
            .then(|| s.parse::<u32>().ok())
            .flatten()
    };
    let valid = match parts.as_slice() {
        [y, m, d] => {
            number(y, 4).is_some()
                && number(m, 2).is_some_and(|m| (1..=12).contains(&m))
                && number(d, 2).is_some_and(|d| (1..=31).contains(&d))
        }
        _ => false,
    };
    if valid {
        Ok(value.to_string())
    } else {
        Err(Invalid(format!("{field} must be a date like 2027-03-01")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_cannot_name_the_company_of_a_record() {
        let body = r#"{"name":"A","email":"a@x","company":"00000000-0000-0000-0000-000000000000"}"#;
        assert!(serde_json::from_str::<Contact>(body).is_err());
        let body =
            r#"{"number":"1","customer":"c","amount_cents":1,"currency":"EUR","status":"paid"}"#;
        assert!(serde_json::from_str::<NewInvoice>(body).is_err());
    }

    #[test]
    fn text_is_trimmed_and_must_not_be_empty() {
        let contact = Contact::accept(Contact {
            name: "  Ada ".into(),
            email: "ada@example.org".into(),
            phone: None,
        })
        .unwrap();
        assert_eq!(contact.name, "Ada");
        assert!(
            Venue::accept(Venue {
                name: " ".into(),
                city: "Oslo".into(),
                capacity: 10
            })
            .is_err()
        );
    }

    #[test]
    fn currencies_dates_and_amounts_are_checked() {
        assert!(currency("eur").is_err());
        assert!(date("d", "2027-13-01").is_err());
        assert_eq!(date("d", "2027-03-01").unwrap(), "2027-03-01");
        assert!(non_negative("amount_cents", -1).is_err());
    }

    #[test]
    fn a_prompt_gets_a_canned_answer() {
        let prompt = Prompt::accept(NewPrompt {
            prompt: "plan a tour of five cities".into(),
        })
        .unwrap();
        assert_eq!(prompt.model, CANNED_MODEL);
        assert!(prompt.response.contains("6 words"));
    }

    #[test]
    fn a_limit_defaults_to_fifty_and_stays_within_bounds() {
        assert_eq!(Limit::new(None).unwrap(), Limit::DEFAULT);
        assert_eq!(Limit::new(Some(200)).unwrap().get(), 200);
        assert!(Limit::new(Some(0)).is_err() && Limit::new(Some(201)).is_err());
    }
}
