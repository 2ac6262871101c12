//! `releasedesk admin …`: operator commands that print one JSON object to stdout
//! (errors: one JSON object to stderr and a non-zero exit).

use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::{Subcommand, ValueEnum};
use releasedesk_domain::{AgentName, E164, Money};
use releasedesk_store::{NewAgent, NewNumber, StaffRole, Store, StoreError};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{StartupError, config::Settings, open_store};

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
    Create {
        #[arg(long)]
        account: Uuid,
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

/// Runs the command and prints its JSON result; returns the exit code.
pub async fn run(settings: &Settings, command: AdminCommand) -> ExitCode {
    let result = match open_store(settings).await {
        Ok(store) => execute(&store, command).await,
        Err(StartupError::Store(e)) => Err(e),
        Err(other) => Err(StoreError::Config(other.to_string())),
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

fn error_json(error: &StoreError) -> Value {
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

async fn execute(store: &Store, command: AdminCommand) -> Result<Value, StoreError> {
    store.migrate().await?;
    Ok(match command {
        AdminCommand::Account(AccountCommand::Create { name, email }) => {
            json!(store.create_account(&name, &email).await?)
        }
        AdminCommand::Token(TokenCommand::Create { account }) => {
            json!(store.create_token(account).await?)
        }
        AdminCommand::Number(NumberCommand::Add {
            account,
            e164,
            purchased_at,
            monthly_price,
        }) => {
            let monthly_price: Money = monthly_price.parse().map_err(|_| {
                releasedesk_domain::DomainError::invalid(
                    "monthly_price",
                    "must be a decimal amount such as 1.15",
                )
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
