//! The demo data set: two accounts, numbers with SMS history, one number in use by
//! an agent, and a reviewer. Seeding is idempotent: existing rows are reused, and
//! each run prints fresh tokens (tokens are shown once, never stored).

use std::fmt::Write as _;

use chrono::{TimeDelta, Utc};
use releasedesk_domain::{AgentName, E164, Money};
use releasedesk_store::{
    CreatedAccount, NewAgent, NewNumber, PageRequest, StaffRole, Store, StoreError,
};
use uuid::Uuid;

struct DemoNumber {
    e164: &'static str,
    age_days: i64,
    sms: u32,
}

struct DemoAccount {
    name: &'static str,
    email: &'static str,
    numbers: &'static [DemoNumber],
}

const ACCOUNTS: &[DemoAccount] = &[
    DemoAccount {
        name: "Acme Telecom",
        email: "ops@acme.example",
        numbers: &[
            DemoNumber {
                e164: "+15550100001",
                age_days: 400,
                sms: 120,
            },
            DemoNumber {
                e164: "+15550100002",
                age_days: 20,
                sms: 8,
            },
            DemoNumber {
                e164: "+15550100003",
                age_days: 200,
                sms: 42,
            },
        ],
    },
    DemoAccount {
        name: "Globex Logistics",
        email: "it@globex.example",
        numbers: &[DemoNumber {
            e164: "+15550200001",
            age_days: 365,
            sms: 15,
        }],
    },
];

/// The Acme number its support agent still uses (so it cannot be released).
const IN_USE: &str = "+15550100003";
const AGENT_NAME: &str = "Acme support line";
const STAFF_EMAIL: &str = "reviewer@releasedesk.example";

pub struct SeededAccount {
    pub account: CreatedAccount,
    pub token: String,
    pub numbers: Vec<(String, Uuid)>,
}

/// What `seed` made or found, with fresh tokens.
pub struct Seeded {
    pub accounts: Vec<SeededAccount>,
    pub staff_token: String,
}

async fn seed_account(store: &Store, spec: &DemoAccount) -> Result<SeededAccount, StoreError> {
    let account = match store.find_account_by_email(spec.email).await? {
        Some(account) => account,
        None => store.create_account(spec.name, spec.email).await?,
    };
    let mut numbers = Vec::new();
    for n in spec.numbers {
        let e164 = E164::parse(n.e164)?;
        let id = match store.find_number_id(&e164).await? {
            Some(id) => id,
            None => {
                let purchased_at = Utc::now() - TimeDelta::days(n.age_days);
                let new = NewNumber {
                    account_id: account.id,
                    e164,
                    purchased_at: Some(purchased_at),
                    monthly_price: Money::from_minor(115),
                };
                let id = store.add_number(new).await?.id;
                store.add_sms(id, n.sms).await?;
                id
            }
        };
        numbers.push((n.e164.to_owned(), id));
    }
    let token = store.create_token(account.id).await?.token;
    Ok(SeededAccount {
        account,
        token,
        numbers,
    })
}

async fn seed_agent(store: &Store, acme: &SeededAccount) -> Result<(), StoreError> {
    let agents = store
        .list_agents(acme.account.id, PageRequest::first(200))
        .await?;
    if agents.items.iter().any(|a| a.name == AGENT_NAME) {
        return Ok(());
    }
    let in_use = acme
        .numbers
        .iter()
        .filter(|(e164, _)| e164 == IN_USE)
        .map(|(_, id)| *id);
    let new = NewAgent {
        name: AgentName::parse(AGENT_NAME)?,
        active: true,
        phone_number_ids: in_use.collect(),
    };
    store.create_agent(acme.account.id, new).await.map(drop)
}

/// Seeds the demo data set into `store` (already migrated).
pub async fn seed(store: &Store) -> Result<Seeded, StoreError> {
    let mut accounts = Vec::new();
    for spec in ACCOUNTS {
        accounts.push(seed_account(store, spec).await?);
    }
    seed_agent(store, &accounts[0]).await?;
    let staff_token = match store.rotate_staff_token(STAFF_EMAIL).await? {
        Some(staff) => staff.token,
        None => {
            store
                .create_staff(STAFF_EMAIL, "Riley Reviewer", StaffRole::Reviewer)
                .await?
                .token
        }
    };
    Ok(Seeded {
        accounts,
        staff_token,
    })
}

impl Seeded {
    /// The demo banner: tokens, numbers and a first curl to try.
    pub fn render(&self, base_url: &str) -> String {
        let mut out = String::from("\nReleaseDesk demo data\n");
        for seeded in &self.accounts {
            let a = &seeded.account;
            let _ = writeln!(
                out,
                "\n  customer  {} <{}>\n  token     {}",
                a.name, a.email, seeded.token
            );
            for (e164, id) in &seeded.numbers {
                let note = if e164 == IN_USE {
                    "  (in use by an agent)"
                } else {
                    ""
                };
                let _ = writeln!(out, "  number    {e164}  {id}{note}");
            }
        }
        let _ = writeln!(
            out,
            "\n  staff     Riley Reviewer <{STAFF_EMAIL}>\n  token     {}",
            self.staff_token
        );
        if let Some(first) = self.accounts.first()
            && let Some((_, number)) = first.numbers.first()
        {
            let _ = writeln!(
                out,
                "\nTry:\n  curl -s {base_url}/api/v1/phone-numbers -H 'Authorization: Bearer {token}'\n  \
                 curl -s -X POST {base_url}/api/v1/phone-numbers/{number}/request-release \\\n    \
                 -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' \\\n    \
                 -d '{{\"reason\": \"We moved this line to a toll-free number.\"}}'\n",
                token = first.token,
            );
        }
        out
    }
}
