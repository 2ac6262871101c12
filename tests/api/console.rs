//! The reviewer console in a real browser: sign in, find a request in the queue,
//! approve it, and cancel another with a note.

use std::path::Path;

use fantoccini::{Locator, elements::Element};
use releasedesk_tests::{TestApp, browser::Browser};

async fn find(browser: &Browser, css: &str) -> Element {
    browser
        .client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
}

async fn text(browser: &Browser, css: &str) -> String {
    find(browser, css).await.text().await.unwrap()
}

/// Follows the queue's link to a request and waits for its page.
async fn open_request(browser: &Browser, number: &str) {
    let link = browser
        .client
        .find(Locator::LinkText(number))
        .await
        .unwrap();
    link.click().await.unwrap();
    browser
        .client
        .wait()
        .at_most(std::time::Duration::from_secs(15))
        .for_element(Locator::Css("#status"))
        .await
        .unwrap();
}

/// Clicks `button` and waits for `marker`, an element only the next page has (a
/// form post navigates; reading the old page would race it).
async fn submit(browser: &Browser, button: &str, marker: &str) {
    find(browser, button).await.click().await.unwrap();
    browser
        .client
        .wait()
        .at_most(std::time::Duration::from_secs(15))
        .for_element(Locator::Css(marker))
        .await
        .unwrap_or_else(|e| panic!("after clicking {button}, {marker} did not appear: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviewer_signs_in_approves_one_request_and_cancels_another() {
    let app = TestApp::sqlite().await;
    let Some(browser) = Browser::start().await else {
        return;
    };
    let acme = app.customer().await;
    let to_approve = app.file_request(&acme, app.number(&acme).await).await;
    let to_cancel = app.file_request(&acme, app.number(&acme).await).await;
    let riley = app.reviewer("Riley Reviewer").await;
    let c = &browser.client;

    // Signed out, the console sends you to sign in; a wrong token is refused.
    c.goto(&format!("{}/reviewer/queue", app.base_url))
        .await
        .unwrap();
    assert!(
        c.current_url()
            .await
            .unwrap()
            .path()
            .ends_with("/reviewer/sign-in")
    );
    find(&browser, "#token")
        .await
        .send_keys("rd_staff_wrong")
        .await
        .unwrap();
    submit(&browser, "#sign-in", ".flash.error").await;
    assert!(
        text(&browser, ".flash.error")
            .await
            .contains("not a valid staff token")
    );

    find(&browser, "#token")
        .await
        .send_keys(&riley.token)
        .await
        .unwrap();
    submit(&browser, "#sign-in", "form.filters").await;
    assert!(
        c.current_url()
            .await
            .unwrap()
            .path()
            .ends_with("/reviewer/queue")
    );
    let queue = text(&browser, "table.queue").await;
    for filed in [&to_approve, &to_cancel] {
        assert!(
            queue.contains(filed["phone_number"].as_str().unwrap()),
            "{queue}"
        );
    }
    assert!(text(&browser, ".who").await.contains("Riley Reviewer"));
    let shot = browser
        .screenshot(Path::new(env!("CARGO_TARGET_TMPDIR")), "reviewer-queue")
        .await;
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 1_000,
        "a real PNG"
    );

    // Approve the first.
    let number = to_approve["phone_number"].as_str().unwrap();
    open_request(&browser, number).await;
    assert_eq!(text(&browser, "#status").await, "pending");
    find(&browser, "#approve-note")
        .await
        .send_keys("Checked with the account owner.")
        .await
        .unwrap();
    submit(&browser, "#approve", ".flash.ok").await;
    assert_eq!(text(&browser, "#status").await, "approved");
    assert!(text(&browser, ".flash.ok").await.contains("Approved"));
    assert!(
        text(&browser, "table.timeline")
            .await
            .contains("Checked with the account owner.")
    );
    browser
        .screenshot(
            Path::new(env!("CARGO_TARGET_TMPDIR")),
            "reviewer-request-approved",
        )
        .await;

    // Cancel the second with a note for the customer.
    c.goto(&format!("{}/reviewer/queue", app.base_url))
        .await
        .unwrap();
    let queue = text(&browser, "table.queue").await;
    assert!(
        !queue.contains(number),
        "approved requests leave the pending queue"
    );
    open_request(&browser, to_cancel["phone_number"].as_str().unwrap()).await;
    let note = "The number has an open porting order; contact support first.";
    find(&browser, "#cancel-note")
        .await
        .send_keys(note)
        .await
        .unwrap();
    submit(&browser, "#cancel", ".flash.ok").await;
    assert_eq!(text(&browser, "#status").await, "cancelled");
    let emailed = "SELECT COUNT(*) FROM outbox WHERE topic = 'request_cancelled' AND payload LIKE '%open porting order%'";
    assert_eq!(
        app.count(emailed).await,
        1,
        "the customer is emailed the note"
    );

    // Signing out ends the session.
    find(&browser, "form.inline button")
        .await
        .click()
        .await
        .unwrap();
    c.goto(&format!("{}/reviewer/queue", app.base_url))
        .await
        .unwrap();
    assert!(
        c.current_url()
            .await
            .unwrap()
            .path()
            .ends_with("/reviewer/sign-in")
    );
    let _ = browser.client.clone().close().await;
}

/// A form posted without the session's CSRF token changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_forms_without_the_csrf_token_change_nothing() {
    let app = TestApp::sqlite().await;
    let acme = app.customer().await;
    let filed = app.file_request(&acme, app.number(&acme).await).await;
    let riley = app.reviewer("Riley").await;
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let sign_in = client
        .get(format!("{}/reviewer/sign-in", app.base_url))
        .send()
        .await
        .unwrap();
    let page = sign_in.text().await.unwrap();
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let signed_in = client
        .post(format!("{}/reviewer/sign-in", app.base_url))
        .form(&[("token", riley.token.as_str()), ("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.headers()["location"], "/reviewer/queue");
    let cookie = signed_in
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("rd_session="))
        .unwrap();
    assert!(
        cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict")
            && cookie.contains("Max-Age"),
        "{cookie}"
    );

    let id = filed["id"].as_str().unwrap();
    let forged = client
        .post(format!("{}/reviewer/requests/{id}/approve", app.base_url))
        .form(&[("csrf", "forged"), ("note", "")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), reqwest::StatusCode::SEE_OTHER);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM release_requests WHERE status = 'pending'")
            .await,
        1
    );
}
