//! `kisumctl restore` of MongoDB and Redis, and `restore --all`: the swap
//! equivalents (a repointed MongoDB database, `SWAPDB` for Redis), SIGKILL
//! during a MongoDB restore and at each step of a Redis restore,
//! `--cleanup`, and the order of section 22.4.

use kisum_testkit::{Mongo, Postgres, Redis};
use mongodb::bson::{Document, doc};
use serde_json::Value;

use crate::common::{stderr, stdout};
use crate::proxy::{Hold, Relay};
use crate::site::{Site, connect, exec};

/// The database the service's credentials point at.
fn live_database(site: &Site) -> String {
    let url = site.read_secret("main-db-credentials", "url");
    let path = url.split_once("://").unwrap().1.split_once('/').unwrap().1;
    path.split('?').next().unwrap().to_string()
}

async fn mongo_client(mongo: &Mongo) -> mongodb::Client {
    let url = format!(
        "mongodb://127.0.0.1:{}/?directConnection=true&connectTimeoutMS=60000",
        mongo.port()
    );
    mongodb::Client::with_uri_str(&url).await.unwrap()
}

async fn count(client: &mongodb::Client, database: &str) -> u64 {
    client
        .database(database)
        .collection::<Document>("users")
        .count_documents(doc! {})
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mongodb_backup_with_the_server_down_fails_in_seconds_naming_it() {
    let (site, mongo, client) = mongo_site(3).await;
    let port = mongo.port();
    drop(client);
    drop(mongo);

    let started = std::time::Instant::now();
    let failed = site.expect(&["backup", "local", "main-db"], 3);
    let seconds = started.elapsed().as_secs();
    let said = stderr(&failed);
    assert!(seconds < 30, "took {seconds} s: {said}");
    assert!(
        said.contains(&format!(
            "MongoDB at 127.0.0.1:{port} did not answer within 10 s"
        )),
        "{said}"
    );
    let written: Vec<_> = std::fs::read_dir(site.store())
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with('.'))
        .collect();
    assert!(written.is_empty(), "no backup was written: {written:?}");
}

/// main-db with `n` users and an index, provisioned as `deploy local` does.
async fn mongo_site(n: i64) -> (Site, Mongo, mongodb::Client) {
    let mongo = Mongo::start().await.unwrap();
    let (site, client) = provisioned(&mongo, n).await;
    (site, mongo, client)
}

