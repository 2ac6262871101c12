//! `releasedesk admin …`: operator commands that print one JSON object to stdout
//! (errors: one JSON object to stderr and a non-zero exit).

use std::{path::PathBuf, process::ExitCode};

use chrono::{DateTime, Utc};
use clap::{ArgGroup, Subcommand, ValueEnum};
use releasedesk_domain::{AgentName, DomainError, E164, Money};
use releasedesk_store::{NewAgent, NewNumber, StaffRole, Store, StoreError, TokenRef};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{StartupError, config::Settings, open_migrated};

mod import;

use import::ImportError;

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Customer accounts.
    #[command(subcommand)]
    Account(AccountCommand),
    /// Customer API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Phone numbers in the inventory.
    #[command(subcommand)]
    Number(NumberCommand),
    /// SMS history (demo and test data).
    #[command(subcommand)]
    Sms(SmsCommand),
    /// Agents of an account.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Support staff.
    #[command(subcommand)]
    Staff(StaffCommand),
}

#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        email: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Issue a customer API token for an account -> {"id", "token"} (the token is
    /// shown once).
    Create {
        #[arg(long)]
        account: Uuid,
    },
    /// Revoke a customer API token -> {"id", "revoked_at"}. From then on the API
    /// answers 401 to it. Revoking a revoked token changes nothing and prints the
    /// first revoked_at; an unknown token is NOT_FOUND.
    #[command(group(ArgGroup::new("which").required(true).args(["token", "secret"])))]
    Revoke {
        /// The token's id, as printed by `admin token create`.
        #[arg(long, value_name = "ID")]
        token: Option<Uuid>,
        /// The token itself (rd_live_…). It shows in the process list and shell
        /// history: prefer --token.
        #[arg(long, value_name = "TOKEN")]
        secret: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum NumberCommand {
    Add {
        #[arg(long)]
        account: Uuid,
        #[arg(long)]
        e164: String,
        /// RFC 3339; defaults to now.
        #[arg(long)]
        purchased_at: Option<DateTime<Utc>>,
        #[arg(long, default_value = "1.15")]
        monthly_price: String,
    },
    /// Import numbers from a CSV file into an account, all or nothing ->
    /// {"account_id", "imported"}. The header row names the columns: e164
    /// (required), friendly_name, purchased_at (RFC 3339; default now),
    /// monthly_price (e.g. 1.15; default 1.15). Every row is checked first; if any
    /// is invalid, repeats a number of the file, or names a number already in the
    /// inventory, all of them are reported as one JSON object on stderr (with
    /// their line numbers) and nothing is imported.
    Import {
        #[arg(long)]
        account: Uuid,
        /// The CSV file (UTF-8, comma-separated, with a header row).
        #[arg(long, value_name = "FILE")]
        csv: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum SmsCommand {
    Add {
        #[arg(long)]
        number: Uuid,
        #[arg(long)]
        count: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    Create {
        #[arg(long)]
        account: Uuid,
        #[arg(long)]
        name: String,
        /// A number the agent uses; repeat for several.
        #[arg(long = "number")]
        numbers: Vec<Uuid>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    Reviewer,
    Admin,
}

#[derive(Debug, Subcommand)]
pub enum StaffCommand {
    Create {
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: String,
        #[arg(long, value_enum, default_value = "reviewer")]
        role: RoleArg,
    },
}

/// Why an admin command failed; rendered as one JSON object on stderr.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Import(#[from] ImportError),
    /// The thing a command names does not exist.
    #[error("no such {0}")]
    NotFound(&'static str),
    /// The database could not be made ready (the job queue's tables, say).
    #[error(transparent)]
    Startup(StartupError),
}

impl From<DomainError> for AdminError {
    fn from(error: DomainError) -> Self {
        Self::Store(error.into())
    }
}

/// Runs the command and prints its JSON result; returns the exit code.
pub async fn run(settings: &Settings, command: AdminCommand) -> ExitCode {
    let result = match open_migrated(settings).await {
        Ok(store) => execute(&store, command).await,
        Err(StartupError::Store(e)) => Err(e.into()),
        Err(other) => Err(AdminError::Startup(other)),
    };
    match result {
        Ok(value) => {
            println!("{value}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{}", error_json(&error));
            ExitCode::FAILURE
        }
    }
}

fn error_json(error: &AdminError) -> Value {
    match error {
        AdminError::Store(error) => store_error_json(error),
        AdminError::Import(error) => error.to_json(),
        AdminError::NotFound(_) => {
            json!({"success": false, "code": "NOT_FOUND", "message": error.to_string()})
        }
        AdminError::Startup(_) => {
            json!({"success": false, "code": "INTERNAL", "message": error.to_string()})
        }
    }
}

fn store_error_json(error: &StoreError) -> Value {
    match error {
        StoreError::Domain(e) => {
            let mut body = json!({"success": false, "code": e.code(), "message": e.to_string()});
            if let releasedesk_domain::DomainError::Validation(fields) = e {
                body["details"] = json!(fields);
            }
            body
        }
        StoreError::Unavailable(_) => {
            json!({"success": false, "code": "UNAVAILABLE", "message": "the database is unreachable"})
        }
        other => json!({"success": false, "code": "INTERNAL", "message": other.to_string()}),
    }
}

/// `NotFound` from the store, said with the name of what is missing.
fn not_found_as(what: &'static str) -> impl Fn(StoreError) -> AdminError {
    move |error| match error {
        StoreError::Domain(DomainError::NotFound) => AdminError::NotFound(what),
        other => other.into(),
    }
}

async fn execute(store: &Store, command: AdminCommand) -> Result<Value, AdminError> {
    Ok(match command {
        AdminCommand::Account(AccountCommand::Create { name, email }) => {
            json!(store.create_account(&name, &email).await?)
        }
        AdminCommand::Token(TokenCommand::Create { account }) => {
            json!(store.create_token(account).await?)
        }
        AdminCommand::Token(TokenCommand::Revoke { token, secret }) => {
            let which = match (token, secret.as_deref()) {
                (Some(id), _) => TokenRef::Id(id),
                (None, Some(secret)) => TokenRef::Secret(secret),
                // clap's group requires one of the two.
                (None, None) => return Err(AdminError::NotFound("token")),
            };
            json!(
                store
                    .revoke_token(which)
                    .await
                    .map_err(not_found_as("token"))?
            )
        }
        AdminCommand::Number(NumberCommand::Add {
            account,
            e164,
            purchased_at,
            monthly_price,
        }) => {
            let monthly_price: Money = monthly_price.parse().map_err(|_| {
                DomainError::invalid("monthly_price", "must be a decimal amount such as 1.15")
            })?;
            let new = NewNumber {
                account_id: account,
                e164: E164::parse(&e164)?,
                purchased_at,
                monthly_price,
            };
            let number = store.add_number(new).await?;
            json!({"id": number.id, "phone_number": number.phone_number})
        }
        AdminCommand::Number(NumberCommand::Import { account, csv }) => {
            let imported = import::run(store, account, &csv).await?;
            json!({"account_id": account, "imported": imported})
        }
        AdminCommand::Sms(SmsCommand::Add { number, count }) => {
            let total = store.add_sms(number, count).await?;
            json!({"number_id": number, "sms_message_count": total})
        }
        AdminCommand::Agent(AgentCommand::Create {
            account,
            name,
            numbers,
        }) => {
            let new = NewAgent {
                name: AgentName::parse(&name)?,
                active: true,
                phone_number_ids: numbers,
            };
            json!({"id": store.create_agent(account, new).await?.id})
        }
        AdminCommand::Staff(StaffCommand::Create { email, name, role }) => {
            let role = match role {
                RoleArg::Reviewer => StaffRole::Reviewer,
                RoleArg::Admin => StaffRole::Admin,
            };
            json!(store.create_staff(&email, &name, role).await?)
        }
    })
}
