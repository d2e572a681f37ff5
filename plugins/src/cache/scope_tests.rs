//! Whose answer an entry is: the route, host, scheme and (with `authorized`)
//! credential are part of the key, so two requests that differ in any of
//! them never share an answer; and a key's entries go with it, however long
//! its text.

use std::time::Duration;

use http::Method;

use super::entry::ENTRY_OVERHEAD;
use super::tests::{answer, rule, send_to, status_header, user, Origin, PLAIN};
use super::*;
use crate::hotkey::{HotKeyConfig, HotKeyRule};
use crate::key_text::{is_cut, KEY_TEXT_MAX};
use crate::testing::Env;
use crate::{Clock, Decision, Policy, RequestKeys, WaitOutcome};

fn at(route: &'static str, host: Option<&'static str>, tls: bool) -> Origin {
    Origin { route, host, tls }
}

/// `GET /` from alice to `origin`, with `headers`.
fn get(env: &Env, r: &HotKeyRule, origin: Origin, headers: &[(&str, &str)]) -> Decision {
    send_to(env, r, origin, &user("alice"), Method::GET, "/", headers).0
}

/// `GET /` from alice to `origin` misses and is filled with `body`.
fn fill(env: &Env, r: &HotKeyRule, origin: Origin, headers: &[(&str, &str)], body: &[u8]) {
    let (d, mut p) = send_to(env, r, origin, &user("alice"), Method::GET, "/", headers);
    assert!(
        matches!(d, Decision::Continue),
        "{origin:?}: expected a miss"
    );
    assert_eq!(status_header(&p), "breakwater; fwd=miss", "{origin:?}");
    answer(&mut p, 200, &[], body);
}

/// The body `GET /` from alice to `origin` is answered with from the cache.
fn served(env: &Env, r: &HotKeyRule, origin: Origin, headers: &[(&str, &str)]) -> Vec<u8> {
    match get(env, r, origin, headers) {
        Decision::Respond(resp) => resp.body.to_vec(),
        other => panic!("{origin:?} {headers:?}: expected a hit, got {other:?}"),
    }
}

#[test]
fn another_host_is_another_resource_whatever_its_case() {
    let env = Env::new();
    let r = rule(&env, "");
    let a = at("r", Some("tenant-a.shop.test"), false);
    let b = at("r", Some("tenant-b.shop.test"), false);
    fill(&env, &r, a, &[], b"tenant a");
    // Same route, key, path and query: only the host differs.
    fill(&env, &r, b, &[], b"tenant b");
    assert_eq!(served(&env, &r, a, &[]), b"tenant a");
    assert_eq!(served(&env, &r, b, &[]), b"tenant b");
    // Host names are case-insensitive (RFC 9110 §4.2.3).
    let shouted = at("r", Some("TENANT-A.Shop.Test"), false);
    assert_eq!(served(&env, &r, shouted, &[]), b"tenant a");
    // A request that named no host is another resource too.
    assert!(matches!(get(&env, &r, PLAIN, &[]), Decision::Continue));
}

#[test]
fn routes_that_share_a_named_rule_keep_their_own_answers() {
    let env = Env::new();
    // One rule object, as two routes that declare `name: goods-hot` get.
    let r = rule(&env, "");
    let shop_a = at("shop-a", Some("a.test"), false);
    let shop_b = at("shop-b", Some("a.test"), false);
    fill(&env, &r, shop_a, &[], b"route a");
    fill(&env, &r, shop_b, &[], b"route b");
    assert_eq!(served(&env, &r, shop_a, &[]), b"route a");
    assert_eq!(served(&env, &r, shop_b, &[]), b"route b");
}

#[test]
fn https_and_http_are_two_resources() {
    let env = Env::new();
    let r = rule(&env, "");
    let plain = at("r", Some("shop.test"), false);
    let tls = at("r", Some("shop.test"), true);
    fill(&env, &r, tls, &[], b"over tls");
    fill(&env, &r, plain, &[], b"in the clear");
    assert_eq!(served(&env, &r, tls, &[]), b"over tls");
    assert_eq!(served(&env, &r, plain, &[]), b"in the clear");
}

#[test]
fn with_authorized_each_credential_has_its_own_answer() {
    let env = Env::new();
    let r = rule(&env, ", authorized: true");
    let alice = [("authorization", "Bearer alice-token")];
    let mallory = [("authorization", "Bearer mallory-token")];
    fill(&env, &r, PLAIN, &alice, b"alice's orders");
    fill(&env, &r, PLAIN, &mallory, b"mallory's orders");
    // No credential at all is a third resource.
    fill(&env, &r, PLAIN, &[], b"the public page");
    assert_eq!(served(&env, &r, PLAIN, &alice), b"alice's orders");
    assert_eq!(served(&env, &r, PLAIN, &mallory), b"mallory's orders");
    assert_eq!(served(&env, &r, PLAIN, &[]), b"the public page");
}

#[tokio::test]
async fn another_credential_never_waits_for_a_fill() {
    let env = Env::new();
    let r = rule(&env, ", authorized: true");
    let (_, mut alice) = send_to(
        &env,
        &r,
        PLAIN,
        &user("alice"),
        Method::GET,
        "/",
        &[("authorization", "Bearer alice-token")],
    );
    // Alice's fill is in flight: mallory leads her own, alice's twin waits.
    let mallory = get(
        &env,
        &r,
        PLAIN,
        &[("authorization", "Bearer mallory-token")],
    );
    assert!(matches!(mallory, Decision::Continue), "{mallory:?}");
    let Decision::Wait(twin) = get(&env, &r, PLAIN, &[("authorization", "Bearer alice-token")])
    else {
        panic!("the same credential waits for the fill")
    };
    answer(&mut alice, 200, &[], b"alice's orders");
    let WaitOutcome::Respond(shared) = twin.await else {
        panic!("expected alice's fill")
    };
    assert_eq!(&shared.body[..], b"alice's orders");
}

