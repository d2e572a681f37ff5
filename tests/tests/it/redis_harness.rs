//! The Redis harness itself: a server that can be killed and restarted on
//! its port, and a cluster whose hash tags and redirections behave as the
//! gateway's Redis-backed features will rely on.

use breakwater_tests::{RedisCluster, RedisServer};

/// Also run from a tokio test: the blocking harness must work there too.
#[tokio::test]
async fn server_survives_kill_and_restart_on_the_same_port() {
    let mut redis = RedisServer::start();
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{}", redis.port()));
    assert_eq!(redis.command(&["SET", "bw:k", "v"]), "OK");
    assert_eq!(redis.command(&["GET", "bw:k"]), "v");
    assert_eq!(redis.command(&["DBSIZE"]), "1");

    redis.kill();
    assert!(!redis.ping());
    assert_eq!(redis.command(&["PING"]), "");
    let err = redis
        .try_command(&["PING"])
        .expect_err("PING to a killed server");
    assert!(err.contains("Could not connect"), "{err}");

    let port = redis.port();
    redis.restart();
    assert_eq!(redis.port(), port);
    assert!(redis.ping());
    assert_eq!(redis.command(&["PING"]), "PONG");
    // Nothing is persisted: a restart comes back empty.
    assert_eq!(redis.command(&["DBSIZE"]), "0");
}

#[test]
fn cluster_shares_slots_by_hash_tag_and_follows_redirects() {
    let cluster = RedisCluster::start(3);
    assert_eq!(cluster.ports().len(), 3);
    assert_eq!(cluster.urls().len(), 3);

    let slot = cluster.keyslot("{bw:3}:c:x");
    assert_eq!(slot, cluster.keyslot("{bw:3}:hot:y"));
    assert!(slot < 16384);

    assert_eq!(cluster.command(&["SET", "{bw:3}:c:x", "1"]), "OK");
    assert_eq!(cluster.command(&["GET", "{bw:3}:c:x"]), "1");
    // Keys spread over all masters: some of these are MOVED away from the
    // first node, and `-c` follows.
    for i in 0..20 {
        let key = format!("bw:spread:{i}");
        assert_eq!(cluster.command(&["SET", &key, &i.to_string()]), "OK");
        assert_eq!(cluster.command(&["GET", &key]), i.to_string());
    }
    let total: u64 = cluster
        .nodes()
        .iter()
        .map(|n| n.command(&["DBSIZE"]).parse::<u64>().expect("DBSIZE"))
        .sum();
    assert_eq!(total, 21);
    assert!(
        cluster
            .nodes()
            .iter()
            .all(|n| n.command(&["DBSIZE"]) != "0"),
        "20 keys should land on every one of 3 masters"
    );
}
