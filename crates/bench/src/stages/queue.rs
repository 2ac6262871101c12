//! Stage 3: the reviewer queue with a million requests stored: the first page,
//! and a deep page reached by following `next_cursor`.

use anyhow::{Context, Result};

use crate::{
    Ctx,
    db::{Db, FreshDb},
    load,
    process::{self, Role, Service},
    report::{Bound, Report, Row, Target},
    seed::Fixture,
};

const LIMIT: usize = 50;

pub async fn run(ctx: &Ctx, db: Db, report: &mut Report) -> Result<()> {
    let fresh = FreshDb::create(db, &ctx.pg_url).await?;
    let result = measure(ctx, &fresh, report).await;
    fresh.drop_database().await;
    result
}

async fn measure(ctx: &Ctx, fresh: &FreshDb, report: &mut Report) -> Result<()> {
    let label = fresh.db.label();
    let vars = process::environment(fresh);
    process::migrate(&ctx.binary, &vars, fresh.path()).await?;
    let pool = fresh.pool(4).await?;
    let mut fixture = Fixture::create(pool.clone(), 4).await?;
    let (total, pending) = (ctx.plan.queue_requests, ctx.plan.queue_pending);
    eprintln!("  {label}: loading {total} requests ({pending} pending)");
    fixture.history(total - pending, pending, false).await?;
    pool.close().await;

    let reviewer = Service::start(&ctx.binary, Role::Reviewer, &vars, fresh.path()).await?;
    let http = load::client(1)?;
    let first = reviewer.url(&format!("/reviewer/api/v1/queue?limit={LIMIT}"));
    let samples = ctx.plan.queue_samples;
    let (body, first_page) = load::repeat_get(&http, &first, &fixture.staff_token, samples).await?;
    let items = body["data"].as_array().map_or(0, Vec::len);
    anyhow::ensure!(items == LIMIT.min(pending), "first page has {items} items");

    let depth = (pending / LIMIT)
        .saturating_sub(1)
        .min(ctx.plan.queue_depth)
        .max(1);
    let mut cursor = body["next_cursor"].as_str().map(str::to_owned);
    for _ in 1..depth {
        let Some(c) = cursor.clone() else { break };
        let url = format!("{first}&cursor={c}");
        let (page, _) = load::repeat_get(&http, &url, &fixture.staff_token, 0).await?;
        cursor = page["next_cursor"].as_str().map(str::to_owned);
    }
    let cursor = cursor.context("the queue ended before the deep page")?;
    let deep = format!("{first}&cursor={cursor}");
    let (body, deep_page) = load::repeat_get(&http, &deep, &fixture.staff_token, samples).await?;
    let items = body["data"].as_array().map_or(0, Vec::len);
    anyhow::ensure!(items > 0, "the deep page is empty");
    let start_up = reviewer.start_up;
    reviewer.stop().await?;

    // Every process start migrates, and apalis's setup analyses the tables on
    // SQLite (`PRAGMA optimize`): how long a restart over this much data takes.
    report.push(
        Row::new(
            label,
            "reviewer queue",
            format!("reviewer start-up over {total} requests"),
        )
        .value(start_up.as_secs_f64() * 1e3, "ms"),
    );
    for (name, h) in [
        ("first page".to_owned(), &first_page),
        (format!("page {} (cursor)", depth + 1), &deep_page),
    ] {
        report.push(
            Row::new(label, "reviewer queue", format!("{name}: p50")).value(load::ms(h, 0.5), "ms"),
        );
        report.push(
            Row::new(label, "reviewer queue", format!("{name}: p99"))
                .value(load::ms(h, 0.99), "ms")
                .target(Target::Value(Bound::AtMost(10.0))),
        );
    }
    Ok(())
}
