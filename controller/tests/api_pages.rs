//! Pages: every list (stacks, versions, events, hooks, deliveries) takes
//! `limit` and `offset`, keeps its array shape, and answers
//! `X-Total-Count` and `Link` (`rel="next"`, `rel="prev"`). Following
//! `next` from the first page gives the whole list, in order; counts are
//! the caller's own items only; a bad `limit` or `offset` is 400.

mod support;

use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;
use support::{wait_status, Reply, TestServer};

/// A stack that needs no agent.
fn nothing_to_place(label: &str) -> Value {
    json!({"version": "1", "label": label, "configurations": [
        {"role": "web", "flag": "Web01", "provision": {"instance_count": 0},
         "container": {"image": "web"}}
    ]})
}

fn total(reply: &Reply) -> usize {
    reply.headers["x-total-count"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("a count")
}

/// `rel` → target of the reply's `Link` header.
fn links(reply: &Reply) -> Vec<(String, String)> {
    let Some(value) = reply.headers.get("link") else {
        return Vec::new();
    };
    value
        .to_str()
        .expect("ascii")
        .split(", ")
        .map(|link| {
            let (target, rel) = link.split_once(">; rel=").expect("link");
            (
                rel.trim_matches('"').to_owned(),
                target.trim_start_matches('<').to_owned(),
            )
        })
        .collect()
}

fn link(reply: &Reply, rel: &str) -> Option<String> {
    links(reply)
        .into_iter()
        .find(|(r, _)| r == rel)
        .map(|(_, target)| target)
}

/// Follows `next` from `path`; every item in order, and the first page's
/// total (which every page repeats).
async fn walk(t: &TestServer, token: &str, path: &str) -> (Vec<Value>, usize) {
    let first = t.get(path, token).await;
    assert_eq!(first.status, StatusCode::OK, "{path}: {}", first.text);
    let whole = total(&first);
    let mut items = Vec::new();
    let mut reply = first;
    let mut pages = 1;
    loop {
        assert_eq!(total(&reply), whole, "every page says the same total");
        items.extend(reply.json().as_array().expect("an array").clone());
        let Some(next) = link(&reply, "next") else {
            break;
        };
        assert!(link(&reply, "next").is_some() && items.len() < whole);
        reply = t.get(&next, token).await;
        assert_eq!(reply.status, StatusCode::OK, "{next}: {}", reply.text);
        assert!(link(&reply, "prev").is_some(), "page {pages}+1 links back");
        pages += 1;
        assert!(pages <= 100, "no end to {path}");
    }
    (items, whole)
}

/// `path` paged `limit` at a time lists what `path` unpaged lists (items
/// compared by `key`, a JSON pointer: records such as deliveries change
/// while they are read).
async fn pages_add_up(
    t: &TestServer,
    token: &str,
    path: &str,
    limit: usize,
    key: &str,
) -> Vec<Value> {
    let whole = t.get(path, token).await;
    assert_eq!(whole.status, StatusCode::OK, "{}", whole.text);
    let all = whole.json().as_array().expect("an array").clone();
    assert_eq!(total(&whole), all.len(), "{path}");
    assert!(links(&whole).is_empty(), "one page: no links");
    let sep = if path.contains('?') { '&' } else { '?' };
    let (paged, count) = walk(t, token, &format!("{path}{sep}limit={limit}")).await;
    assert_eq!(count, all.len(), "{path}");
    let keys = |items: &[Value]| -> Vec<Value> {
        items
            .iter()
            .map(|item| item.pointer(key).cloned().expect("the key"))
            .collect()
    };
    assert_eq!(
        keys(&paged),
        keys(&all),
        "{path}: the pages, in order, are the list"
    );
    all
}

#[tokio::test]
async fn every_list_pages_with_a_total_and_links() {
    let t = TestServer::start().await;
    let (_, _, alice) = t.user("alice").await;
    let (_, _, bob) = t.user("bob").await;
    let mut stacks = Vec::new();
    for label in ["a", "b", "c", "d", "e"] {
        stacks.push(t.apply(&alice, &nothing_to_place(label)).await.0);
    }
    t.apply(&bob, &nothing_to_place("bobs")).await;
    for n in 0..4 {
        let body = nothing_to_place(&format!("a{n}"));
        let path = format!("/v3/alm/template/{}", stacks[0]);
        let reply = t
            .send(reqwest::Method::PUT, &path, Some(&alice), Some(&body))
            .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    }
    // Settled, so that no status event lands while the lists are read.
    wait_status(&t, &alice, &stacks[0], "UPDATE_COMPLETE").await;
    for stack in &stacks[1..] {
        wait_status(&t, &alice, stack, "CREATE_COMPLETE").await;
    }

    // Stacks: Alice's five, in creation order, two at a time.
    let listed = pages_add_up(&t, &alice, "/v3/alm/stack", 2, "/stack_id").await;
    let mut ids: Vec<&str> = listed
        .iter()
        .filter_map(|s| s["stack_id"].as_str())
        .collect();
    ids.sort_unstable();
    let mut want: Vec<&str> = stacks.iter().map(String::as_str).collect();
    want.sort_unstable();
    assert_eq!(ids, want);
    // Bob's count is his own.
    let bobs = t.get("/v3/alm/stack?limit=1", &bob).await;
    assert_eq!(total(&bobs), 1);
    assert!(links(&bobs).is_empty());

    // One page out of the middle, with the other parameters kept.
    let middle = t
        .get(
            "/v3/alm/stack?include_deleted=true&limit=2&offset=2",
            &alice,
        )
        .await;
    assert_eq!(middle.json(), json!([listed[2], listed[3]]));
    assert_eq!(total(&middle), 5);
    assert_eq!(
        links(&middle),
        vec![
            (
                "next".to_owned(),
                "/v3/alm/stack?include_deleted=true&limit=2&offset=4".to_owned()
            ),
            (
                "prev".to_owned(),
                "/v3/alm/stack?include_deleted=true&limit=2&offset=0".to_owned()
            ),
        ]
    );
    // Past the end: empty, the total, and the way back.
    let past = t.get("/v3/alm/stack?offset=50&limit=2", &alice).await;
    assert_eq!(past.json(), json!([]));
    assert_eq!(total(&past), 5);
    assert_eq!(
        link(&past, "prev").as_deref(),
        Some("/v3/alm/stack?limit=2&offset=3")
    );

    // Versions: five of the first stack, newest first.
    let versions = format!("/v3/alm/template?template_id={}", stacks[0]);
    let listed = pages_add_up(&t, &alice, &versions, 2, "/version_id").await;
    assert_eq!(listed.len(), 5);
    assert_eq!(listed[0]["latest"], true);

    // Events: Alice's, and `since` counts from there.
    let listed = pages_add_up(&t, &alice, "/v3/events", 3, "/id").await;
    assert!(listed.len() >= 9, "5 created and 4 updated: {listed:?}");
    assert!(listed
        .iter()
        .all(|e| e["stack_id"] != json!(null) && stacks.iter().any(|s| e["stack_id"] == json!(s))));
    let since = listed[3]["id"].as_u64().expect("id");
    let after = pages_add_up(&t, &alice, &format!("/v3/events?since={since}"), 2, "/id").await;
    assert_eq!(after, listed[4..].to_vec());
    let kind = pages_add_up(&t, &alice, "/v3/events?type=stack.created", 2, "/id").await;
    assert_eq!(kind.len(), 5);

    // Hooks and their deliveries.
    for n in 0..3 {
        let url = format!("http://127.0.0.1:9/hook{n}");
        let reply = t
            .post(
                "/v3/hooks",
                &alice,
                &json!({"url": url, "events": ["stack.created"]}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    }
    let hooks = pages_add_up(&t, &alice, "/v3/hooks", 2, "/id").await;
    assert_eq!(hooks.len(), 3);
    assert_eq!(total(&t.get("/v3/hooks", &bob).await), 0);
    let hook = hooks[0]["id"].as_str().expect("id").to_owned();
    for label in ["f", "g", "h"] {
        t.apply(&alice, &nothing_to_place(label)).await;
    }
    let deliveries = format!("/v3/hooks/{hook}/deliveries");
    for _ in 0..100 {
        if total(&t.get(&deliveries, &alice).await) >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let listed = pages_add_up(&t, &alice, &deliveries, 1, "/id").await;
    assert_eq!(listed.len(), 3, "{listed:?}");
    t.stop().await;
}

#[tokio::test]
async fn bad_paging_is_refused_on_every_list() {
    let t = TestServer::start().await;
    let admin = t.admin_token().await;
    let (_, _, alice) = t.user("alice").await;
    let (stack, _) = t.apply(&alice, &nothing_to_place("x")).await;
    let hook = t
        .post(
            "/v3/hooks",
            &alice,
            &json!({"url": "http://127.0.0.1:9/", "events": ["stack.created"]}),
        )
        .await
        .json()["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let lists = [
        "/v3/alm/stack".to_owned(),
        format!("/v3/alm/template?template_id={stack}"),
        "/v3/alm/agents".to_owned(),
        "/v3/events".to_owned(),
        "/v3/hooks".to_owned(),
        format!("/v3/hooks/{hook}/deliveries"),
    ];
    for list in &lists {
        let sep = if list.contains('?') { '&' } else { '?' };
        for (query, code) in [
            ("limit=0", "invalid_query"),
            ("limit=10001", "invalid_query"),
            ("limit=x", "invalid_query"),
            ("offset=-1", "invalid_query"),
            ("offset=9223372036854775808", "invalid_query"),
        ] {
            let token = if list.contains("agents") {
                &admin
            } else {
                &alice
            };
            let reply = t.get(&format!("{list}{sep}{query}"), token).await;
            assert_eq!(reply.error(400), code, "{list} {query}: {}", reply.text);
        }
        let token = if list.contains("agents") {
            &admin
        } else {
            &alice
        };
        let fine = t
            .get(&format!("{list}{sep}limit=10000&offset=0"), token)
            .await;
        assert_eq!(fine.status, StatusCode::OK, "{list}: {}", fine.text);
        assert!(fine.headers.contains_key("x-total-count"), "{list}");
    }
    t.stop().await;
}