/// A rule that caches hot keys only, on the `user` key.
fn hot_only(env: &Env) -> HotKeyRule {
    let cfg: HotKeyConfig = serde_yaml::from_str(
        "{ key: user, threshold: 20, window: 1s, hot_ttl: 1s, actions: [cache] }",
    )
    .unwrap();
    cfg.compile("goods.hotkey".into(), "p", &env.policy_env())
        .unwrap()
}

/// Sends `keys`' requests until their key is hot and served from cache.
fn heat(env: &Env, r: &HotKeyRule, keys: &RequestKeys) {
    let mut served = 0;
    for _ in 0..40 {
        env.clock.advance(Duration::from_millis(10));
        match send_to(env, r, PLAIN, keys, Method::GET, "/", &[]) {
            (Decision::Continue, mut p) if p.has_taps() => answer(&mut p, 200, &[], b"hot"),
            (Decision::Respond(_), _) => served += 1,
            _ => {}
        }
    }
    assert!(served > 10, "served {served} from cache once hot");
}

#[test]
fn a_long_keys_entries_go_when_it_cools() {
    let env = Env::new();
    let r = hot_only(&env);
    // Its text is cut to 128 bytes in the hot event; the entries must go
    // all the same.
    let long = user(&"u".repeat(300));
    heat(&env, &r, &long);
    assert!(r.cache().unwrap().counts().entries > 0);
    env.clock.advance(Duration::from_secs(3));
    r.tick(env.clock.now_nanos());
    assert!(r.hot_keys().is_empty());
    assert_eq!(r.cache().unwrap().counts().entries, 0);
}

#[test]
fn an_entry_keeps_at_most_the_cut_text_of_its_key() {
    let env = Env::new();
    let r = rule(&env, "");
    // A client-chosen key of 1 MiB.
    let huge = user(&"k".repeat(1 << 20));
    let (_, mut p) = send_to(&env, &r, PLAIN, &huge, Method::GET, "/", &[]);
    answer(&mut p, 200, &[], b"x");
    let counts = r.cache().unwrap().counts();
    assert_eq!(counts.entries, 1);
    // One byte of body, no headers, the cut text and the fixed overhead.
    assert_eq!(
        counts.bytes,
        (1 + KEY_TEXT_MAX) as u64 + u64::from(ENTRY_OVERHEAD),
        "an entry's weight"
    );
}

#[test]
fn the_admin_drops_a_cut_key_by_its_hash_and_a_whole_one_by_its_text() {
    let env = Env::new();
    let r = hot_only(&env);
    let long = user(&"u".repeat(300));
    let (short_a, short_b) = (user("alice"), user("bob"));
    for keys in [&long, &short_a, &short_b] {
        heat(&env, &r, keys);
    }
    let cache = r.cache().unwrap();
    let hot = r.hot_keys();
    let long_hot = hot
        .iter()
        .find(|k| is_cut(&k.key))
        .expect("the long key is hot");
    assert_eq!(long_hot.key.len(), KEY_TEXT_MAX);

    let hits = |keys: &RequestKeys| {
        matches!(
            send_to(&env, &r, PLAIN, keys, Method::GET, "/", &[]).0,
            Decision::Respond(_)
        )
    };
    cache.invalidate(KeyRef::Hash(long_hot.hash));
    cache.counts(); // runs moka's pending invalidations
    assert!(!hits(&long), "the long key's entry was dropped");
    assert!(hits(&short_a) && hits(&short_b), "the others stay");
    cache.invalidate(KeyRef::Text("alice"));
    cache.counts();
    assert!(!hits(&short_a), "alice's entry was dropped");
    assert!(hits(&short_b), "bob's stays");
    // `#<16 hex>` names a key by its hash, as on the block list.
    assert_eq!(
        KeyRef::parse(&format!("#{:016x}", long_hot.hash)),
        KeyRef::Hash(long_hot.hash)
    );
    assert_eq!(KeyRef::parse("#12"), KeyRef::Text("#12"));
    assert_eq!(KeyRef::parse("bob"), KeyRef::Text("bob"));
}

#[test]
fn cooling_one_key_keeps_another_keys_entries() {
    let env = Env::new();
    let r = hot_only(&env);
    heat(&env, &r, &user("alice"));
    // Bob turns hot later and stays hot while alice cools.
    let bob = user("bob");
    for _ in 0..200 {
        env.clock.advance(Duration::from_millis(10));
        if let (Decision::Continue, mut p) = send_to(&env, &r, PLAIN, &bob, Method::GET, "/", &[]) {
            if p.has_taps() {
                answer(&mut p, 200, &[], b"bob");
            }
        }
        r.tick(env.clock.now_nanos());
    }
    let hot: Vec<_> = r.hot_keys().into_iter().map(|k| k.key).collect();
    assert_eq!(hot, ["bob"]);
    assert_eq!(r.cache().unwrap().counts().entries, 1, "bob's entry only");
    let (d, _) = send_to(&env, &r, PLAIN, &bob, Method::GET, "/", &[]);
    assert!(matches!(d, Decision::Respond(_)), "{d:?}");
}