/// A site whose main-db is on `mongo`, provisioned, with `n` users and an
/// index.
async fn provisioned(mongo: &Mongo, n: i64) -> (Site, mongodb::Client) {
    let site = Site::new(25433);
    site.edit("environments/local.yaml", |t| {
        t.replace("port: 27117", &format!("port: {}", mongo.port()))
    });
    site.expect(&["db", "provision", "local", "main-db"], 0);
    let client = mongo_client(mongo).await;
    let users = client.database("main").collection::<Document>("users");
    let docs: Vec<Document> = (0..n)
        .map(|n| doc! { "n": n, "name": format!("user {n}") })
        .collect();
    users.insert_many(docs).await.unwrap();
    let index = mongodb::IndexModel::builder().keys(doc! { "n": 1 }).build();
    users.create_index(index).await.unwrap();
    (site, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mongodb_restore_repoints_the_service_and_keeps_the_previous_database() {
    let (site, _mongo, client) = mongo_site(300).await;
    let manifest = site.backup("main-db");
    let users = client.database("main").collection::<Document>("users");
    users
        .delete_many(doc! { "n": { "$lt": 100 } })
        .await
        .unwrap();

    let dry = site.expect(&["restore", "local", "main-db", "--dry-run"], 0);
    assert!(stdout(&dry).contains("main_restored_"), "{}", stdout(&dry));
    assert_eq!(live_database(&site), "main", "a dry run changes nothing");

    let restored = site.json(&["restore", "local", "main-db", "--yes", "-o", "json"], 0);
    let outcome = &restored["restores"][0];
    assert_eq!(outcome["backup_id"], manifest["id"]);
    assert_eq!(outcome["previous"], "main");
    let live = live_database(&site);
    assert!(live.starts_with("main_restored_"), "{live}");
    assert_eq!(count(&client, &live).await, 300, "the backup is live");
    assert_eq!(
        count(&client, "main").await,
        200,
        "the previous one is kept"
    );
    let indexes = client
        .database(&live)
        .collection::<Document>("users")
        .list_index_names()
        .await
        .unwrap();
    assert!(indexes.contains(&"n_1".to_string()), "{indexes:?}");

    // What follows works on the live database: backups, and provisioning
    // keeps the service where the restore put it.
    let next = site.backup("main-db");
    assert_eq!(next["source"]["name"], live.as_str());
    assert_eq!(next["counts"]["users"], 300);
    site.expect(&["db", "provision", "local", "main-db"], 0);
    assert_eq!(live_database(&site), live);

    let cleanup = site.expect(&["restore", "local", "main-db", "--cleanup", "--yes"], 0);
    assert!(
        stdout(&cleanup).contains("dropped main\n"),
        "{}",
        stdout(&cleanup)
    );
    assert_eq!(count(&client, "main").await, 0);
    assert_eq!(count(&client, &live).await, 300, "the live database stays");
    let again = site.expect(&["restore", "local", "main-db", "--cleanup", "--yes"], 0);
    assert_eq!(stdout(&again), "", "nothing is dropped twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_mongodb_restore_leaves_the_original_serving() {
    let (site, _mongo, client) = mongo_site(1500).await;
    site.backup("main-db");
    let users = client.database("main").collection::<Document>("users");
    users
        .insert_one(doc! { "n": -1, "name": "after the backup" })
        .await
        .unwrap();

    let scratch = kill_while_restoring(&site, &client).await;
    let journal = site.root().join(".kisum/local/restores/main-db.json");

    assert_eq!(
        live_database(&site),
        "main",
        "the service still points at the original"
    );
    assert_eq!(
        count(&client, "main").await,
        1501,
        "the original is untouched"
    );
    assert!(journal.is_file(), "the journal remains");

    let rerun = site.expect(&["restore", "local", "main-db", "--yes"], 0);
    assert!(
        stderr(&rerun).contains("stopped while restoring the backup, before the swap"),
        "{}",
        stderr(&rerun)
    );
    assert_eq!(
        count(&client, &scratch).await,
        0,
        "the unfinished copy was dropped"
    );
    assert_eq!(count(&client, &live_database(&site)).await, 1500);
}

/// A restore of `database` stopped by `signal` within `seconds`, before
/// its swap: exit 3, and stderr says so and names the command to rerun.
fn stopped_before_the_swap<T>(
    stopped: &crate::site::Signalled<T>,
    signal: &str,
    database: &str,
    seconds: f64,
) {
    let said = &stopped.stderr;
    assert_eq!(stopped.code, Some(3), "{said}");
    assert!(stopped.seconds < seconds, "took {} s", stopped.seconds);
    assert!(
        said.contains(&format!("interrupted by {signal}"))
            && said.contains(&format!("next: run `kisumctl restore local {database}")),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_to_kisumctl_alone_stops_a_mongodb_restore_and_the_original_keeps_serving() {
    let (site, _mongo, client) = mongo_site(1500).await;
    site.backup("main-db");
    let journal = site.root().join(".kisum/local/restores/main-db.json");
    let args = ["restore", "local", "main-db", "--yes"];
    let stopped = site
        .signal_when(&args, "TERM", async || {
            let value: Value =
                serde_json::from_str(&std::fs::read_to_string(&journal).ok()?).ok()?;
            let scratch = value["scratch"].as_str()?.to_string();
            database_names(&client)
                .await
                .contains(&scratch)
                .then_some(scratch)
        })
        .await;
    let said = &stopped.stderr;
    stopped_before_the_swap(&stopped, "SIGTERM", "main-db", 30.0);
    assert!(said.contains("main was left serving, unchanged"), "{said}");
    assert_eq!(
        live_database(&site),
        "main",
        "the service still points at it"
    );
    assert_eq!(
        count(&client, "main").await,
        1500,
        "the original is untouched"
    );
    assert!(
        !database_names(&client).await.contains(&stopped.found),
        "the new database {} was dropped: {said}",
        stopped.found
    );
    assert!(!journal.exists(), "the journal is closed");
    assert_eq!(site.last_journal_result(), "interrupted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restore_swaps_databases_and_keeps_the_previous_keys() {
    let redis = Redis::start().await.unwrap();
    let site = Site::new(25433);
    site.edit("environments/local.yaml", |t| {
        t.replace("port: 26379", &format!("port: {}", redis.port()))
    });
    let refused = site.expect(&["restore", "local", "redis", "--yes"], 2);
    assert!(
        stderr(&refused).contains("pure cache"),
        "{}",
        stderr(&refused)
    );
    site.edit("environments/base.yaml", |t| {
        t.replacen("  persistence: none\n", "  persistence: rdb\n", 1)
    });
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut pipe = redis::pipe();
    for n in 0..250 {
        pipe.set(format!("session:{n}"), format!("value-{n}"))
            .ignore();
    }
    pipe.set_ex("expiring", "soon", 3600).ignore();
    pipe.query_async::<()>(&mut conn).await.unwrap();
    site.backup("redis");
    let mut pipe = redis::pipe();
    for n in 0..100 {
        pipe.del(format!("session:{n}")).ignore();
    }
    pipe.set("session:0", "changed").ignore();
    pipe.query_async::<()>(&mut conn).await.unwrap();

    let restored = site.json(&["restore", "local", "redis", "--yes", "-o", "json"], 0);
    let previous = restored["restores"][0]["previous"]
        .as_str()
        .unwrap()
        .to_string();
    let value: String = redis::cmd("GET")
        .arg("session:0")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(value, "value-0", "the backup's keys are live");
    let size: u64 = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
    assert_eq!(size, 251);
    let ttl: i64 = redis::cmd("TTL")
        .arg("expiring")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 3000, "expiry kept: {ttl}");
    let index: u32 = previous.parse().unwrap();
    let mut before = redis::Client::open(format!("{}/{index}", redis.url()))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let kept: String = redis::cmd("GET")
        .arg("session:0")
        .query_async(&mut before)
        .await
        .unwrap();
    assert_eq!(
        kept, "changed",
        "the previous keys are kept in database {index}"
    );

    site.expect(&["restore", "local", "redis", "--cleanup", "--yes"], 0);
    let size: u64 = redis::cmd("DBSIZE").query_async(&mut before).await.unwrap();
    assert_eq!(size, 0);
    let size: u64 = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
    assert_eq!(size, 251, "the live keys stay");
}

/// The last step of the Redis restore's journal, if there is one.
fn journal_step(site: &Site) -> Option<String> {
    let path = site.root().join(".kisum/local/restores/redis.json");
    let value: Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    value["steps"].as_array()?.last()?[0]
        .as_str()
        .map(str::to_string)
}

async fn get(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> Option<String> {
    redis::cmd("GET").arg(key).query_async(conn).await.unwrap()
}

async fn redis_db(redis: &Redis, index: u32) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("{}/{index}", redis.url()))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// A persistent Redis reached through a [`Relay`], holding 250 keys
/// (`session:N` = `value-N`) in database 0, backed up; answers a direct
/// connection to that database.
async fn redis_behind_a_relay() -> (Redis, Relay, Site, redis::aio::MultiplexedConnection) {
    let redis = Redis::start().await.unwrap();
    let relay = Relay::start(redis.port()).await;
    let site = Site::new(25433);
    site.edit("environments/local.yaml", |t| {
        t.replace("port: 26379", &format!("port: {}", relay.port))
    });
    site.edit("environments/base.yaml", |t| {
        t.replacen("  persistence: none\n", "  persistence: rdb\n", 1)
    });
    let mut live = redis_db(&redis, 0).await;
    let mut pipe = redis::pipe();
    for n in 0..250 {
        pipe.set(format!("session:{n}"), format!("value-{n}"))
            .ignore();
    }
    pipe.query_async::<()>(&mut live).await.unwrap();
    site.backup("redis");
    (redis, relay, site, live)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_each_step_of_a_redis_restore_leaves_the_original_serving() {
    // kisumctl reaches Redis through a relay that freezes it at an exact
    // command, where the test kills it; the test reads Redis directly.
    let (redis, relay, site, mut live) = redis_behind_a_relay().await;

    // (where kisumctl is frozen, the journal's step then, whether the swap
    // happened, how the test finishes it)
    let cases: [(Hold, &str, bool, &str); 5] = [
        (Hold::Request(b"SYNC\r\n"), "started", false, "--cleanup"),
        (Hold::Request(b"\r\nRESTORE\r\n"), "created", false, "rerun"),
        (
            Hold::Request(b"kisumctl:restore:"),
            "verified",
            false,
            "rerun",
        ),
        (
            Hold::Request(b"\r\nSWAPDB\r\n"),
            "swapping",
            false,
            "--cleanup",
        ),
        (
            Hold::Reply(b"\r\nSWAPDB\r\n"),
            "swapping",
            true,
            "--cleanup",
        ),
    ];
    for (n, (hold, step, swapped, finish)) in cases.into_iter().enumerate() {
        let marker = format!("original-{n}");
        redis::cmd("SET")
            .arg("marker")
            .arg(&marker)
            .query_async::<()>(&mut live)
            .await
            .unwrap();
        relay.arm(hold);
        let journal = site
            .kill_when(&["restore", "local", "redis", "--yes"], async || {
                if !relay.held() || journal_step(&site)? != step {
                    return None;
                }
                let path = site.root().join(".kisum/local/restores/redis.json");
                serde_json::from_str::<Value>(&std::fs::read_to_string(path).ok()?).ok()
            })
            .await;
        let staging = u32::try_from(journal["redis_pairs"][0][1].as_u64().unwrap()).unwrap();
        // Killed while it copied keys, kisumctl left its scratch server.
        let scratch_server = journal["scratch_server"][0]
            .as_u64()
            .map(|pid| u32::try_from(pid).unwrap());
        assert_eq!(scratch_server.is_some(), step == "created", "{journal}");
        let mut kept = redis_db(&redis, staging).await;
        if swapped {
            // The swap happened before the kill: the backup serves, the
            // original (with its marker) is the kept previous data.
            assert_eq!(get(&mut live, "marker").await, None, "{step}");
            assert_eq!(get(&mut kept, "marker").await, Some(marker.clone()));
        } else {
            assert_eq!(
                get(&mut live, "marker").await,
                Some(marker.clone()),
                "killed at {hold:?}: the original still serves"
            );
            let size: u64 = redis::cmd("DBSIZE").query_async(&mut live).await.unwrap();
            assert_eq!(size, 251, "killed at {hold:?}");
        }

        let args = if finish == "rerun" {
            vec!["restore", "local", "redis", "--yes"]
        } else {
            vec!["restore", "local", "redis", "--cleanup", "--yes"]
        };
        let done = site.expect(&args, 0);
        let said = stderr(&done) + &stdout(&done);
        let expected = if swapped {
            "recorded as complete"
        } else {
            "before the swap"
        };
        assert!(said.contains(expected), "{hold:?}: {said}");
        assert!(
            !said.contains("at step") && !said.contains("Swapping"),
            "{hold:?}: no internal step names: {said}"
        );
        assert!(
            journal_step(&site).is_none(),
            "{hold:?}: the journal is closed"
        );
        let restored = finish == "rerun" || swapped;
        assert_eq!(
            get(&mut live, "marker").await,
            (!restored).then(|| marker.clone()),
            "{hold:?}"
        );
        assert_eq!(
            get(&mut live, "session:7").await.as_deref(),
            Some("value-7")
        );
        if finish == "--cleanup" {
            let size: u64 = redis::cmd("DBSIZE").query_async(&mut kept).await.unwrap();
            assert_eq!(size, 0, "{hold:?}: nothing is left in the staging index");
        }
        if let Some(pid) = scratch_server {
            assert!(
                !kisum_testkit::process_alive(pid),
                "the recovery stopped the scratch redis-server {pid}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_to_kisumctl_alone_stops_a_redis_restore_and_the_original_keeps_serving() {
    // Frozen by a relay while it copies keys into the staging index,
    // kisumctl gets SIGINT there.
    let (redis, relay, site, mut live) = redis_behind_a_relay().await;
    redis::cmd("SET")
        .arg("session:0")
        .arg("changed")
        .query_async::<()>(&mut live)
        .await
        .unwrap();

    relay.arm(Hold::Request(b"\r\nRESTORE\r\n"));
    let stopped = site
        .signal_when(&["restore", "local", "redis", "--yes"], "INT", async || {
            if !relay.held() || journal_step(&site)? != "created" {
                return None;
            }
            let path = site.root().join(".kisum/local/restores/redis.json");
            serde_json::from_str::<Value>(&std::fs::read_to_string(path).ok()?).ok()
        })
        .await;
    stopped_before_the_swap(&stopped, "SIGINT", "redis", 10.0);
    let said = &stopped.stderr;
    assert!(said.contains("was left serving, unchanged"), "{said}");
    assert_eq!(
        get(&mut live, "session:0").await.as_deref(),
        Some("changed")
    );
    let size: u64 = redis::cmd("DBSIZE").query_async(&mut live).await.unwrap();
    assert_eq!(size, 250, "the original keeps serving, untouched");
    let staging = u32::try_from(stopped.found["redis_pairs"][0][1].as_u64().unwrap()).unwrap();
    let mut kept = redis_db(&redis, staging).await;
    let size: u64 = redis::cmd("DBSIZE").query_async(&mut kept).await.unwrap();
    assert_eq!(size, 0, "the partial copy in index {staging} was flushed");
    let scratch_server = stopped.found["scratch_server"][0].as_u64().unwrap();
    assert!(
        !kisum_testkit::process_alive(u32::try_from(scratch_server).unwrap()),
        "the scratch redis-server stopped with the run"
    );
    assert!(journal_step(&site).is_none(), "the journal is closed");
    assert_eq!(site.last_journal_result(), "interrupted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_all_follows_the_restore_priority_of_the_matrix() {
    let pg = Postgres::start().await.unwrap();
    let mongo = Mongo::start().await.unwrap();
    let redis = Redis::start().await.unwrap();
    let site = Site::new(pg.port());
    site.edit("environments/local.yaml", |t| {
        t.replace("port: 27117", &format!("port: {}", mongo.port()))
            .replace("port: 26379", &format!("port: {}", redis.port()))
    });
    site.edit("environments/base.yaml", |t| {
        t.replacen("  persistence: none\n", "  persistence: rdb\n", 1)
    });
    site.expect(&["db", "provision", "local"], 0);
    let mut admin = connect(&pg, "auth_db").await;
    exec(
        &mut admin,
        "CREATE TABLE auth.users (id int); INSERT INTO auth.users VALUES (1)",
    )
    .await;
    let client = mongo_client(&mongo).await;
    for db in ["main", "market", "touring"] {
        client
            .database(db)
            .collection::<Document>("users")
            .insert_one(doc! { "n": 1 })
            .await
            .unwrap();
    }
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    site.expect(&["backup", "local", "--all"], 0);

    let all = site.expect(&["restore", "local", "--all", "--yes"], 0);
    let order = [
        "auth-db",
        "platform-core-db",
        "redis",
        "main-db",
        "finance-db",
        "market-db",
        "touring-db",
        "venue-db",
        "ai-db",
        "platform-admin-db",
    ];
    let text = stderr(&all);
    let at: Vec<usize> = order
        .iter()
        .map(|db| {
            text.find(&format!("restore local {db}: backup "))
                .unwrap_or_else(|| panic!("{db}: {text}"))
        })
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{text}");
}

async fn database_names(client: &mongodb::Client) -> Vec<String> {
    client.list_database_names().await.unwrap()
}

/// Runs `restore local main-db` and kills it once documents go into its
/// new database; answers that database's name.
async fn kill_while_restoring(site: &Site, client: &mongodb::Client) -> String {
    let journal = site.root().join(".kisum/local/restores/main-db.json");
    let args = ["restore", "local", "main-db", "--yes"];
    site.kill_when(&args, async || {
        let text = std::fs::read_to_string(&journal).unwrap_or_default();
        let value: Value = serde_json::from_str(&text).ok()?;
        let scratch = value["scratch"].as_str()?.to_string();
        let names = database_names(client).await;
        names.contains(&scratch).then_some(scratch)
    })
    .await
}

/// Whether `--cleanup` after a killed restore tells the truth about the
/// half-made database: `Some(true)` when it said it dropped it (and it is
/// gone), `Some(false)` when it said it is left over (and it is there).
async fn cleanup_tells_the_truth(site: &Site, client: &mongodb::Client, scratch: &str) -> bool {
    let cleanup = site.command(&["restore", "local", "main-db", "--cleanup", "--yes"]);
    let output = tokio::task::spawn_blocking({
        let mut cleanup = cleanup;
        move || cleanup.output().unwrap()
    })
    .await
    .unwrap();
    let said = stderr(&output) + &stdout(&output);
    let listed = database_names(client).await.contains(&scratch.to_string());
    let claims_dropped =
        said.contains(&format!("{scratch} was dropped")) || stdout(&output).contains(scratch);
    if claims_dropped {
        assert_eq!(output.status.code(), Some(0), "{said}");
        assert!(
            !listed,
            "it said it dropped {scratch}, which is still there: {said}"
        );
        return true;
    }
    assert!(said.contains(scratch), "{said}");
    assert!(
        said.contains("kisumctl restore local main-db --cleanup"),
        "the next command is named: {said}"
    );
    assert!(
        listed,
        "it said {scratch} is left over, which is gone: {said}"
    );
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_after_a_killed_mongodb_restore_drops_the_half_made_database_for_real() {
    // The SQLite engine of deploy local goes on with an insert batch after
    // its client is killed, and so recreates a dropped database.
    let dir = tempfile::tempdir().unwrap();
    let mongo = Mongo::start_sqlite(&dir.path().join("mongoeco.sqlite"))
        .await
        .unwrap();
    let (site, client) = provisioned(&mongo, 1200).await;
    site.backup("main-db");

    let scratch = kill_while_restoring(&site, &client).await;

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    while !cleanup_tells_the_truth(&site, &client, &scratch).await {
        assert!(std::time::Instant::now() < deadline, "{scratch} never went");
    }
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert!(!database_names(&client).await.contains(&scratch));
    assert_eq!(
        count(&client, "main").await,
        1200,
        "the original is untouched"
    );
    assert_eq!(live_database(&site), "main");
}
